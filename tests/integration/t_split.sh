# t_split.sh: choosing variants: weights (proportions within a binomial
# bound), sticky keys (same key, same variant, across workers and a SIGHUP),
# the monotone ramp and the rollback through the admin API, the override
# header (off, with a token), the response header, the counters in /routes.
. "$(dirname "$0")/lib.sh"

start_sim sim
export AV_TEST_OVERRIDE_TOKEN=let-me-in AV_TEST_ADMIN_TOKEN=admin-secret
make_config() { # FILE VARIANT_HEADER CANARY_WEIGHT
    cat >"$1" <<JSON
{
  "listen": [{"address": "127.0.0.1:0"}],
  "workers": 2,
  "admin": {"address": "127.0.0.1:0", "token_env": "AV_TEST_ADMIN_TOKEN"},
  "log": {"kpi": "$T/kpi.log", "level": "info"},
  "variant_header": "$2",
  "backends": {"sim": {"url": "http://127.0.0.1:$sim_PORT"}},
  "routes": [
    {"name": "locked", "match": {"path_prefix": "/v1/", "headers": {"x-route": "locked"}},
     "override": {"token_env": "AV_TEST_OVERRIDE_TOKEN"},
     "variants": [{"name": "a", "backend": "sim"}, {"name": "b", "backend": "sim", "weight": 0}]},
    {"name": "fixed", "match": {"path_prefix": "/v1/", "headers": {"x-route": "fixed"}},
     "override": {"enabled": false},
     "variants": [{"name": "a", "backend": "sim"}, {"name": "b", "backend": "sim", "weight": 0}]},
    {"name": "chat", "match": {"path_prefix": "/v1/"},
     "sticky": {"keys": ["header:x-user-id", "cookie:uid", "body:metadata.user_id", "body:user"]},
     "variants": [{"name": "stable", "backend": "sim", "model": "big", "weight": 80},
                  {"name": "canary", "backend": "sim", "model": "new", "weight": $3}]}
  ]
}
JSON
}
make_config "$T/a.json" x-aviary-variant 20
start_aviary "$T/a.json"
URL="http://$AV/v1/chat/completions"
BODY='{"messages":[]}'
admin() { curl -s --max-time 5 -H 'Authorization: Bearer admin-secret' "$@"; }

# users USER_PREFIX N FILE: one curl, N requests with x-user-id PREFIX1..N; "user variant" lines
users() {
    : >"$T/users.cfg"
    for i in $(seq 1 "$2"); do
        [ "$i" -gt 1 ] && echo next >>"$T/users.cfg"
        printf 'url = "%s"\nheader = "x-user-id: %s%d"\ndata-binary = "@%s"\noutput = "/dev/null"\nwrite-out = "%s%d %%header{x-aviary-variant}\\n"\n' \
            "$URL" "$1" "$i" "$S/tests/integration/data/chat.json" "$1" "$i" >>"$T/users.cfg"
    done
    curl -s --max-time 60 -K "$T/users.cfg" | sort >"$3"
}

# proportions: 2000 requests without a key, 80/20; the canary count must fall
# within 5 standard deviations of 400 (sd = sqrt(2000 * 0.2 * 0.8) = 17.9)
: >"$T/kpi.log"
h2load -n 2000 -c 4 -m 10 -d "$S/tests/integration/data/chat.json" "http://$AV/v1/chat/completions" >/dev/null 2>&1
wait_until 5 sh -c "[ \$(grep -c '\"route\":\"chat\"' '$T/kpi.log') -ge 2000 ]"
canary=$(grep -c '"variant":"canary","assign":"weight"' "$T/kpi.log")
check "weights 80/20, no sticky key: $canary of 2000 to the canary, within 400 +- 90" \
    test "$canary" -ge 310 -a "$canary" -le 490
like "KPI: the client's model and the variant's are both logged" "$(grep '"assign":"weight"' "$T/kpi.log" | tail -1)" \
    '"assign":"weight",.*"client_model":"x","model":"(big|new)"'
