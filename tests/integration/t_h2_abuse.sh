# t_h2_abuse.sh: HTTP/2 defences. A raw client (tests/tools/h2abuse) abuses
# the gateway in one way per case; each must end in GOAWAY ENHANCE_YOUR_CALM
# while a streamed completion on another connection goes on undisturbed,
# memory stays bounded, and the same frames below the limits pass.
. "$(dirname "$0")/lib.sh"

ABUSE="$B/tests/tools/h2abuse"
start_sim sim
write_config "$T/a.json" "$sim_PORT"
start_aviary "$T/a.json"
HOST=${AV%:*}
PORT=${AV##*:}
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$AV_PID/status"; }

# a slow stream on its own connection that must come through whole (20 events over ~4 s)
curl -s -N --max-time 30 --http2-prior-knowledge -H 'x-sim-tokens: 20' -H 'x-sim-tps: 5' \
    "http://$AV/v1/chat/completions" -d '{"stream":true,"messages":[]}' >"$T/bystander.out" &
BYSTANDER=$!
PIDS="$PIDS $BYSTANDER"
rss0=$(rss_kb)

for case in "rapid-reset 5000" "continuation 5000" "hpack-bomb 5000" "settings 5000" "ping 5000" \
            "priority 5000" "empty-data 5000" "streams 1000"; do
    set -- $case
    out=$("$ABUSE" "$HOST" "$PORT" "$1" "$2" 2>&1)
    like "$1: GOAWAY ENHANCE_YOUR_CALM" "$out" '^GOAWAY ENHANCE_YOUR_CALM'
    code=$(curl -s --max-time 5 --http2-prior-knowledge -o /dev/null -w '%{http_code}' "http://$AV/v1/models")
    is "$1: the gateway serves the next client" "$code" 200
done
grep -q 'ENHANCE_YOUR_CALM: streams reset by the client (rapid reset)' "$T/aviary.err"
check "the log names the defence that tripped" test $? -eq 0

# the same frames, below the limits, are not punished
for case in "rapid-reset 100" "settings 20" "ping 50" "priority 200" "empty-data 20" "streams 100"; do
    set -- $case
    out=$("$ABUSE" "$HOST" "$PORT" "$1" "$2" 1 2>&1)
    like "$1 x$2 is within the limits: no GOAWAY" "$out" '^no GOAWAY within'
done

# the first round again, many times over: memory does not follow
for i in 1 2 3 4 5; do
    for a in rapid-reset hpack-bomb ping streams; do "$ABUSE" "$HOST" "$PORT" "$a" 3000 >/dev/null 2>&1; done
done
rss1=$(rss_kb)
# under AddressSanitizer freed memory stays resident in its quarantine (up to
# 256 MiB); the plain pass is the measurement, the sanitizer pass a sanity bound
bound=16384
[ -n "${ASAN_OPTIONS:-}" ] && bound=131072
check "after 28 abusive connections Aviary's memory grew by $((rss1 - rss0)) KiB, under $((bound / 1024)) MiB" \
    test $((rss1 - rss0)) -lt "$bound"

wait_pid "$BYSTANDER" 30
is "the bystander's stream got all 20 events" "$(grep -c '"delta":{"content"' "$T/bystander.out")" 20
is "the bystander's stream ended with [DONE]" "$(grep -v '^$' "$T/bystander.out" | tail -1)" "data: [DONE]"

stop_pid "$AV_PID"
is "aviary exits cleanly after the abuse" "$?" 0
stop_pid "$sim_PID"
done_testing
