# t_shadow.sh: shadow traffic: copies go to the shadow variant on their own
# connections with a marker header; the client's latency does not follow a
# shadow backend ten times slower, nor one that is down; in-flight copies are
# bounded and drops counted; copies have KPI lines and each pair a comparison
# line; a drain waits for copies in flight.
. "$(dirname "$0")/lib.sh"

start_sim fast --latency-ms 20
start_sim slow --latency-ms 200 --log "$T/slow.log"
start_sim other --seed 7
start_sim slowest --latency-ms 2000
DEAD_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
route() { # NAME SHADOW_BACKEND MAX_IN_FLIGHT
    printf '{"name": "%s", "match": {"headers": {"x-route": "%s"}}, "shadow": {"variant": "cand", "max_in_flight": %s},
  "variants": [{"name": "stable", "backend": "fast", "model": "a"}, {"name": "cand", "backend": "%s", "model": "b", "weight": 0}]}' \
        "$1" "$1" "$3" "$2"
}
cat >"$T/a.json" <<JSON
{
  "listen": [{"address": "127.0.0.1:0"}],
  "workers": 1,
  "admin": {"address": "127.0.0.1:0"},
  "log": {"kpi": "$T/kpi.log", "level": "info"},
  "backends": {"fast": {"url": "http://127.0.0.1:$fast_PORT"}, "slow": {"url": "http://127.0.0.1:$slow_PORT"},
               "other": {"url": "http://127.0.0.1:$other_PORT"}, "slowest": {"url": "http://127.0.0.1:$slowest_PORT"},
               "down": {"url": "http://127.0.0.1:$DEAD_PORT", "connect_timeout_ms": 500}},
  "routes": [$(route slow slow 64), $(route down down 64), $(route bounded slowest 2), $(route other other 64),
             {"name": "budget", "match": {"headers": {"x-route": "budget"}},
              "shadow": {"variant": "cand", "budget_tokens_per_minute": 40},
              "variants": [{"name": "stable", "backend": "fast", "model": "a"}, {"name": "cand", "backend": "other", "model": "b", "weight": 0}]},
             {"name": "plain", "match": {"path_prefix": "/"}, "variants": [{"name": "stable", "backend": "fast", "model": "a"}]}]
}
JSON
start_aviary "$T/a.json"
BODY='{"model":"x","messages":[{"role":"user","content":"hi"}]}'

# median_ms ROUTE: median client time of 15 sequential requests
median_ms() {
    for i in $(seq 15); do
        curl -s -o /dev/null -w '%{time_total}\n' -H "x-route: $1" "http://$AV/v1/chat/completions" -d "$BODY"
    done | sort -n | sed -n 8p | awk '{printf "%d", $1 * 1000}'
}
base=$(median_ms plain)
with_slow=$(median_ms slow)
with_down=$(median_ms down)
check "client latency with no shadow ${base} ms, with a 10x slower shadow ${with_slow} ms (within 15 ms)" \
    test "$with_slow" -le $((base + 15))
check "client latency with the shadow backend down: ${with_down} ms (within 15 ms of ${base})" \
    test "$with_down" -le $((base + 15))

wait_until 5 sh -c "[ \$(grep -ci '\"x-aviary-shadow\":\"1\"' '$T/slow.log') -ge 15 ]"
check "the shadow backend got 15 copies, each marked x-aviary-shadow: 1" test "$(grep -ci '"x-aviary-shadow":"1"' "$T/slow.log")" -eq 15
like "copies carry the shadow variant's model" "$(head -1 "$T/slow.log")" '\\"model\\":\\"b\\"'
is "copies came on their own connections (the slow sim has never seen the primary)" \
    "$(grep -ci '"x-aviary-shadow"' "$T/slow.log")" "$(wc -l <"$T/slow.log")"
