#!/bin/bash
# tests/bench/run.sh BUILDDIR [SECONDS] [ROUNDS]: aviary-sim direct, aviary in front of it and
# nginx (keep-alive proxy_pass) in front of it, in one run on loopback, with wrk at
# concurrency 1 and 64, JSON and streamed. Prints req/s, p50, p99, the CPU time each proxy
# spent per request, and the aviary/nginx ratios. On a small machine wrk and the sim share
# cores and req/s moves with them; requests per CPU-second of the proxy is the steadier
# measure of throughput per core. Each round runs every case against all three in turn,
# the proxies in an order that rotates from round to round (none always runs first);
# the ratios are taken within a round (same conditions) and their median is reported.
# With BASE=OTHER_BUILDDIR, an aviary from that build runs too (same config, same sim) and
# the new/base ratios say what a change cost, measured in the same run. STREAM_USAGE=false:
# aviary does not ask the sim for the usage event of streams (the base build is not told),
# to tell what the sim's extra event costs the run from what aviary's reading costs.
# BASE_ASKS_USAGE=1: the base build's streamed requests ask for the usage event themselves
# (stream_options.include_usage), so the sim does the same work for both builds and sends
# them the same bytes (the base relays the event, aviary keeps it from the client).
# Needs: apt-get install nginx-light wrk. Not part of the test run.
set -eu
B=${1:-build}
SECS=${2:-5}
ROUNDS=${3:-3}
command -v wrk >/dev/null || { echo "bench: wrk missing: apt-get install wrk" >&2; exit 1; }
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
[ -x "$NGINX" ] || { echo "bench: nginx missing: apt-get install nginx-light" >&2; exit 1; }
T=$(mktemp -d "${TMPDIR:-/tmp}/aviary-bench.XXXXXX")
pids=""
cleanup() { for p in $pids; do kill "$p" 2>/dev/null || true; done; sleep 0.2; rm -rf "$T"; }
trap cleanup EXIT
. "$(dirname "$0")/lib.sh"

taskset -c "$OTHER_CPU" "$B/sim/aviary-sim" -l 127.0.0.1:0 --port-file "$T/sim.port" --tokens 16 2>/dev/null &
SIM_PID=$!
pids="$pids $!"
for _ in $(seq 100); do [ -s "$T/sim.port" ] && break; sleep 0.05; done
SIM=$(cat "$T/sim.port")

SU=""  # left out unless asked for: a BASE build from before usage does not know the key
[ -z "${STREAM_USAGE:-}" ] || SU=", \"stream_usage\": $STREAM_USAGE"
cat >"$T/aviary.json" <<JSON
{"listen": [{"address": "127.0.0.1:0"}], "workers": 1, "admin": {"address": "127.0.0.1:0"},
 "log": {"kpi": "$T/kpi.log", "level": "warn"},
 "backends": {"sim": {"url": "http://127.0.0.1:$SIM", "max_connections": 256$SU}},
 "routes": [{"name": "chat", "match": {"path_prefix": "/v1/"},
             "variants": [{"name": "stable", "backend": "sim", "model": "bench-model"}]}]}
JSON
taskset -c "$PROXY_CPU" "$B/src/aviary" -c "$T/aviary.json" --ready-file "$T/ready" 2>"$T/aviary.err" &
AV_PID=$!
pids="$pids $!"
for _ in $(seq 100); do [ -s "$T/ready" ] && break; sleep 0.05; done
AV=$(awk '$1 == "listen" {print $2; exit}' "$T/ready")
BASE_PID=""
if [ -n "${BASE:-}" ]; then
    sed -e "s|$T/kpi.log|$T/kpi-base.log|" -e 's|, "stream_usage": [a-z]*||' "$T/aviary.json" >"$T/base.json"
    taskset -c "$PROXY_CPU" "$BASE/src/aviary" -c "$T/base.json" --ready-file "$T/ready-base" 2>"$T/base.err" &
    BASE_PID=$!
    pids="$pids $!"
    wait_file "$T/ready-base" || { echo "bench: the base aviary did not start" >&2; cat "$T/base.err" >&2; exit 1; }
    AVB=$(awk '$1 == "listen" {print $2; exit}' "$T/ready-base")
