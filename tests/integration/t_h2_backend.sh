# t_h2_backend.sh: HTTP/2 and TLS to backends: h2c and h2 (TLS + ALPN)
# backends multiplexed over few connections, GOAWAY in the middle of a load,
# streamed events per DATA frame in every client/backend combination, flow
# control coupled across the hops, idle PING, connect backoff, and TLS
# verification (CA file, system store, wrong name, tls_verify false).
. "$(dirname "$0")/lib.sh"

# tls_stat NAME FIELD: sim_stat for a sim that speaks TLS
tls_stat() {
    eval "port=\$${1}_PORT"
    curl -sk --max-time 5 "https://127.0.0.1:$port/sim/stats" | sed -n "s/.*\"$2\":\([0-9]*\).*/\1/p"
}

make_cert() { # NAME SAN
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=aviary-test" -keyout "$T/$1.key" \
        -out "$T/$1.crt" -addext "subjectAltName=$2" 2>/dev/null
}
make_cert good "DNS:localhost,IP:127.0.0.1"
make_cert wrong "DNS:wrong.example"

start_sim c --latency-ms 0                       # h2c (and HTTP/1.1) by preface
start_sim g --h2-goaway-after 100                # recycles its connections
start_sim t --tls-cert "$T/good.crt" --tls-key "$T/good.key"
start_sim w --tls-cert "$T/wrong.crt" --tls-key "$T/wrong.key"
start_sim o --tls-cert "$T/good.crt" --tls-key "$T/good.key" --no-h2
DEAD_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')

route() { printf '{"name": "%s", "match": {"headers": {"x-route": "%s"}}, "variants": [{"name": "v", "backend": "%s", "model": "m"}]}' "$1" "$1" "$2"; }
cat >"$T/a.json" <<JSON
{
  "listen": [{"address": "127.0.0.1:0"}],
  "workers": 1,
  "admin": {"address": "127.0.0.1:0"},
  "log": {"kpi": "$T/kpi.log", "level": "info"},
  "backends": {
    "h2c": {"url": "http://127.0.0.1:$c_PORT", "protocol": "h2c", "max_connections": 2, "ping_interval_ms": 200},
    "h1": {"url": "http://127.0.0.1:$c_PORT"},
    "recycling": {"url": "http://127.0.0.1:$g_PORT", "protocol": "h2c", "max_connections": 4},
    "tls_h2": {"url": "https://localhost:$t_PORT", "protocol": "h2", "tls_ca_file": "good.crt"},
    "tls_h1": {"url": "https://127.0.0.1:$t_PORT", "tls_ca_file": "good.crt"},
    "wrong_name": {"url": "https://localhost:$w_PORT", "protocol": "h2", "tls_ca_file": "wrong.crt"},
    "system_store": {"url": "https://localhost:$t_PORT", "protocol": "h2"},
    "unverified": {"url": "https://localhost:$w_PORT", "protocol": "h2", "tls_verify": false},
    "h1_only": {"url": "https://localhost:$o_PORT", "protocol": "h2", "tls_ca_file": "good.crt"},
    "down": {"url": "http://127.0.0.1:$DEAD_PORT", "protocol": "h2c", "connect_timeout_ms": 1000}
  },
  "routes": [$(route h2c h2c), $(route h1 h1), $(route recycling recycling), $(route tls_h2 tls_h2),
             $(route tls_h1 tls_h1), $(route wrong_name wrong_name), $(route system_store system_store),
             $(route unverified unverified), $(route h1_only h1_only), $(route down down)]
}
JSON
start_aviary "$T/a.json"
BODY='{"model":"x","messages":[]}'
SBODY='{"model":"x","stream":true,"messages":[]}'

like "tls_verify false is warned about at start" "$(cat "$T/aviary.err")" \
    'warn backend unverified: "tls_verify": false: its certificate and name are not checked'

# JSON through each kind of backend, from an HTTP/1.1 and an HTTP/2 client
for r in h2c tls_h2 tls_h1 unverified; do
    out=$(curl -s --max-time 10 -H "x-route: $r" "http://$AV/v1/chat/completions" -d "$BODY" -w '\n%{http_code}')
    like "$r backend: a completion, model rewritten" "$out" '"object":"chat.completion".*"model":"m".*200$'
    out=$(curl -s --max-time 10 --http2-prior-knowledge -H "x-route: $r" "http://$AV/v1/chat/completions" -d "$BODY" -w '\n%{http_version} %{http_code}')
    like "$r backend from an h2c client" "$out" '"object":"chat.completion".*2 200$'
