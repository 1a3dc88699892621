# t_policy.sh: Lua policies end to end: deny in the route's dialect (OpenAI
# and Anthropic), body rewrite, variant choice, response headers, on_complete
# with usage and counters in /metrics, verdicts in the KPI log; the sandbox
# refusing every escape tried; an infinite loop and a memory bomb stopped
# while the worker keeps serving; calls outside their phase; hot reload on a
# file change (also while h2load runs, with no failed request), a broken
# file or a failing selftest keeping the old set; config errors with
# file:line:column.
. "$(dirname "$0")/lib.sh"

start_sim sim --echo
mkdir -p "$T/pol"
block_policy() { # block_policy MESSAGE: writes the block policy, denying with MESSAGE
    cat >"$T/pol/block.lua.tmp" <<LUA
-- block: denies prompts with "forbidden", defaults max_tokens, picks a variant on request
local message = "$1"
local function has_word(body, word)
  for _, m in ipairs(body.messages or {}) do
    if type(m.content) == "string" and m.content:find(word, 1, true) then return true end
  end
  return false
end
return {
  fail = "closed",
  on_request = function(r)
    local b = r:body()
    if b == nil then return end
    r.ctx.seen = true
    if has_word(b, "forbidden") then return r:deny(403, message, "denylist") end
    if b.max_tokens == nil then
      b.max_tokens = 77
      r:set_body(b)
      r:audit("max_tokens_default")
    end
    local pick = r:header("x-pick")
    if pick then r:set_variant(pick) end
  end,
  on_response = function(r)
    r:set_response_header("x-policy", "seen " .. tostring(r.ctx.seen))
  end,
  on_complete = function(r)
    local u = r:usage()
    aviary.count("completed")
    if r:header("x-late-deny") then r:deny(400, "too late") end
  end,
  selftest = function()
    assert(aviary.json_encode(aviary.array()) == "[]")
  end,
}
LUA
    mv "$T/pol/block.lua.tmp" "$T/pol/block.lua"
}
block_policy "this prompt is not allowed"

cat >"$T/pol/runaway.lua" <<'LUA'
-- runaway: an infinite loop (fail-open) and a memory bomb (fail-closed, below)
return {
  fail = "open",
  on_request = function(r)
    if r:header("x-loop") then while true do end end
  end,
}
LUA
cat >"$T/pol/bomb.lua" <<'LUA'
return {
  fail = "closed",
  on_request = function(r)
    if r:header("x-bomb") then
      local t = {}
      for i = 1, 100 do t[i] = string.rep("x", 1024 * 1024) .. i end
    end
  end,
}
LUA
cat >"$T/pol/escape.lua" <<'LUA'
-- escape: each way out of the sandbox, tried on request; the deny says what happened
local tries = {
  io = function() return io.open("/etc/passwd") end,
  os = function() return os.execute("true") end,
  require = function() return require("ffi") end,
  load = function() return load("return 1") end,
  loadstring = function() return loadstring("return 1") end,
  dofile = function() return dofile("/etc/passwd") end,
  dump = function() return string.dump(function() end) end,
  rawset = function(r) return rawset(aviary, "log", nil) end,
  setfenv = function() return setfenv(1, {}) end,
  getfenv = function() return getfenv(1) end,
  G = function() _G.x = 1 end,
  debug = function() return debug.getinfo(1) end,
  jit = function() return jit.off() end,
  collectgarbage = function() return collectgarbage("count") end,
  strmeta = function() return getmetatable("").__index end,
  aviary_write = function() aviary.log = nil end,
  string_write = function() string.upper = nil end,
  setmetatable = function() return setmetatable(aviary, {}) end,
  global = function() x = 1 end,
  r_write = function(r) r.id = "mine" end,
}
return {
  fail = "open",
  on_request = function(r)
    local name = r:header("x-escape")
    if not name then return end
    local ok, err = pcall(tries[name], r)
    r:deny(400, ok and "ESCAPED" or ("refused: " .. tostring(err)), "escape")
  end,
}
LUA

