# t_policy_worst.sh: the policy library against inputs made to be slow (runs
# of one byte, nested brackets, near misses of each pattern, 1 MiB prompts
# and streams): every call within the default instruction budget, which
# counts pattern work, and its time printed; then hostile user policies (an
# exponential pattern, the old quadratic one, budget errors caught with
# pcall, C calls in loops, gsub and sort within themselves) cut off, and a
# worker that serves the next request while one such policy runs.
. "$(dirname "$0")/lib.sh"

P="$S/lua/policies"
MB=1048576
# The shipped policies run with a time budget no loaded or ASan box reaches
# (the instruction budget stays the default: it is what must hold, the same
# on every machine); each call must still take at most LIMIT_MS.
WORST_MS=${AV_WORST_MS:-5000}
LIMIT_MS=${AV_WORST_LIMIT_MS:-2000}
# The hostile ones run with a time budget of HOSTILE_MS and must be cut
# off well within a second of it.
HOSTILE_MS=200
HOSTILE_LIMIT_MS=1500

# rep STRING BYTES: STRING over and over, BYTES bytes of it
rep() { yes "$1" | tr -d '\n' | head -c "$2"; }

# The prompts: each a function writing a user message's text (JSON-safe).
prompts="run_a run_space run_tab run_digit run_upper run_at run_dot nested_paren nested_square nested_image
    prose ignore_long_word ignore_repeated ignore_all_previous ignore_spaces disregard show_long_word
    image_no_link you_are_now markup hashes instructions_tag send_far local_part at at_b dot_at iban_short
    iban_14 plus_paren digit_dash digits_8 digit_space digit_word"
run_a() { rep a $MB; }
run_space() { rep ' ' $MB; }
run_tab() { rep '\t\n' $MB; } # JSON escapes: a MiB of them is half a MiB of tabs and newlines
run_digit() { rep 1 $MB; }
run_upper() { rep A $MB; }
run_at() { rep @ $MB; }
run_dot() { rep . $MB; }
nested_paren() { rep '(' $((MB / 2)); rep ')' $((MB / 2)); }
nested_square() { rep '[' $((MB / 2)); rep ']' $((MB / 2)); }
nested_image() { rep '![' $MB; }
prose() { rep 'Please summarise the previous chapter for me, with 3 examples and a table. ' $MB; }
ignore_long_word() { printf 'previous instructions: ignore '; rep a $MB; } # the old "%a*%s*%a*": seconds on 20 KB
ignore_repeated() { rep 'ignore ' $MB; printf 'previous instructions'; }
ignore_all_previous() { rep 'ignore all previous ' $MB; }
ignore_spaces() { printf 'ignore'; rep ' ' $MB; printf 'previous'; }
disregard() { rep 'disregard these ' $MB; printf 'rules'; }
show_long_word() { printf 'system prompt: show '; rep a $MB; }
image_no_link() { rep '![x' $MB; printf '://'; }                    # "!%[.-%]%(" tried from each "!["
you_are_now() { rep 'you are now' $MB; }
markup() { rep '<|im_start' $MB; }
hashes() { rep '### ' $MB; }
instructions_tag() { rep '</ instructions ' $MB; }
send_far() { printf 'send '; rep 'a ' $MB; printf 'to http://'; }
local_part() { rep a $MB; printf '@'; }                             # the e-mail pattern tried from each a
at() { rep 'a@' $MB; }
at_b() { rep 'a@b' $MB; }
dot_at() { rep 'a.b@c.' $MB; }
iban_short() { rep 'AB12 ' $MB; }
iban_14() { rep 'AB12CDEFGHIJKL ' $MB; }
plus_paren() { rep '+(1' $MB; }
digit_dash() { rep '1-' $MB; }
digits_8() { rep '12345678,' $MB; }                                 # phone numbers one digit short
digit_space() { rep '1 ' $MB; }
digit_word() { rep 'x1 ' $MB; }

{
    printf '{"cases": [\n'
    sep=""
    for name in $prompts; do
        printf '%s{"name": "%s", "request": {"body": {"model": "m", "messages": [{"role": "user", "content": "' "$sep" "$name"
        $name
        printf '"}]}}, "expect": {"errors": 0}}\n'
        sep=","
    done
    printf ']}\n'
} >"$T/prompts.json"
nprompts=$(printf '%s\n' $prompts | wc -l)