done
is "the TLS backend saw TLS connections" "$( [ "$(tls_stat t tls_connections_total)" -ge 2 ] && echo yes)" yes
is "the h2 TLS backend was spoken to in HTTP/2" "$( [ "$(tls_stat t h2_streams_total)" -ge 2 ] && echo yes)" yes

# TLS refusals: wrong name, a self-signed certificate not in the system store, no h2 in ALPN
w0=$(tls_stat w requests_total)
out=$(curl -s --max-time 10 -H "x-route: wrong_name" "http://$AV/v1/chat/completions" -d "$BODY" -w '\n%{http_code}')
like "certificate for another name: 502 backend_tls_failed" "$out" '"code":"backend_tls_failed".*502$'
like "... and the log says hostname mismatch" "$(cat "$T/aviary.err")" 'TLS failed: TLS: certificate verify failed: hostname mismatch'
is "... and the request never reached that backend" "$(tls_stat w requests_total)" $((w0 + 1)) # only /sim/stats
out=$(curl -s --max-time 10 -H "x-route: system_store" "http://$AV/v1/chat/completions" -d "$BODY" -w '\n%{http_code}')
like "self-signed certificate against the system store: 502 backend_tls_failed" "$out" '"code":"backend_tls_failed".*502$'
out=$(curl -s --max-time 10 -H "x-route: h1_only" "http://$AV/v1/chat/completions" -d "$BODY" -w '\n%{http_code}')
like "h2 backend that offers only http/1.1 in ALPN: 502" "$out" '"code":"backend_protocol_error".*502$'
like "... and the log says why" "$(cat "$T/aviary.err")" 'did not agree to HTTP/2 in the TLS handshake \(ALPN\)'

# 100 concurrent client streams over at most max_connections (2) backend connections
out=$(h2load -n 300 -c 1 -m 100 -H 'x-sim-latency-ms: 100' -H 'x-route: h2c' -d "$S/tests/integration/data/chat.json" "http://$AV/v1/chat/completions" 2>&1)
like "h2load: 300 requests, 100 at a time, all answered" "$out" 'status codes: 300 2xx'
c1=$(sim_stat c h2_connections_total)
check "... all HTTP/2 traffic to this backend so far took $c1 connection(s), at most max_connections (2)" \
    test "$c1" -ge 1 -a "$c1" -le 2
check "... multiplexed: $(sim_stat c h2_streams_max_concurrent) streams at once on one backend connection" \
    test "$(sim_stat c h2_streams_max_concurrent)" -ge 50

# GOAWAY in the middle of a load: streams the backend never started go again elsewhere
out=$(h2load -n 1000 -c 2 -m 50 -d "$S/tests/integration/data/chat.json" -H "x-route: recycling" "http://$AV/v1/chat/completions" 2>&1)
like "backend GOAWAY every 100 streams under load: 1000 of 1000 succeed" "$out" 'status codes: 1000 2xx, 0 3xx, 0 4xx, 0 5xx'
check "... the backend sent $(sim_stat g h2_goaways_sent) GOAWAYs" test "$(sim_stat g h2_goaways_sent)" -ge 9

# streamed events go out as they come, in every combination of client and backend protocol
for combo in "h1 --http1.1" "h1 --http2-prior-knowledge" "h2c --http1.1" "h2c --http2-prior-knowledge"; do
    set -- $combo
    # 6 tokens at 10 per second: if events were held back they would arrive together
    curl -s -N --max-time 10 "$2" -H "x-route: $1" "http://$AV/v1/chat/completions" -H 'x-sim-tokens: 6' -H 'x-sim-tps: 10' \
        -d "$SBODY" | while IFS= read -r line; do
            case $line in data:*) echo "$(date +%s%N) ${line%%,*}";; esac
        done >"$T/times"
    n=$(grep -c 'data:' "$T/times")
    first=$(head -1 "$T/times" | cut -d' ' -f1); last=$(tail -1 "$T/times" | cut -d' ' -f1)
    spread=$(( (last - first) / 1000000 ))
    check "SSE, $1 backend, $2 client: $n events over ${spread} ms, as the backend sent them" \
        test "$n" -ge 9 -a "$spread" -ge 350
done
# sixteen HTTP/1.1 clients streaming at once from one multiplexed backend
# connection: one read carries DATA for several of them, each staged and
# framed as its own chunk (the stage is the worker's, handed from one to the next)
cpids=""
for i in $(seq 16); do
    curl -s -N --max-time 20 -H "x-route: h2c" -H 'x-sim-tokens: 60' -H 'x-sim-tps: 3000' \
        "http://$AV/v1/chat/completions" -d "$SBODY" -o "$T/many.$i" &
    cpids="$cpids $!"
