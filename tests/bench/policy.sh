#!/bin/bash
# tests/bench/policy.sh BUILDDIR [SECONDS] [ROUNDS]: what policies cost.
#  1. aviary policy-test --bench: the request phases of a three-policy chain
#     (max_tokens, pii_redact, prompt_injection) on a 4 KB prompt, and
#     on_chunk per event for an empty on_chunk (the runtime alone),
#     content_denylist and pii_redact (tests/bench/policy_chain.json).
#  2. End to end, on loopback: aviary-sim direct, aviary without policies and
#     aviary with the chain (plus content_denylist on streams), wrk at
#     concurrency 1 and 64 with the 4 KB prompt, JSON and streamed; the
#     with/without ratios within each round, and their median.
# Needs: apt-get install wrk. Not part of the test run.
set -eu
B=${1:-build}
SECS=${2:-5}
ROUNDS=${3:-3}
S=$(cd "$(dirname "$0")/../.." && pwd)
command -v wrk >/dev/null || { echo "bench: wrk missing: apt-get install wrk" >&2; exit 1; }
T=$(mktemp -d "${TMPDIR:-/tmp}/aviary-bench.XXXXXX")
pids=""
cleanup() { for p in $pids; do kill "$p" 2>/dev/null || true; done; sleep 0.2; rm -rf "$T"; }
trap cleanup EXIT
. "$(dirname "$0")/lib.sh"
P="$S/lua/policies"

echo "== policy-test --bench 3000 (one core, no network)"
printf 'return { fail = "open", on_chunk = function(r, event) end }\n' >"$T/empty_chunk.lua"
"$B/src/aviary" policy-test --quiet --bench 3000 "$P/max_tokens.lua" "$P/pii_redact.lua" "$P/prompt_injection.lua" \
    "$S/tests/bench/policy_chain.json" | grep '^# bench 4 KB' | sed 's/^# bench /chain: /'
cp "$S/tests/bench/policy_chain.json" "$T/"
for p in "$T/empty_chunk.lua" "$P/content_denylist.lua" "$P/pii_redact.lua"; do
    name=$(basename "$p" .lua)
    [ "$p" = "$T/empty_chunk.lua" ] || cp "$p" "$T/"
    "$B/src/aviary" policy-test --quiet --bench 3000 "$T/$name.lua" "$T/policy_chain.json" |
        grep '^# bench a 66' | sed "s/.*on_chunk/on_chunk, $name:/"
done

taskset -c "$OTHER_CPU" "$B/sim/aviary-sim" -l 127.0.0.1:0 --port-file "$T/sim.port" --tokens 16 2>/dev/null &
SIM_PID=$!
pids="$pids $!"
wait_file "$T/sim.port"
SIM=$(cat "$T/sim.port")
start() { # start NAME POLICIES_JSON: an aviary; sets NAME_PID and NAME_ADDR
    cat >"$T/$1.json" <<JSON
{"listen": [{"address": "127.0.0.1:0"}], "workers": 1, "admin": {"address": "127.0.0.1:0"},
 "log": {"kpi": "$T/$1.kpi", "level": "warn"}, "policy": {"dir": "$P"},
 "backends": {"sim": {"url": "http://127.0.0.1:$SIM", "max_connections": 256}},
 "routes": [{"name": "chat", "match": {"path_prefix": "/v1/"}, "policies": $2,
             "policy_params": {$3},
             "variants": [{"name": "stable", "backend": "sim", "model": "bench-model"}]}]}
JSON
    taskset -c "$PROXY_CPU" "$B/src/aviary" -c "$T/$1.json" --ready-file "$T/$1.ready" 2>"$T/$1.err" &
    eval "$1_PID=$!"
    pids="$pids $!"
    wait_file "$T/$1.ready" || { cat "$T/$1.err" >&2; exit 1; }
    eval "$1_ADDR=$(awk '$1 == "listen" {print $2; exit}' "$T/$1.ready")"
}
start plain '[]' ''
start policies '["max_tokens", "pii_redact", "prompt_injection", "content_denylist"]' \
    '"content_denylist": {"terms": ["secret sauce"]}'

python3 - "$S/tests/bench/policy_chain.json" "$T" <<'PY'
import json, sys
body = json.load(open(sys.argv[1]))["cases"][0]["request"]["body"]
for mode in ("json", "stream"):
    b = dict(body, stream=(mode == "stream"))
    open("%s/%s.lua" % (sys.argv[2], mode), "w").write(
        'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\nwrk.body = %s\n'
        % json.dumps(json.dumps(b)))
PY

run() { # name url mode conc: wrk_run (lib.sh) with the process that serves it
    local who=""
    case "$1" in plain) who=$plain_PID ;; policies) who=$policies_PID ;; direct) who=$SIM_PID ;; esac
    wrk_run "$1" "$who" "$2" "$3" "$4"
}
echo
echo "== end to end: $(date -u +%FT%TZ), $NCPU cores, ${SECS}s per run, $ROUNDS rounds, 4 KB prompt"
for round in $(seq "$ROUNDS"); do
    echo "-- round $round"
    for mode in json stream; do
        for c in 1 64; do
            run direct "http://127.0.0.1:$SIM/v1/chat/completions" $mode $c
            run plain "http://$plain_ADDR/v1/chat/completions" $mode $c
            run policies "http://$policies_ADDR/v1/chat/completions" $mode $c
        done
    done
done
echo
echo "== with policies / without, median over $ROUNDS rounds of the ratio within each round"
for mode in json stream; do
    for c in 1 64; do
        ratio_line "$mode/$c" "policies/$mode/$c" "plain/$mode/$c" "direct/$mode/$c"
    done
done
echo "policy errors in the KPI log: $(grep -c '"policy_errors":[1-9]' "$T/policies.kpi" || true)"
