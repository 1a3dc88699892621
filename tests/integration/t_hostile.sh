# t_hostile.sh: Aviary against a backend that misbehaves (tests/tools/hostile):
# every mode, over HTTP/1.1 and h2c to the backend, through every client side
# (HTTP/1.1, h2c, h2 over TLS), six at a time through max_connections 2. Each
# answer is the gateway's error in the OpenAI shape, a visible cut, or (where
# the backend was within the rules) the whole answer; absurd token counts are
# not believed; after every mode the gateway lives and serves; memory stays bounded.
. "$(dirname "$0")/lib.sh"

HOSTILE=${AV_HOSTILE:-$B/tests/tools/hostile}
if [ ! -x "$HOSTILE" ]; then
    not_ok "tests/tools/hostile is built" "not found: $HOSTILE (make check builds it)"
    done_testing
    exit 1
fi
PAR=6 # requests at once, past max_connections (2)

make_cert() {
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=aviary-hostile" -keyout "$T/tls.key" \
        -out "$T/tls.crt" -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" 2>/dev/null
}
make_cert
start_sim sim
"$HOSTILE" --port-file "$T/hostile.port" 2>"$T/hostile.err" &
HOSTILE_PID=$!
PIDS="$PIDS $HOSTILE_PID"
if ! wait_until 5 test -s "$T/hostile.port"; then echo "# hostile did not start" >&2; cat "$T/hostile.err" >&2; exit 1; fi
HP=$(cat "$T/hostile.port")

backend() { # NAME PROTOCOL
    printf '"%s": {"url": "http://127.0.0.1:%s", "protocol": "%s", "max_connections": 2, "connect_timeout_ms": 3000,
               "first_byte_timeout_ms": 500, "read_timeout_ms": 500}' "$1" "$HP" "$2"
}
route() { printf '{"name": "%s", "match": {"headers": {"x-backend": "%s"}}, "variants": [{"name": "v", "backend": "%s"}]}' "$1" "$1" "$1"; }
cat >"$T/a.json" <<JSON
{
  "listen": [{"address": "127.0.0.1:0", "tls": {"cert": "tls.crt", "key": "tls.key"}}, {"address": "127.0.0.1:0"}],
  "workers": 1,
  "admin": {"address": "127.0.0.1:0"},
  "log": {"kpi": "$T/kpi.log", "level": "info"},
  "backends": {$(backend h1 http1), $(backend h2c h2c), "sim": {"url": "http://127.0.0.1:$sim_PORT"}},
  "routes": [$(route h1), $(route h2c),
             {"name": "sim", "match": {"path_prefix": "/v1/"}, "variants": [{"name": "v", "backend": "sim"}]}]
}
JSON

boot() {
    start_aviary "$T/a.json"
    TP=${AV##*:}
}
boot
mkdir "$T/r"

# ask SIDE ID MODE BACKEND PATH STREAM [TOKENS]: one request; its answer in $T/r/ID.*
ask() {
    local side=$1 id=$2 mode=$3 be=$4 path=$5 stream=$6 tokens=${7:-}
    local f="$T/r/$id"
    case $side in
    h1) set -- --http1.1 "http://$AV2$path" ;;
    h2c) set -- --http2-prior-knowledge "http://$AV2$path" ;;
    tls) set -- --http2 --cacert "$T/tls.crt" --resolve "localhost:$TP:127.0.0.1" "https://localhost:$TP$path" ;;
    esac
    if [ "$stream" = head ]; then
        set -- -I "$@"
    else
        set -- -H 'content-type: application/json' \
            -d "{\"model\":\"m\",\"max_tokens\":16,\"stream\":$stream,\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}" "$@"
    fi
    [ -n "$tokens" ] && set -- -H "x-hostile-tokens: $tokens" "$@"
    curl -s -o "$f.body" -D "$f.hdr" -w '%{http_code}' --max-time 8 -H "x-backend: $be" -H "x-hostile: $mode" \
        -H "x-request-id: $id" "$@" >"$f.code" 2>/dev/null
    echo $? >"$f.rc"
}

