# t_limits.sh: the client side under abuse: body and header limits (413/431),
# slow headers (408), pipelined requests answered in order, idle close.
. "$(dirname "$0")/lib.sh"

start_sim sim
write_config "$T/a.json" "$sim_PORT" \
  '"client": {"max_body_bytes": 1024, "max_headers": 20, "max_header_bytes": 2048, "header_timeout_ms": 300, "idle_timeout_ms": 1500},'
start_aviary "$T/a.json"
host=${AV%:*}; port=${AV##*:}

head -c 2000 /dev/zero | tr '\0' 'a' >"$T/big"
resp=$(curl -s --max-time 10 -w '\n%{http_code}' "http://$AV/v1/chat/completions" --data-binary @"$T/big")
like "oversized body: 413" "$resp" '413$'
like "oversized body: JSON error naming the limit" "$resp" '"message":"request body exceeds client.max_body_bytes \(1024 bytes\)","type":"invalid_request_error","code":"body_too_large"'
resp=$(curl -s --max-time 10 -w '\n%{http_code}' -H 'Transfer-Encoding: chunked' "http://$AV/v1/chat/completions" \
       --data-binary @"$T/big")
like "oversized chunked body: 413" "$resp" '"code":"body_too_large".*413$'
resp=$(curl -s --max-time 10 -w '\n%{http_code}' -H 'Expect: 100-continue' "http://$AV/v1/chat/completions" \
       --data-binary @"$T/big")
like "oversized body announced with Expect: 413 before the body" "$resp" '413$'

hdrs=""
i=0; while [ "$i" -lt 25 ]; do hdrs="$hdrs -H x-h$i:1"; i=$((i + 1)); done
resp=$(curl -s --max-time 10 -w '\n%{http_code}' $hdrs "http://$AV/v1/models")
like "too many headers: 431" "$resp" '"code":"too_many_headers".*431$'
long=$(head -c 3000 /dev/zero | tr '\0' 'b')
resp=$(curl -s --max-time 10 -w '\n%{http_code}' -H "x-long: $long" "http://$AV/v1/models")
like "headers too large: 431" "$resp" '"code":"headers_too_large".*431$'

# slowloris: half a request, then nothing
exec 3<>"/dev/tcp/$host/$port"
printf 'POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n' >&3
start=$(date +%s%N)
reply=$(timeout 5 cat <&3)
took=$(( ($(date +%s%N) - start) / 1000000 ))
exec 3<&-
like "slow headers: 408 and the connection closed" "$reply" '^HTTP/1.1 408 Request Timeout'
like "slow headers: JSON error" "$reply" '"code":"request_timeout"'
check "slow headers: cut at header_timeout_ms (took ${took} ms)" test "$took" -lt 2000

# pipelining: three requests in one write, answered in order
exec 3<>"/dev/tcp/$host/$port"
printf 'POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nx-request-id: p1\r\nx-sim-latency-ms: 200\r\nContent-Length: 27\r\n\r\n{"model":"m","messages":[]}POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nx-request-id: p2\r\nContent-Length: 27\r\n\r\n{"model":"m","messages":[]}GET /v1/models HTTP/1.1\r\nHost: x\r\nx-request-id: p3\r\nConnection: close\r\n\r\n' >&3
replies=$(timeout 5 cat <&3)
exec 3<&-
ids=$(printf '%s' "$replies" | tr -d '\r' | sed -n 's/^X-Request-Id: //p' | tr '\n' ' ')
is "pipelined requests answered in order" "$ids" "p1 p2 p3 "
is "pipelined: three 200s" "$(printf '%s' "$replies" | grep -c '^HTTP/1.1 200 OK')" 3

# garbage
exec 3<>"/dev/tcp/$host/$port"
printf 'NOT HTTP AT ALL\r\n\r\n' >&3
reply=$(timeout 5 cat <&3)
exec 3<&-
like "malformed request: 400 JSON" "$reply" '^HTTP/1.1 400 Bad Request.*"code":"bad_request"'

# idle keep-alive connections are closed after idle_timeout_ms
exec 3<>"/dev/tcp/$host/$port"
start=$(date +%s%N)
reply=$(timeout 5 cat <&3)
took=$(( ($(date +%s%N) - start) / 1000000 ))
exec 3<&-
check "idle connection closed after idle_timeout_ms (${took} ms)" test "$took" -ge 1300 -a "$took" -lt 4000

resp=$(curl -s --max-time 10 "http://$AV/v1/chat/completions" -d '{"model":"m","messages":[]}')
like "still serving after the abuse" "$resp" '"object":"chat.completion"'
stop_pid "$AV_PID"
is "aviary exits 0" "$?" 0
done_testing
