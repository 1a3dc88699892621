# t_h2_abuse.sh: HTTP/2 defences and RFC 9113 conformance, driven by a raw
# client (tests/tools/h2abuse; "h2abuse list" names its cases). Floods end in
# GOAWAY ENHANCE_YOUR_CALM while a streamed completion on another connection
# goes on undisturbed and memory stays bounded; each rule of RFC 9113
# sections 3 to 8 a client can break gets the reaction the RFC asks for and
# the gateway goes on answering; requests that never complete end in 408
# within the client timeouts, and what one connection can pin is bounded.
. "$(dirname "$0")/lib.sh"

ABUSE="$B/tests/tools/h2abuse"
start_sim sim
write_config "$T/a.json" "$sim_PORT"
start_aviary "$T/a.json"
HOST=${AV%:*}
PORT=${AV##*:}
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$AV_PID/status"; }
serving() { curl -s --max-time 5 --http2-prior-knowledge -o /dev/null -w '%{http_code}' "http://$AV/v1/models"; }
# under AddressSanitizer freed memory stays resident in its quarantine (up to
# 256 MiB); the plain pass is the measurement, the sanitizer pass a sanity bound
asan=0
{ [ -n "${ASAN_OPTIONS:-}" ] || grep -q -- '-fsanitize=address' "$B/Makefile"; } && asan=1

# a slow stream on its own connection that must come through whole (20 events over ~4 s)
curl -s -N --max-time 30 --http2-prior-knowledge -H 'x-sim-tokens: 20' -H 'x-sim-tps: 5' \
    "http://$AV/v1/chat/completions" -d '{"stream":true,"messages":[]}' >"$T/bystander.out" &
BYSTANDER=$!
PIDS="$PIDS $BYSTANDER"
rss0=$(rss_kb)

for case in "rapid-reset 5000" "continuation 5000" "hpack-bomb 5000" "trailer-bomb 5000" "settings 5000" \
            "ping 5000" "priority 5000" "empty-data 5000" "streams 1000"; do
    set -- $case
    out=$("$ABUSE" "$HOST" "$PORT" "$1" "$2" 2>&1)
    like "$1: GOAWAY ENHANCE_YOUR_CALM" "$out" '^GOAWAY ENHANCE_YOUR_CALM'
    is "$1: the gateway serves the next client" "$(serving)" 200
done
grep -q 'ENHANCE_YOUR_CALM: streams reset by the client (rapid reset)' "$T/aviary.err"
check "the log names the defence that tripped" test $? -eq 0

# the same frames, below the limits, are not punished
for case in "rapid-reset 100" "settings 20" "ping 50" "priority 200" "empty-data 20" "streams 100"; do
    set -- $case
    out=$("$ABUSE" "$HOST" "$PORT" "$1" "$2" 1 2>&1)
    like "$1 x$2 is within the limits: no GOAWAY" "$out" '^no GOAWAY within'
done

# the first round again, many times over: memory does not follow
for i in 1 2 3 4 5; do
    for a in rapid-reset hpack-bomb ping streams; do "$ABUSE" "$HOST" "$PORT" "$a" 3000 >/dev/null 2>&1; done
done
rss1=$(rss_kb)
bound=16384
[ "$asan" = 1 ] && bound=131072
check "after 28 abusive connections Aviary's memory grew by $((rss1 - rss0)) KiB, under $((bound / 1024)) MiB" \
    test $((rss1 - rss0)) -lt "$bound"

wait_pid "$BYSTANDER" 30
is "the bystander's stream got all 20 events" "$(grep -c '"delta":{"content"' "$T/bystander.out")" 20
is "the bystander's stream ended with [DONE]" "$(grep -v '^$' "$T/bystander.out" | tail -1)" "data: [DONE]"

# RFC 9113, one rule per case: section, case, what the gateway's answer must
# match (h2abuse's lines joined by spaces). "stream N: ..." is how a stream
# ended; each case that keeps its connection ends with a GET that must be
# answered 200; after each case a new connection must be served too. Where
# the RFC asks for a stream error, a connection error of the same code is
# allowed (5.4.1) and nghttp2 sometimes answers so: the patterns take either.
while read -r sec name want; do
    case "$sec" in '' | '#'*) continue ;; esac
    out=$("$ABUSE" "$HOST" "$PORT" "$name" 1 5 2>&1)
    like "RFC 9113 $sec $name" "$out; next connection: $(serving)" "$want.*; next connection: 200$"