cat >"$T/a.json" <<JSON
{
  "listen": [{"address": "127.0.0.1:0"}],
  "workers": 2,
  "admin": {"address": "127.0.0.1:0"},
  "log": {"kpi": "$T/kpi.log", "audit": "$T/audit.log", "level": "info"},
  "policy": {"dir": "pol", "memory_mb": 32, "max_ms": 200},
  "backends": {"sim": {"url": "http://127.0.0.1:$sim_PORT"}},
  "routes": [
    {"name": "claude", "match": {"path_prefix": "/v1/messages"}, "policies": ["block"],
     "variants": [{"name": "a", "backend": "sim"}]},
    {"name": "chat", "match": {"path_prefix": "/v1/"}, "policies": ["block", "runaway", "bomb", "escape"],
     "variants": [{"name": "a", "backend": "sim", "weight": 1}, {"name": "b", "backend": "sim", "weight": 0}]}
  ]
}
JSON
start_aviary "$T/a.json"
URL="http://$AV/v1/chat/completions"

out=$(curl -s -i --max-time 5 "$URL" -H 'x-request-id: deny-1' -d '{"model":"m","messages":[{"role":"user","content":"a forbidden thing"}]}')
like "deny: the policy's status" "$out" '^HTTP/1.1 403'
like "deny: an OpenAI-style error with the policy's message and rule" "$out" \
    '\{"error":\{"message":"this prompt is not allowed","type":"invalid_request_error","code":"denylist","request_id":"deny-1"\}\}'
out=$(curl -s -i --max-time 5 "http://$AV/v1/messages" -d '{"model":"c","max_tokens":5,"messages":[{"role":"user","content":"forbidden"}]}')
like "deny on an Anthropic route: Anthropic's error shape" "$out" \
    '\{"type":"error","error":\{"type":"permission_error","message":"this prompt is not allowed"\}'

out=$(curl -s -i --max-time 5 "$URL" -H 'x-request-id: rw-1' -d '{"model":"m","messages":[{"role":"user","content":"hello"}]}')
like "rewrite: the backend got the body the policy wrote back" "$out" '\\"max_tokens\\":77'
like "on_response: a header the policy set, with state from on_request (r.ctx)" "$out" 'x-policy: seen true'
out=$(curl -s -i --max-time 5 "$URL" -H 'x-pick: b' -d '{"model":"m","max_tokens":3,"messages":[]}')
like "r:set_variant(): the variant the policy chose (weight 0)" "$out" 'x-aviary-variant: b'

lines() { [ "$(wc -l <"$T/kpi.log" 2>/dev/null || echo 0)" -ge "$1" ]; }
wait_until 5 lines 4
kpi=$(cat "$T/kpi.log")
deep=$(python3 -c 'print("{\"model\":\"m\",\"messages\":[],\"x\":" + "[" * 70 + "1" + "]" * 70 + "}")')
resp=$(curl -s --max-time 5 -w '\n%{http_code}' "$URL" -d "$deep")
like "valid JSON nested past what policies are given: refused, not passed on unchecked (r:body() was nil)" "$resp" \
    '"code":"body_unreadable".*400$'
like "KPI: the deny as a verdict" "$kpi" '"request_id":"deny-1".*"policy":\[\{"policy":"block","action":"deny","rule":"denylist"\}\],"policy_errors":0,"error":"policy_denied"'
like "KPI: the rewrite as a verdict" "$kpi" '"request_id":"rw-1".*"policy":\[\{"policy":"block","action":"rewrite","rule":"max_tokens_default"\}\]'
like "KPI: a policy's variant choice is assign policy" "$kpi" '"variant":"b","assign":"policy"'

# the sandbox: every way out refused
for e in io os require load loadstring dofile dump rawset setfenv getfenv G debug jit collectgarbage strmeta \
    aviary_write string_write setmetatable global r_write; do
    out=$(curl -s --max-time 5 "$URL" -H "x-escape: $e" -d '{"model":"m","max_tokens":1,"messages":[]}')
    case "$out" in
    *refused:*) ok "sandbox: $e refused" ;;
    *) not_ok "sandbox: $e refused" "got: $out" ;;
    esac
done
out=$(curl -s --max-time 5 "$URL" -H "x-escape: global" -d '{"model":"m","max_tokens":1,"messages":[]}')
like "sandbox: the error names the global" "$out" "assignment to undeclared global 'x'"