check "KPI: copies have lines of their own (shadow: true, id:shadow)" wait_until 5 sh -c \
    "[ \$(grep -c '\"request_id\":\"[0-9a-f]*:shadow\",\"route\":\"slow\",\"variant\":\"cand\",\"assign\":\"shadow\",\"shadow\":true' '$T/kpi.log') -eq 15 ]"
check "KPI: a copy to a backend that is down fails alone (connect_failed)" wait_until 5 grep -q \
    '"route":"down","variant":"cand","assign":"shadow","shadow":true.*"error":"connect_failed"' "$T/kpi.log"
check "KPI: the originals of the down route all succeeded" wait_until 5 sh -c \
    "[ \$(grep -c '\"route\":\"down\",\"variant\":\"stable\".*\"status\":200' '$T/kpi.log') -eq 15 ]"
check "KPI: a comparison line per pair" wait_until 5 sh -c \
    "[ \$(grep -c '\"type\":\"shadow_compare\",\"route\":\"slow\"' '$T/kpi.log') -eq 15 ]"
like "comparison: the same text from the same seed is the same output" \
    "$(grep '"type":"shadow_compare","route":"slow"' "$T/kpi.log" | head -1)" \
    '"primary":\{"request_id":"[0-9a-f]+","variant":"stable","status":200,.*"input_tokens":[0-9]+,"output_tokens":16,"usage_estimated":false,"output_bytes":[0-9]+,"error":null\},"shadow":\{"request_id":"[0-9a-f]+:shadow","variant":"cand","status":200,.*"output_tokens":16,.*"same_output":true\}'
curl -s -o /dev/null -H 'x-route: other' "http://$AV/v1/chat/completions" -d "$BODY"
check "comparison: another seed's text is a different output" wait_until 5 grep -q \
    '"type":"shadow_compare","route":"other".*"same_output":false' "$T/kpi.log"
like "comparison: a failed copy compares as unknown" "$(grep '"type":"shadow_compare","route":"down"' "$T/kpi.log" | head -1)" \
    '"error":"connect_failed"\},"same_output":null'

# at most 2 copies in flight on the bounded route (its shadow takes 2 s); the rest are dropped and counted
for i in $(seq 10); do
    curl -s -o /dev/null -H 'x-route: bounded' "http://$AV/v1/chat/completions" -d "$BODY"
done
out=$(curl -s "http://$ADMIN/routes/bounded")
like "in-flight bound 2: 2 copies sent, 8 dropped" "$out" '"shadow":\{"variant":"cand","percent":100,"max_in_flight":2,"sent":2,"dropped":8,'

# a budget of 40 tokens a minute: each copy spends 25 (9 in, 16 out), so two start and the rest wait
# for the next minute (the test keeps clear of a minute's end, where the budget starts afresh)
i=0; while [ "$(date +%S | sed 's/^0//')" -ge 50 ] && [ $i -lt 120 ]; do sleep 0.1; i=$((i + 1)); done
for i in $(seq 6); do
    curl -s -o /dev/null -H 'x-route: budget' "http://$AV/v1/chat/completions" -d "$BODY"
    sleep 0.1 # the copy ends and spends
done
out=$(curl -s "http://$ADMIN/routes/budget")
like "budget: two copies sent, four over the minute's budget, 50 tokens spent" "$out" \
    '"sent":2,"dropped":0,"in_flight":0,"over_budget":4,"minute_tokens":50,'

# a drain waits for the copy in flight
curl -s -o /dev/null -H 'x-route: slow' -H 'x-request-id: last-one' "http://$AV/v1/chat/completions" -d "$BODY"
stop_pid "$AV_PID"
is "aviary exits 0 after the drain" "$?" 0
like "the copy in flight at SIGTERM finished and was logged" "$(grep '"request_id":"last-one:shadow"' "$T/kpi.log")" \
    '"status":200,.*"error":null'
for s in fast slow other slowest; do eval "stop_pid \$${s}_PID"; done
done_testing
