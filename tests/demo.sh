#!/bin/sh
# tests/demo.sh BUILDDIR: aviary in front of two aviary-sim backends on loopback:
# a few requests through it, streamed and not, then the KPI lines they produced.
set -eu
cd "$(dirname "$0")/.."
B=${1:-build}
T=$(mktemp -d "${TMPDIR:-/tmp}/aviary-demo.XXXXXX")
pids=""
trap 'for p in $pids; do kill "$p" 2>/dev/null || true; done; rm -rf "$T"' EXIT
"$B/sim/aviary-sim" -l 127.0.0.1:0 --port-file "$T/p1" --ttft-ms 150 --tps 40 --models llama-3.1-8b 2>/dev/null & pids="$pids $!"
"$B/sim/aviary-sim" -l 127.0.0.1:0 --port-file "$T/p2" --ttft-ms 80 --tps 80 --models llama-3.3-8b 2>/dev/null & pids="$pids $!"
i=0; while [ ! -s "$T/p1" ] || [ ! -s "$T/p2" ]; do i=$((i + 1)); [ $i -lt 100 ] || exit 1; sleep 0.05; done
sed -e "s|127.0.0.1:8080|127.0.0.1:0|; s|127.0.0.1:9901|127.0.0.1:0|; s|\"kpi\": \"-\"|\"kpi\": \"$T/kpi.log\"|" \
    -e "s|127.0.0.1:8001|127.0.0.1:$(cat "$T/p1")|; s|127.0.0.1:8002|127.0.0.1:$(cat "$T/p2")|" conf/aviary.json >"$T/aviary.json"
"$B/src/aviary" -c "$T/aviary.json" --ready-file "$T/ready" 2>"$T/aviary.err" & AV_PID=$!; pids="$pids $AV_PID"
i=0; while [ ! -s "$T/ready" ]; do i=$((i + 1)); [ $i -lt 100 ] || { cat "$T/aviary.err"; exit 1; }; sleep 0.05; done
AV=$(awk '$1 == "listen" {print $2; exit}' "$T/ready")
body='{"model":"any","messages":[{"role":"user","content":"Say hello"}]}'
sbody='{"model":"any","stream":true,"messages":[{"role":"user","content":"Say hello"}]}'

echo "== aviary on $AV, two aviary-sim backends"
echo; echo "== 1. a chat completion (route chat, variant stable)"
curl -s --max-time 10 "http://$AV/v1/chat/completions" -H 'content-type: application/json' -d "$body"
echo; echo "== 2. the same, streamed: events print as they arrive"
curl -s -N --max-time 10 "http://$AV/v1/chat/completions" -H 'content-type: application/json' -d "$sbody" | grep -v '^$' | awk 'NR <= 4 || /DONE/'
echo "   ..."
echo; echo "== 3. streamed from the preview variant (x-preview: 1)"
curl -s -N --max-time 10 "http://$AV/v1/chat/completions" -H 'x-preview: 1' -d "$sbody" | grep -c '^data:' | sed 's/$/ events/'
echo; echo "== 4. a path no route matches: an OpenAI-style error"
curl -s --max-time 10 "http://$AV/v2/nothing"
kill -TERM "$AV_PID"; wait "$AV_PID" || true
echo; echo "== the KPI log: one JSON line per request"
cat "$T/kpi.log"

