#!/bin/bash
# tests/bench/instr.sh BUILDDIR [REQUESTS]: the user-space instructions each proxy spends
# per request, counted by valgrind's callgrind: aviary, nginx (keep-alive proxy_pass) and,
# with BASE=OTHER_BUILDDIR, another build's aviary, on the same sim and requests (h2load
# over HTTP/1.1, 64 connections, JSON and streamed). Instruction counts do not move with
# what else the machine is doing, so they show what a change costs where the wall-clock
# ratios of run.sh are noise. They leave out the kernel's share (most of the CPU time in
# run.sh; compare syscalls apart, with strace -c -f) and cache misses. Needs: apt-get install valgrind nginx-light nghttp2-client. Not part of
# the test run; takes about a minute per proxy. STREAM_USAGE=false: aviary does not ask
# the sim for the usage event of streams (it still reads every event), to tell the cost of
# that event from the cost of reading. KEEP=DIR: callgrind's files of each measured run are
# kept there as NAME-MODE.cg.PID, for callgrind_annotate (per function, where the cost is).
# CACHE=1: callgrind also simulates the caches (about twice as slow) and each line adds the
# L1 instruction and data misses per request and callgrind's cycle estimate (instructions
# + 10 per L1 miss + 100 per last-level miss): a build that runs few more instructions but
# touches much more code pays in I-cache misses, which the wall clock sees and a plain
# instruction count does not.
set -eu
B=${1:-build}
N=${2:-4000}
command -v valgrind >/dev/null || { echo "instr: valgrind missing: apt-get install valgrind" >&2; exit 1; }
command -v h2load >/dev/null || { echo "instr: h2load missing: apt-get install nghttp2-client" >&2; exit 1; }
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
[ -x "$NGINX" ] || { echo "instr: nginx missing: apt-get install nginx-light" >&2; exit 1; }
T=$(mktemp -d "${TMPDIR:-/tmp}/aviary-instr.XXXXXX")
pids=""
cleanup() { for p in $pids; do kill "$p" 2>/dev/null || true; done; sleep 0.2; rm -rf "$T"; }
trap cleanup EXIT
. "$(dirname "$0")/lib.sh"

"$B/sim/aviary-sim" -l 127.0.0.1:0 --port-file "$T/sim.port" --tokens 16 2>/dev/null &
pids="$pids $!"
wait_file "$T/sim.port"
SIM=$(cat "$T/sim.port")

VG_CACHE=""
[ -z "${CACHE:-}" ] || VG_CACHE="--cache-sim=yes"
# total_ir FILE...: the instructions callgrind counted in its output files (all threads)
total_ir() { awk '/^summary:/ {s += $2} END {print s + 0}' "$@"; }
# misses FILE... REQUESTS: with CACHE, per request: I1 misses, D1 misses, and the cycle
# estimate; the summary's fields are Ir Dr Dw I1mr D1mr D1mw ILmr DLmr DLmw
misses() {
    awk -v n="${@: -1}" '/^summary:/ {ir += $2; i1 += $5; d1 += $6 + $7; ll += $8 + $9 + $10}
        END {printf "%d %d %d\n", i1 / n, d1 / n, (ir + 10 * (i1 + d1) + 100 * ll) / n}' "${@:1:$#-1}"
}

# load URL MODE COUNT: COUNT requests, all answered 2xx, or the run fails
load() {
    local body=$T/$2.json out
    out=$(h2load --h1 -n "$3" -c 64 -m 1 -d "$body" -H 'content-type: application/json' "$1" 2>&1)
    printf '%s\n' "$out" | grep -q "status codes: $3 2xx" || { echo "instr: not all answered 2xx: $out" >&2; return 1; }
}
printf '{"model":"m","messages":[{"role":"user","content":"hello there"}]}' >"$T/json.json"
printf '{"model":"m","stream":true,"messages":[{"role":"user","content":"hello there"}]}' >"$T/stream.json"

