# t_backend_close.sh: backends that close kept-alive connections under a
# request, and answers that leave bytes behind. A request is sent twice
# only when it may be (an idempotent method, or an Idempotency-Key as the
# SDKs send), and then on a new connection; a HEAD answer that announced a
# body never lends its connection to the next request.
. "$(dirname "$0")/lib.sh"

# A small HTTP/1.1 backend: MODE decides what it does with the second
# request on a connection; every request it reads is logged.
cat >"$T/backend.py" <<'PY'
import socket, sys, threading, time
mode, portfile, logname = sys.argv[1], sys.argv[2], sys.argv[3]
log = open(logname, "a", buffering=1)
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", 0))
srv.listen(64)
open(portfile, "w").write(str(srv.getsockname()[1]))
conns = [0]

def read_request(c, buf):
    while b"\r\n\r\n" not in buf:
        d = c.recv(65536)
        if not d:
            return None, buf
        buf += d
    head, rest = buf.split(b"\r\n\r\n", 1)
    n = 0
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            n = int(v)
    while len(rest) < n:
        d = c.recv(65536)
        if not d:
            return None, rest
        rest += d
    return head + b"\r\n\r\n" + rest[:n], rest[n:]

def serve(c, me):
    buf, k = b"", 0
    while True:
        req, buf = read_request(c, buf)
        if req is None:
            c.close()
            return
        k += 1
        body = req.split(b"\r\n\r\n", 1)[1].decode(errors="replace")
        log.write("conn%d req%d %s\n" % (me, k, body))
        if mode == "stale" and k == 1:
            time.sleep(0.3)  # the warm-up requests overlap: two connections
        if mode in ("stale", "slowstale") and k >= 2:
            if mode == "slowstale":
                time.sleep(1.0)  # it worked on it, then went away
            c.close()
            return
        if mode == "headbody" and req.startswith(b"HEAD"):
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 17\r\n\r\n")
            time.sleep(0.2)
            c.sendall(b"HTTP/1.1 200 OK\r\n")  # what the announced body should have been, and is not
            continue
        out = b'{"id":"x","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}]}'
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(out) + out)

while True:
    c, _ = srv.accept()
    conns[0] += 1
    threading.Thread(target=serve, args=(c, conns[0]), daemon=True).start()
PY

start_backend() { # NAME MODE
    python3 "$T/backend.py" "$2" "$T/$1.port" "$T/$1.log" &
    eval "${1}_PID=$!"
    PIDS="$PIDS $!"
    wait_until 5 test -s "$T/$1.port" || { echo "# backend $1 did not start" >&2; exit 1; }
    eval "${1}_PORT=$(cat "$T/$1.port")"
}
start_backend stale stale
start_backend slow slowstale
start_backend headb headbody

cat >"$T/a.json" <<JSON
{
  "listen": [{"address": "127.0.0.1:0"}], "workers": 1, "admin": {"address": "127.0.0.1:0"},
  "log": {"kpi": "$T/kpi.log"},
  "backends": {
    "stale": {"url": "http://127.0.0.1:$stale_PORT", "max_connections": 2},
    "slow":  {"url": "http://127.0.0.1:$slow_PORT"},
    "headb": {"url": "http://127.0.0.1:$headb_PORT", "max_connections": 1}
  },
  "routes": [
    {"name": "stale", "match": {"path_prefix": "/stale/"}, "variants": [{"name": "v", "backend": "stale"}]},
    {"name": "slow", "match": {"path_prefix": "/slow/"}, "variants": [{"name": "v", "backend": "slow"}]},
    {"name": "headb", "match": {"path_prefix": "/headb/"}, "variants": [{"name": "v", "backend": "headb"}]}
  ]
}
JSON
start_aviary "$T/a.json"
post() { curl -s --max-time 10 -o /dev/null -w '%{http_code}' "$@"; }

# the backend works on the second request of a connection, then closes it
# unanswered: a POST without a key is not sent again (it may have been done)
post "http://$AV/slow/v1/chat/completions" -d '{"n":"first"}' >/dev/null
code=$(post "http://$AV/slow/v1/chat/completions" -d '{"n":"second"}')
is "a POST the backend dropped after working on it: 502, not sent again" "$code" 502
is "the backend saw it once" "$(grep -c '"n":"second"' "$T/slow.log")" 1
wait_until 5 grep -q '"status":502' "$T/kpi.log"
like "the KPI line says backend_closed" "$(grep '"status":502' "$T/kpi.log")" '"status":502,.*"error":"backend_closed"'

# with an Idempotency-Key (as the OpenAI and Anthropic SDKs send) it goes
# again, on a new connection, though another kept-alive one is idle: both
# of two warm connections are dropped under their second request
curl -s --max-time 10 -o /dev/null "http://$AV/stale/v1/chat/completions" -d '{"n":"w1"}' &
w1=$!
curl -s --max-time 10 -o /dev/null "http://$AV/stale/v1/chat/completions" -d '{"n":"w2"}' &
w2=$!
wait "$w1" "$w2"
conns_before=$(grep -c 'req1 ' "$T/stale.log")
code=$(post -H 'Idempotency-Key: k-1' "http://$AV/stale/v1/chat/completions" -d '{"n":"keyed"}')
is "a keyed POST on a connection the backend closed unanswered: sent again, 200" "$code" 200
is "the backend saw it twice, the second time on a new connection" \
   "$(grep '"n":"keyed"' "$T/stale.log" | sed 's/ .*//' | tr '\n' ' ')" "$(grep '"n":"keyed"' "$T/stale.log" | head -n 1 | sed 's/ .*//') conn$((conns_before + 1)) "
like "the log says why" "$(cat "$T/aviary.err")" 'closed a kept-alive connection before answering; sending again'

# HEAD answered with Content-Length and the bytes of it sent late: they are
# never read as the next request's answer (max_connections 1: one connection)
code_head=$(curl -s -I --max-time 10 -o /dev/null -w '%{http_code}' "http://$AV/headb/v1/models")
sleep 0.1
code=$(post "http://$AV/headb/v1/chat/completions" -d '{"n":"after-head"}')
is "HEAD answered" "$code_head" 200
is "the next request gets its own answer, not the HEAD's stray bytes" "$code" 200
is "on a connection of its own" "$(grep -c 'req1 ' "$T/headb.log")" 2

stop_pid "$AV_PID"
is "aviary exits 0" "$?" 0
done_testing