# judge EXPECT ID BACKEND: sets WHY (empty when the answer is as expected) and
# KPI (what the request's KPI line must match). EXPECT is one or more of,
# joined by '|': ok-json, ok-sse, ok-big, ok-head, err:STATUS:CODE[/CODE],
# cut-json:CODE[/CODE] (200, then the transfer fails), cut-sse:CODE[/CODE] (200,
# the stream ends in an error event). A cut on a multiplexed h2c connection may
# also come before the head, when another stream's failure takes the connection.
judge() {
    local f="$T/r/$2" e codes codes_re err_re last n big st seen=""
    local code rc body
    code=$(cat "$f.code"); rc=$(cat "$f.rc")
    body=$(head -c 4000 "$f.body" 2>/dev/null | tr '\n' ' ')
    WHY="" KPI=""
    if [ "$rc" = 28 ]; then WHY="hung: no end within 8 s (code $code)"; return; fi
    if [ "$code" = 000 ]; then WHY="no answer (curl exit $rc)"; return; fi
    for e in $(echo "$1" | tr '|' ' '); do
        codes=${e##*:}
        codes_re="($(echo "$codes" | tr '/' '|'))"
        err_re="^\\{\"error\":\\{\"message\":\"[^\"]*\",\"type\":\"server_error\",\"code\":\"$codes_re\",\"request_id\":\"$2\"\\}\\} *$"
        case $e in
        ok-json)
            if [ "$code" = 200 ] && [ "$rc" = 0 ] && printf '%s' "$body" | grep -q 'Hello from hostile\.' &&
                ! printf '%s' "$body" | grep -q spurious; then
                KPI='"status":200,.*"error":null'; return
            fi ;;
        ok-sse|ok-big)
            last=$(grep -v '^\s*$' "$f.body" | tail -1)
            n=$(grep -c -E '"delta":\{"content":"|"text_delta","text":"' "$f.body")
            big=yes
            [ "$e" = ok-big ] && [ "$(wc -c <"$f.body")" -lt 3145728 ] && big=no
            if [ "$code" = 200 ] && [ "$rc" = 0 ] && [ "$n" = 3 ] && [ "$big" = yes ] &&
                { [ "$last" = 'data: [DONE]' ] || [ "$last" = 'data: {"type":"message_stop"}' ]; }; then
                KPI='"status":200,.*"error":null'; return
            fi ;;
        ok-head)
            if [ "$code" = 200 ] && [ "$rc" = 0 ]; then KPI='"status":200'; return; fi ;;
        err:*)
            st=${e#err:}; st=${st%%:*}
            if [ "$code" = "$st" ] && printf '%s' "$body" | grep -Eq -- "$err_re"; then
                KPI="\"status\":$st,.*\"error\":\"$codes_re\""; return
            fi ;;
        cut-json:*)
            # curl: 18 body shorter than announced, 92 stream reset, 56 connection reset
            if [ "$code" = 200 ] && { [ "$rc" = 18 ] || [ "$rc" = 92 ] || [ "$rc" = 56 ]; }; then
                KPI="\"error\":\"$codes_re\""; return
            fi ;;
        cut-sse:*)
            last=$(grep '^data: ' "$f.body" | tail -1)
            if [ "$code" = 200 ] && [ "$rc" = 0 ] &&
                printf '%s' "$last" | grep -Eq "^data: \\{\"error\":\\{.*\"code\":\"$codes_re\""; then
                KPI="\"error\":\"$codes_re\""; return
            fi ;;
        esac
        case $e in
        cut-*)
            if [ "$3" = h2c ] && [ "$code" -ge 500 ] && printf '%s' "$body" | grep -Eq -- "$err_re"; then
                KPI="\"status\":$code,.*\"error\":\"$codes_re\""; return
            fi ;;
        esac
        seen="$seen $e"
    done
    WHY="wanted$seen; got status $code, curl exit $rc, body: $(printf '%s' "$body" | head -c 300)"
}

