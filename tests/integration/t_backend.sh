# t_backend.sh: keep-alive reuse and the pool maximum (seen in sim stats), and
# backend failures mapped to 502 / 503 / 504 with OpenAI-style errors.
. "$(dirname "$0")/lib.sh"

start_sim sim
# a port with nobody listening: a sim started and stopped
start_sim gone
stop_pid "$gone_PID"
cat >"$T/a.json" <<JSON
{
  "listen": [{"address": "127.0.0.1:0"}], "workers": 1, "admin": {"address": "127.0.0.1:0"},
  "log": {"kpi": "$T/kpi.log"},
  "backends": {
    "sim":  {"url": "http://127.0.0.1:$sim_PORT", "max_connections": 2, "first_byte_timeout_ms": 400},
    "down": {"url": "http://127.0.0.1:$gone_PORT", "connect_timeout_ms": 500},
    "one":  {"url": "http://127.0.0.1:$sim_PORT/", "max_connections": 1, "connect_timeout_ms": 300}
  },
  "routes": [
    {"name": "down", "match": {"path_prefix": "/down/"}, "variants": [{"name": "v", "backend": "down"}]},
    {"name": "one", "match": {"headers": {"x-route": "one"}}, "variants": [{"name": "v", "backend": "one"}]},
    {"name": "chat", "match": {"path_prefix": "/v1/"}, "variants": [{"name": "v", "backend": "sim"}]}
  ]
}
JSON
start_aviary "$T/a.json"

# each sim_stat call opens one connection of its own, counted from the next call on
conns0=$(sim_stat sim connections_total)
i=0
while [ "$i" -lt 20 ]; do
    curl -s --max-time 5 -o /dev/null "http://$AV/v1/chat/completions" -d '{"model":"m","messages":[]}'
    i=$((i + 1))
done
conns1=$(sim_stat sim connections_total)
is "keep-alive: 20 sequential requests over 1 backend connection" "$((conns1 - conns0 - 1))" 1

# 6 concurrent slow requests through max_connections 2: all succeed over at most 2 connections
pids=""
i=0
while [ "$i" -lt 6 ]; do
    curl -s --max-time 10 -o "$T/par.$i" -w '%{http_code}' "http://$AV/v1/chat/completions" \
         -H 'x-sim-latency-ms: 150' -d '{"model":"m","messages":[]}' >"$T/code.$i" &
    pids="$pids $!"; i=$((i + 1))
done
for p in $pids; do wait "$p"; done
is "pool max: all 6 queued requests answered 200" "$(cat "$T"/code.* | tr -d '\n')" "200200200200200200"
conns2=$(sim_stat sim connections_total)
check "pool max: at most 2 backend connections opened" test $((conns2 - conns0 - 2)) -le 2

resp=$(curl -s --max-time 10 -w '\n%{http_code}' "http://$AV/down/v1/chat/completions" -d '{}')
like "backend down: 502" "$resp" '502$'
like "backend down: OpenAI-style error with request id" "$resp" '^\{"error":\{"message":"backend down is unreachable","type":"server_error","code":"connect_failed","request_id":"[0-9a-f]{32}"\}\}'

is "backend down: one retry on a new connection, then the error" \
   "$(grep -c 'connect to backend down@127.0.0.1:[0-9]*/http1 failed: Connection refused' "$T/aviary.err")" 2

# max_connections 1 and a slow request on it: the next waits connect_timeout_ms in the queue, then 503
curl -s --max-time 10 -o /dev/null -H 'x-route: one' -H 'x-sim-latency-ms: 1500' \
     "http://$AV/v1/chat/completions" -d '{"model":"m","messages":[]}' &
SLOW_PID=$!
PIDS="$PIDS $SLOW_PID"
sleep 0.2
resp=$(curl -s --max-time 10 -w '\n%{http_code}' -H 'x-route: one' "http://$AV/v1/chat/completions" \
       -d '{"model":"m","messages":[]}')
like "pool full past the queue wait: 503" "$resp" '503$'
like "pool full: says so" "$resp" '"message":"backend one is at max_connections and no connection freed in time","type":"server_error","code":"backend_busy"'
wait "$SLOW_PID"

start=$(date +%s%N)
resp=$(curl -s --max-time 10 -w '\n%{http_code}' "http://$AV/v1/chat/completions" -H 'x-sim-latency-ms: 3000' \
       -d '{"model":"m","messages":[]}')
took=$(( ($(date +%s%N) - start) / 1000000 ))
like "backend too slow: 504" "$resp" '504$'
like "backend too slow: says which timeout" "$resp" '"code":"first_byte_timeout"'
check "backend too slow: answered at the first-byte timeout, not the backend's pace" test "$took" -lt 2500

resp=$(curl -s --max-time 10 -w '\n%{http_code}' "http://$AV/v1/chat/completions" -H 'x-sim-status: 429' \
       -d '{"model":"m","messages":[]}')
like "backend errors pass through with their status" "$resp" '"code":"sim_429".*429$'

stop_pid "$AV_PID"
is "aviary exits 0" "$?" 0
like "KPI: connect failure logged" "$(cat "$T/kpi.log")" '"route":"down".*"status":502.*"error":"connect_failed"'
like "KPI: timeout logged" "$(cat "$T/kpi.log")" '"status":504.*"error":"first_byte_timeout"'
done_testing