# The streams: events of OpenAI chat deltas.
delta() { printf '{"choices":[{"delta":{"content":"%s"}}]}' "$1"; }
events() { yes "$1" | head -n "$2" | paste -sd, -; } # events EVENT N: N of them, joined by commas
{
    printf '{"params": {"content_denylist": {"terms": ["forbidden", "secret word"], "action": "redact"},\n'
    printf '            "tool_allowlist": {"allow": ["get_weather"]}},\n "cases": [\n'
    printf '{"name": "one 1 MiB event without white space", "stream": [%s, "[DONE]"], "expect": {"errors": 0}},\n' \
        "$(delta "$(rep a $MB)")"
    printf '{"name": "2000 events without white space", "stream": [%s, "[DONE]"], "expect": {"errors": 0}},\n' \
        "$(events "$(delta "$(rep a 512)")" 2000)"
    printf '{"name": "2000 events of near phone numbers", "stream": [%s, "[DONE]"], "expect": {"errors": 0}},\n' \
        "$(events "$(delta "$(rep '12345678,' 512)")" 2000)"
    printf '{"name": "2000 events of @", "stream": [%s, "[DONE]"], "expect": {"errors": 0}},\n' \
        "$(events "$(delta "$(rep 'a@' 512)")" 2000)"
    printf '{"name": "2000 events of near terms", "stream": [%s, "[DONE]"], "expect": {"errors": 0}},\n' \
        "$(events "$(delta "$(rep 'forbidde secret wor' 512)")" 2000)"
    printf '{"name": "2000 tool call events", "stream": [%s, "[DONE]"], "expect": {"errors": 0}}\n' \
        "$(events "{\"choices\":[{\"delta\":{\"tool_calls\":[{\"function\":{\"name\":\"get_weather\",\"arguments\":\"$(rep a 512)\"}}]}}]}" 2000)"
    printf ']}\n'
} >"$T/streams.json"
nstreams=6

# run_cases LABEL WANT POLICY CASES [ARGS...]: aviary policy-test --time over
# CASES; one TAP line per case (its expectations held, and it took at most
# LIMIT_MS), with its time as a comment; WANT cases must have run.
run_cases() {
    label=$1 want=$2 policy=$3 cases=$4
    shift 4
    timeout 600 "$B/src/aviary" policy-test --time --quiet "$@" "$policy" "$cases" >"$T/pt.out" 2>"$T/pt.err"
    rc=$?
    awk '/^#   / { miss = miss substr($0, 5) " "; next }
         /^(not )?ok [0-9]+ - / { st = $1; sub(/^(not )?ok [0-9]+ - /, ""); s[$0] = st; m[$0] = miss; miss = ""; next }
         /^# time / { sub(/^# time /, ""); i = index($0, ": "); n = substr($0, 1, i - 1); split(substr($0, i + 2), a, " ")
                      printf "%s\t%s\t%s\t%s\n", s[n], n, a[1], m[n] }' "$T/pt.out" >"$T/pt.cases"
    seen=0
    while IFS='	' read -r st cname ms miss; do
        seen=$((seen + 1))
        echo "# $label: $cname: $ms ms"
        if [ "$st" = ok ] && [ "${ms%.*}" -lt "$LIMIT_MS" ]; then
            ok "$label: $cname: within the budget"
        else
            not_ok "$label: $cname: within the budget" "$st, $ms ms (limit $LIMIT_MS) $miss" "$(tail -n 3 "$T/pt.err")"
        fi
    done <"$T/pt.cases"
    if [ "$seen $rc" = "$want 0" ]; then
        ok "$label: all $want cases ran"
    else
        not_ok "$label: all $want cases ran" "$seen ran, exit status $rc" "$(tail -n 5 "$T/pt.err")"
    fi
}

for policy in prompt_injection pii_redact agent_limits max_tokens example_tutorial tool_allowlist; do
    run_cases "$policy" "$nprompts" "$P/$policy.lua" "$T/prompts.json" --max-ms "$WORST_MS"
done
for policy in pii_redact content_denylist tool_allowlist; do
    run_cases "$policy" "$nstreams" "$P/$policy.lua" "$T/streams.json" --max-ms "$WORST_MS"
done

# ---- hostile user policies: cut off by the budget, as a Lua loop is ----

mkdir -p "$T/hostile"
hostile() { # hostile NAME FAIL BODY: a policy whose on_request runs BODY (s: the prompt)
    cat >"$T/hostile/$1.lua" <<LUA
-- $1: made to run past its budget inside C calls
return {
  fail = "$2",
  on_request = function(r)
    local b = r:body()
    local s = b and b.messages and b.messages[1].content or ""
    $3
  end,
}
LUA
}
hostile exponential open 'return s:find(("a?"):rep(#s) .. ("a"):rep(#s))'
hostile quadratic closed 'if s:find("ignore%s+%a*%s*%a*%s*previous%s+instructions") then r:deny(400, "no") end'
hostile swallowed open 'while true do pcall(string.find, s, ("a?"):rep(#s) .. ("a"):rep(#s)) end'
hostile xpcall_loop open 'while true do xpcall(function() while true do end end, function(e) return e end) end'
hostile gsub_callback open 's:gsub(".", function(c) return c:rep(20):find(("a?"):rep(20) .. ("a"):rep(20)) end)'
hostile gmatch_cubic open 'for _ in (s:rep(1000)):gmatch("a*a*b") do end'
hostile insert_front open 'local t = {} for i = 1, 100000 do t[i] = i end while true do table.insert(t, 1, 0) end'
hostile sort_big open 'local t = aviary.json_decode("[" .. ("7,3,"):rep(200000) .. "1]") table.sort(t)'
hostile big_strings open 'while true do local x = ("x"):rep(20000000) end'
hostile gsub_recursive open 'local function f(c) return (c:gsub(".", f)) end f(s)'
hostile sort_recursive open 'local t; t = setmetatable({}, {__lt = function() table.sort({t, t}) return false end}) table.sort({t, t})'
hostile plain_find open 'local n = ("a"):rep(500000) .. "b" if (("a"):rep(1000000)):find(n, 1, true) then r:deny(400, "no") end'