# kpi_line ID: the request's KPI line (lines are written a little after the answer)
kpi_line() { grep -F "\"request_id\":\"$1\"" "$T/kpi.log" 2>/dev/null | tail -1; }
kpi_has() { [ -n "$(kpi_line "$1")" ]; }

ERR_AT=0
# alive WHAT: the gateway still runs; if not, says how it died and starts another
alive() {
    local st report
    if kill -0 "$AV_PID" 2>/dev/null; then return 0; fi
    wait "$AV_PID" 2>/dev/null
    st=$?
    report=$(tail -c +"$((ERR_AT + 1))" "$T/aviary.err" |
        grep -E 'ERROR: AddressSanitizer|runtime error|SUMMARY|^(READ|WRITE) of|freed by|allocated by|^ *#[0-9]+ ' |
        grep -v -E 'libsanitizer|libc_start|clone3|start_thread' | head -n 36)
    not_ok "$1: the gateway is alive" "it exited with status $st" "$report"
    boot
    return 1
}

# batch SIDE MODE BACKEND PATH STREAM EXPECT: PAR requests at once, one TAP
# line for their answers; sets IDS, and KPIRE for kpi_check (the requests
# answered as expected, each with what its KPI line must say)
batch() {
    local side=$1 mode=$2 be=$3 path=$4 stream=$5 expect=$6
    local pids="" start ms i=0 id p what bad="" nbad=0 kpire=""
    ERR_AT=$(wc -c <"$T/aviary.err")
    IDS=""
    start=$(date +%s%N)
    while [ "$i" -lt "$PAR" ]; do
        id="hb-$side-$be-$mode-$i-$$"
        IDS="$IDS $id"
        ask "$side" "$id" "$mode" "$be" "$path" "$stream" &
        pids="$pids $!"
        i=$((i + 1))
    done
    for p in $pids; do wait "$p"; done
    ms=$(( ($(date +%s%N) - start) / 1000000 ))
    what="$mode from $be backend, $side client"
    for id in $IDS; do
        judge "$expect" "$id" "$be"
        if [ -z "$WHY" ]; then kpire="$kpire $id=$KPI"; continue; fi
        nbad=$((nbad + 1))
        [ -n "$bad" ] || bad="$id: $WHY"
    done
    if [ -z "$bad" ]; then ok "$what: $PAR of $PAR as expected ($expect) in $ms ms"
    else not_ok "$what: $PAR at once, each $expect" "$nbad of $PAR not; the first: $bad"; fi
    KPIRE=$kpire
}

