# t_fleet.sh: fleet mode's first part, on a real redis-server and three aviary
# replicas: each registers itself once a second and sees the others
# (GET /fleet, /metrics); with Redis killed every replica goes on serving
# with no failed request and says so once; when Redis returns they find it
# again by themselves; a wrong password is named; the config's fleet block
# is checked at its place; a process without one has no /fleet.
. "$(dirname "$0")/lib.sh"

command -v redis-server >/dev/null || { echo "# redis-server missing: sh tests/bootstrap.sh deps" >&2; exit 1; }

fleet_config() { # fleet_config FILE REPLICA FLEET_JSON
    cat >"$1" <<JSON
{
  "listen": [{"address": "127.0.0.1:0"}],
  "workers": 1,
  "admin": {"address": "127.0.0.1:0"},
  "log": {"kpi": "$T/kpi-$2.log", "level": "info"},
  "backends": {"sim": {"url": "http://127.0.0.1:$sim_PORT"}},
  "routes": [{"name": "chat", "match": {"path_prefix": "/v1/"},
              "variants": [{"name": "stable", "backend": "sim"}]}],
  "fleet": $3
}
JSON
}
# start_replica NAME CONFIG: sets NAME_AV, NAME_ADMIN, NAME_PID; stderr in $T/NAME.err
start_replica() {
    rm -f "$T/$1.ready"
    "$B/src/aviary" -c "$2" --ready-file "$T/$1.ready" 2>>"$T/$1.err" &
    eval "$1_PID=$!"
    PIDS="$PIDS $!"
    wait_until 10 test -s "$T/$1.ready" || { echo "# replica $1 did not start" >&2; cat "$T/$1.err" >&2; exit 1; }
    eval "$1_AV=$(awk '$1 == "listen" {print $2; exit}' "$T/$1.ready")"
    eval "$1_ADMIN=$(awk '$1 == "admin" {print $2}' "$T/$1.ready")"
}
fleet_of() { eval "curl -s --max-time 5 \"http://\$${1}_ADMIN/fleet\""; }

start_sim sim
RPORT=$(free_port)

# the fleet block is checked where it is written
fleet_config "$T/bad.json" x '{"redis": "http://127.0.0.1:6379"}'
like "a Redis address that is not one: refused at its place" "$("$B/src/aviary" -t -c "$T/bad.json" 2>&1)" \
    'bad.json:[0-9]+:[0-9]+: fleet.redis: "http://127.0.0.1:6379" is not a Redis address'
fleet_config "$T/bad.json" x '{"redis": "redis://me:secret@127.0.0.1:6379"}'
out=$("$B/src/aviary" -t -c "$T/bad.json" 2>&1)
like "a password in the URL: refused, pointing to password_env" "$out" 'no password in the URL; name an environment variable in "password_env"'
fleet_config "$T/bad.json" x '{"redis": "redis://127.0.0.1:6379", "name": "a b"}'
like "a fleet name with a space: refused" "$("$B/src/aviary" -t -c "$T/bad.json" 2>&1)" 'fleet.name: "a b": a fleet name is'
fleet_config "$T/bad.json" x '{"redis": "redis://127.0.0.1:6379", "password_env": "AV_T_NO_SUCH_VAR"}'
like "a password variable that is not set: refused" "$("$B/src/aviary" -t -c "$T/bad.json" 2>&1)" \
    'fleet.password_env: environment variable AV_T_NO_SUCH_VAR is not set'

start_redis "$RPORT"
for r in r1 r2 r3; do
    fleet_config "$T/$r.json" "$r" "{\"redis\": \"redis://127.0.0.1:$RPORT/0\", \"name\": \"t\", \"replica_id\": \"$r\"}"
    start_replica "$r" "$T/$r.json"
done
sees_three() { for r in r1 r2 r3; do [ "$(fleet_of "$r" | grep -o '"id":"r[123]"' | sort -u | wc -l)" -eq 3 ] || return 1; done; }
check "each of three replicas sees all three in GET /fleet" wait_until 10 sees_three
out=$(fleet_of r2)
like "GET /fleet: the fleet, this replica, the link up with its round trip" "$out" \
    '^\{"fleet":"t","replica":"r2","redis":"redis://127.0.0.1:[0-9]+/0","connected":true,"rtt_ms":[0-9.]+,"error":null,'
like "GET /fleet: each replica with when it was last seen, itself marked" "$out" \
    '"replicas":\[\{"id":"r1","last_seen_ms_ago":[0-9]+,"self":false\},\{"id":"r2","last_seen_ms_ago":[0-9]+,"self":true\},\{"id":"r3"'
