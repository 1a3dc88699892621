# t_signals.sh: aviary -t, -h, --version; SIGHUP with a good and a bad file;
# SIGTERM with a request in flight; /healthz and /readyz.
. "$(dirname "$0")/lib.sh"

out=$("$B/src/aviary" --version)
like "--version" "$out" '^aviary [0-9]+\.[0-9]+\.[0-9]+$'
out=$("$B/src/aviary" -h)
like "-h explains the options" "$out" '--config FILE.*'
out=$("$B/src/aviary" --bogus 2>&1); rc=$?
is "unknown option: exit 2" "$rc" 2

start_sim sim
write_config "$T/a.json" "$sim_PORT"
out=$("$B/src/aviary" -t -c "$T/a.json"); rc=$?
is "-t on a valid file: exit 0" "$rc" 0
like "-t on a valid file: says ok" "$out" 'ok \(1 listeners, 1 backends, 1 routes\)'
printf '{\n  "listen": [{"address": "127.0.0.1:0"}],\n  "backends": {"b": {"url": "http://127.0.0.1:1", "max_connections": -3}},\n  "routes": []\n}\n' >"$T/bad.json"
out=$("$B/src/aviary" -t -c "$T/bad.json" 2>&1); rc=$?
is "-t on an invalid file: exit 1" "$rc" 1
is "-t on an invalid file: file:line:column: key: reason" "$out" "$T/bad.json:3:51: backends.b.max_connections: must be an integer from 1 to 100000"

sed 's|"path_prefix": "/v1/"|"path_prefix": "/v1/chat/"|' "$T/a.json" >"$T/a2.json" && mv "$T/a2.json" "$T/a.json"
start_aviary "$T/a.json"
is "healthz" "$(curl -s --max-time 5 "http://$ADMIN/healthz")" '{"status":"ok"}'
like "readyz: generation 1" "$(curl -s --max-time 5 "http://$ADMIN/readyz")" '"status":"ready","generation":1'
is "embeddings have no route yet" "$(curl -s --max-time 5 -o /dev/null -w '%{http_code}' "http://$AV/v1/embeddings" -d '{}')" 404

# SIGHUP with a good file: the route widens to /v1/
sed 's|"path_prefix": "/v1/chat/"|"path_prefix": "/v1/"|' "$T/a.json" >"$T/a2.json" && mv "$T/a2.json" "$T/a.json"
kill -HUP "$AV_PID"
served() { [ "$(curl -s --max-time 5 -o /dev/null -w '%{http_code}' "http://$AV/v1/embeddings" -d '{"model":"e","input":"x"}')" = 200 ]; }
check "SIGHUP good file: the widened route serves" wait_until 5 served
like "readyz: generation 2" "$(curl -s --max-time 5 "http://$ADMIN/readyz")" '"generation":2'

# SIGHUP with a bad file: nothing changes, the error names the position
cp "$T/a.json" "$T/good.json"
printf '{\n  "listen": [{"address": "127.0.0.1:0"}],\n  "routes": [,]\n}\n' >"$T/a.json"
kill -HUP "$AV_PID"
check "SIGHUP bad file: error logged with its position" wait_until 5 grep -q "reload failed, still serving generation 2: $T/a.json:3:14: invalid JSON near here" "$T/aviary.err"
like "SIGHUP bad file: still generation 2" "$(curl -s --max-time 5 "http://$ADMIN/readyz")" '"generation":2'
like "SIGHUP bad file: still serving" "$(curl -s --max-time 5 "http://$AV/v1/chat/completions" -d '{"model":"m","messages":[]}')" '"object":"chat.completion"'
cp "$T/good.json" "$T/a.json"

# SIGTERM with a request in flight: it completes, then aviary exits 0
curl -s --max-time 10 -o "$T/inflight" -w '%{http_code}' -H 'x-request-id: inflight' -H 'x-sim-latency-ms: 700' \
     "http://$AV/v1/chat/completions" -d '{"model":"m","messages":[]}' >"$T/inflight.code" &
CURL_PID=$!
wait_until 5 sh -c "[ \"\$(curl -s http://127.0.0.1:$sim_PORT/sim/stats | sed -n 's/.*\"requests_in_flight\":\([0-9]*\).*/\1/p')\" -ge 2 ]"
kill -TERM "$AV_PID"
sleep 0.2
refused=$(curl -s --max-time 2 -o /dev/null -w '%{http_code}' "http://$AV/v1/models"; true)
is "SIGTERM: new connections are refused while draining" "$refused" 000
like "readyz says draining while requests finish" "$(curl -s --max-time 2 -w ' %{http_code}' "http://$ADMIN/readyz")" '"status":"draining".* 503$'
wait "$CURL_PID"
is "SIGTERM: the request in flight completed" "$(cat "$T/inflight.code")" 200
like "SIGTERM: with its whole body" "$(cat "$T/inflight")" '"finish_reason":"stop"'
wait_pid "$AV_PID" 15
is "SIGTERM: exit 0" "$?" 0
like "SIGTERM: the in-flight request's KPI line was flushed" "$(cat "$T/kpi.log")" '"request_id":"inflight".*"status":200'
done_testing
