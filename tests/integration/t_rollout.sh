# t_rollout.sh: the rollout controller end to end: a candidate answering 30 %
# errors is rolled back by itself under load (weights, state, audit line with
# the numbers, state file); the rollback survives a restart; a healthy
# candidate steps through an approval and is promoted; admin actions want
# the token; the metrics pass promtool; a reload keeps a rollout while its
# candidate is the same, and a candidate whose prompt changed is a new rollout.
. "$(dirname "$0")/lib.sh"

start_sim good
start_sim bad --error-rate 0.3
start_sim hook --log "$T/hook.log"
export AVIARY_T_TOKEN=rollout-secret
cat >"$T/a.json" <<JSON
{
  "listen": [{"address": "127.0.0.1:0"}],
  "workers": 2,
  "admin": {"address": "127.0.0.1:0", "token_env": "AVIARY_T_TOKEN"},
  "log": {"kpi": "$T/kpi.log", "audit": "$T/audit.log", "level": "info"},
  "rollout_state_file": "$T/state.json",
  "rollout_webhook": "http://127.0.0.1:$hook_PORT/hooks/rollout",
  "backends": {"good": {"url": "http://127.0.0.1:$good_PORT"}, "bad": {"url": "http://127.0.0.1:$bad_PORT"}},
  "routes": [
    {"name": "healthy", "match": {"headers": {"x-route": "healthy"}},
     "variants": [{"name": "stable", "backend": "good", "weight": 100}, {"name": "next", "backend": "good", "weight": 0}],
     "rollout": {"baseline": "stable", "candidate": "next", "steps": [30, 60, 100], "approve_before": [2],
                 "min_step_s": 1, "min_requests": 20, "min_events": 1,
                 "kpis": {"error_rate": {"max_increase": 0.02}, "latency": {"max_ratio": 3}}}},
    {"name": "chat", "match": {"path_prefix": "/v1/"},
     "variants": [{"name": "stable", "backend": "good", "weight": 100}, {"name": "next", "backend": "bad", "weight": 0}],
     "rollout": {"baseline": "stable", "candidate": "next", "steps": [20, 50, 100],
                 "min_step_s": 1, "min_requests": 20, "min_events": 1,
                 "kpis": {"error_rate": {"max_increase": 0.02}}}}
  ]
}
JSON
start_aviary "$T/a.json"
AUTH="Authorization: Bearer rollout-secret"
state() { curl -s --max-time 5 "http://$ADMIN/rollouts/$1" | sed -n 's/.*"state":"\([a-z_]*\)".*/\1/p'; }
is "a rollout starts at its first step" "$(state chat)" step
like "GET /rollouts lists both" "$(curl -s --max-time 5 "http://$ADMIN/rollouts")" '"route":"healthy".*"route":"chat"'
like "the candidate gets the first step's share" "$(curl -s --max-time 5 "http://$ADMIN/routes")" \
    '"name":"next","baseline":false,"backend":"bad","model":null,"prompt_hash":null,"weight":20,'

printf '{"model":"m","messages":[{"role":"user","content":"hi"}]}' >"$T/body.json"
load() { # load ROUTE_HEADER N: N requests, 4 at a time
    h2load -n "$2" -c 2 -m 2 -H 'content-type: application/json' -H "x-route: $1" -d "$T/body.json" \
        "http://$AV/v1/chat/completions" >/dev/null 2>&1
}
rolled_back() { load none 300; [ "$(state chat)" = rolled_back ]; }
check "30 % errors at a 20 % step: rolled back under load" wait_until 30 rolled_back
like "the candidate's weight is 0 at once" "$(curl -s --max-time 5 "http://$ADMIN/routes")" \
    '"name":"next","baseline":false,"backend":"bad","model":null,"prompt_hash":null,"weight":0,'
out=$(curl -s --max-time 5 "http://$ADMIN/rollouts/chat")
like "GET /rollouts/NAME: the KPI's numbers and verdict" "$out" \
    '"kpi":"error_rate","verdict":"fail","baseline":0,"candidate":0\.[0-9]+,"interval_lo":[-0-9.e]+,"interval_hi":0\.[0-9]+,"samples":\{"baseline":[0-9]+,"candidate":[0-9]+\},"evidence":[0-9.e+]+,"threshold":20'
like "the reason names the KPI and the numbers" "$out" '"reason":"error_rate regressed: baseline 0, candidate 0\.[0-9]+'
wait_until 5 grep -q '"to":"rolled_back"' "$T/audit.log"
like "audit: the transition with its numbers" "$(grep '"to":"rolled_back"' "$T/audit.log")" \
    '"type":"rollout","route":"chat","from":"step","from_step":1,"to":"rolled_back","to_step":1,"reason":"error_rate regressed.*"samples":\{"baseline":[0-9]+,"candidate":[0-9]+\},"kpis":\[\{"kpi":"error_rate","verdict":"fail"'