done
bad=0
for p in $cpids; do wait "$p" || bad=$((bad + 1)); done
whole=0
for i in $(seq 16); do
    [ "$(grep -c '^data: {' "$T/many.$i")" -eq "$(grep -c '^data: {' "$T/many.1")" ] &&
        [ "$(tail -c 14 "$T/many.$i")" = "$(printf 'data: [DONE]\n\n')" ] && whole=$((whole + 1))
done
is "16 h1 clients streaming at once over one h2 backend: curl found every chunked body well-formed" "$bad" 0
is "... and each of the 16 streams is whole: $(grep -c '^data: {' "$T/many.1") events, then [DONE]" "$whole" 16

# on the client hop, nghttp sees each event in its own DATA frame (events the
# backend writes at the same instant, like the closing ones, may share one)
frames=$(nghttp -v -H 'x-sim-tokens: 6' -H 'x-sim-tps: 20' -H 'x-sim-ttft-ms: 50' -H "x-route: h2c" \
         -d "$S/tests/integration/data/stream.json" "http://$AV/v1/chat/completions" 2>&1 | grep -c 'recv DATA frame')
check "SSE over h2 from an h2 backend: $frames DATA frames for the opening event and 6 paced tokens" \
    test "$frames" -ge 7

# a client that leaves mid-stream: its backend stream is reset, the connection kept
cancel0=$(sim_stat c streams_cancelled); conns0=$(sim_stat c h2_connections_total)
curl -s -N --max-time 1 -H "x-route: h2c" "http://$AV/v1/chat/completions" -H 'x-sim-tokens: 100' -H 'x-sim-tps: 20' -d "$SBODY" >/dev/null
cancelled() { [ "$(sim_stat c streams_cancelled)" -gt "$cancel0" ]; }
check "client gone: the backend stream is reset (RST_STREAM)" wait_until 5 cancelled
curl -s --max-time 5 -H "x-route: h2c" "http://$AV/v1/chat/completions" -d "$BODY" >/dev/null
is "... and the next request reuses the backend connection" "$(sim_stat c h2_connections_total)" "$conns0"

# idle connections are PINGed (ping_interval_ms 200) and kept
p0=$(sim_stat c h2_pings_received)
sleep 1
p1=$(sim_stat c h2_pings_received)
check "idle backend connection: $((p1 - p0)) PINGs in a second" test $((p1 - p0)) -ge 2

# a slow HTTP/2 client on a fast streaming HTTP/2 backend: the backend's window
# stays closed while the client does not read, so Aviary's memory does not grow
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$AV_PID/status"; }
rss0=$(rss_kb)
mkfifo "$T/stall"
curl -s --max-time 8 --http2-prior-knowledge -o "$T/stall" -H "x-route: h2c" "http://$AV/v1/chat/completions" \
     -H 'x-sim-tokens: 400000' -H 'x-request-id: slow-h2' -d "$SBODY" &
CURL_PID=$!
PIDS="$PIDS $CURL_PID"
exec 7<>"$T/stall"
sleep 3
rss1=$(rss_kb)
unlike "slow h2 reader: still streaming after 3 s" "$(cat "$T/kpi.log")" 'slow-h2'
check "slow h2 reader: Aviary's memory grew by $((rss1 - rss0)) KiB, under 24 MiB" test $((rss1 - rss0)) -lt 24576
kill -TERM "$CURL_PID" 2>/dev/null; wait "$CURL_PID" 2>/dev/null
exec 7>&-

# connect failures back off: each failure doubles the wait before the next connect
out=$(curl -s --max-time 10 -H "x-route: down" "http://$AV/v1/chat/completions" -d "$BODY" -w '\n%{http_code}')
like "backend down: 502 connect_failed" "$out" '"code":"connect_failed".*502$'
curl -s --max-time 10 -H "x-route: down" "http://$AV/v1/chat/completions" -d "$BODY" >/dev/null
like "backend down: connects back off (100 ms, then 200 ms, ...)" "$(cat "$T/aviary.err")" \
    'connect failed: Connection refused; next try in 100 ms.*next try in 200 ms'

stop_pid "$AV_PID"
is "aviary exits 0" "$?" 0
like "KPI: the slow h2 reader is logged as a client abort" "$(grep '"request_id":"slow-h2"' "$T/kpi.log")" \
    '"error":"client_abort"'
for s in c g t w o; do eval "stop_pid \$${s}_PID"; done
done_testing
