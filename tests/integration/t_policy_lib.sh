# t_policy_lib.sh: the policy library (lua/policies) against its cases
# (lua/tests) with aviary policy-test, which must also fail when a case's
# expectation does not hold, and refuse bad input with a reason.
. "$(dirname "$0")/lib.sh"

P="$S/lua/policies"
for cases in "$S"/lua/tests/*.json; do
    name=$(basename "$cases" .json)
    policy=${name%%.*} # NAME.json and NAME.VARIANT.json run lua/policies/NAME.lua
    out=$("$B/src/aviary" policy-test --quiet "$P/$policy.lua" "$cases" 2>&1)
    rc=$?
    n=$(printf '%s\n' "$out" | grep -c '^ok ')
    if [ "$rc" -eq 0 ] && printf '%s\n' "$out" | grep -q "^$n passed, 0 failed$" && [ "$n" -gt 0 ]; then
        ok "$policy: $n cases of $name.json hold"
    else
        not_ok "$policy: the cases of $name.json hold" "$(printf '%s\n' "$out" | grep -v '^ok ' | head -20)"
    fi
done
for f in "$P"/*.lua; do
    base=$(basename "$f" .lua)
    check "$base has cases in lua/tests" test -f "$S/lua/tests/$base.json"
done

# a wrong expectation fails the run, and says what did not hold
sed 's/"deny": 400, "rule": "invalid"/"deny": 401, "rule": "invalid"/' "$S/lua/tests/max_tokens.json" >"$T/wrong.json"
out=$("$B/src/aviary" policy-test --quiet "$P/max_tokens.lua" "$T/wrong.json" 2>&1)
rc=$?
is "a case that does not hold: exit status 1" "$rc" 1
like "a case that does not hold: the difference shown" "$out" '#   deny: got 400, want 401 not ok 6 - not a number: refused 5 passed, 1 failed'

# bad input: a reason and exit status 2
out=$("$B/src/aviary" policy-test "$P/max_tokens.lua" "$T/none.json" 2>&1)
rc=$?
is "a missing cases file: exit status 2" "$rc" 2
like "a missing cases file: named" "$out" 'none.json: cannot read it'
printf 'return { fail = "open", on_request = function(r) r:deny(99, "x") end }\n' >"$T/bad.lua"
printf '{"cases": [{"name": "c", "request": {"body": {"model": "m"}}, "expect": {"errors": 1}}]}' >"$T/c.json"
out=$("$B/src/aviary" policy-test --quiet "$T/bad.lua" "$T/c.json" 2>&1)
like "a policy error is reported and counted" "$out" 'r:deny\(\): the status must be 400-599, not 99.*ok 1 - c'
printf 'return { fail = "open", on_request = function(r) end }\n' >"$T/other.lua"
mkdir -p "$T/sub" && cp "$T/other.lua" "$T/sub/other.lua"
out=$("$B/src/aviary" policy-test "$T/bad.lua" "$T/sub/other.lua" "$T/c.json" 2>&1)
like "policies from two directories: refused" "$out" 'must be in one directory'
out=$("$B/src/aviary" policy-test --bench 20 --quiet "$P/max_tokens.lua" "$P/pii_redact.lua" "$S/tests/bench/policy_chain.json" 2>&1)
like "--bench: time per request and per event" "$out" '# bench 4 KB prompt.*us per request \(20 runs\).*on_chunk [0-9]+ ns per event'

done_testing