check "webhook: the transition was POSTed" wait_until 5 grep -q 'rolled_back' "$T/hook.log"
like "webhook: the audit line as its body" "$(grep rolled_back "$T/hook.log")" \
    '"method":"POST","path":"/hooks/rollout".*\\"type\\":\\"rollout\\",\\"route\\":\\"chat\\"'
like "the state file says rolled_back" "$(cat "$T/state.json")" '"chat":[^}]*"state":[^,]*"rolled_back"'
sleep 0.3 # KPI lines wait up to 100 ms in their worker's batch: the last load's lines are all in the file
n_before=$(grep -c '"variant":"next"' "$T/kpi.log")
load none 200
sleep 0.3
n_after=$(grep -c '"variant":"next"' "$T/kpi.log")
is "after the rollback no new request goes to the candidate" "$n_after" "$n_before"

# the healthy candidate: step 1 passes, step 2 waits for approval
awaiting() { load healthy 200; [ "$(state healthy)" = awaiting_approval ]; }
check "healthy: step 1 passes, step 2 awaits approval" wait_until 30 awaiting
code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 -X POST "http://$ADMIN/rollouts/healthy/approve")
is "approve without the token: 401" "$code" 401
out=$(curl -s --max-time 5 -X POST "http://$ADMIN/rollouts/healthy/approve" -H "$AUTH")
like "approve with the token: the step starts" "$out" '"state":"step","step":2'
promoted() { load healthy 200; [ "$(state healthy)" = promoted ]; }
check "healthy: promoted after its last step" wait_until 30 promoted
like "promoted: the candidate has all of the two variants' weight" "$(curl -s --max-time 5 "http://$ADMIN/routes")" \
    '"name":"next","baseline":false,"backend":"good","model":null,"prompt_hash":null,"weight":100,'
out=$(curl -s --max-time 5 -X POST "http://$ADMIN/rollouts/healthy/approve" -H "$AUTH")
like "an action that does not apply: 409 with the reason" "$out" 'rollout healthy is promoted: approve does not apply'
m=$(curl -s --max-time 5 "http://$ADMIN/metrics")
like "metrics: the rollout's state" "$m" 'aviary_rollout_state\{route="chat",state="rolled_back"\} 1'
printf '%s\n' "$m" >"$T/metrics.txt"
check "metrics: promtool accepts them" sh -c "promtool check metrics <'$T/metrics.txt' >/dev/null 2>&1"

# feedback: a score for a served request counts for its variant
rid=$(curl -s -D - -o /dev/null --max-time 5 "http://$AV/v1/chat/completions" -d @"$T/body.json" | tr -d '\r' |
      awk -F': ' 'tolower($1) == "x-request-id" {print $2}')
out=$(curl -s --max-time 5 "http://$AV/v1/feedback" -d "{\"request_id\": \"$rid\", \"thumbs\": \"down\"}")
like "feedback: recorded for the route and variant that served" "$out" '"status":"recorded","route":"chat","variant":"stable","score":0'
wait_until 5 grep -q '"type":"feedback"' "$T/kpi.log"
like "feedback: a line in the KPI log" "$(grep '"type":"feedback"' "$T/kpi.log")" \
    "\"type\":\"feedback\",\"request_id\":\"$rid\",\"route\":\"chat\",\"variant\":\"stable\",\"score\":0"
out=$(curl -s -w ' %{http_code}' --max-time 5 "http://$AV/v1/feedback" -d '{"request_id": "never-seen", "score": 1}')
like "feedback for an unknown request: 404 with the reason" "$out" '"code":"unknown_request_id".* 404$'
out=$(curl -s -w ' %{http_code}' --max-time 5 "http://$AV/v1/feedback" -d "{\"request_id\": \"$rid\", \"score\": 7}")
like "feedback out of range: 400" "$out" '"code":"invalid_feedback".* 400$'

# a restart resumes: rolled_back stays rolled back, promoted stays promoted
stop_pid "$AV_PID"
start_aviary "$T/a.json"
is "after a restart: still rolled back (sticky)" "$(state chat)" rolled_back
is "after a restart: still promoted" "$(state healthy)" promoted
like "after a restart: the candidate still gets nothing" "$(curl -s --max-time 5 "http://$ADMIN/routes")" \
    '"name":"next","baseline":false,"backend":"bad","model":null,"prompt_hash":null,"weight":0,'
