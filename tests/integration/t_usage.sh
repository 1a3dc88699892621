# t_usage.sh: tokens, cost and timing end to end, in every dialect aviary-sim
# speaks: usage read from JSON and from streams; the usage chunk asked for on
# the client's behalf and kept from it (its bytes are those of the stream
# without it); estimates flagged; prices with cached tokens; TTFT to the
# first content token; a stream cut by the client logs what was counted.
. "$(dirname "$0")/lib.sh"

start_sim sim
cat >"$T/a.json" <<JSON
{
  "listen": [{"address": "127.0.0.1:0"}],
  "workers": 1,
  "admin": {"address": "127.0.0.1:0"},
  "log": {"kpi": "$T/kpi.log", "level": "info"},
  "pricing": {"m": {"input": 2, "output": 8, "cached_input": 0.5}},
  "backends": {"sim": {"url": "http://127.0.0.1:$sim_PORT"},
               "plain": {"url": "http://127.0.0.1:$sim_PORT", "stream_usage": false}},
  "routes": [{"name": "plain", "match": {"headers": {"x-route": "plain"}},
              "variants": [{"name": "v", "backend": "plain", "model": "m"}]},
             {"name": "all", "match": {"path_prefix": "/v1/"},
              "variants": [{"name": "v", "backend": "sim", "model": "m"}]}]
}
JSON
start_aviary "$T/a.json"
# a line is read once it is whole (it ends with its closing brace): the writer may be mid-write
kpi() { wait_until 5 grep -q "\"request_id\":\"$1\".*}\$" "$T/kpi.log"; grep "\"request_id\":\"$1\".*}\$" "$T/kpi.log"; }
field() { printf '%s' "$1" | sed -n "s/.*\"$2\":\\([^,}]*\\).*/\\1/p"; }

# chat, streamed, the client did not ask for usage: Aviary asks and keeps the chunk
SBODY='{"model":"x","stream":true,"messages":[{"role":"user","content":"hello there"}]}'
curl -s -N -H 'x-request-id: s1' -H 'x-sim-tokens: 5' "http://$AV/v1/chat/completions" -d "$SBODY" >"$T/via"
curl -s -N -H 'x-sim-tokens: 5' "http://127.0.0.1:$sim_PORT/v1/chat/completions" \
    -d '{"model":"m","stream":true,"messages":[{"role":"user","content":"hello there"}]}' >"$T/direct"
norm() { sed -E 's/chatcmpl-sim-[0-9]+/ID/g; s/"created":[0-9]+/"created":T/g' "$1"; }
is "stream without include_usage: the client's bytes are the stream without the usage chunk" \
    "$(norm "$T/via" | md5sum)" "$(norm "$T/direct" | md5sum)"
unlike "... and no usage chunk reached it" "$(cat "$T/via")" '"usage"'
line=$(kpi s1)
like "KPI: the usage Aviary asked for is exact" "$line" '"output_tokens":5,.*"usage_estimated":false'
is "KPI: input tokens as the sim counted them (\"user\" 1 + \"hello there\" 3 + 7 for the chat format)" \
    "$(field "$line" input_tokens)" 11

# the client asked for usage itself: it gets the chunk
out=$(curl -s -N -H 'x-request-id: s2' -H 'x-sim-tokens: 3' "http://$AV/v1/chat/completions" \
      -d '{"model":"x","stream":true,"stream_options":{"include_usage":true},"messages":[]}')
like "include_usage asked by the client: the usage chunk is there" "$out" '"choices":\[\],"usage":\{"prompt_tokens"'
like "KPI: counted once" "$(kpi s2)" '"output_tokens":3,.*"usage_estimated":false'

# the client's own stream_options, without include_usage or with it false: kept beside
# ours (this once crashed Aviary), and the client still gets no usage chunk
out=$(curl -s -N -H 'x-request-id: s5' -H 'x-sim-tokens: 3' "http://$AV/v1/chat/completions" \
      -d '{"model":"x","stream":true,"stream_options":{"continuous_usage_stats":false},"messages":[]}')
like "stream_options of the client's own: the stream arrives" "$out" 'data: \[DONE\]'
unlike "... without a usage chunk" "$out" '"usage"'
like "KPI: exact usage for it" "$(kpi s5)" '"output_tokens":3,.*"usage_estimated":false'
echo_body=$(curl -s -H 'x-sim-echo: 1' "http://$AV/v1/chat/completions" \
      -d '{"model":"x","stream":true,"stream_options":{"include_usage":false,"continuous_usage_stats":false},"messages":[]}')
