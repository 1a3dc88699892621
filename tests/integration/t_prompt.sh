# t_prompt.sh: prompt variants: the variant's model, system prompt (with
# {{placeholders}} filled, prepended or replacing the client's) and params, in
# the body the backend gets (aviary-sim in echo mode sends it back), for
# OpenAI chat, the Responses API and Anthropic messages; the prompt's hash in
# the KPI log and /routes; errors in the prompt file with file:line.
. "$(dirname "$0")/lib.sh"

start_sim sim --echo
printf 'You are the {{product}} assistant.\nAnswer in {{ language }}.' >"$T/v2.txt"
printf 'Be brief.' >"$T/brief.txt"
cat >"$T/a.json" <<JSON
{
  "listen": [{"address": "127.0.0.1:0"}],
  "workers": 1,
  "admin": {"address": "127.0.0.1:0"},
  "log": {"kpi": "$T/kpi.log", "level": "info"},
  "backends": {"sim": {"url": "http://127.0.0.1:$sim_PORT"}},
  "routes": [
    {"name": "replace", "match": {"headers": {"x-mode": "replace"}},
     "variants": [{"name": "v", "backend": "sim", "model": "m2", "system_prompt": "brief.txt",
                   "system_prompt_mode": "replace"}]},
    {"name": "chat", "match": {"path_prefix": "/"},
     "variants": [{"name": "v2", "backend": "sim", "model": "m2", "system_prompt": "v2.txt",
                   "prompt_vars": {"product": "Aviary", "language": "French"},
                   "params": {"temperature": 0.2, "max_tokens": 64, "metadata": {"prompt": "v2"}}}]}
  ]
}
JSON
start_aviary "$T/a.json"

# echo BODY [PATH] [HEADER]: what the backend got, as JSON (the echo's "body" decoded)
echo_body() {
    curl -s --max-time 5 ${3:+-H "$3"} "http://$AV${2:-/v1/chat/completions}" -d "$1" |
        python3 -c 'import json,sys; print(json.dumps(json.loads(json.load(sys.stdin)["body"]), sort_keys=True))'
}

out=$(echo_body '{"model":"gpt-4o","temperature":1,"messages":[{"role":"system","content":"Be nice."},{"role":"user","content":"hi"}]}')
like "chat: the variant's model" "$out" '"model": "m2"'
like "chat: the system prompt first, placeholders filled, the client's system message kept after it" "$out" \
    '"messages": \[\{"content": "You are the Aviary assistant.\\nAnswer in French.", "role": "system"\}, \{"content": "Be nice.", "role": "system"\}, \{"content": "hi", "role": "user"\}\]'
like "chat: params override the client's (temperature) and are added (max_tokens, metadata)" "$out" \
    '"max_tokens": 64, "messages".*"metadata": \{"prompt": "v2"\}.*"temperature": 0.2'

out=$(echo_body '{"model":"x","messages":[{"role":"developer","content":"old"},{"role":"system","content":"older"},{"role":"user","content":"hi"}]}' \
      /v1/chat/completions 'x-mode: replace')
like "replace mode: the client's system and developer messages are gone" "$out" \
    '"messages": \[\{"content": "Be brief.", "role": "system"\}, \{"content": "hi", "role": "user"\}\]'

out=$(echo_body '{"model":"x","input":"hi","instructions":"Use bullet points."}' /v1/responses)
like "Responses API: the prompt goes first in instructions" "$out" \
    '"instructions": "You are the Aviary assistant.\\nAnswer in French.\\n\\nUse bullet points."'
out=$(echo_body '{"model":"x","input":"hi"}' /v1/responses)
like "Responses API without instructions: the prompt is the instructions" "$out" \
    '"instructions": "You are the Aviary assistant.\\nAnswer in French."'

out=$(echo_body '{"model":"claude","max_tokens":10,"system":"Be terse.","messages":[{"role":"user","content":"hi"}]}' /v1/messages)
like "Anthropic: the prompt goes first in system (a string)" "$out" \
    '"system": "You are the Aviary assistant.\\nAnswer in French.\\n\\nBe terse."'
out=$(echo_body '{"model":"claude","system":[{"type":"text","text":"Be terse."}],"messages":[]}' /v1/messages)
like "Anthropic: system as content blocks: ours is the first block" "$out" \
    '"system": \[\{"text": "You are the Aviary assistant.\\nAnswer in French.", "type": "text"\}, \{"text": "Be terse.", "type": "text"\}\]'
like "Anthropic: params apply too" "$out" '"max_tokens": 64'

hash=$(printf 'You are the Aviary assistant.\nAnswer in French.' | sha256sum | cut -c1-16)
curl -s -o /dev/null -H 'x-request-id: prompted-1' "http://$AV/v1/chat/completions" -d '{"messages":[]}'
check "KPI: prompt_hash is the SHA-256 of the prompt as sent ($hash)" \
    wait_until 5 grep -q "\"request_id\":\"prompted-1\".*\"prompt_hash\":\"$hash\"" "$T/kpi.log"
like "/routes shows the prompt hash" "$(curl -s "http://$ADMIN/routes/chat")" "\"prompt_hash\":\"$hash\""

# a changed prompt file is a new hash after SIGHUP
printf 'You are the {{product}} helper.' >"$T/v2.txt"
kill -HUP "$AV_PID"
wait_until 5 grep -q 'generation 2' "$T/aviary.err"
hash2=$(printf 'You are the Aviary helper.' | sha256sum | cut -c1-16)
like "reload: the new prompt and its hash" "$(curl -s "http://$ADMIN/routes/chat")" "\"prompt_hash\":\"$hash2\""

# errors: an unknown placeholder, a missing file: the reload is refused with the reason
printf 'Hello\n{{nobody}}' >"$T/v2.txt"
kill -HUP "$AV_PID"
wait_until 5 grep -q 'reload failed' "$T/aviary.err"
like "unknown placeholder: file:line and the name" "$(cat "$T/aviary.err")" \
    'routes\[1\]\.variants\[0\]\.system_prompt: .*/v2\.txt:2: \{\{nobody\}\} has no value in the variant.s "prompt_vars"'
rm -f "$T/brief.txt"
out=$("$B/src/aviary" -t -c "$T/a.json" 2>&1)
like "missing prompt file: aviary -t says which" "$out" 'system_prompt: .*/brief\.txt: No such file or directory'

stop_pid "$AV_PID"
is "aviary exits 0" "$?" 0
stop_pid "$sim_PID"
done_testing
