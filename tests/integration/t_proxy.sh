# t_proxy.sh: JSON and streamed completions end to end, routing, header
# rewriting, and the KPI lines they leave; secrets never reach a log.
. "$(dirname "$0")/lib.sh"

export AVIARY_TEST_BACKEND_KEY="sk-backend-SECRET-4242"
start_sim sim
WORKERS=2 LOG_LEVEL=debug write_config "$T/a.json" "$sim_PORT" '' ', "api_key_env": "AVIARY_TEST_BACKEND_KEY", "headers": {"x-team": "ml"}'
start_aviary "$T/a.json"

body='{"model":"gpt-x","messages":[{"role":"user","content":"hello"}]}'
resp=$(curl -s --max-time 10 -D "$T/h1" -H 'content-type: application/json' -H 'x-request-id: req-json-1' \
       "http://$AV/v1/chat/completions" -d "$body")
is "JSON completion: 200" "$(head -1 "$T/h1" | tr -d '\r')" "HTTP/1.1 200 OK"
like "JSON completion: a chat.completion with usage" "$resp" '"object":"chat.completion".*"usage":\{"prompt_tokens"'
like "JSON completion: the variant's model was sent" "$resp" '"model":"sim-large"'
like "x-request-id from the client comes back" "$(cat "$T/h1")" 'X-Request-Id: req-json-1'
long_id=$(printf 'r%.0s' $(seq 128))
hdr=$(curl -s --max-time 10 -o /dev/null -D - -H "x-request-id: $long_id" "http://$AV/v1/chat/completions" -d '{"messages":[]}')
like "a 128-character x-request-id (the longest kept) comes back whole" "$hdr" "X-Request-Id: $long_id"

resp=$(curl -s --max-time 10 -N -D "$T/h2" "http://$AV/v1/chat/completions" -H 'x-sim-tokens: 5' \
       -d '{"model":"gpt-x","stream":true,"messages":[{"role":"user","content":"hi"}]}')
like "stream: text/event-stream" "$(cat "$T/h2")" '[Cc]ontent-[Tt]ype: text/event-stream'
like "stream: chunked to the HTTP/1.1 client" "$(cat "$T/h2")" 'Transfer-Encoding: chunked'
is "stream: 5 token events" "$(printf '%s\n' "$resp" | grep -c '"delta":{"content"')" 5
is "stream: ends with [DONE]" "$(printf '%s\n' "$resp" | grep -v '^$' | tail -1)" "data: [DONE]"

resp=$(curl -s --max-time 10 -w '\n%{http_code}' "http://$AV/nowhere")
like "no route: 404 with an OpenAI-style error" "$resp" '^\{"error":\{"message":"no route matches GET /nowhere","type":"invalid_request_error","code":"route_not_found","request_id":"[0-9a-f]{32}"\}\}'
like "no route: status 404" "$resp" '404$'

echo=$(curl -s --max-time 10 -H 'x-sim-echo: 1' -H 'Authorization: Bearer client-token-77' \
       -H 'X-Forwarded-For: 192.0.2.9' -H 'Connection: keep-alive, x-hop' -H 'x-hop: 1' \
       "http://$AV/v1/embeddings" -d '{"model":"e","input":"x"}')
like "backend gets its API key" "$echo" '"Authorization":"Bearer sk-backend-SECRET-4242"'
unlike "client Authorization is not forwarded" "$echo" 'client-token-77'
like "X-Forwarded-For appended" "$echo" '"X-Forwarded-For":"192.0.2.9, 127.0.0.1"'
like "X-Forwarded-Proto set" "$echo" '"X-Forwarded-Proto":"http"'
unlike "hop-by-hop headers removed" "$echo" '"x-hop"'
like "configured headers added" "$echo" '"x-team":"ml"'
like "generated request id sent to the backend" "$echo" '"X-Request-Id":"[0-9a-f]{32}"'

# chunked request body and Expect: 100-continue
head -c 3000 /dev/zero | tr '\0' 'a' >"$T/big"
printf '{"model":"m","input":"%s"}' "$(cat "$T/big")" >"$T/body.json"
echo=$(curl -s --max-time 10 -H 'x-sim-echo: 1' -H 'Transfer-Encoding: chunked' -H 'Expect: 100-continue' \
       "http://$AV/v1/embeddings" --data-binary @"$T/body.json")
like "chunked body with 100-continue reaches the backend with a Content-Length" "$echo" '"Content-Length":"3032"'

# the model is set in place, every copy of it, and added when missing; the rest of the body is untouched
echo=$(curl -s --max-time 10 -H 'x-sim-echo: 1' "http://$AV/v1/chat/completions" \
       -d '{ "model" : "a\u00e9", "x":{"model":"inner"}, "mo\u0064el":"b", "n":1.5e3 }')
like "every top-level model replaced, nested one kept" "$echo" \
    '"body":"\{ \\"model\\" : \\"sim-large\\", \\"x\\":\{\\"model\\":\\"inner\\"\}, \\"mo\\\\u0064el\\":\\"sim-large\\", \\"n\\":1.5e3 \}"'
echo=$(curl -s --max-time 10 -H 'x-sim-echo: 1' "http://$AV/v1/chat/completions" -d '{"input":"x"}')
like "model added when the body has none" "$echo" '"body":"\{\\"model\\":\\"sim-large\\",\\"input\\":\\"x\\"\}"'
resp=$(curl -s --max-time 10 -w '\n%{http_code}' "http://$AV/v1/chat/completions" -d '{"model":"m","n":[1,}')
like "body that is not JSON: 400 with where it breaks" "$resp" \
    '^\{"error":\{"message":"request body is not valid JSON \(error at byte 20\)","type":"invalid_request_error","code":"invalid_json".*400$'

stop_pid "$AV_PID"
is "aviary exits 0 on SIGTERM" "$?" 0
kpi=$(cat "$T/kpi.log")
line=$(grep '"request_id":"req-json-1"' "$T/kpi.log")
like "KPI line for the JSON request" "$line" '"route":"chat","variant":"stable","assign":"weight","shadow":false,"generation":1,"backend":"sim","client_model":"gpt-x","model":"sim-large","prompt_hash":null,"method":"POST","path":"/v1/chat/completions","status":200,"stream":false,"latency_ms":[0-9.]+,"first_byte_ms":[0-9.]+,"ttft_ms":[0-9.]+,"inter_token_p50_ms":null,"output_tokens_per_s":null,"input_tokens":[0-9]+,"output_tokens":16,"cached_input_tokens":0,"cache_write_tokens":0,"reasoning_tokens":0,"usage_estimated":false,"cost_usd":null,"finish_reason":"stop","tool_calls":0,"bytes_in":[0-9]+,"bytes_out":[0-9]+,"policy":\[\],"policy_errors":0,"error":null'
like "KPI line for the stream" "$kpi" '"status":200,"stream":true'
like "KPI line for the 404" "$kpi" '"route":null.*"status":404'
like "KPI line keeps the client's model name" "$kpi" '"model":"sim-large".*"status":200'
like "KPI line for the invalid body" "$kpi" '"status":400.*"error":"invalid_json"'
is "one KPI line per request" "$(wc -l <"$T/kpi.log" | tr -d ' ')" 9
like "exit message counts the lines written" "$(cat "$T/aviary.err")" 'stopped; 9 KPI lines written'
unlike "backend key in no log" "$kpi$(cat "$T/aviary.err")" 'sk-backend-SECRET'
unlike "client token in no log" "$kpi$(cat "$T/aviary.err")" 'client-token-77'
done_testing