out=$(curl -s --max-time 5 -X POST "http://$ADMIN/rollouts/chat/resume" -H "$AUTH")
like "resume after a rollback starts over (an explicit admin action)" "$out" '"state":"step","step":1,.*"candidate_percent":20'

# a reload keeps a rollout whose variants did not change, and starts one afresh when the candidate changed
sed -i 's/"min_step_s": 1, "min_requests": 20, "min_events": 1,$/"min_step_s": 2, "min_requests": 20, "min_events": 1,/' "$T/a.json"
kill -HUP "$AV_PID"
wait_until 5 grep -q "generation 2" "$T/aviary.err"
is "reload, same candidate: still promoted" "$(state healthy)" promoted
sed -i 's/"name": "next", "backend": "good", "weight": 0}\],/"name": "next2", "backend": "good", "weight": 0}],/; s/"candidate": "next", "steps": \[30, 60, 100\]/"candidate": "next2", "steps": [30, 60, 100]/' "$T/a.json"
kill -HUP "$AV_PID"
wait_until 5 grep -q "generation 3" "$T/aviary.err"
like "reload, a new candidate: its rollout starts afresh" "$(curl -s --max-time 5 "http://$ADMIN/rollouts/healthy")" \
    '"candidate":"next2","state":"step","step":1,'
wait_until 5 grep -q '"trigger":"SIGHUP","result":"loaded","generation":3' "$T/audit.log"
like "audit: the reload" "$(cat "$T/audit.log")" '"type":"reload","trigger":"SIGHUP","result":"loaded","generation":3'

# a candidate is its backend, model, prompt and params: a changed prompt is a new rollout, even once promoted
out=$(curl -s --max-time 5 -X POST "http://$ADMIN/rollouts/healthy/promote" -H "$AUTH")
like "promoted by hand" "$out" '"state":"promoted"'
printf 'Be brief.' >"$T/p.txt"
sed -i 's|"name": "next2", "backend": "good", "weight": 0}|"name": "next2", "backend": "good", "weight": 0, "system_prompt": "p.txt"}|' "$T/a.json"
kill -HUP "$AV_PID"
wait_until 5 grep -q "generation 4" "$T/aviary.err"
like "reload, the promoted candidate got a prompt: a new rollout from step 1" \
    "$(curl -s --max-time 5 "http://$ADMIN/rollouts/healthy")" \
    '"state":"step","step":1,.*"reason":"candidate next2 changed \(system prompt none -> [0-9a-f]{16} prepend\): a new rollout from the start"'
wait_until 5 grep -q '"reason":"candidate next2 changed' "$T/audit.log"
like "audit: the new rollout, from the promoted state, with the reason" "$(grep 'candidate next2 changed' "$T/audit.log")" \
    '"from":"promoted","from_step":3,"to":"step","to_step":1,"reason":"candidate next2 changed \(system prompt'
like "the view shows the candidate's identity" "$(curl -s --max-time 5 "http://$ADMIN/rollouts/healthy")" \
    '"identity":\{"baseline":\{"backend":"http://127.0.0.1:[0-9]+ http1","model":"the client.s","prompt":"none","params":"none"\},"candidate":\{"backend":"http://127.0.0.1:[0-9]+ http1","model":"the client.s","prompt":"[0-9a-f]{16} prepend","params":"none"\}\}'
printf 'Be very brief.' >"$T/p.txt"
kill -HUP "$AV_PID"
wait_until 5 grep -q "generation 5" "$T/aviary.err"
like "reload, the prompt file's text changed: a new rollout again" "$(curl -s --max-time 5 "http://$ADMIN/rollouts/healthy")" \
    '"reason":"candidate next2 changed \(system prompt [0-9a-f]{16} prepend -> [0-9a-f]{16} prepend\)'
stop_pid "$AV_PID"

# config errors name the place
sed 's/"candidate": "next", "steps": \[20, 50, 100\]/"candidate": "nope", "steps": [20, 50, 100]/' "$T/a.json" >"$T/b.json"
like "an unknown candidate: refused at its place" "$("$B/src/aviary" -t -c "$T/b.json" 2>&1)" \
    'b.json:[0-9]+:[0-9]+: routes\[1\].rollout.candidate: not a variant of this route'
sed 's/"steps": \[20, 50, 100\]/"steps": [20, 50, 90]/' "$T/a.json" >"$T/c.json"
like "steps must end at 100" "$("$B/src/aviary" -t -c "$T/c.json" 2>&1)" 'rollout.steps: the last step must be 100 \(promotion\)'

done_testing
