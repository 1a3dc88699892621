# t_regress.sh: defects that once crashed or corrupted the gateway and need
# no hostile backend to show: HEAD requests whose answers carry a body (as
# aviary-sim's do) at concurrency above max_connections, and config that once
# read past a url or made two edits of one body member.
. "$(dirname "$0")/lib.sh"

start_sim sim
write_config "$T/a.json" "$sim_PORT" '' ', "max_connections": 4'
start_aviary "$T/a.json"

# 300 HEAD requests, 100 at a time, on 4 backend connections: each answer
# carries a body it should not, so every connection closes after its answer
# (it once read the connection it had just freed)
i=0
while [ "$i" -lt 3 ]; do
    j=0; pids=""
    while [ "$j" -lt 100 ]; do
        curl -s -I --max-time 10 -o /dev/null -w '%{http_code}\n' "http://$AV/v1/models" >>"$T/head.codes" &
        pids="$pids $!"; j=$((j + 1))
    done
    for p in $pids; do wait "$p"; done
    i=$((i + 1))
done
is "300 HEAD requests, 100 at a time: all answered with the backend's status" \
   "$(sort "$T/head.codes" | uniq -c | tr -s ' ')" " 300 404"
check "the gateway is up after them" kill -0 "$AV_PID"
code=$(curl -s --max-time 10 -o /dev/null -w '%{http_code}' "http://$AV/v1/chat/completions" -d '{"model":"m","messages":[]}')
is "and answers a chat request" "$code" 200

# a backend answer with extra bytes after it (HEAD with a body) is not
# mistaken for the next answer on a reused connection
codes=""
k=0
while [ "$k" -lt 5 ]; do
    curl -s -I --max-time 5 -o /dev/null "http://$AV/v1/models"
    codes="$codes$(curl -s --max-time 5 -o /dev/null -w '%{http_code}' "http://$AV/v1/chat/completions" -d '{"messages":[]}')"
    k=$((k + 1))
done
is "HEAD then POST, five times: every POST gets its own answer" "$codes" 200200200200200
# raw REQUEST: sends the bytes (printf escapes) on one connection, prints the status line's code
raw() {
    python3 - "$AV" "$1" <<'PY'
import socket, sys
host, port = sys.argv[1].rsplit(":", 1)
s = socket.create_connection((host, int(port)), timeout=5)
s.sendall(sys.argv[2].encode("latin-1").decode("unicode_escape").encode("latin-1"))
data = b""
try:
    while b"\r\n" not in data:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
except socket.timeout:
    pass
print(data.split(b" ")[1].decode() if data.startswith(b"HTTP/") else "none")
PY
}
POST='POST /v1/chat/completions HTTP/1.1\r\nContent-Length: 2\r\n'
is "a header name with a space: 400" "$(raw "${POST}Host: a\r\nX Bad: 1\r\n\r\n{}")" 400
is "a header value with a control byte: 400" "$(raw "${POST}Host: a\r\nX-A: a\x01b\r\n\r\n{}")" 400
is "two Host headers: 400" "$(raw "${POST}Host: a\r\nHost: b\r\n\r\n{}")" 400
is "no Host header in HTTP/1.1: 400" "$(raw "${POST}\r\n{}")" 400
is "no Host header in HTTP/1.0: answered" \
   "$(raw 'POST /v1/chat/completions HTTP/1.0\r\nContent-Length: 15\r\n\r\n{"messages":[]}')" 200
resp=$(python3 - "$AV" <<'PY'
import socket, sys
host, port = sys.argv[1].rsplit(":", 1)
s = socket.create_connection((host, int(port)), timeout=5)
s.sendall(b"POST /v1/x HTTP/1.1\r\nHost: a\r\nHost: b\r\nContent-Length: 0\r\n\r\n")
data = b""
while b"}\n" not in data:
    chunk = s.recv(4096)
    if not chunk:
        break
    data += chunk
import json
body = data.split(b"\r\n\r\n", 1)[1]
json.loads(body.decode("utf-8"))  # raises on a stray byte
print(body.decode())
PY
)
like "the 400 says why, in the OpenAI shape, as valid JSON" "$resp" \
    '"message":"the request has more than one Host header","type":"invalid_request_error","code":"duplicate_host"'