# ---- rollouts: a candidate that turns bad part-way is rolled back by itself;
# a healthy one is promoted. Each scenario: a stable sim, a candidate sim, aviary
# with a rollout, h2load sending streamed requests, and the rollout printed as it
# moves (GET /rollouts/chat once a second).
rollout_scenario() { # NAME CANDIDATE_SIM_ARGS...
    name=$1; shift
    D="$T/$name"; mkdir -p "$D"
    "$B/sim/aviary-sim" -l 127.0.0.1:0 --port-file "$D/s" --ttft-ms 40 --tps 400 --tokens 12 2>/dev/null & pids="$pids $!"
    "$B/sim/aviary-sim" -l 127.0.0.1:0 --port-file "$D/c" --ttft-ms 40 --tps 400 --tokens 12 "$@" 2>/dev/null & pids="$pids $!"
    i=0; while [ ! -s "$D/s" ] || [ ! -s "$D/c" ]; do i=$((i + 1)); [ $i -lt 100 ] || exit 1; sleep 0.05; done
    cat >"$D/aviary.json" <<JSON
{"listen": [{"address": "127.0.0.1:0"}], "workers": 2, "admin": {"address": "127.0.0.1:0"},
 "log": {"kpi": "$D/kpi.log", "audit": "$D/audit.log", "level": "warn"},
 "rollout_state_file": "$D/state.json",
 "backends": {"stable": {"url": "http://127.0.0.1:$(cat "$D/s")"}, "candidate": {"url": "http://127.0.0.1:$(cat "$D/c")"}},
 "routes": [{"name": "chat", "match": {"path_prefix": "/v1/"},
   "variants": [{"name": "stable", "backend": "stable", "model": "llama-3.1-8b", "weight": 100},
                {"name": "next", "backend": "candidate", "model": "llama-3.3-8b", "weight": 0}],
   "rollout": {"baseline": "stable", "candidate": "next", "steps": [10, 25, 50, 100],
               "min_step_s": 4, "min_requests": 100, "min_events": 1,
               "kpis": {"error_rate": {"max_increase": 0.01}, "ttft": {"max_ratio": 1.5}}}}]}
JSON
    "$B/src/aviary" -c "$D/aviary.json" --ready-file "$D/ready" 2>"$D/aviary.err" & RPID=$!; pids="$pids $RPID"
    i=0; while [ ! -s "$D/ready" ]; do i=$((i + 1)); [ $i -lt 100 ] || { cat "$D/aviary.err"; exit 1; }; sleep 0.05; done
    RAV=$(awk '$1 == "listen" {print $2; exit}' "$D/ready"); RADM=$(awk '$1 == "admin" {print $2}' "$D/ready")
    printf '%s' "$sbody" >"$D/body.json"
    t0=$(date +%s)
    state=""
    while [ "$(($(date +%s) - t0))" -lt 90 ]; do
        h2load -n 600 -c 4 -m 4 -H 'content-type: application/json' -d "$D/body.json" \
            "http://$RAV/v1/chat/completions" >/dev/null 2>&1 || true
        line=$(curl -s --max-time 5 "http://$RADM/rollouts/chat" | python3 -c '
import json, sys
r = json.load(sys.stdin)
v = lambda n: "-" if n is None else "%.3g" % n  # null: no data yet
k = " | ".join("%s %s %s vs %s" % (x["kpi"], x["verdict"], v(x["baseline"]), v(x["candidate"])) for x in r["kpis"])
print("%-18s step %d/%d  next at %3d%%  samples %5d/%-5d | %s" % (r["state"], r["step"], r["steps"],
      r["candidate_percent"], r["samples"]["baseline"], r["samples"]["candidate"], k))')
        echo "   $(($(date +%s) - t0))s  $line"
        state=$(printf '%s' "$line" | awk '{print $1}')
        [ "$state" = rolled_back ] || [ "$state" = promoted ] && break
        sleep 1
    done
    echo "   why: $(curl -s --max-time 5 "http://$RADM/rollouts/chat" | python3 -c 'import json,sys; print(json.load(sys.stdin)["reason"])')"
    kill -TERM "$RPID"; wait "$RPID" 2>/dev/null || true
    echo "   the audit log's transitions:"
    python3 -c '
import json, sys
for l in open(sys.argv[1]):
    e = json.loads(l)
    if e["type"] == "rollout":
        print("     %s  %s %d -> %s %d: %s" % (e["time"][11:19], e["from"], e["from_step"], e["to"], e["to_step"], e["reason"]))
' "$D/audit.log"
    echo "   aviary report, per variant:"
    "$B/src/aviary" report "$D/kpi.log" | sed 's/^/     /'
}

echo; echo "== 5. a rollout whose candidate turns bad after 12 s (TTFT x3, 5 % errors): rolled back by itself"
rollout_scenario bad --turn-bad-after-s 12 --bad-ttft-ms 120 --bad-error-rate 0.05
echo; echo "== 6. a rollout whose candidate stays healthy: promoted step by step"
rollout_scenario good
