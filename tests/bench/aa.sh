#!/bin/bash
# tests/bench/aa.sh BUILDDIR [ROUTES] [LIMIT_S]: A/A rollouts end to end on the real
# processes: one aviary in front of two aviary-sim backends that behave alike (TTFT
# 40 ms and 16 tokens at 200 a second, each delay jittered by e^(0.3 Z), 1 % of answers
# 500), ROUTES routes (default 100) each rolling a candidate on one backend out against
# a baseline on the other (half the routes one way, half the other: as rollouts are
# promoted at their own times, the load they move evens out instead of slowing one
# backend down, which would make every candidate still rolling out on it look
# slower), steps 25, 50, 100, 20 s each at least, watching
# error_rate, latency and ttft with the default margins, alpha 0.05. Streamed
# requests from h2load, spread over the routes by a header. Every rollout should be
# promoted; at most alpha of them (5 of 100) may roll back. Prints the outcome of
# each one that did not promote, the counts, and exits non-zero past alpha.
# Needs: apt-get install nghttp2-client. Takes about two minutes.
set -eu
B=${1:-build}
ROUTES=${2:-100}
LIMIT=${3:-300}
LOADERS=10
command -v h2load >/dev/null || { echo "aa: h2load missing: apt-get install nghttp2-client" >&2; exit 1; }
T=$(mktemp -d "${TMPDIR:-/tmp}/aviary-aa.XXXXXX")
pids=""
cleanup() { for p in $pids; do kill "$p" 2>/dev/null || true; done; sleep 0.2; rm -rf "$T"; }
trap cleanup EXIT
. "$(dirname "$0")/lib.sh"

for i in 1 2; do
    "$B/sim/aviary-sim" -l 127.0.0.1:0 --port-file "$T/sim$i.port" --ttft-ms 40 --tps 200 --tokens 16 \
        --jitter 0.3 --error-rate 0.01 --seed "$i" 2>/dev/null &
    pids="$pids $!"
    wait_file "$T/sim$i.port"
done

python3 - "$ROUTES" "$(cat "$T/sim1.port")" "$(cat "$T/sim2.port")" "$T" >"$T/aviary.json" <<'EOF'
import json, sys
routes, p1, p2, t = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
cfg = {
    "listen": [{"address": "127.0.0.1:0", "http2": True}], "workers": 1,
    "admin": {"address": "127.0.0.1:0"},
    "log": {"kpi": t + "/kpi.log", "audit": t + "/audit.log", "level": "warn"},
    "backends": {"one": {"url": "http://127.0.0.1:" + p1, "max_connections": 256},
                 "two": {"url": "http://127.0.0.1:" + p2, "max_connections": 256}},
    "routes": [{"name": "r%d" % i, "match": {"headers": {"x-route": "r%d" % i}},
                "variants": [{"name": "a", "backend": ("one", "two")[i % 2], "weight": 100},
                             {"name": "c", "backend": ("two", "one")[i % 2], "weight": 0}],
                "rollout": {"baseline": "a", "candidate": "c", "steps": [25, 50, 100], "min_step_s": 20,
                            "max_step_s": 600, "min_requests": 200, "alpha": 0.05,
                            "kpis": {"error_rate": {}, "latency": {}, "ttft": {}}}}
               for i in range(routes)],
}
print(json.dumps(cfg, indent=1))
EOF
"$B/src/aviary" -c "$T/aviary.json" --ready-file "$T/ready" 2>"$T/aviary.err" &
AV_PID=$!
pids="$pids $AV_PID"
wait_file "$T/ready" || { cat "$T/aviary.err"; exit 1; }
AV=$(awk '$1 == "listen" {print $2; exit}' "$T/ready")
ADM=$(awk '$1 == "admin" {print $2; exit}' "$T/ready")
printf '%s' '{"model":"m","stream":true,"messages":[{"role":"user","content":"hello"}]}' >"$T/body.json"

# each loader sends bursts of 100 streams (50 at a time) to its share of the routes, in turn
for w in $(seq 0 $((LOADERS - 1))); do
    (
        while [ ! -e "$T/stop" ]; do
            for r in $(seq "$w" "$LOADERS" $((ROUTES - 1))); do
                [ -e "$T/stop" ] && break
                h2load -n 100 -c 1 -m 50 -H "x-route: r$r" -H 'content-type: application/json' -d "$T/body.json" \
                    "http://$AV/v1/chat/completions" >/dev/null 2>&1 || true
            done
        done
    ) &
    pids="$pids $!"
done

summary() {
    curl -s --max-time 5 "http://$ADM/rollouts" | python3 -c '
import json, sys, collections
r = json.load(sys.stdin)["rollouts"]
c = collections.Counter(x["state"] for x in r)
print(" ".join("%s %d" % kv for kv in sorted(c.items())))'
}
t0=$(date +%s)
while :; do
    s=$(summary)
    echo "   $(($(date +%s) - t0))s  $s"
    case " $s " in *" step "* | *" awaiting_approval "*) ;; *) break ;; esac
    [ "$(($(date +%s) - t0))" -lt "$LIMIT" ] || { echo "aa: still running after $LIMIT s"; break; }
    sleep 10
done
touch "$T/stop"
for p in $pids; do [ "$p" = "$AV_PID" ] || kill "$p" 2>/dev/null || true; done

curl -s --max-time 5 "http://$ADM/rollouts" | python3 -c '
import json, sys
r = json.load(sys.stdin)["rollouts"]
n, back = len(r), [x for x in r if x["state"] == "rolled_back"]
other = [x for x in r if x["state"] not in ("promoted", "rolled_back")]
for x in back + other:
    print("   %s %s at step %d: %s" % (x["route"], x["state"], x["step"], x["reason"]))
print("A/A rollouts: %d, promoted %d, rolled back %d (%.1f %%; alpha 5 %%), not finished %d" %
      (n, n - len(back) - len(other), len(back), 100.0 * len(back) / n, len(other)))
sys.exit(0 if len(back) <= 0.05 * n and not other else 1)'