prompt_case() { # prompt_case FILE NAME TEXT EXPECT
    printf '{"cases": [{"name": "%s", "request": {"body": {"model": "m", "messages": [{"role": "user", "content": "%s"}]}}, "expect": %s}]}\n' \
        "$2" "$3" "$4" >"$1"
}
prompt_case "$T/a40.json" "40 a" "$(rep a 40)" '{"errors": 1, "deny": false}'
prompt_case "$T/ignore.json" "ignore and 20000 a" "instructions: ignore $(rep a 20000)" \
    '{"errors": 1, "deny": 503, "rule": "policy_error"}'
prompt_case "$T/plain.json" "a plain find LuaJIT takes minutes over" "x" '{"errors": 0, "deny": false}'

LIMIT_MS=$HOSTILE_LIMIT_MS
for name in exponential swallowed xpcall_loop gsub_callback gmatch_cubic insert_front sort_big big_strings; do
    run_cases "hostile $name" 1 "$T/hostile/$name.lua" "$T/a40.json" --max-ms "$HOSTILE_MS"
    like "hostile $name: the error says the budget ran out, with the request id" "$(cat "$T/pt.err")" \
        "policy $name: request policy-test: on_request failed \(fail-open: the request goes on\): .*the policy ran past its (time )?budget"
done
run_cases "hostile quadratic" 1 "$T/hostile/quadratic.lua" "$T/ignore.json" --max-ms "$HOSTILE_MS"
like "hostile quadratic: fail-closed, so refused" "$(cat "$T/pt.err")" \
    'policy quadratic: request policy-test: on_request failed \(fail-closed: the request is refused\): .*ran past its'
run_cases "plain find" 1 "$T/hostile/plain_find.lua" "$T/plain.json" --max-ms "$HOSTILE_MS"
# C functions that call back into Lua, inside each other without end: an
# error (LuaJIT's own gsub ran out of C stack, and the process died)
for name in gsub_recursive sort_recursive; do
    run_cases "hostile $name" 1 "$T/hostile/$name.lua" "$T/a40.json" --max-ms "$HOSTILE_MS"
    like "hostile $name: an error, not a crash" "$(cat "$T/pt.err")" \
        "policy $name: request policy-test: on_request failed \(fail-open: the request goes on\): .*nested 200 deep"
done
# the instruction budget stops what the clock would stop later: deterministic
run_cases "hostile exponential, by instructions" 1 "$T/hostile/exponential.lua" "$T/a40.json" --max-ms 10000
like "hostile exponential: the instruction budget, which counts pattern steps" "$(cat "$T/pt.err")" \
    'the policy ran past its budget of 1000000 instructions'

# ---- one worker: a request whose policy runs away does not hold the next ----

start_sim sim
mkdir -p "$T/pol"
cat >"$T/pol/runaway.lua" <<'LUA'
return {
  fail = "open",
  on_request = function(r)
    if r:header("x-hostile") then
      local s = ("a"):rep(40)
      while true do pcall(string.find, s, ("a?"):rep(40) .. ("a"):rep(40)) end
    end
  end,
}
LUA
write_config "$T/a.json" "$sim_PORT" '"policy": {"dir": "pol", "max_ms": 200},' '' ', "policies": ["runaway"]'
start_aviary "$T/a.json"
URL="http://$AV/v1/chat/completions"
curl -s -o /dev/null --max-time 20 -w '%{http_code} %{time_total}' "$URL" -H 'x-hostile: 1' -H 'x-request-id: hostile-1' \
    -d '{"model":"m","max_tokens":1,"messages":[]}' >"$T/hostile.out" &
hostile_pid=$!
PIDS="$PIDS $hostile_pid"
sleep 0.05
next=$(curl -s -o /dev/null --max-time 20 -w '%{http_code} %{time_total}' "$URL" -d '{"model":"m","max_tokens":1,"messages":[]}')
wait_pid "$hostile_pid" 20
first=$(cat "$T/hostile.out")
echo "# the runaway request: $first; the one behind it: $next (status, seconds)"
like "runaway policy: fail-open, the request goes on" "$first" '^200 '
like "runaway policy: the request behind it on the same worker is served" "$next" '^200 '
check "runaway policy: the request behind it waited at most the budget and some slack" \
    test "$(printf '%s' "$next" | awk '{print int($2 * 1000)}')" -lt "$HOSTILE_LIMIT_MS"
wait_until 5 grep -q 'hostile-1' "$T/aviary.err"
like "runaway policy: logged with the request id and the budget" "$(cat "$T/aviary.err")" \
    'policy runaway: request hostile-1: on_request failed \(fail-open: the request goes on\): .*ran past its'
stop_pid "$AV_PID"

done_testing