# an infinite loop: stopped by the budget; fail-open, so the request goes on
t0=$(date +%s%N)
code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 "$URL" -H 'x-loop: 1' -d '{"model":"m","max_tokens":1,"messages":[]}')
t1=$(date +%s%N)
is "infinite loop: stopped, and fail-open lets the request through" "$code" 200
check "infinite loop: within the time budget (200 ms) and some slack" test $(((t1 - t0) / 1000000)) -lt 3000
like "infinite loop: logged with the policy and the budget" "$(cat "$T/aviary.err")" \
    'policy runaway: request [0-9a-f]+: on_request failed \(fail-open: the request goes on\): the policy ran past its'
# a memory bomb: the VM's cap; fail-closed, so the request is refused
out=$(curl -s -i --max-time 10 "$URL" -H 'x-bomb: 1' -d '{"model":"m","max_tokens":1,"messages":[]}')
like "memory bomb: fail-closed refuses with 503 policy_error" "$out" '^HTTP/1.1 503.*"code":"policy_error"'
like "memory bomb: logged as out of memory" "$(cat "$T/aviary.err")" 'policy bomb: .*ran out of memory'
for i in 1 2 3 4; do
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$URL" -d '{"model":"m","max_tokens":1,"messages":[]}')
    [ "$code" = 200 ] || break
done
is "after the loop and the bomb both workers serve" "$code" 200

# a call outside its phase
curl -s -o /dev/null --max-time 5 "$URL" -H 'x-late-deny: 1' -H 'x-request-id: late-1' -d '{"model":"m","max_tokens":1,"messages":[]}'
wait_until 5 grep -q '"request_id":"late-1"' "$T/kpi.log"
like "r:deny() in on_complete: refused, named" "$(cat "$T/aviary.err")" 'r:deny\(\) is not allowed in on_complete'
like "the phase error is counted in the KPI line" "$(grep '"request_id":"late-1"' "$T/kpi.log")" '"action":"error","rule":"on_complete"\}\],"policy_errors":1'

m=$(curl -s --max-time 5 "http://$ADMIN/metrics")
like "metrics: aviary.count() summed over workers" "$m" 'aviary_policy_events_total\{policy="block",name="completed"\} [1-9]'
like "metrics: policy errors counted" "$m" 'aviary_policy_events_total\{policy="runaway",name="errors"\} 1'
like "metrics: denies counted" "$m" 'aviary_policy_events_total\{policy="block",name="denies"\} [1-9]'
denies=$(grep -c '"error":"policy_denied"' "$T/kpi.log")
like "metrics: each deny is a request of its variant, outcome blocked (as many as the KPI log's)" "$m" \
    "aviary_requests_total\\{route=\"chat\",variant=\"a\",outcome=\"blocked\"\\} $(grep '"route":"chat"' "$T/kpi.log" | grep -c '"error":"policy_denied"')"
check "the KPI log has denies to count" test "$denies" -gt 0
printf '%s\n' "$m" >"$T/metrics.txt"
check "metrics: promtool accepts them" sh -c "promtool check metrics <'$T/metrics.txt' >/dev/null 2>&1"

# hot reload: a changed file is picked up without a signal
deny_message() { curl -s --max-time 5 "$URL" -d '{"model":"m","messages":[{"role":"user","content":"forbidden"}]}'; }
block_policy "changed on disk"
check "hot reload: the edited policy answers (inotify)" wait_until 5 sh -c "curl -s --max-time 5 '$URL' -d '{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"forbidden\"}]}' | grep -q 'changed on disk'"

# a syntax error: the old set stays, the error has file:line
printf 'return {\n  fail = "closed",\n  on_request = function(r) if then end,\n}\n' >"$T/pol/block.lua.tmp"
mv "$T/pol/block.lua.tmp" "$T/pol/block.lua"
check "broken file: the reload fails with file:line" wait_until 5 grep -q "pol/block.lua:3:" "$T/aviary.err"
like "broken file: the old set still answers" "$(deny_message)" 'changed on disk'
# a failing selftest: the same
block_policy "selftest version"
sed -i 's/assert(aviary.json_encode(aviary.array()) == "\[\]")/assert(1 == 2, "the selftest says no")/' "$T/pol/block.lua"
check "failing selftest: the reload fails and says why" wait_until 5 grep -q "selftest failed: .*the selftest says no" "$T/aviary.err"
like "failing selftest: the old set still answers" "$(deny_message)" 'changed on disk'