done <<'EOF'
3.4   preface-ping                     GOAWAY PROTOCOL_ERROR .*closed
3.4   preface-settings-ack             GOAWAY PROTOCOL_ERROR .*closed
3.4   preface-headers                  GOAWAY PROTOCOL_ERROR .*closed
3.4   preface-garbled                  ^closed without GOAWAY \(EOF\)
4.1   unknown-frame                    stream 11: 200
4.1   unknown-frame-on-stream          stream 1: 200 .*stream 11: 200
4.1   reserved-bit                     stream 1: 200
4.2   data-too-big                     GOAWAY FRAME_SIZE_ERROR .*closed
4.2   headers-too-big                  GOAWAY FRAME_SIZE_ERROR .*closed
4.3   hpack-index-0                    GOAWAY COMPRESSION_ERROR .*closed
4.3   hpack-index-too-big              GOAWAY COMPRESSION_ERROR .*closed
4.3   frame-inside-header-block        GOAWAY PROTOCOL_ERROR .*closed
4.3   header-block-in-continuations    stream 1: 200
5.1   data-on-idle-stream              GOAWAY PROTOCOL_ERROR .*closed
5.1   rst-on-idle-stream               GOAWAY PROTOCOL_ERROR .*closed
5.1   window-update-on-idle-stream     GOAWAY PROTOCOL_ERROR .*closed
5.1   data-on-half-closed-stream       (RST_STREAM|GOAWAY) STREAM_CLOSED
5.1   headers-on-half-closed-stream    (RST_STREAM|GOAWAY) STREAM_CLOSED
5.1   data-on-closed-stream            stream 1: 200 .*GOAWAY STREAM_CLOSED .*closed
5.1   headers-on-closed-stream         stream 1: 200 .*GOAWAY STREAM_CLOSED .*closed
5.1   data-after-reset                 (RST_STREAM|GOAWAY) STREAM_CLOSED
5.1.1 lower-stream-id                  stream 5: 200 .*GOAWAY PROTOCOL_ERROR last_stream=5 .*closed
5.1.1 lower-stream-id-open             GOAWAY PROTOCOL_ERROR last_stream=5 .*closed
5.1.1 lower-stream-id-after-priority   stream 5: 200 .*GOAWAY PROTOCOL_ERROR last_stream=5 .*closed
5.1.1 even-stream-id                   GOAWAY PROTOCOL_ERROR .*closed
5.1.1 trailers-on-refused-stream       stream 257: RST_STREAM REFUSED_STREAM .*stream 259: 200
5.1.2 too-many-streams                 (stream 257: RST_STREAM (PROTOCOL_ERROR|REFUSED_STREAM)|GOAWAY PROTOCOL_ERROR last_stream=255)
5.3.1 priority-on-itself               (RST_STREAM|GOAWAY) PROTOCOL_ERROR
5.3.1 headers-priority-on-itself       (RST_STREAM|GOAWAY) PROTOCOL_ERROR
5.4   rst-unknown-code                 stream 11: 200
5.5   unknown-frame-inside-header-block GOAWAY PROTOCOL_ERROR .*closed
6.1   data-on-stream-0                 GOAWAY PROTOCOL_ERROR .*closed
6.1   data-bad-padding                 GOAWAY PROTOCOL_ERROR .*closed
6.1   post-with-body                   stream 1: 200
6.2   headers-on-stream-0              GOAWAY PROTOCOL_ERROR .*closed
6.2   headers-bad-padding              GOAWAY PROTOCOL_ERROR .*closed
6.3   priority-on-stream-0             GOAWAY PROTOCOL_ERROR .*closed
6.3   priority-bad-length              (RST_STREAM|GOAWAY) FRAME_SIZE_ERROR
6.3   priority-idle-stream             stream 11: 200
6.4   rst-on-stream-0                  GOAWAY PROTOCOL_ERROR .*closed
6.4   rst-bad-length                   GOAWAY FRAME_SIZE_ERROR .*closed
6.5   settings-ack-with-payload        GOAWAY FRAME_SIZE_ERROR .*closed
6.5   settings-on-stream               GOAWAY PROTOCOL_ERROR .*closed
6.5   settings-bad-length              GOAWAY FRAME_SIZE_ERROR .*closed
6.5.2 settings-enable-push-2           GOAWAY PROTOCOL_ERROR .*closed
6.5.2 settings-window-too-big          GOAWAY FLOW_CONTROL_ERROR .*closed
6.5.2 settings-frame-size-small        GOAWAY PROTOCOL_ERROR .*closed
6.5.2 settings-frame-size-big          GOAWAY PROTOCOL_ERROR .*closed
6.5.2 settings-unknown-id              SETTINGS ACK .*SETTINGS ACK .*stream 11: 200
6.7   ping-echo                        PING ACK h2abuse! .*stream 11: 200
6.7   ping-unknown-flags               PING ACK h2abuse! .*stream 11: 200
6.7   ping-ack-unsolicited             ^SETTINGS ACK stream 11: 200
6.7   ping-bad-length                  GOAWAY FRAME_SIZE_ERROR .*closed
6.7   ping-on-stream                   GOAWAY PROTOCOL_ERROR .*closed
6.8   goaway-on-stream                 GOAWAY PROTOCOL_ERROR .*closed
6.9   window-update-0-on-stream        (stream 1: RST_STREAM|GOAWAY) PROTOCOL_ERROR
6.9   window-update-0-on-connection    GOAWAY PROTOCOL_ERROR .*closed
6.9   window-update-bad-length         GOAWAY FRAME_SIZE_ERROR .*closed
6.9.1 window-overflow-on-stream        stream 1: RST_STREAM FLOW_CONTROL_ERROR .*stream 11: 200
6.9.1 window-overflow-on-connection    GOAWAY FLOW_CONTROL_ERROR .*closed
6.9.2 settings-window-overflow         GOAWAY FLOW_CONTROL_ERROR .*closed
6.10  continuation-without-headers     GOAWAY PROTOCOL_ERROR .*closed
6.10  continuation-after-end-headers   GOAWAY PROTOCOL_ERROR .*closed
6.10  continuation-other-stream        GOAWAY PROTOCOL_ERROR .*closed
8.1   trailers                         stream 1: 200 .*stream 3: 200
8.1   trailers-without-end-stream      stream 1: RST_STREAM PROTOCOL_ERROR .*stream 3: 200
8.1   trailers-with-pseudo-header      stream 1: RST_STREAM PROTOCOL_ERROR .*stream 3: 200
8.1.1 content-length-over-data         stream 1: RST_STREAM PROTOCOL_ERROR .*stream 3: 200
8.1.1 content-length-under-data        stream 1: RST_STREAM PROTOCOL_ERROR .*stream 3: 200
8.1.1 content-length-not-a-number      stream 1: RST_STREAM PROTOCOL_ERROR .*stream 3: 200
8.2   upper-case-name                  stream 1: RST_STREAM PROTOCOL_ERROR .*stream 3: 200
8.2.1 name-with-space                  stream 1: RST_STREAM PROTOCOL_ERROR .*stream 3: 200
8.2.1 value-with-newline               stream 1: RST_STREAM PROTOCOL_ERROR .*stream 3: 200
8.2.1 value-with-nul                   stream 1: RST_STREAM PROTOCOL_ERROR .*stream 3: 200
8.2.1 value-leading-space              stream 1: RST_STREAM PROTOCOL_ERROR .*stream 3: 200
8.2.1 value-trailing-tab               stream 1: RST_STREAM PROTOCOL_ERROR .*stream 3: 200
8.2.2 connection-header                stream 1: RST_STREAM PROTOCOL_ERROR .*stream 3: 200
8.2.2 keep-alive-header                stream 1: RST_STREAM PROTOCOL_ERROR .*stream 3: 200
8.2.2 proxy-connection-header          stream 1: RST_STREAM PROTOCOL_ERROR .*stream 3: 200
8.2.2 transfer-encoding-header         stream 1: RST_STREAM PROTOCOL_ERROR .*stream 3: 200
8.2.2 upgrade-header                   stream 1: RST_STREAM PROTOCOL_ERROR .*stream 3: 200
8.2.2 te-gzip                          stream 1: RST_STREAM PROTOCOL_ERROR .*stream 3: 200
8.2.2 te-trailers                      stream 1: 200 .*stream 3: 200
8.3   pseudo-unknown                   stream 1: RST_STREAM PROTOCOL_ERROR .*stream 3: 200
8.3   pseudo-status-in-request         stream 1: RST_STREAM PROTOCOL_ERROR .*stream 3: 200
8.3   pseudo-after-regular             stream 1: RST_STREAM PROTOCOL_ERROR .*stream 3: 200
8.3.1 pseudo-path-twice                stream 1: RST_STREAM PROTOCOL_ERROR .*stream 3: 200
8.3.1 pseudo-method-twice              stream 1: RST_STREAM PROTOCOL_ERROR .*stream 3: 200
8.3.1 no-method                        stream 1: RST_STREAM PROTOCOL_ERROR .*stream 3: 200
8.3.1 no-scheme                        stream 1: RST_STREAM PROTOCOL_ERROR .*stream 3: 200
8.3.1 no-path                          stream 1: RST_STREAM PROTOCOL_ERROR .*stream 3: 200
8.3.1 empty-path                       stream 1: RST_STREAM PROTOCOL_ERROR .*stream 3: 200
8.3.1 relative-path                    stream 1: RST_STREAM PROTOCOL_ERROR .*stream 3: 200
8.3.1 options-asterisk                 stream 1: 400 bad_request .*stream 3: 200
8.3.1 unknown-method                   stream 1: 501 method_not_supported .*stream 3: 200
8.3.1 host-differs-from-authority      stream 1: 400 bad_request .*stream 3: 200
8.3.1 host-same-as-authority           stream 1: 200 .*stream 3: 200
8.5   protocol-pseudo-header           stream 1: RST_STREAM PROTOCOL_ERROR .*stream 3: 200
8.5   connect-with-path                stream 1: RST_STREAM PROTOCOL_ERROR .*stream 3: 200
8.5   connect                          stream 1: 400 bad_request .*stream 3: 200
8.4   push-promise                     GOAWAY PROTOCOL_ERROR .*closed
EOF
grep -q 'PROTOCOL_ERROR: HEADERS open a stream with a lower id than one already opened' "$T/aviary.err"
check "the log says why a lower stream id ended the connection" test $? -eq 0

