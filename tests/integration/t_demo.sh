# t_demo.sh: the README's demo runs to its end: requests through aviary,
# then a rollout whose candidate turns bad is rolled back by itself and a
# healthy one is promoted, each with its audit transitions and report.
. "$(dirname "$0")/lib.sh"

out=$(cd "$S" && timeout 240 sh tests/demo.sh "$B" 2>&1)
rc=$?
is "the demo exits 0" "$rc" 0
like "demo: a chat completion answered" "$out" '"object":"chat.completion"'
like "demo: the bad candidate rolled back by itself, for a regressed KPI" "$out" \
    '== 5\..* rolled_back .* why: (ttft|error_rate)( regressed: baseline| p95 at the step.s end: [0-9.]+ of [0-9]+ candidate requests| at the step.s end \(Mann-Whitney U)'
like "demo: the audit log shows the steps, then the rollback" "$out" 'step 1 -> step 2: step 1 passed.*-> rolled_back'
like "demo: the healthy candidate promoted" "$out" '== 6\..* promoted .* why: step [0-9] passed: every KPI within its margin for [0-9]+ s; promoted'
like "demo: aviary report per variant" "$out" 'route +variant +requests +errors.*chat +next'

done_testing