like "the backend gets include_usage true with the client's other options" "$echo_body" \
    'stream_options\\":\{\\"include_usage\\":true,\\"continuous_usage_stats\\":false\}'

# a backend that must not get stream_options: nothing added, usage estimated and flagged
curl -s -N -o /dev/null -H 'x-route: plain' -H 'x-request-id: s3' -H 'x-sim-tokens: 8' "http://$AV/v1/chat/completions" -d "$SBODY"
like "stream_usage false: estimated from the text, and flagged" "$(kpi s3)" '"output_tokens":[0-9]+,.*"usage_estimated":true'
curl -s -o /dev/null -H 'x-request-id: s4' -H 'x-sim-no-usage: 1' "http://$AV/v1/chat/completions" -d '{"messages":[]}'
like "a JSON answer without usage: estimated and flagged" "$(kpi s4)" '"usage_estimated":true'

# Responses API and Anthropic, streamed and whole
for mode in json stream; do
    s=$([ $mode = stream ] && echo ',"stream":true' || echo '')
    curl -s -N -o /dev/null -H "x-request-id: r-$mode" -H 'x-sim-tokens: 6' "http://$AV/v1/responses" \
        -d "{\"model\":\"x\",\"input\":\"hello there\"$s}"
    like "Responses ($mode): tokens and finish" "$(kpi "r-$mode")" \
        '"input_tokens":4,"output_tokens":6,.*"usage_estimated":false,.*"finish_reason":"completed"'
    curl -s -N -o /dev/null -H "x-request-id: a-$mode" -H 'x-sim-tokens: 7' -H 'x-sim-cached-tokens: 3' \
        "http://$AV/v1/messages" -d "{\"model\":\"x\",\"max_tokens\":100,\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]$s}"
    like "Anthropic ($mode): cache reads counted in the input, output as the last report says" "$(kpi "a-$mode")" \
        '"input_tokens":9,"output_tokens":7,"cached_input_tokens":3,.*"finish_reason":"end_turn"'
done

# cost: 2 USD/M input, 0.5 cached, 8 output; 11 input tokens of which 4 cached, 5 output
curl -s -o /dev/null -H 'x-request-id: c1' -H 'x-sim-tokens: 5' -H 'x-sim-cached-tokens: 4' \
    "http://$AV/v1/chat/completions" -d '{"messages":[{"role":"user","content":"hello there"}]}'
line=$(kpi c1)
is "cost: (7 x 2 + 4 x 0.5 + 5 x 8) / 10^6 USD" "$(field "$line" cost_usd)" 0.000056000

# TTFT is to the first content token, not the head or the role chunk
curl -s -N -o /dev/null -H 'x-request-id: t1' -H 'x-sim-ttft-ms: 300' -H 'x-sim-tokens: 21' -H 'x-sim-tps: 50' \
    "http://$AV/v1/chat/completions" -d "$SBODY"
line=$(kpi t1)
fb=$(field "$line" first_byte_ms); tt=$(field "$line" ttft_ms); gap=$(field "$line" inter_token_p50_ms)
check "TTFT ${tt} ms after the 300 ms wait; first byte at ${fb} ms" \
    awk -v t="$tt" -v f="$fb" 'BEGIN { exit !(t >= 300 && f < 100) }'
check "inter-token p50 ${gap} ms at 50 tokens/s (20 ms; timers and the machine add jitter)" \
    awk -v g="$gap" 'BEGIN { exit !(g >= 14 && g <= 32) }'
like "output tokens per second is logged" "$line" '"output_tokens_per_s":[0-9]+\.[0-9]{3}'

# a stream the client cuts: what was counted up to then
curl -s -N --max-time 1 -o /dev/null -H 'x-request-id: cut' -H 'x-sim-tokens: 100' -H 'x-sim-tps: 20' \
    "http://$AV/v1/chat/completions" -d "$SBODY"
line=$(kpi cut)
like "cut by the client: logged as client_abort with the tokens seen, estimated" "$line" \
    '"output_tokens":[1-9][0-9]*,.*"usage_estimated":true,.*"error":"client_abort"'

stop_pid "$AV_PID"
is "aviary exits 0" "$?" 0
stop_pid "$sim_PID"
done_testing