# kpi_check WHAT [EXTRA]: every request of the last batch that was answered as
# expected has its KPI line, and it says what its client saw (and matches
# EXTRA, an extended regex); no TAP line when none was
kpi_check() {
    local extra=${2:-} bad="" pair id re line
    [ -n "$KPIRE" ] || return 0
    for pair in $KPIRE; do
        id=${pair%%=*}
        re=${pair#*=}
        wait_until 3 kpi_has "$id"
        line=$(kpi_line "$id")
        if [ -z "$line" ]; then bad="$id: no KPI line"; break; fi
        if ! printf '%s' "$line" | grep -Eq -- "$re"; then bad="$id: no match for /$re/ in: $line"; break; fi
        if [ -n "$extra" ] && ! printf '%s' "$line" | grep -Eq -- "$extra"; then
            bad="$id: no match for /$extra/ in: $line"; break
        fi
    done
    if [ -z "$bad" ]; then ok "$1: KPI lines say so"; else not_ok "$1: KPI lines say so" "$bad"; fi
}

# serves SIDE BACKEND WHAT: after a mode, the gateway lives and answers a normal
# request through the same backend and client side, and one to aviary-sim
serves() {
    local pids="" k p bad="" simf
    alive "$3" || return
    for k in 0 1 2; do
        ask "$1" "after-$1-$2-$k-$$-$TESTNUM" json "$2" /v1/chat/completions false &
        pids="$pids $!"
    done
    for p in $pids; do wait "$p"; done
    ask "$1" "sim-$1-$2-$$-$TESTNUM" json sim /v1/chat/completions false
    for k in 0 1 2; do
        judge ok-json "after-$1-$2-$k-$$-$TESTNUM" "$2"
        [ -n "$WHY" ] && bad="a normal request after it: $WHY"
    done
    simf="$T/r/sim-$1-$2-$$-$TESTNUM"
    if ! grep -q '"object":"chat.completion"' "$simf.body" || [ "$(cat "$simf.code")" != 200 ]; then
        bad="$bad; aviary-sim through the gateway: status $(cat "$simf.code")"
    fi
    alive "$3" || return
    if [ -z "$bad" ]; then ok "$3: the gateway lives and serves the next requests"
    else not_ok "$3: the gateway lives and serves the next requests" "$bad"; fi
}

# mode BACKENDS EXPECT: the cases, one a line (hostile --list says what each mode does)
CASES='
json              h1,h2c  ok-json
sse               h1,h2c  ok-sse
# Connection: close and a body the close ends are legal: the whole answer
close-json-cl     h1      ok-json
close-json        h1      ok-json
close-sse         h1      ok-sse
close-sse-chunked h1      ok-sse
head              h1,h2c  ok-head
# the body after a HEAD answer, and bytes after a whole answer, must not become the next answer
head-body         h1      ok-head
garbage-before    h1      err:502:backend_protocol_error
garbage-after     h1      ok-json
# cut after the head: the client must see the cut (curl fails, or a last error event)
trunc-cl          h1,h2c  cut-json:backend_closed/backend_protocol_error
trunc-chunk       h1      cut-json:backend_closed/backend_protocol_error
no-last-chunk     h1      cut-sse:backend_closed
stall-head        h1,h2c  err:504:first_byte_timeout
stall-after-head  h1,h2c  cut-json:read_timeout
stall-body        h1,h2c  cut-json:read_timeout
stall-sse         h1,h2c  cut-sse:read_timeout
# heads past the limits of the gateway are refused (5,000 small headers may also pass whole)
big-header        h1,h2c  err:502:backend_protocol_error
many-headers      h1,h2c  ok-json|err:502:backend_protocol_error
# framing that could smuggle a response (RFC 9112 6.3): refused
dup-cl            h1      err:502:backend_protocol_error
cl-te             h1      err:502:backend_protocol_error
# legal, if unusual: a 3 MB event, events split across sends
big-sse           h1,h2c  ok-big
sse-split         h1,h2c  ok-sse
# resets, GOAWAY, bytes that are not HTTP/2
rst-head          h1,h2c  err:502:backend_closed
rst-mid           h1,h2c  cut-sse:backend_closed
close-mid         h1,h2c  cut-sse:backend_closed
h2-goaway         h2c     cut-sse:backend_closed
h2-goaway-0       h2c     cut-sse:backend_closed
h2-rst            h2c     cut-sse:backend_closed
h2-garbage        h2c     err:502:backend_protocol_error
h2-garbage-mid    h2c     cut-sse:backend_protocol_error/backend_closed
'
ONLY=${AV_HOSTILE_MODES:-} # a space-separated list of modes, to run only those
while read -r mode backends expect <&3; do
    case $mode in ''|'#'*) continue ;; esac
    case " ${ONLY:-$mode} " in *" $mode "*) ;; *) continue ;; esac
    stream=false
    case $expect in *sse*|*big*) stream=true ;; esac
    case $mode in head*) stream=head ;; esac
    for be in $(echo "$backends" | tr ',' ' '); do
        for side in h1 h2c tls; do
            batch "$side" "$mode" "$be" /v1/chat/completions "$stream" "$expect"
            extra=""
            case $mode in sse-split|big-sse) extra='"usage_estimated":false,' ;; esac # usage read across sends, and past a 3 MB event
            case $mode in head*) ;; *) kpi_check "$mode from $be backend, $side client" "$extra" ;; esac
            serves "$side" "$be" "after $mode from $be backend, $side client"
        done
    done
