# t_errors.sh: every error the gateway makes is worded in the client's
# dialect: OpenAI's {"error": {...}} on OpenAI paths, Anthropic's
# {"type": "error", "error": {"type", "message"}} on /messages (routed or
# not), and a stream the backend breaks off ends with the dialect's own error
# event (Anthropic's and the Responses API's event: error).
. "$(dirname "$0")/lib.sh"

start_sim sim
start_sim gone
stop_pid "$gone_PID"
cat >"$T/a.json" <<JSON
{
  "listen": [{"address": "127.0.0.1:0"}], "workers": 1, "admin": {"address": "127.0.0.1:0"},
  "log": {"kpi": "$T/kpi.log"},
  "backends": {
    "sim":  {"url": "http://127.0.0.1:$sim_PORT", "first_byte_timeout_ms": 300},
    "down": {"url": "http://127.0.0.1:$gone_PORT", "connect_timeout_ms": 300}
  },
  "routes": [
    {"name": "down", "match": {"path_prefix": "/down/"}, "variants": [{"name": "v", "backend": "down"}]},
    {"name": "chat", "match": {"path_prefix": "/v1/"}, "variants": [{"name": "v", "backend": "sim"}]}
  ]
}
JSON
start_aviary "$T/a.json"

post() { curl -s --max-time 10 -w '\n%{http_code}' "$@"; }
MSG='{"model":"m","max_tokens":16,"messages":[{"role":"user","content":"hi"}]}'

# the gateway's own errors on an Anthropic path: Anthropic's shape and error type
resp=$(post "http://$AV/down/v1/messages" -d "$MSG")
like "backend down on /messages: 502 in Anthropic's shape" "$resp" \
    '^\{"type":"error","error":\{"type":"api_error","message":"backend down is unreachable"\},"request_id":"[0-9a-f]{32}"\}.*502$'
resp=$(post "http://$AV/v1/messages" -H 'x-sim-latency-ms: 2000' -d "$MSG")
like "first-byte timeout on /messages: 504 as api_error" "$resp" '^\{"type":"error","error":\{"type":"api_error","message":"backend sim did not answer in time.*504$'
resp=$(post "http://$AV/nowhere/messages" -d "$MSG")
like "no route for a /messages path: 404 as not_found_error" "$resp" '^\{"type":"error","error":\{"type":"not_found_error","message":"no route matches POST /nowhere/messages"\}.*404$'
resp=$(post "http://$AV/v1/messages" -d '{"model":"m","messages":[')
like "invalid JSON on /messages: 400 as invalid_request_error" "$resp" '^\{"type":"error","error":\{"type":"invalid_request_error","message":"request body is not valid JSON.*400$'

# the same on OpenAI paths keeps OpenAI's shape
resp=$(post "http://$AV/down/v1/chat/completions" -d '{"messages":[]}')
like "backend down on chat: 502 in OpenAI's shape" "$resp" '^\{"error":\{"message":"backend down is unreachable","type":"server_error","code":"connect_failed","request_id":"[0-9a-f]{32}"\}\}.*502$'
resp=$(post "http://$AV/nowhere/chat/completions" -d '{}')
like "no route on an OpenAI path: OpenAI's 404" "$resp" '^\{"error":\{"message":"no route matches.*"code":"route_not_found".*404$'

# a stream the backend cuts: the last event in the dialect
out=$(curl -s -N --max-time 10 -H 'x-sim-drop-after: 5' -H 'x-request-id: cut-anthropic' "http://$AV/v1/messages" \
      -d '{"model":"m","max_tokens":16,"stream":true,"messages":[{"role":"user","content":"hi"}]}')
like "Anthropic stream cut by the backend: ends with event: error" "$out" \
    'event: error data: \{"type":"error","error":\{"type":"api_error","message":"the backend ended the stream before it was complete"\},"request_id":"cut-anthropic"\}'
out=$(curl -s -N --max-time 10 -H 'x-sim-drop-after: 2' "http://$AV/v1/responses" \
      -d '{"model":"m","stream":true,"input":"hi"}')
like "Responses stream cut by the backend: ends with event: error" "$out" \
    'event: error data: \{"type":"error","code":"backend_closed","message":"the backend ended the stream before it was complete","param":null\}'
out=$(curl -s -N --max-time 10 -H 'x-sim-drop-after: 2' "http://$AV/v1/chat/completions" \
      -d '{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}')
like "chat stream cut by the backend: ends with data: {\"error\": ...}" "$out" \
    'data: \{"error":\{"message":"the backend ended the stream before it was complete","type":"server_error","code":"backend_closed"'
out=$(curl -s -N --http2-prior-knowledge --max-time 10 -H 'x-sim-drop-after: 5' "http://$AV/v1/messages" \
      -d '{"model":"m","max_tokens":16,"stream":true,"messages":[{"role":"user","content":"hi"}]}')
like "the same over HTTP/2" "$out" 'event: error data: \{"type":"error","error":\{"type":"api_error"'
resp=$(post --http2-prior-knowledge "http://$AV/down/v1/messages" -d "$MSG")
like "and the gateway's 502 over HTTP/2" "$resp" '^\{"type":"error","error":\{"type":"api_error","message":"backend down is unreachable"\}.*502$'
stop_pid "$AV_PID"
is "aviary exits 0" "$?" 0
line=$(grep '"request_id":"cut-anthropic"' "$T/kpi.log")
like "the cut Anthropic stream's output is estimated from what was relayed, and says so" "$line" \
    '"output_tokens":[1-9][0-9]*,.*"usage_estimated":true,.*"error":"backend_closed"'
unlike "not message_start's single output token" "$line" '"output_tokens":1,'

done_testing