declare -A IR CEST
# measure NAME MODE URL PID: instructions of a warm-up run and of a run with N more requests;
# the difference over N is the cost of a request, start-up and shutdown left out
measure() {
    local name=$1 mode=$2 url=$3 pid=$4 a b
    load "$url" "$mode" 200
    callgrind_control -z "$pid" >/dev/null 2>&1 || true
    load "$url" "$mode" "$N"
    rm -f "$T"/cg.*
    callgrind_control -d "$pid" >/dev/null 2>&1
    sleep 1
    a=$(total_ir "$T"/cg.*)
    if [ -n "${KEEP:-}" ]; then
        mkdir -p "$KEEP"
        for f in "$T"/cg.*; do cp "$f" "$KEEP/$name-$mode.${f##*/}"; done
    fi
    IR[$name/$mode]=$((a / N))
    if [ -n "$VG_CACHE" ]; then
        local i1 d1 est
        read -r i1 d1 est < <(misses "$T"/cg.* "$N")
        CEST[$name/$mode]=$est
        printf '%-7s %-7s %9d instructions, %5d I1 misses, %4d D1 misses, %6d estimated cycles per request\n' \
            "$name" "$mode" "${IR[$name/$mode]}" "$i1" "$d1" "$est"
    else
        printf '%-7s %-7s %9d instructions per request\n' "$name" "$mode" "${IR[$name/$mode]}"
    fi
}

SU=""  # left out unless asked for: a BASE build from before usage does not know the key
[ -z "${STREAM_USAGE:-}" ] || SU=", \"stream_usage\": $STREAM_USAGE"
cat >"$T/aviary.json" <<JSON
{"listen": [{"address": "127.0.0.1:0"}], "workers": 1, "admin": {"address": "127.0.0.1:0"},
 "log": {"kpi": "$T/kpi.log", "level": "warn"},
 "backends": {"sim": {"url": "http://127.0.0.1:$SIM", "max_connections": 256$SU}},
 "routes": [{"name": "chat", "match": {"path_prefix": "/v1/"},
             "variants": [{"name": "stable", "backend": "sim", "model": "bench-model"}]}]}
JSON
# run_aviary NAME BUILD: one aviary under callgrind, both modes
run_aviary() {
    rm -f "$T/ready"
    valgrind --tool=callgrind $VG_CACHE --callgrind-out-file="$T/cg.%p" "$2/src/aviary" -c "$T/aviary.json" \
        --ready-file "$T/ready" 2>"$T/$1.err" &
    local pid=$!
    pids="$pids $pid"
    for _ in $(seq 600); do [ -s "$T/ready" ] && break; sleep 0.1; done
    [ -s "$T/ready" ] || { echo "instr: $1 did not start" >&2; cat "$T/$1.err" >&2; exit 1; }
    local url="http://$(awk '$1 == "listen" {print $2; exit}' "$T/ready")/v1/chat/completions"
    measure "$1" json "$url" "$pid"
    measure "$1" stream "$url" "$pid"
    kill "$pid"
    wait "$pid" 2>/dev/null || true
}

echo "== $(date -u +%FT%TZ), $N requests per case, 64 connections, HTTP/1.1; user-space instructions (callgrind)"
run_aviary aviary "$B"
[ -z "${BASE:-}" ] || run_aviary base "$BASE"

NG=$(free_port)
nginx_h1_conf "$NG" "$SIM"
valgrind --tool=callgrind $VG_CACHE --callgrind-out-file="$T/cg.%p" "$NGINX" -c "$T/nginx.conf" \
    -g 'daemon off; master_process off;' 2>"$T/nginx.vg" &
NG_PID=$!
pids="$pids $NG_PID"
for _ in $(seq 600); do curl -s -o /dev/null "http://127.0.0.1:$NG/v1/models" && break; sleep 0.1; done
measure nginx json "http://127.0.0.1:$NG/v1/chat/completions" "$NG_PID"
measure nginx stream "http://127.0.0.1:$NG/v1/chat/completions" "$NG_PID"

echo
for mode in json stream; do
    awk -v m=$mode -v a="${IR[aviary/$mode]}" -v n="${IR[nginx/$mode]}" -v b="${IR[base/$mode]:-}" 'BEGIN {
        printf "%-7s aviary / nginx %.2f", m, a / n
        if (b != "") printf "   aviary / base %.2f (%+d instructions per request)", a / b, a - b
        printf "\n" }'
    [ -n "$VG_CACHE" ] || continue
    awk -v m=$mode -v a="${CEST[aviary/$mode]}" -v n="${CEST[nginx/$mode]}" -v b="${CEST[base/$mode]:-}" 'BEGIN {
        printf "%-7s estimated cycles: aviary / nginx %.2f", m, a / n
        if (b != "") printf "   aviary / base %.2f (%+d per request)", a / b, a - b
        printf "\n" }'
done