fi

NG=$(free_port)
nginx_h1_conf "$NG" "$SIM"
taskset -c "$PROXY_CPU" "$NGINX" -c "$T/nginx.conf" -g 'daemon off;' 2>>"$T/nginx.err" &
NG_PID=$!
pids="$pids $!"
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$NG/v1/models" && break; sleep 0.05; done

printf 'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\nwrk.body = %s\n' \
    "'{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hello there\"}]}'" >"$T/json.lua"
printf 'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\nwrk.body = %s\n' \
    "'{\"model\":\"m\",\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":\"hello there\"}]}'" >"$T/stream.lua"
cp "$T/json.lua" "$T/json-asks.lua"
printf 'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\nwrk.body = %s\n' \
    "'{\"model\":\"m\",\"stream\":true,\"stream_options\":{\"include_usage\":true},\"messages\":[{\"role\":\"user\",\"content\":\"hello there\"}]}'" >"$T/stream-asks.lua"
BASE_SUFFIX=""
[ -z "${BASE_ASKS_USAGE:-}" ] || BASE_SUFFIX=-asks

run() { # name url mode conc [suffix]: wrk_run (lib.sh) with the process that serves it
    local who=""
    case "$1" in aviary) who=$AV_PID ;; base) who=$BASE_PID ;; nginx) who=$NG_PID ;; direct) who=$SIM_PID ;; esac
    wrk_run "$1" "$who" "$2" "$3" "$4" "${5:-}"
}

echo "== $(date -u +%FT%TZ), $NCPU cores, ${SECS}s per run, $ROUNDS rounds; proxies pinned to CPU $PROXY_CPU, one worker each"
RSS_START=""
PROXIES=(aviary nginx)
[ -z "$BASE_PID" ] || PROXIES=(aviary base nginx)
for round in $(seq "$ROUNDS"); do
    order=()
    for k in "${!PROXIES[@]}"; do order+=("${PROXIES[$(( (k + round - 1) % ${#PROXIES[@]} ))]}"); done
    echo "-- round $round"
    for mode in json stream; do
        for c in 1 64; do
            run direct "http://127.0.0.1:$SIM/v1/chat/completions" $mode $c
            for who in "${order[@]}"; do
                case $who in
                aviary) run aviary "http://$AV/v1/chat/completions" $mode $c ;;
                base) run base "http://$AVB/v1/chat/completions" $mode $c "$BASE_SUFFIX" ;;
                nginx) run nginx "http://127.0.0.1:$NG/v1/chat/completions" $mode $c ;;
                esac
            done
        done
    done
    [ -n "$RSS_START" ] || RSS_START=$(rss_kb "$AV_PID") # after the first round: warmed up
done
RSS_END=$(rss_kb "$AV_PID")

echo
echo "== aviary / nginx, median over $ROUNDS rounds of the ratio within each round"
echo "   (throughput: higher is better; added latency = proxy minus direct: lower is better)"
for mode in json stream; do
    for c in 1 64; do
        ratio_line "$mode/$c" "aviary/$mode/$c" "nginx/$mode/$c" "direct/$mode/$c"
    done
done
if [ -n "$BASE_PID" ]; then
    echo
    echo "== aviary / base ($BASE${BASE_SUFFIX:+, its streams asking for usage}), median over $ROUNDS rounds of the ratio within each round"
    for mode in json stream; do
        for c in 1 64; do
            ratio_line "$mode/$c" "aviary/$mode/$c" "base/$mode/$c" "direct/$mode/$c"
        done
    done
fi
echo
echo "aviary RSS: ${RSS_START} KiB after round 1, ${RSS_END} KiB after round $ROUNDS ($((RSS_END - RSS_START)) KiB more)"
echo "aviary KPI lines written: $(wc -l <"$T/kpi.log" 2>/dev/null || echo 0) (the KPI log is on during the runs)"