stop_pid "$AV_PID"
is "aviary exits cleanly after the abuse" "$?" 0

# Requests that never complete, with 1 s client timeouts and 1 MiB bodies.
write_config "$T/b.json" "$sim_PORT" \
    '"client": {"header_timeout_ms": 1000, "idle_timeout_ms": 1000, "max_body_bytes": 1048576},'
start_aviary "$T/b.json"
HOST=${AV%:*}
PORT=${AV##*:}
out=$("$ABUSE" "$HOST" "$PORT" stuck-headers 1 5 2>&1)
like "a header block that never ends: 408 request_timeout and GOAWAY, then the close" "$out" \
    'GOAWAY NO_ERROR last_stream=1 .*stream 1: 408 request_timeout .*closed'
out=$("$ABUSE" "$HOST" "$PORT" stuck-body 1 5 2>&1)
like "a body that never ends: 408 request_timeout, RST_STREAM NO_ERROR; late DATA ignored, the connection serves" \
    "$out" 'stream 1: 408 request_timeout stream 1: then RST_STREAM NO_ERROR stream 3: 200'
out=$("$ABUSE" "$HOST" "$PORT" idle 1 5 2>&1)
like "a connection without a stream: GOAWAY NO_ERROR after client.idle_timeout_ms, then the close" "$out" \
    'GOAWAY NO_ERROR last_stream=0 .*closed'
out=$("$ABUSE" "$HOST" "$PORT" no-window 1 5 2>&1)
like "a client that never opens its flow-control window: GOAWAY and the close" "$out" \
    'GOAWAY NO_ERROR last_stream=1 .*closed'
grep -q 'HTTP/2 connection closed: the client took nothing for' "$T/aviary.err"
check "the log says why the connection without progress was closed" test $? -eq 0
out=$("$ABUSE" "$HOST" "$PORT" big-bodies 8 5 2>&1)
like "8 bodies of 256 KiB that never end, 1 MiB budget: the streams past it refused, the others 408" "$out" \
    'all 8 streams ended: 408 request_timeout x[1-5], RST_STREAM REFUSED_STREAM x[3-7]'
is "the gateway serves after the refused streams" "$(serving)" 200

# 20 connections x 100 streams whose requests never end, three rounds: every
# stream ends 408 within the timeouts and memory is reused, not added to
rss0=$(rss_kb)
for round in 1 2 3; do
    pids=""
    for i in $(seq 20); do
        "$ABUSE" "$HOST" "$PORT" stuck-streams 100 10 >"$T/stuck.$i" 2>&1 &
        pids="$pids $!"
    done
    PIDS="$PIDS $pids"
    sleep 0.5
    [ "$round" = 1 ] && { rss_peak=$(rss_kb); code_peak=$(serving); }
    for p in $pids; do wait "$p"; done
    [ "$round" = 1 ] && rss1=$(rss_kb)
    ended=$(cat "$T"/stuck.* | grep -c '^all 100 streams ended: 408 request_timeout x100$')
    is "round $round: 20 connections x 100 stuck streams all ended 408" "$ended" 20
done
rss3=$(rss_kb)
is "the gateway answers while 2000 streams are stuck" "$code_peak" 200
is "the gateway answers after them" "$(serving)" 200
bound=32768
[ "$asan" = 1 ] && bound=262144
check "2000 stuck streams took $((rss_peak - rss0)) KiB at their peak, $((rss1 - rss0)) KiB after, under $((bound / 1024)) MiB" \
    test $((rss1 - rss0)) -lt "$bound" -a $((rss_peak - rss0)) -lt "$bound"
again=4096
[ "$asan" = 1 ] && again=262144
check "two more rounds added $((rss3 - rss1)) KiB (under $((again / 1024)) MiB): the memory is reused" \
    test $((rss3 - rss1)) -lt "$again"

stop_pid "$AV_PID"
is "aviary exits cleanly after the stuck streams" "$?" 0
stop_pid "$sim_PID"
done_testing