# dot segments: routed and sent as the path they name; above the root is refused
echo=$(curl -s --path-as-is --max-time 5 -H 'x-sim-echo: 1' "http://$AV/v1/x/../chat/./completions" -d '{"messages":[]}')
like "/v1/x/../chat/./completions goes out as /v1/chat/completions" "$echo" '"path":"/v1/chat/completions"'
code=$(curl -s --path-as-is --max-time 5 -o /dev/null -w '%{http_code}' "http://$AV/v1/%2e%2e/%2E%2e/admin" -d '{}')
is "a path climbing above the root (%2e%2e): 400" "$code" 400
code=$(curl -s --path-as-is --max-time 5 -o /dev/null -w '%{http_code}' "http://$AV/v1/../x" -d '{}')
is "/v1/../x does not match the /v1/ route: 404" "$code" 404

# a client's model name that is not UTF-8 is logged as valid JSON
printf '{"model":"m\377\376x","messages":[],"x-id":1}' >"$T/bad-utf8.json"
curl -s --max-time 5 -o /dev/null -H 'x-request-id: bad-utf8' "http://$AV/v1/chat/completions" --data-binary @"$T/bad-utf8.json"

# a route of one variant: every request went by weight, and /routes says so
routes=$(curl -s --max-time 5 "http://$ADMIN/routes")
req_n=$(printf '%s' "$routes" | sed -n 's/.*"requests":\([0-9]*\).*/\1/p')
like "/routes counts the requests of a one-variant route as unkeyed, as their KPI lines say" "$routes" \
    "\"requests\":$req_n,\"unkeyed\":$req_n,"

stop_pid "$AV_PID"
is "aviary exits 0 after them" "$?" 0
line=$(grep '"request_id":"bad-utf8"' "$T/kpi.log")
like "the KPI line carries U+FFFD for the bytes that are not UTF-8" "$line" '"client_model":"m\\ufffd\\ufffdx"'
check "every KPI line is valid JSON and UTF-8" python3 -c '
import json, sys
for l in open(sys.argv[1], "rb"):
    json.loads(l.decode("utf-8"))' "$T/kpi.log"

# a client that takes none of its answer is let go after client.idle_timeout_ms
# (it once held its paused backend stream, and the memory, for ever)
write_config "$T/e.json" "$sim_PORT" '"client": {"idle_timeout_ms": 1000},'
start_aviary "$T/e.json"
python3 - "$AV" <<'PY' &
import socket, sys, time
host, port = sys.argv[1].rsplit(":", 1)
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
s.connect((host, int(port)))
body = b'{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}'
s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: a\r\nx-request-id: never-reads\r\nx-sim-tokens: 100000\r\n"
          b"x-sim-tps: 0\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
time.sleep(10)
PY
NR_PID=$!
PIDS="$PIDS $NR_PID"
check "a client that reads nothing of a long stream is let go (KPI line within 6 s)" \
    wait_until 6 grep -q '"request_id":"never-reads"' "$T/kpi.log"
like "as a client abort" "$(grep '"request_id":"never-reads"' "$T/kpi.log")" '"status":499,.*"error":"client_abort"'
kill "$NR_PID" 2>/dev/null
stop_pid "$AV_PID"

# config: a url that once made the loader read before its buffer, and params
# that once made two overlapping edits of one member
write_config "$T/b.json" 1
sed 's|"url": "http://127.0.0.1:1"|"url": "http://["|' "$T/b.json" >"$T/c.json"
out=$("$B/src/aviary" -t -c "$T/c.json" 2>&1); rc=$?
is "url http://[ is refused" "$rc" 1
like "and the error says where and why" "$out" 'c.json:[0-9]+:[0-9]+: backends.sim.url: "http://\[": an IPv6 host goes in brackets'
echo "You are terse." >"$T/p.txt"
sed 's|"model": "sim-large"}|"model": "sim-large", "system_prompt": "p.txt", "params": {"messages": []}}|' "$T/b.json" >"$T/d.json"
out=$("$B/src/aviary" -t -c "$T/d.json" 2>&1); rc=$?
is "params.messages beside a system_prompt is refused" "$rc" 1
like "and the error names the key" "$out" 'routes\[0\].variants\[0\].params.messages: the variant.s "system_prompt" is written into "messages"'
done_testing
