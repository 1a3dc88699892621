# t_streaming.sh: events reach the client as the backend makes them; a client
# that leaves cancels the backend request; a backend that leaves mid-stream ends
# the client's stream cleanly and is logged as aborted.
. "$(dirname "$0")/lib.sh"

start_sim sim
write_config "$T/a.json" "$sim_PORT"
start_aviary "$T/a.json"

# 4 tokens, 400 ms apart: a buffering proxy would deliver them all at once.
curl -s -N --max-time 15 "http://$AV/v1/chat/completions" -H 'x-sim-tps: 2' \
     -H 'x-sim-tokens: 4' -d '{"model":"m","stream":true,"messages":[]}' |
    while IFS= read -r line; do
        case "$line" in *'"delta":{"content"'*) echo "$(date +%s%N)" ;; esac
    done >"$T/arrivals"
is "stream: 4 token events arrived" "$(wc -l <"$T/arrivals" | tr -d ' ')" 4
first=$(head -1 "$T/arrivals"); last=$(tail -1 "$T/arrivals")
spread_ms=$(( (last - first) / 1000000 ))
check "stream: events arrive as produced, not together (spread >= 1200 ms)" test "$spread_ms" -ge 1200
gaps_ok=1; prev=""
while read -r t; do
    if [ -n "$prev" ] && [ $(( (t - prev) / 1000000 )) -lt 250 ]; then gaps_ok=0; fi
    prev=$t
done <"$T/arrivals"
check "stream: each event arrived before the next was produced (gaps >= 250 ms)" test "$gaps_ok" -eq 1

# events that come in one backend read go out as one HTTP/1.1 chunk, not one chunk per
# event; the framing is well-formed and the body is the stream, byte for byte
cat >"$T/chunks.py" <<'PY'
import sys
raw, body, chunks, i = sys.stdin.buffer.read(), b"", 0, 0
while True:
    nl = raw.index(b"\r\n", i)
    size = int(raw[i:nl], 16)
    if size == 0:
        assert raw[nl + 2:] == b"\r\n", "no final CRLF"
        break
    body += raw[nl + 2:nl + 2 + size]
    assert raw[nl + 2 + size:nl + 4 + size] == b"\r\n", "a chunk without its CRLF"
    i, chunks = nl + 4 + size, chunks + 1
sys.stdout.buffer.write(b"%d\n" % chunks + body)
PY
curl -s --raw -N --max-time 10 "http://$AV/v1/chat/completions" -H 'x-sim-tokens: 16' -H 'x-sim-seed: 7' \
     -d '{"model":"m","stream":true,"messages":[]}' | python3 "$T/chunks.py" >"$T/chunked"
curl -s -N --max-time 10 "http://$AV/v1/chat/completions" -H 'x-sim-tokens: 16' -H 'x-sim-seed: 7' \
     -d '{"model":"m","stream":true,"messages":[]}' >"$T/plain"
chunks=$(head -1 "$T/chunked")
events=$(grep -c '^data: ' "$T/plain")
check "one read, one chunk: $events events came in $chunks chunks (fewer than half as many)" \
    test "${chunks:-99}" -gt 0 -a "$(( ${chunks:-99} * 2 ))" -lt "$events"
tail -n +2 "$T/chunked" | sed -E 's/"created":[0-9]+/"created":0/; s/"id":"[^"]*"/"id":""/' >"$T/chunked.body"
sed -E 's/"created":[0-9]+/"created":0/; s/"id":"[^"]*"/"id":""/' "$T/plain" >"$T/plain.body"
check "one read, one chunk: the unframed body is the stream" cmp -s "$T/chunked.body" "$T/plain.body"

# client leaves mid-stream: the backend stream is cancelled and its connection closed
before_cancelled=$(sim_stat sim streams_cancelled)
curl -s -N --max-time 30 "http://$AV/v1/chat/completions" -H 'x-sim-tps: 10' -H 'x-sim-tokens: 200' \
     -H 'x-request-id: leaver' -d '{"model":"m","stream":true,"messages":[]}' >"$T/partial" &
CURL_PID=$!
PIDS="$PIDS $CURL_PID"
wait_until 5 grep -q '"content"' "$T/partial"
kill -TERM "$CURL_PID"; wait "$CURL_PID" 2>/dev/null
cancelled() { [ "$(sim_stat sim streams_cancelled)" -gt "$before_cancelled" ]; }
check "client gone: the backend stream is cancelled" wait_until 5 cancelled
check "client gone: no backend stream left open" wait_until 5 sh -c "[ \"\$(curl -s http://127.0.0.1:$sim_PORT/sim/stats | sed -n 's/.*\"requests_in_flight\":\([0-9]*\).*/\1/p')\" = 1 ]"

# backend leaves mid-stream
out=$(curl -s -N --max-time 10 -w '\ncurl_exit_ok' "http://$AV/v1/chat/completions" -H 'x-sim-drop-after: 3' \
      -H 'x-request-id: dropped' -d '{"model":"m","stream":true,"messages":[]}')
like "backend gone: the client got the events before the cut" "$out" '"delta":\{"content"'
like "backend gone: a final error event says why" "$out" 'data: \{"error":\{"message":"the backend ended the stream before it was complete","type":"server_error","code":"backend_closed","request_id":"dropped"\}\}'
like "backend gone: the chunked stream ends well-formed (curl is content)" "$out" 'curl_exit_ok$'

# a client that stops reading while the backend writes as fast as it can: curl writes
# into a pipe nobody reads, so it stalls once the pipe is full. Aviary must stop reading
# the backend instead of queueing the stream (about 60 MB) in its own memory.
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$AV_PID/status"; }
rss0=$(rss_kb)
mkfifo "$T/stall"
curl -s --max-time 8 -o "$T/stall" "http://$AV/v1/chat/completions" -H 'x-sim-tokens: 400000' \
     -H 'x-request-id: stalled-reader' -d '{"model":"m","stream":true,"messages":[]}' &
CURL_PID=$!
PIDS="$PIDS $CURL_PID"
exec 7<>"$T/stall" # hold the pipe open, never read it
sleep 3
rss1=$(rss_kb)
unlike "stalled reader: the request is still open after 3 s (no KPI line yet)" "$(cat "$T/kpi.log")" 'stalled-reader'
check "stalled reader: Aviary's memory grew by $((rss1 - rss0)) KiB, under 24 MiB" test $((rss1 - rss0)) -lt 24576
kill -TERM "$CURL_PID" 2>/dev/null; wait "$CURL_PID" 2>/dev/null
exec 7>&-
check "stalled reader: logged as a client abort once it leaves" \
    wait_until 5 grep -q '"request_id":"stalled-reader".*"error":"client_abort"' "$T/kpi.log"

# the connection pool survives all this
resp=$(curl -s --max-time 10 "http://$AV/v1/chat/completions" -d '{"model":"m","messages":[]}')
like "a request after the aborts succeeds" "$resp" '"object":"chat.completion"'

stop_pid "$AV_PID"
is "aviary exits 0" "$?" 0
like "KPI: the client abort is logged" "$(grep '"request_id":"leaver"' "$T/kpi.log")" '"status":499,"stream":true.*"error":"client_abort"'
like "KPI: the backend abort is logged" "$(grep '"request_id":"dropped"' "$T/kpi.log")" '"status":200,"stream":true.*"error":"backend_closed"'
done_testing