done 3<<CASES_END
$CASES
CASES_END

# usage counts no backend could mean are not believed: the KPI line says the
# usage is estimated and shows no count below zero or above 2^53; 7 is believed
usage_ok() { # BELIEVED
    local id line counts
    bad=""
    for id in $IDS; do
        wait_until 3 kpi_has "$id"
        line=$(kpi_line "$id")
        counts=$(printf '%s' "$line" | grep -oE '"(input|output)_tokens":[^,]*' | tr '\n' ' ')
        if [ "$1" = yes ]; then
            printf '%s' "$line" | grep -q '"input_tokens":7,"output_tokens":7,.*"usage_estimated":false' ||
                bad="$id: $counts in: $line"
        else
            printf '%s' "$line" | grep -q '"usage_estimated":true' || bad="$id: usage believed: $counts"
            printf '%s' "$counts" | tr ' ' '\n' | awk -F: 'NF == 2 && $2 != "null" && ($2 !~ /^[0-9]+$/ || $2 + 0 > 9007199254740992) {exit 1}' ||
                bad="$id: counts out of bounds: $counts"
        fi
        [ -n "$bad" ] && break
    done
    [ -z "$bad" ]
}
for tokens in 7 99999999999999999999 -5 1.5 1e400; do
    for shape in "chat json" "chat sse" "messages json" "messages sse"; do
        set -- $shape
        stream=false expect=ok-json
        [ "$2" = sse ] && stream=true expect=ok-sse
        # two from each client side, six at once
        ERR_AT=$(wc -c <"$T/aviary.err")
        IDS="" pids=""
        for side in h1 h2c tls; do
            for k in 0 1; do
                id="usage-$1-$2-$(printf '%s' "$tokens" | tr -c 'a-zA-Z0-9\n' '_')-$side-$k-$$"
                IDS="$IDS $id"
                ask "$side" "$id" "$2" h1 "/v1/$( [ "$1" = chat ] && echo chat/completions || echo messages)" "$stream" "$tokens" &
                pids="$pids $!"
            done
        done
        for p in $pids; do wait "$p"; done
        bad=""
        for id in $IDS; do
            judge "$expect" "$id" h1
            [ -n "$WHY" ] && { bad="$id: $WHY"; break; }
        done
        what="usage $tokens in a $1 $2 answer"
        if [ -z "$bad" ]; then ok "$what: answered whole on every client side"; else not_ok "$what: answered whole" "$bad"; fi
        believed=no
        [ "$tokens" = 7 ] && believed=yes
        if usage_ok "$believed"; then ok "$what: believed $believed, and the KPI line says so"
        else not_ok "$what: KPI line: usage believed $believed, counts within [0, 2^53]" "$bad"; fi
        alive "$what" || true
    done
done

# memory: bounded after all of it (AddressSanitizer keeps freed memory in quarantine)
rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$AV_PID/status")
bound=204800
grep -q __asan_init "$B/src/aviary" 2>/dev/null && bound=614400
check "the gateway's RSS after every mode: $((rss / 1024)) MiB, under $((bound / 1024)) MiB" test "$rss" -lt "$bound"
check "hostile itself is still up (a failure above is the gateway's)" kill -0 "$HOSTILE_PID"

stop_pid "$AV_PID"
is "aviary exits 0" "$?" 0
stop_pid "$HOSTILE_PID"
done_testing