unkeyed=$(curl -s "http://$ADMIN/routes/chat" | sed -n 's/.*"name":"canary".*"unkeyed":\([0-9]*\).*/\1/p')
is "/routes counts the unkeyed requests apart" "$unkeyed" "$canary"

# stickiness: 200 users, twice each, over two workers: always the same variant
users u 200 "$T/first"
users u 200 "$T/second"
is "sticky: 200 users get the same variant on a second visit" "$(diff "$T/first" "$T/second" | grep -c '^<')" 0
n=$(grep -c ' canary$' "$T/first")
check "sticky: $n of 200 users on the canary (20 % expected)" test "$n" -ge 15 -a "$n" -le 70
kill -HUP "$AV_PID"
wait_until 5 grep -q 'generation 2' "$T/aviary.err"
users u 200 "$T/third"
is "sticky: the same after a SIGHUP" "$(diff "$T/first" "$T/third" | grep -c '^<')" 0
v1=$(curl -s -o /dev/null -w '%header{x-aviary-variant}' -H 'Cookie: a=1; uid=zoe' "$URL" -d "$BODY")
v2=$(curl -s -o /dev/null -w '%header{x-aviary-variant}' "$URL" -d '{"messages":[],"metadata":{"user_id":"zoe"}}')
v3=$(curl -s -o /dev/null -w '%header{x-aviary-variant}' "$URL" -d '{"messages":[],"user":"zoe"}')
is "sticky: the key from a cookie, metadata.user_id or user picks alike" "$v1 $v2" "$v3 $v3"
curl -s -o /dev/null -H 'x-user-id: kpi-check' -H 'x-request-id: sticky-1' "$URL" -d "$BODY"
check "KPI: sticky requests say so" wait_until 5 grep -q '"request_id":"sticky-1",.*"assign":"sticky"' "$T/kpi.log"

# the monotone ramp: 5 % -> 25 % keeps every unit of the first 5 % on the canary
out=$(admin -XPOST "http://$ADMIN/routes/chat/weights" -d '{"weights": {"stable": 95, "canary": 5}}')
like "admin: weights set to 95/5" "$out" '"name":"canary","baseline":false,"backend":"sim","model":"new","prompt_hash":null,"weight":5,'
users r 400 "$T/at5"
grep ' canary$' "$T/at5" | cut -d' ' -f1 >"$T/canary5"
admin -XPOST "http://$ADMIN/routes/chat/weights" -d '{"weights": {"stable": 75, "canary": 25}}' >/dev/null
users r 400 "$T/at25"
grep ' canary$' "$T/at25" | cut -d' ' -f1 >"$T/canary25"
left=$(comm -23 "$T/canary5" "$T/canary25" | wc -l)
check "ramp 5 -> 25: $(wc -l <"$T/canary5") units at 5 %, $(wc -l <"$T/canary25") at 25 %" \
    test "$(wc -l <"$T/canary25")" -gt "$(wc -l <"$T/canary5")"
is "ramp 5 -> 25: no unit of the first 5 % left the canary" "$left" 0
admin -XPOST "http://$ADMIN/routes/chat/weights" -d '{"weights": {"canary": 0}}' >/dev/null
users r 400 "$T/at0"
is "rollback: weight 0 sends every unit to the baseline" "$(grep -c ' canary$' "$T/at0")" 0
like "admin changes are logged" "$(cat "$T/aviary.err")" 'admin: route chat weights set: stable=75, canary=0'

# admin errors
is "admin: no token, 401" "$(curl -s -o /dev/null -w '%{http_code}' -XPOST "http://$ADMIN/routes/chat/weights" -d '{"weights":{"canary":1}}')" 401
is "admin: the scheme in lower case (RFC 9110 11.1) is the same token" "$(curl -s -o /dev/null -w '%{http_code}' \
   -H 'Authorization: bearer admin-secret' "http://$ADMIN/routes/chat/weights" -d '{"weights":{"nope":1}}')" 400
