# t_geo.sh: geo rules: a MaxMind database the test writes (country,
# continent, AS number), X-Forwarded-For believed only from trusted proxies,
# rule order, the override before geo, sticky keys after it, and a reload
# that changes the trusted proxies and the database.
. "$(dirname "$0")/lib.sh"

perl "$S/tests/tools/mkmmdb.pl" "$T/geo.mmdb" 10.1.0.0/16=DE,EU,64500 10.2.0.0/16=US,NA,64501 \
    10.3.0.0/16=BR,SA,64999 127.0.0.0/8=JP,AS,64502 2001:db8::/32=FR,EU,64503 ||
    { echo "Bail out! cannot write a MaxMind database (apt-get install libmaxmind-db-writer-perl)"; exit 1; }
start_sim sim
make_config() { # TRUSTED_PROXIES
    cat >"$T/a.json" <<JSON
{
  "listen": [{"address": "127.0.0.1:0"}],
  "workers": 1,
  "admin": {"address": "127.0.0.1:0"},
  "log": {"kpi": "$T/kpi.log", "level": "info"},
  "geoip": {"databases": ["geo.mmdb"], "trusted_proxies": $1},
  "backends": {"sim": {"url": "http://127.0.0.1:$sim_PORT"}},
  "routes": [{"name": "chat", "match": {"path_prefix": "/v1/"},
              "sticky": {"keys": "header:x-user-id"},
              "geo": [{"country": ["DE", "FR"], "variant": "eu"},
                      {"continent": "NA", "variant": "us"},
                      {"asn": [64502, 1], "variant": "asia"}],
              "variants": [{"name": "world", "backend": "sim"}, {"name": "eu", "backend": "sim", "weight": 0},
                           {"name": "us", "backend": "sim", "weight": 0}, {"name": "asia", "backend": "sim", "weight": 0}]}]
}
JSON
}
make_config '["127.0.0.1/32", "10.9.0.0/16"]'
start_aviary "$T/a.json"
URL="http://$AV/v1/chat/completions"
variant() { curl -s --max-time 5 -o /dev/null -w '%header{x-aviary-variant}' "$@" "$URL" -d '{"messages":[]}'; }

is "trusted peer: X-Forwarded-For 10.1.2.3 (DE) -> eu" "$(variant -H 'X-Forwarded-For: 10.1.2.3')" eu
is "an IPv6 client (FR) -> eu" "$(variant -H 'X-Forwarded-For: 2001:db8::7')" eu
is "continent NA -> us" "$(variant -H 'X-Forwarded-For: 10.2.0.9')" us
is "the right-most untrusted hop counts: 10.1.0.1, 10.2.0.1 -> us" \
    "$(variant -H 'X-Forwarded-For: 10.1.0.1, 10.2.0.1')" us
is "trusted hops are skipped: 10.2.0.1, 10.9.0.5 (a trusted proxy) -> us" \
    "$(variant -H 'X-Forwarded-For: 10.2.0.1, 10.9.0.5')" us
is "no header: the peer itself (127.0.0.1, ASN 64502) -> asia" "$(variant)" asia
is "no rule for BR: the weights decide (world)" "$(variant -H 'X-Forwarded-For: 10.3.0.1')" world
is "garbage in X-Forwarded-For: the peer's address" "$(variant -H 'X-Forwarded-For: not-an-ip')" asia
is "the override header beats geo" "$(variant -H 'X-Forwarded-For: 10.1.2.3' -H 'x-aviary-variant: us')" us
is "geo beats a sticky key" "$(variant -H 'X-Forwarded-For: 10.1.2.3' -H 'x-user-id: u1')" eu
curl -s -o /dev/null -H 'X-Forwarded-For: 10.1.2.3' -H 'x-request-id: geo-1' "$URL" -d '{"messages":[]}'
check "KPI: geo assignments say so" wait_until 5 grep -q '"request_id":"geo-1","route":"chat","variant":"eu","assign":"geo"' "$T/kpi.log"

# the peer is no longer trusted: X-Forwarded-For is ignored
make_config '["192.0.2.0/24"]'
kill -HUP "$AV_PID"
wait_until 5 grep -q 'generation 2' "$T/aviary.err"
is "untrusted peer: X-Forwarded-For 10.1.2.3 is not believed (the peer is in AS 64502)" \
    "$(variant -H 'X-Forwarded-For: 10.1.2.3')" asia

# a broken database keeps the old generation (replaced by rename, as geoipupdate
# does: the running generation's mapping keeps the old file)
echo "not a database" >"$T/geo.new" && mv "$T/geo.new" "$T/geo.mmdb"
kill -HUP "$AV_PID"
wait_until 5 grep -q 'reload failed' "$T/aviary.err"
like "a bad database: the reload is refused with the reason" "$(cat "$T/aviary.err")" \
    'geoip.databases: cannot open ".*geo.mmdb": '
is "... and the old database still serves" "$(variant)" asia

stop_pid "$AV_PID"
is "aviary exits 0" "$?" 0
stop_pid "$sim_PID"
done_testing
