# t_h2.sh: HTTP/2 to clients: h2 over TLS (ALPN, and HTTP/1.1 when asked), h2c
# with prior knowledge next to HTTP/1.1 on one cleartext port, streamed events,
# 100 concurrent streams, certificate errors and reload, graceful GOAWAY.
. "$(dirname "$0")/lib.sh"

# make_cert NAME CN: a self-signed certificate for localhost and 127.0.0.1
make_cert() {
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=$2" -keyout "$T/$1.key" -out "$T/$1.crt" \
        -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" 2>/dev/null
}
make_cert tls aviary-test-one
start_sim sim
LISTEN='[{"address": "127.0.0.1:0", "tls": {"cert": "tls.crt", "key": "tls.key"}}, {"address": "127.0.0.1:0"}]' \
    write_config "$T/a.json" "$sim_PORT" '"client": {"max_header_bytes": 16384},'
start_aviary "$T/a.json"
TP=${AV##*:}
tls_curl() { curl -s --max-time 10 --cacert "$T/tls.crt" --resolve "localhost:$TP:127.0.0.1" "$@"; }
URL="https://localhost:$TP/v1/chat/completions"

out=$(tls_curl --http2 -w '\n%{http_version} %{http_code}' -H 'x-request-id: h2-json' "$URL" -d '{"model":"x","messages":[]}')
like "TLS + ALPN h2: a JSON completion over HTTP/2" "$out" '"object":"chat.completion".*"model":"sim-large".*2 200$'
out=$(tls_curl --http1.1 -w '\n%{http_version} %{http_code}' "$URL" -d '{"model":"x","messages":[]}')
like "TLS + ALPN http/1.1: the same over HTTP/1.1" "$out" '"object":"chat.completion".*1.1 200$'
hdrs=$(tls_curl --http2 -o /dev/null -D - -H 'x-request-id: h2-id-7' "$URL" -d '{"model":"x","messages":[]}')
like "h2: lower-case response headers with x-request-id" "$hdrs" 'x-request-id: h2-id-7'
unlike "h2: no connection-specific headers" "$hdrs" '[Cc]onnection:|[Tt]ransfer-[Ee]ncoding'

# SSE over h2: every event arrives, in order, and the stream ends well
out=$(tls_curl --http2 -N -H 'x-sim-tokens: 5' -H 'x-sim-tps: 50' "$URL" -d '{"stream":true,"messages":[]}')
is "h2 stream: 5 token events" "$(printf '%s\n' "$out" | grep -c '"delta":{"content"')" 5
is "h2 stream: ends with [DONE]" "$(printf '%s\n' "$out" | grep -v '^$' | tail -1)" "data: [DONE]"

# RFC 9113 3.4 over TLS: a client that negotiates h2 and then speaks HTTP/1.1
# instead of the preface is told GOAWAY PROTOCOL_ERROR at once and closed
# (h2c prior knowledge: t_h2_abuse.sh)
t0=$(date +%s%N)
frames=$(printf 'GET /v1/models HTTP/1.1\r\nHost: localhost\r\n\r\n' |
         timeout 10 openssl s_client -quiet -alpn h2 -connect "127.0.0.1:$TP" -servername localhost 2>/dev/null |
         od -An -tx1 | tr -d ' \n')
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
like "TLS h2, bad preface: our SETTINGS, then GOAWAY PROTOCOL_ERROR last_stream=0" "$frames" \
    '^[0-9a-f]{6}04.*0000080700000000000000000000000001$'
check "TLS h2, bad preface: closed after $ms ms (under 3 s)" test "$ms" -lt 3000

# h2c prior knowledge and HTTP/1.1 on the same cleartext port
out=$(curl -s --max-time 10 --http2-prior-knowledge -w '\n%{http_version} %{http_code}' "http://$AV2/v1/chat/completions" \
      -d '{"model":"x","messages":[]}')
like "h2c prior knowledge: served over HTTP/2" "$out" '"object":"chat.completion".*2 200$'
out=$(curl -s --max-time 10 -w '\n%{http_version} %{http_code}' "http://$AV2/v1/chat/completions" -d '{"model":"x","messages":[]}')
like "HTTP/1.1 on the same cleartext port" "$out" '"object":"chat.completion".*1.1 200$'
out=$(curl -s --max-time 10 --http2-prior-knowledge -w '\n%{http_code}' "http://$AV2/nowhere")
like "h2c: errors are the same OpenAI-style JSON" "$out" '"code":"route_not_found".*404$'

# our SETTINGS, as nghttp sees them
v=$(nghttp -nv "http://$AV2/v1/models" 2>&1)
like "nghttp: SETTINGS_MAX_CONCURRENT_STREAMS 128" "$v" 'recv SETTINGS.*MAX_CONCURRENT_STREAMS\(0x03\):128'
like "nghttp: SETTINGS_MAX_HEADER_LIST_SIZE is client.max_header_bytes" "$v" 'MAX_HEADER_LIST_SIZE\(0x06\):16384'
like "nghttp: the response" "$v" ':status: 200'

# 100 concurrent streams on one connection, each a completion through the backend pool
printf '{"model":"x","messages":[]}' >"$T/body.json"
h=$(timeout 30 h2load -n 300 -c 1 -m 100 -H 'content-type: application/json' -d "$T/body.json" \
    "http://$AV2/v1/chat/completions" 2>&1)
like "h2load: 300 requests, 100 streams at a time, all 2xx" "$h" 'status codes: 300 2xx'

# more headers than client.max_headers (100) on one stream: 431 in our JSON, the connection lives
hargs=""
for i in $(seq 120); do hargs="$hargs -H x-h$i:v"; done
out=$(curl -s --max-time 10 --http2-prior-knowledge -w '\n%{http_code}' $hargs "http://$AV2/v1/models")
like "h2: too many headers refused with 431 too_many_headers" "$out" '"code":"too_many_headers".*431$'
# decoded size over max_header_bytes (16 KiB here): a header HPACK sends once and then
# as a one-byte index still counts whole every time
v=$(head -c 2000 /dev/zero | tr '\0' 'a')
hargs=""
for i in $(seq 20); do hargs="$hargs -H x-same:$v"; done
out=$(curl -s --max-time 10 --http2-prior-knowledge -w '\n%{http_code}' $hargs "http://$AV2/v1/models")
like "h2: 40 KB of one repeated header (tiny in HPACK) refused with 431 headers_too_large" "$out" \
    '"code":"headers_too_large".*431$'
out=$(curl -s --max-time 10 --http2-prior-knowledge -w '\n%{http_code}' "http://$AV2/v1/models")
like "h2: serving after the oversized headers" "$out" '200$'

# certificate reload on SIGHUP: new connections get the new certificate
make_cert tls aviary-test-two
kill -HUP "$AV_PID"
check "SIGHUP: generation 2 loaded" wait_until 5 sh -c "curl -s http://$ADMIN/readyz | grep -q '\"generation\":2'"
subject=$(openssl s_client -connect "127.0.0.1:$TP" -servername localhost </dev/null 2>/dev/null | openssl x509 -noout -subject)
like "SIGHUP: the renewed certificate is served" "$subject" 'aviary-test-two'

# a certificate that does not load is a config error with its position
printf 'not a certificate\n' >"$T/bad.crt"
sed 's/"cert": "tls.crt"/"cert": "bad.crt"/' "$T/a.json" >"$T/bad.json"
out=$("$B/src/aviary" -t -c "$T/bad.json" 2>&1)
like "bad certificate: aviary -t names file:line:column and key" "$out" 'bad.json:[0-9]+:[0-9]+: listen\[0\]\.tls\.cert: cannot load certificate'

# graceful stop: a stream in flight finishes after SIGTERM (GOAWAY, not a cut)
curl -s --max-time 15 --http2-prior-knowledge -N -H 'x-sim-tokens: 10' -H 'x-sim-tps: 10' \
     "http://$AV2/v1/chat/completions" -d '{"stream":true,"messages":[]}' >"$T/inflight" &
CURL_PID=$!
PIDS="$PIDS $CURL_PID"
wait_until 5 grep -q '"content"' "$T/inflight"
stop_pid "$AV_PID"
is "SIGTERM with an h2 stream in flight: aviary exits 0" "$?" 0
wait_pid "$CURL_PID" 10
is "the in-flight h2 stream finished: curl exit 0" "$?" 0
is "the in-flight h2 stream got all 10 events" "$(grep -c '"delta":{"content"' "$T/inflight")" 10

kpi=$(cat "$T/kpi.log")
like "KPI line for the h2 request" "$kpi" '"request_id":"h2-json","route":"chat"'
done_testing