# reload while h2load runs: no request fails
block_policy "under load"
printf '{"model":"m","max_tokens":1,"messages":[{"role":"user","content":"hi"}]}' >"$T/body.json"
h2load -n 3000 -c 4 -m 8 -H 'content-type: application/json' -H 'x-sim-latency-ms: 20' -d "$T/body.json" \
    "http://$AV/v1/chat/completions" \
    >"$T/h2load.out" 2>&1 &
H2_PID=$!
PIDS="$PIDS $H2_PID"
for i in 1 2 3; do sleep 0.3; block_policy "under load $i"; done
wait_pid "$H2_PID" 60
h=$(cat "$T/h2load.out")
audit=$(cat "$T/audit.log")
like "audit: a deny, with policy, rule, route, variant and request id" "$audit" \
    '"type":"policy","policy":"block","action":"deny","rule":"denylist","route":"chat","variant":"a","request_id":"deny-1","generation":1\}'
like "audit: a rewrite" "$audit" '"type":"policy","policy":"block","action":"rewrite","rule":"max_tokens_default","route":"chat","variant":"a","request_id":"rw-1"'
like "audit: a reload by a policy file" "$audit" '"type":"reload","trigger":"policy files","result":"loaded","generation":2,"error":null'
like "audit: a failed reload, with the reason" "$audit" '"type":"reload","trigger":"policy files","result":"kept","generation":2,"error":"[^"]*pol/block.lua:3: unexpected symbol'
like "reload under h2load: every request answered 2xx" "$h" 'status codes: 3000 2xx, 0 3xx, 0 4xx, 0 5xx'
check "reload under h2load: the last version answers" wait_until 5 sh -c "curl -s --max-time 5 '$URL' -d '{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"forbidden\"}]}' | grep -q 'under load 3'"
check "reload under h2load: reloads happened" grep -q "policy files in .* changed: reloading" "$T/aviary.err"

stop_pid "$AV_PID"

# streams: on_chunk rewrites each event's text, drops one, and stops the stream on request
start_sim gen
cat >"$T/pol/chunky.lua" <<'LUA'
return {
  fail = "open",
  on_chunk = function(r, ev)
    if ev.text and ev.text:find("e", 1, true) then
      ev.text = ev.text:gsub("e", "3")
      r:audit("no_e")
    end
    local stop_at = tonumber(r:header("x-stop-at") or "")
    if stop_at and ev.index == stop_at then r:stop("the answer broke a rule", "test_stop") end
  end,
}
LUA
cat >"$T/s.json" <<JSON
{
  "listen": [{"address": "127.0.0.1:0"}], "workers": 1, "admin": {"address": "127.0.0.1:0"},
  "log": {"kpi": "$T/kpi2.log", "level": "info"}, "policy": {"dir": "pol"},
  "backends": {"sim": {"url": "http://127.0.0.1:$gen_PORT"}},
  "routes": [{"name": "chat", "match": {"path_prefix": "/v1/"}, "policies": ["chunky"],
              "variants": [{"name": "a", "backend": "sim"}]}]
}
JSON
start_aviary "$T/s.json"
# sse.py: reads an SSE stream as a client library does; prints the texts joined, the
# last two events, and "ok" when every data line but [DONE] is JSON
cat >"$T/sse.py" <<'PY'
import json, sys
events, cur = [], {"event": None, "data": []}
for line in sys.stdin.read().split("\n"):
    line = line.rstrip("\r")
    if line == "":
        if cur["data"]:
            events.append((cur["event"], "\n".join(cur["data"])))
        cur = {"event": None, "data": []}
    elif line.startswith("event:"):
        cur["event"] = line[6:].strip()
    elif line.startswith("data:"):
        cur["data"].append(line[5:].lstrip(" "))
text, ok = "", True
for name, data in events:
    if data == "[DONE]":
        continue
    try:
        j = json.loads(data)
    except ValueError:
        ok = False
        continue
    for c in j.get("choices") or []:
        text += (c.get("delta") or {}).get("content") or ""
    if j.get("type") == "content_block_delta":
        text += j["delta"].get("text", "")