is "admin: a wrong token in lower case is still 401" "$(curl -s -o /dev/null -w '%{http_code}' \
   -H 'Authorization: bearer admin-secreT' "http://$ADMIN/routes/chat/weights" -d '{"weights":{"nope":1}}')" 401
like "admin: unknown variant" "$(admin -XPOST "http://$ADMIN/routes/chat/weights" -d '{"weights":{"nope":1}}')" '"code":"unknown_variant"'
like "admin: all weights 0" "$(admin -XPOST "http://$ADMIN/routes/chat/weights" -d '{"weights":{"stable":0}}')" 'add up to 0'
like "admin: not JSON" "$(admin -XPOST "http://$ADMIN/routes/chat/weights" -d 'weights')" '"code":"bad_request"'
like "admin: unknown route" "$(admin "http://$ADMIN/routes/nope")" '"code":"route_not_found"'

# override header: obeyed, counted, logged; unknown names refused; off; with a token
out=$(curl -s -D - -H 'x-aviary-variant: canary' -H 'x-request-id: forced-1' "$URL" -d "$BODY")
like "override: x-aviary-variant forces the variant (weight 0)" "$out" 'x-aviary-variant: canary.*"model":"new"'
check "KPI: overridden requests are marked" \
    wait_until 5 grep -q '"request_id":"forced-1","route":"chat","variant":"canary","assign":"override"' "$T/kpi.log"
out=$(curl -s -w '\n%{http_code}' -H 'x-aviary-variant: nope' "$URL" -d "$BODY")
like "override: an unknown variant is 400 with the choices" "$out" 'has no variant \\"nope\\"; it has \\"stable\\", \\"canary\\".*400$'
out=$(curl -s -o /dev/null -w '%header{x-aviary-variant}' -H 'x-route: fixed' -H 'x-aviary-variant: b' "$URL" -d "$BODY")
is "override off: the header is ignored" "$out" a
out=$(curl -s -w '\n%{http_code}' -H 'x-route: locked' -H 'x-aviary-variant: b' "$URL" -d "$BODY")
like "override with a token: missing token, 403" "$out" '"code":"override_forbidden".*403$'
out=$(curl -s -o /dev/null -w '%header{x-aviary-variant}' -H 'x-route: locked' -H 'x-aviary-variant: b' \
      -H 'x-aviary-token: let-me-in' "$URL" -d "$BODY")
is "override with the right token" "$out" b
out=$(curl -s -H 'x-sim-echo: 1' -H 'x-aviary-variant: canary' -H 'x-aviary-token: t' "$URL" -d "$BODY")
unlike "the backend never sees x-aviary-* headers" "$out" 'x-aviary'
overridden=$(curl -s "http://$ADMIN/routes/chat" | sed -n 's/.*"name":"canary".*"overridden":\([0-9]*\).*/\1/p')
check "/routes counts overridden requests ($overridden)" test "$overridden" -ge 2

# reload: the admin's weights stay while the file's weights do not change;
# the response header's name follows the config
make_config "$T/a.json" x-served-by 20
kill -HUP "$AV_PID"
wait_until 5 grep -q 'generation 3' "$T/aviary.err"
hdrs=$(curl -s -o /dev/null -D - "$URL" -d "$BODY")
like "variant_header renamed on reload" "$hdrs" 'x-served-by: stable'
like "reload keeps the admin's weights (canary 0) when the file's are unchanged" \
    "$(curl -s "http://$ADMIN/routes/chat")" '"name":"canary".*"weight":0,'
make_config "$T/a.json" "" 50
kill -HUP "$AV_PID"
wait_until 5 grep -q 'generation 4' "$T/aviary.err"
like "a changed weight in the file wins over the admin's" "$(curl -s "http://$ADMIN/routes/chat")" '"name":"canary".*"weight":50,'
unlike "variant_header \"\": no header" "$(curl -s -o /dev/null -D - "$URL" -d "$BODY")" 'x-served-by|x-aviary-variant'

stop_pid "$AV_PID"
is "aviary exits 0" "$?" 0
stop_pid "$sim_PID"
done_testing
