# t_report.sh: `aviary report` over the KPI log of real traffic: per route and
# variant, its totals equal the sums of the log lines; --json, --route,
# --since/--until, gzip files and standard input; errors are clear.
. "$(dirname "$0")/lib.sh"

start_sim sim
cat >"$T/a.json" <<JSON
{
  "listen": [{"address": "127.0.0.1:0"}],
  "workers": 2,
  "admin": {"address": "127.0.0.1:0"},
  "log": {"kpi": "$T/kpi.log", "level": "info"},
  "pricing": {"big": {"input": 2, "output": 8}, "new": {"input": 1, "output": 4}},
  "backends": {"sim": {"url": "http://127.0.0.1:$sim_PORT"}},
  "routes": [{"name": "other", "match": {"headers": {"x-route": "other"}}, "variants": [{"name": "only", "backend": "sim"}]},
             {"name": "chat", "match": {"path_prefix": "/v1/"},
              "shadow": {"variant": "canary", "percent": 50},
              "variants": [{"name": "stable", "backend": "sim", "model": "big", "weight": 3},
                           {"name": "canary", "backend": "sim", "model": "new", "weight": 1}]}]
}
JSON
start_aviary "$T/a.json"
for i in $(seq 40); do
    curl -s -o /dev/null "http://$AV/v1/chat/completions" -H "x-sim-tokens: $((i % 7 + 1))" -d '{"messages":[]}'
done
curl -s -o /dev/null -H 'x-sim-status: 500' "http://$AV/v1/chat/completions" -d '{"messages":[]}'
for i in 1 2 3; do curl -s -o /dev/null -H 'x-route: other' "http://$AV/v1/chat/completions" -d '{"model":"m","messages":[]}'; done
stop_pid "$AV_PID"

# the log's own sums, per variant (primary requests only)
sums() { # VARIANT FIELD
    grep "\"route\":\"chat\",\"variant\":\"$1\",\"assign\":\"[a-z]*\",\"shadow\":false" "$T/kpi.log" |
        sed -n "s/.*\"$2\":\([0-9.]*\).*/\1/p" | awk '{s += $1} END {printf "%.6f", s}'
}
count() { grep -c "\"route\":\"chat\",\"variant\":\"$1\",\"assign\":\"[a-z]*\",\"shadow\":false" "$T/kpi.log"; }

out=$("$B/src/aviary" report --json "$T/kpi.log")
get() { # VARIANT SHADOW FIELD
    printf '%s' "$out" | python3 -c "import json,sys; g=[x for x in json.load(sys.stdin)['groups'] if x['route']=='chat' and x['variant']=='$1' and x['shadow']==$2][0]; v=g['$3']; print('%.6f' % v if isinstance(v, float) else v)"
}
for v in stable canary; do
    is "report: $v requests equal the log's lines" "$(get $v False requests)" "$(count $v)"
    is "report: $v output tokens equal the log's sum" "$(get $v False output_tokens).000000" "$(sums $v output_tokens)"
    is "report: $v cost equals the log's sum" "$(get $v False cost_usd)" "$(sums $v cost_usd)"
done
check "report: shadow copies are a group of their own" test "$(get canary True requests)" -ge 1
like "report: the 500 counts as an error" "$out" '"errors":1,'

table=$("$B/src/aviary" report "$T/kpi.log")
like "report: a table with a header" "$table" '^route +variant +requests +errors +p50 ms +p95 ms +p99 ms +ttft p50'
like "report: the shadow group is labelled" "$table" 'canary \(shadow\)'
like "report: lines read and skipped are counted" "$table" '[0-9]+ lines read, [0-9]+ skipped'

gzip -c "$T/kpi.log" >"$T/kpi.log.gz"
is "report: a gzip file reads the same" "$("$B/src/aviary" report --json "$T/kpi.log.gz")" "$out"
is "report: standard input reads the same" "$("$B/src/aviary" report --json - <"$T/kpi.log")" "$out"
like "report --route other: that route only" "$("$B/src/aviary" report --json --route other "$T/kpi.log")" \
    '^\{"groups":\[\{"route":"other","variant":"only","shadow":false,"requests":3,'
like "report --since a later day: nothing" "$("$B/src/aviary" report --json --since 2999-01-01 "$T/kpi.log")" '^\{"groups":\[\],'
like "report --until an earlier day: nothing" "$("$B/src/aviary" report --json --until 2000-01-01 "$T/kpi.log")" '^\{"groups":\[\],'
err=$("$B/src/aviary" report "$T/nope.log" 2>&1); rc=$?
like "report: a missing file is named, exit 1" "$rc $err" "^1 .*aviary report: .*nope.log: No such file or directory"
"$B/src/aviary" report >/dev/null 2>&1
is "report without files: usage, exit 2" "$?" 2

stop_pid "$sim_PID"
done_testing