print("TEXT", text)
print("LAST2", [e for e in events[-2:]])
print("JSONOK" if ok else "BADJSON", len(events))
PY
out=$(curl -sN --max-time 10 "http://$AV/v1/chat/completions" -H 'x-sim-tokens: 40' \
      -d '{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}' | python3 "$T/sse.py")
like "on_chunk: every event still JSON after the rewrites" "$out" 'JSONOK'
like "on_chunk: the text rewritten (e to 3)" "$out" 'TEXT .*3'
unlike "on_chunk: no e left in the text the client got" "$(printf '%s\n' "$out" | grep '^TEXT')" 'e'
out=$(curl -sN --max-time 10 "http://$AV/v1/chat/completions" -H 'x-sim-tokens: 40' -H 'x-stop-at: 5' \
      -H 'x-request-id: stop-1' -d '{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}' |
      python3 "$T/sse.py")
like "r:stop() on OpenAI: an error event, then [DONE], all parseable" "$out" \
    "LAST2 \[\(None, '\{\"error\":\{\"message\":\"the answer broke a rule\",\"type\":\"policy_violation\",\"code\":\"test_stop\".*\(None, '\[DONE\]'\)\] JSONOK 6"
out=$(curl -sN --max-time 10 "http://$AV/v1/messages" -H 'x-sim-tokens: 40' -H 'x-stop-at: 4' \
      -d '{"model":"m","stream":true,"max_tokens":99,"messages":[{"role":"user","content":"hi"}]}' | python3 "$T/sse.py")
like "r:stop() on Anthropic: the stream ends with an error event" "$out" \
    "\('error', '\{\"type\":\"error\",\"error\":\{\"type\":\"permission_error\",\"message\":\"the answer broke a rule\"\}\}'\)\] JSONOK 4"
wait_until 5 grep -q '"request_id":"stop-1"' "$T/kpi2.log"
like "KPI: a stopped stream: its verdicts and error" "$(grep '"request_id":"stop-1"' "$T/kpi2.log")" \
    '"policy":\[\{"policy":"chunky","action":"rewrite","rule":"no_e"\},\{"policy":"chunky","action":"stop","rule":"test_stop"\}\],"policy_errors":0,"error":"policy_stopped"'
code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://$AV/v1/chat/completions" -d '{"model":"m","messages":[]}')
is "after a stopped stream the next request is served" "$code" 200
stops=$(grep -c '"error":"policy_stopped"' "$T/kpi2.log")
like "metrics: stopped streams are blocked, not ok" "$(curl -s --max-time 5 "http://$ADMIN/metrics")" \
    "aviary_requests_total\\{route=\"[a-z]*\",variant=\"[a-z]*\",outcome=\"blocked\"\\} $stops"
stop_pid "$AV_PID"

# config errors: a missing file and a policy without fail=, each at its place in the config
sed 's/"policies": \["block"\]/"policies": ["nosuch"]/' "$T/a.json" >"$T/b.json"
out=$("$B/src/aviary" -t -c "$T/b.json" 2>&1)
like "a missing policy file: the config's line:column and the file" "$out" 'b.json:[0-9]+:[0-9]+: routes\[0\].policies\[0\]: .*pol/nosuch.lua: No such file'
printf 'return { on_request = function(r) end }\n' >"$T/pol/nofail.lua"
sed 's/"policies": \["block"\]/"policies": ["nofail"]/' "$T/a.json" >"$T/c.json"
out=$("$B/src/aviary" -t -c "$T/c.json" 2>&1)
like "a policy without fail=: refused with the reason" "$out" 'routes\[0\].policies\[0\]: .*nofail.lua:1: the policy must say fail = "open" or fail = "closed"'
printf 'return { fail = "open", on_reqest = function(r) end }\n' >"$T/pol/typo.lua"
sed 's/"policies": \["block"\]/"policies": ["typo"]/' "$T/a.json" >"$T/d.json"
out=$("$B/src/aviary" -t -c "$T/d.json" 2>&1)
like "a misspelt phase: refused by name" "$out" 'unknown field "on_reqest"'

done_testing
