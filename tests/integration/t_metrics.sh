# t_metrics.sh: GET /metrics (Prometheus text, checked by promtool) and GET
# /kpi (the per-variant windows): counts, outcomes, tokens and cost agree
# with the KPI log; overridden requests are counted but kept out of windows.
. "$(dirname "$0")/lib.sh"

start_sim sim
cat >"$T/a.json" <<JSON
{
  "listen": [{"address": "127.0.0.1:0"}],
  "workers": 2,
  "admin": {"address": "127.0.0.1:0"},
  "log": {"kpi": "$T/kpi.log", "level": "info"},
  "pricing": {"big": {"input": 2, "output": 8}},
  "backends": {"sim": {"url": "http://127.0.0.1:$sim_PORT"}},
  "routes": [{"name": "chat \\"q\\"", "match": {"path_prefix": "/v1/"}, "sticky": {"keys": "header:x-user-id"},
              "variants": [{"name": "stable", "backend": "sim", "model": "big", "weight": 3},
                           {"name": "canary", "backend": "sim", "model": "new", "weight": 1}]}]
}
JSON
start_aviary "$T/a.json"
BODY='{"messages":[{"role":"user","content":"hello there"}]}'
for i in $(seq 30); do curl -s -o /dev/null -H "x-user-id: u$i" "http://$AV/v1/chat/completions" -d "$BODY"; done
curl -s -o /dev/null -H 'x-aviary-variant: canary' -H 'x-sim-status: 500' "http://$AV/v1/chat/completions" -d "$BODY"
curl -s -o /dev/null -H 'x-aviary-variant: stable' -H 'x-sim-status: 429' "http://$AV/v1/chat/completions" -d "$BODY"
curl -s -N -o /dev/null -H 'x-aviary-variant: stable' "http://$AV/v1/chat/completions" -H 'x-sim-tokens: 5' \
    -H 'x-sim-tps: 100' -d '{"stream":true,"messages":[]}'
wait_until 5 sh -c "[ \$(wc -l <'$T/kpi.log') -ge 33 ]"

curl -s "http://$ADMIN/metrics" >"$T/metrics.txt"
if command -v promtool >/dev/null; then
    out=$(promtool check metrics <"$T/metrics.txt" 2>&1)
    is "promtool accepts /metrics" "$?$out" 0
else
    not_ok "promtool accepts /metrics" "promtool is missing: apt-get install prometheus"
fi
val() { K="$1" awk 'index($0, ENVIRON["K"]) == 1 { print $NF }' "$T/metrics.txt"; } # ENVIRON: -v would eat the backslashes
L='route="chat \"q\""'
ok_stable=$(val "aviary_requests_total{$L,variant=\"stable\",outcome=\"ok\"}")
ok_canary=$(val "aviary_requests_total{$L,variant=\"canary\",outcome=\"ok\"}")
is "30 sticky requests + 1 stream counted ok across both workers" $((ok_stable + ok_canary)) 31
is "the 500 is a server_error of the canary" "$(val "aviary_requests_total{$L,variant=\"canary\",outcome=\"server_error\"}")" 1
is "the 429 is rate_limited" "$(val "aviary_requests_total{$L,variant=\"stable\",outcome=\"rate_limited\"}")" 1
kpi_out=$(grep '"variant":"stable"' "$T/kpi.log" | sed -n 's/.*"output_tokens":\([0-9]*\).*/\1/p' | awk '{s += $1} END {print s}')
is "output tokens of the stable variant equal the KPI log's sum" \
    "$(val "aviary_tokens_total{$L,variant=\"stable\",kind=\"output\"}")" "$kpi_out"
kpi_cost=$(grep '"variant":"stable"' "$T/kpi.log" | sed -n 's/.*"cost_usd":\([0-9.]*\).*/\1/p' | awk '{s += $1} END {printf "%.9f", s}')
is "cost of the stable variant equals the KPI log's sum" "$(val "aviary_cost_usd_total{$L,variant=\"stable\"}")" "$kpi_cost"
is "the canary has no price: its answered requests are counted as unpriced (its 500 used nothing)" \
    "$(val "aviary_unpriced_requests_total{$L,variant=\"canary\"}")" "$ok_canary"
like "a failed request is billed nothing: its tokens are 0, not estimated" "$(grep '"status":500' "$T/kpi.log")" \
    '"input_tokens":0,"output_tokens":0,"cached_input_tokens":0,"cache_write_tokens":0,"reasoning_tokens":0,"usage_estimated":false'
like "nor is a 429" "$(grep '"status":429' "$T/kpi.log")" '"input_tokens":0,"output_tokens":0,.*"usage_estimated":false'
fail_in=$(grep -E '"status":(4|5)[0-9][0-9]' "$T/kpi.log" | sed -n 's/.*"input_tokens":\([0-9]*\).*/\1/p' | awk '{s += $1} END {print s + 0}')
is "the failures add no input tokens to the books" "$fail_in" 0
is "the histogram's count is the requests'" "$(val "aviary_request_duration_seconds_count{$L,variant=\"stable\"}")" \
    "$((ok_stable + 1))"
is "weights are gauges" "$(val "aviary_route_weight{$L,variant=\"canary\"}")" 1
like "the stream's inter-token time is in its histogram" "$(grep 'aviary_inter_token_seconds_count' "$T/metrics.txt")" \
    'variant="stable"} 1'

out=$(curl -s "http://$ADMIN/kpi?window=60")
like "/kpi: the window leaves the overridden requests out (30 sticky only)" "$out" \
    '"variant":"stable","requests":[0-9]+,.*"variant":"canary","requests":[0-9]+,"outcomes":\{"ok":[0-9]+,"client_error":0,"rate_limited":0,"server_error":0'
sum=$(printf '%s' "$out" | grep -o '"requests":[0-9]*' | cut -d: -f2 | awk '{s += $1} END {print s}')
is "/kpi: 30 requests in the window" "$sum" 30
like "/kpi: quantiles and cost per request" "$out" '"latency_p50_ms":[0-9.]+,"latency_p95_ms":[0-9.]+,.*"cost_per_request_usd":[0-9.]+'
is "/kpi: a window out of range is refused" "$(curl -s -o /dev/null -w '%{http_code}' "http://$ADMIN/kpi?window=5")" 400

stop_pid "$AV_PID"
is "aviary exits 0" "$?" 0
stop_pid "$sim_PID"
done_testing