m=$(curl -s --max-time 5 "http://$r1_ADMIN/metrics")
like "metrics: connected" "$m" 'aviary_fleet_connected 1'
like "metrics: three replicas" "$m" 'aviary_fleet_replicas 3'
like "metrics: the round trip" "$m" 'aviary_fleet_redis_rtt_seconds [0-9.e-]+'
printf '%s\n' "$m" >"$T/metrics.txt"
if command -v promtool >/dev/null; then
    check "metrics: promtool accepts them" sh -c "promtool check metrics <'$T/metrics.txt' >/dev/null 2>&1"
fi
is "Redis holds the registry under the fleet's name" "$(redis-cli -p "$RPORT" zcard t:replicas)" 3
# the fleet block takes effect at start: a reload that changes it keeps the running one, and says so
sed -i 's/"name": "t"/"name": "other"/' "$T/r1.json"
kill -HUP "$r1_PID"
check "reload with another fleet name: a warning that it needs a restart" \
    wait_until 5 grep -q 'reload: .*r1.json: fleet changed, which needs a restart; the running value is kept' "$T/r1.err"
like "reload with another fleet name: still in fleet t" "$(fleet_of r1)" '^\{"fleet":"t","replica":"r1"'

# Redis goes away: every replica serves on, and says so once
kill -KILL "$REDIS_PID"; wait "$REDIS_PID" 2>/dev/null
body='{"model":"m","messages":[{"role":"user","content":"hi"}]}'
fails=0
for i in $(seq 1 60); do
    for r in r1 r2 r3; do
        eval "addr=\$${r}_AV"
        code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://$addr/v1/chat/completions" -d "$body")
        [ "$code" = 200 ] || fails=$((fails + 1))
    done
done
is "Redis down: 180 requests over the three replicas, none failed" "$fails" 0
down() { for r in r1 r2 r3; do fleet_of "$r" | grep -q '"connected":false' || return 1; done; }
check "Redis down: each replica's GET /fleet says the link is down" wait_until 10 down
like "Redis down: with the reason" "$(fleet_of r1)" '"connected":false,"rtt_ms":[0-9.]+,"error":"[^"]+"'
sleep 3 # three more heartbeats that fail
for r in r1 r2 r3; do
    is "Redis down: $r said so once" "$(grep -c 'is unreachable' "$T/$r.err")" 1
done
like "the line says what happens" "$(grep 'is unreachable' "$T/r1.err")" \
    'fleet t: Redis at redis://127.0.0.1:[0-9]+/0 is unreachable \(.*\); serving on with the weights applied last, retrying each second \(said once\)'

# Redis back (empty): the replicas find it by themselves and register again
start_redis "$RPORT"
back() { sees_three && for r in r1 r2 r3; do fleet_of "$r" | grep -q '"connected":true' || return 1; done; }
check "Redis back: all three connected and registered again" wait_until 15 back
for r in r1 r2 r3; do
    like "Redis back: $r says so once" "$(grep -c 'answers again' "$T/$r.err")" '^1$'
done
for r in r1 r2 r3; do eval "stop_pid \$${r}_PID"; done
stop_pid "$REDIS_PID"

# a password: the right one connects, a wrong one is named
RPORT2=$(free_port)
REDIS_AUTH="-a s3cret --no-auth-warning" start_redis "$RPORT2" --requirepass s3cret
export AV_T_REDIS_PW=s3cret AV_T_REDIS_BAD=n0tThePassw0rd
fleet_config "$T/p1.json" p1 "{\"redis\": \"redis://127.0.0.1:$RPORT2\", \"password_env\": \"AV_T_REDIS_PW\", \"replica_id\": \"p1\"}"
fleet_config "$T/p2.json" p2 "{\"redis\": \"redis://127.0.0.1:$RPORT2\", \"password_env\": \"AV_T_REDIS_BAD\", \"replica_id\": \"p2\"}"
start_replica p1 "$T/p1.json"
start_replica p2 "$T/p2.json"
check "the right password: connected" wait_until 10 sh -c "curl -s --max-time 5 http://$p1_ADMIN/fleet | grep -q '\"connected\":true,.*\"id\":\"p1\"'"
named() { fleet_of p2 | grep -q '"connected":false,.*"error":"Redis: [^"]*\(WRONGPASS\|NOAUTH\|invalid\)'; }
check "a wrong password: not connected, and Redis's own words" wait_until 10 named
unlike "the password is in no log line" "$(cat "$T/p1.err" "$T/p2.err")" 's3cret|n0tThePassw0rd'
stop_pid "$p1_PID"; stop_pid "$p2_PID"; stop_pid "$REDIS_PID"

# without a fleet block: no /fleet, no fleet metrics
write_config "$T/solo.json" "$sim_PORT"
start_aviary "$T/solo.json"
like "no fleet: GET /fleet says so" "$(curl -s --max-time 5 "http://$ADMIN/fleet")" '"code":"no_fleet"'
unlike "no fleet: no fleet metrics" "$(curl -s --max-time 5 "http://$ADMIN/metrics")" 'aviary_fleet_'
stop_pid "$AV_PID"
done_testing
