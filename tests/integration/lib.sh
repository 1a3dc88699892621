# lib.sh: helpers for integration tests: start aviary-sim and aviary on
# ephemeral loopback ports, TAP output, bounded waits, cleanup by PID.
# Sourced by tests/integration/t_*.sh; tests/run sets AV_BUILDDIR and AV_SRCDIR.
set -u
B=${AV_BUILDDIR:?set by tests/run}
S=${AV_SRCDIR:?set by tests/run}
T=$(mktemp -d "${TMPDIR:-/tmp}/aviary-it.XXXXXX")
PIDS=""
TESTNUM=0
FAILED=0

ok() { TESTNUM=$((TESTNUM + 1)); echo "ok $TESTNUM - $1"; }
not_ok() {
    TESTNUM=$((TESTNUM + 1)); FAILED=$((FAILED + 1)); echo "not ok $TESTNUM - $1"; shift
    local _m   # not a global: a test's own $line must survive a failure report
    for _m in "$@"; do printf '# %s\n' "$_m"; done
}
# check DESC CMD...: passes when CMD succeeds.
check() { local desc=$1; shift; if "$@"; then ok "$desc"; else not_ok "$desc" "failed: $*"; fi; }
# is DESC GOT WANT
is() { if [ "$2" = "$3" ]; then ok "$1"; else not_ok "$1" "got:  $2" "want: $3"; fi; }
# like DESC TEXT PATTERN: grep -E over TEXT with its lines joined by spaces
like() {
    if printf '%s' "$2" | tr '\n' ' ' | grep -Eq -- "$3"; then ok "$1"; else not_ok "$1" "no match for /$3/ in:" "$(printf '%s' "$2" | head -c 600)"; fi
}
unlike() {
    if printf '%s' "$2" | tr '\n' ' ' | grep -Eq -- "$3"; then not_ok "$1" "unexpected match for /$3/"; else ok "$1"; fi
}

# wait_until SECONDS CMD...: polls every 50 ms, at most SECONDS.
wait_until() {
    limit=$1; shift
    i=0; n=$((limit * 20))
    while [ "$i" -lt "$n" ]; do
        if "$@" 2>/dev/null; then return 0; fi
        sleep 0.05; i=$((i + 1))
    done
    return 1
}

# start_sim NAME [ARGS...]: sets NAME_PORT and NAME_PID.
start_sim() {
    name=$1; shift
    "$B/sim/aviary-sim" -l 127.0.0.1:0 --port-file "$T/$name.port" "$@" 2>"$T/$name.err" &
    pid=$!
    PIDS="$PIDS $pid"
    if ! wait_until 5 test -s "$T/$name.port"; then echo "# sim $name did not start" >&2; cat "$T/$name.err" >&2; exit 1; fi
    eval "${name}_PORT=$(cat "$T/$name.port")"
    eval "${name}_PID=$pid"
}

# free_port: a loopback port nothing listens on now.
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# start_redis PORT [ARGS...]: a redis-server of the test's own on 127.0.0.1:PORT that
# keeps nothing on disk; sets REDIS_PID. Needs Debian's redis-server.
start_redis() {
    _port=$1; shift
    redis-server --port "$_port" --bind 127.0.0.1 --save '' --appendonly no --dir "$T" "$@" >>"$T/redis.log" 2>&1 &
    REDIS_PID=$!
    PIDS="$PIDS $REDIS_PID"
    if ! wait_until 5 sh -c "redis-cli -p $_port ${REDIS_AUTH:-} ping 2>/dev/null | grep -q PONG"; then
        echo "# redis-server did not start" >&2; cat "$T/redis.log" >&2; exit 1
    fi
}

# start_aviary CONFIG: sets AV (host:port), ADMIN and AV_PID; stderr goes to $T/aviary.err.
start_aviary() {
    rm -f "$T/ready"
    "$B/src/aviary" -c "$1" --ready-file "$T/ready" 2>>"$T/aviary.err" &
    AV_PID=$!
    PIDS="$PIDS $AV_PID"
    if ! wait_until 10 test -s "$T/ready"; then echo "# aviary did not start:" >&2; sed 's/^/# /' "$T/aviary.err" >&2; exit 1; fi
    AV=$(awk '$1 == "listen" {print $2; exit}' "$T/ready")
    AV2=$(awk '$1 == "listen" {n++; if (n == 2) print $2}' "$T/ready") # a second listener, if any
    ADMIN=$(awk '$1 == "admin" {print $2}' "$T/ready")
}

# stop_pid PID: SIGTERM, wait up to 15 s, then SIGKILL. Returns the exit status.
stop_pid() {
    kill -TERM "$1" 2>/dev/null || return 0
    i=0
    while kill -0 "$1" 2>/dev/null && [ "$i" -lt 300 ]; do sleep 0.05; i=$((i + 1)); done
    if kill -0 "$1" 2>/dev/null; then kill -KILL "$1" 2>/dev/null; wait "$1" 2>/dev/null; return 137; fi
    wait "$1" 2>/dev/null
}

# wait_pid PID SECONDS: waits for a process already told to stop; returns its exit status.
wait_pid() {
    i=0; n=$(($2 * 20))
    while kill -0 "$1" 2>/dev/null && [ "$i" -lt "$n" ]; do sleep 0.05; i=$((i + 1)); done
    if kill -0 "$1" 2>/dev/null; then kill -KILL "$1" 2>/dev/null; wait "$1" 2>/dev/null; return 137; fi
    wait "$1" 2>/dev/null
}

# sim_stat NAME FIELD: a number from the sim's /sim/stats.
sim_stat() {
    eval "port=\$${1}_PORT"
    curl -s --max-time 5 "http://127.0.0.1:$port/sim/stats" | sed -n "s/.*\"$2\":\([0-9]*\).*/\1/p"
}

# write_config FILE BACKEND_PORT [EXTRA_TOP_LEVEL_JSON] [BACKEND_EXTRA] [ROUTE_EXTRA]
# (env: WORKERS, LOG_LEVEL, LISTEN: the listen array)
write_config() {
    _listen=${LISTEN:-'[{"address": "127.0.0.1:0"}]'}
    cat >"$1" <<JSON
{
  "listen": $_listen,
  "workers": ${WORKERS:-1},
  "admin": {"address": "127.0.0.1:0"},
  "log": {"kpi": "$T/kpi.log", "level": "${LOG_LEVEL:-info}"},
  ${3:-}
  "backends": {"sim": {"url": "http://127.0.0.1:$2"${4:-}}},
  "routes": [{"name": "chat", "match": {"path_prefix": "/v1/"}${5:-},
              "variants": [{"name": "stable", "backend": "sim", "model": "sim-large"}]}]
}
JSON
}

cleanup() {
    for p in $PIDS; do
        if kill -0 "$p" 2>/dev/null; then kill -KILL "$p" 2>/dev/null; wait "$p" 2>/dev/null; fi
    done
    if [ "$FAILED" -gt 0 ] && [ -f "$T/aviary.err" ]; then sed 's/^/# aviary: /' "$T/aviary.err" | tail -n 30; fi
    rm -rf "$T"
}
trap cleanup EXIT

done_testing() { echo "1..$TESTNUM"; [ "$FAILED" -eq 0 ]; }
