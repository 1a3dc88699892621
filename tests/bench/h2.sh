#!/bin/bash
# tests/bench/h2.sh BUILDDIR [SECONDS] [ROUNDS]: HTTP/2 with h2load, in one run on loopback:
# aviary-sim direct (h2c), aviary in front of it (client side h2 over TLS or h2c; backend
# side keep-alive HTTP/1.1 or h2c) and nginx in front of it (h2 over TLS or h2c, keep-alive
# HTTP/1.1 to the sim, as nginx cannot speak HTTP/2 to backends), at 1, 64 and 256
# concurrent streams. Prints req/s, p50 and p99 (from h2load's per-request log), the CPU
# time each proxy spent per request, and the aviary/nginx ratios, taken within a round and
# their median reported. Needs: apt-get install nginx-light nghttp2-client openssl.
set -eu
B=${1:-build}
SECS=${2:-5}
ROUNDS=${3:-3}
command -v h2load >/dev/null || { echo "bench: h2load missing: apt-get install nghttp2-client" >&2; exit 1; }
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
[ -x "$NGINX" ] || { echo "bench: nginx missing: apt-get install nginx-light" >&2; exit 1; }
T=$(mktemp -d "${TMPDIR:-/tmp}/aviary-bench.XXXXXX")
pids=""
cleanup() { for p in $pids; do kill "$p" 2>/dev/null || true; done; sleep 0.2; rm -rf "$T"; }
trap cleanup EXIT
. "$(dirname "$0")/lib.sh"

openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=localhost" -keyout "$T/tls.key" -out "$T/tls.crt" \
    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" 2>/dev/null

taskset -c "$OTHER_CPU" "$B/sim/aviary-sim" -l 127.0.0.1:0 --port-file "$T/sim.port" --tokens 16 2>/dev/null &
SIM_PID=$!
pids="$pids $!"
wait_file "$T/sim.port"
SIM=$(cat "$T/sim.port")

# two listeners (TLS, cleartext) and two routes to the same sim: HTTP/1.1 or h2c behind
cat >"$T/aviary.json" <<JSON
{"listen": [{"address": "127.0.0.1:0", "tls": {"cert": "tls.crt", "key": "tls.key"}}, {"address": "127.0.0.1:0"}],
 "workers": 1, "admin": {"address": "127.0.0.1:0"},
 "log": {"kpi": "$T/kpi.log", "level": "warn"},
 "backends": {"h1": {"url": "http://127.0.0.1:$SIM", "max_connections": 256},
              "h2c": {"url": "http://127.0.0.1:$SIM", "protocol": "h2c", "max_connections": 8}},
 "routes": [{"name": "h2c", "match": {"headers": {"x-back": "h2c"}},
             "variants": [{"name": "stable", "backend": "h2c", "model": "bench-model"}]},
            {"name": "h1", "match": {"path_prefix": "/v1/"},
             "variants": [{"name": "stable", "backend": "h1", "model": "bench-model"}]}]}
JSON
taskset -c "$PROXY_CPU" "$B/src/aviary" -c "$T/aviary.json" --ready-file "$T/ready" 2>"$T/aviary.err" &
AV_PID=$!
pids="$pids $!"
wait_file "$T/ready"
AV_TLS=$(awk '$1 == "listen" {print $2; exit}' "$T/ready")
AV_H2C=$(awk '$1 == "listen" {n++; if (n == 2) print $2}' "$T/ready")

NG_TLS=$(free_port); NG_H2C=$(free_port)
mkdir -p "$T/ng"
cat >"$T/nginx.conf" <<CONF
worker_processes 1;
pid $T/nginx.pid;
error_log $T/nginx.err warn;
events { worker_connections 4096; }
http {
    access_log $T/access.log combined buffer=64k flush=1s;
    client_body_temp_path $T/ng; proxy_temp_path $T/ng; fastcgi_temp_path $T/ng;
    uwsgi_temp_path $T/ng; scgi_temp_path $T/ng;
    http2_max_concurrent_streams 128;
    keepalive_requests 100000000; # h2load does not reconnect after a GOAWAY
    upstream sim { server 127.0.0.1:$SIM; keepalive 256; }
    server {
        listen 127.0.0.1:$NG_TLS ssl http2;
        listen 127.0.0.1:$NG_H2C http2;
        ssl_certificate $T/tls.crt;
        ssl_certificate_key $T/tls.key;
        location /v1/ {
            proxy_pass http://sim;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }
    }
}
CONF
taskset -c "$PROXY_CPU" "$NGINX" -c "$T/nginx.conf" -g 'daemon off;' 2>>"$T/nginx.err" &
NG_PID=$!
pids="$pids $!"
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$NG_H2C/v1/models" --http2-prior-knowledge && break; sleep 0.05; done
curl -sf -o /dev/null --http2-prior-knowledge "http://127.0.0.1:$NG_H2C/v1/models" || { echo "bench: nginx did not start:" >&2; cat "$T/nginx.err" >&2; exit 1; }

printf '%s' '{"model":"m","messages":[{"role":"user","content":"hello there"}]}' >"$T/body.json"

# run NAME URL STREAMS [HEADER]: h2load for SECS seconds after a second of warm-up
run() {
    local who="" c m
    case "$1" in aviary*) who=$AV_PID ;; nginx*) who=$NG_PID ;; direct*) who=$SIM_PID ;; esac
    case "$3" in 1) c=1; m=1 ;; 64) c=4; m=16 ;; *) c=8; m=32 ;; esac
    rm -f "$T/h2load.log"
    t0=$(ticks $who)
    out=$(taskset -c "$OTHER_CPU" h2load -D "$SECS" --warm-up-time=1 -c "$c" -m "$m" -d "$T/body.json" \
          -H 'content-type: application/json' ${4:+-H "$4"} --log-file="$T/h2load.log" "$2" 2>&1)
    t1=$(ticks $who)
    nreq=$(printf '%s\n' "$out" | awk '/^requests:/ {print $8}')
    rps=$(printf '%s\n' "$out" | awk '/^finished in/ {print $4}')
    # h2load's log: start time, status, duration in microseconds per request
    read -r p50 p99 < <(sort -n -k3 "$T/h2load.log" | awk '{d[NR] = $3} END {
        if (NR == 0) { print "0 0"; exit }
        i50 = int(NR * 0.50); i99 = int(NR * 0.99); if (i50 < 1) i50 = 1; if (i99 < 1) i99 = 1
        printf "%.3f %.3f\n", d[i50] / 1000, d[i99] / 1000 }')
    cpu=$(cpu_per_req $((t1 - t0)) "$nreq")
    errs=$(printf '%s\n' "$out" | awk '/^status codes:/ && ($3 + 0) != ($0 ~ /xx/) {print}' | grep -v ' 0 3xx, 0 4xx, 0 5xx' || true)
    record "$1/$3" "$rps" "$p50" "$p99" "$cpu"
    printf '%-16s s=%-3s %10s req/s  p50 %8s ms  p99 %8s ms  cpu %6s us/req %s\n' \
        "$1" "$3" "$rps" "$p50" "$p99" "$cpu" "$errs"
}

echo "== $(date -u +%FT%TZ), $NCPU cores, ${SECS}s per run, $ROUNDS rounds; proxies pinned to CPU $PROXY_CPU, one worker each"
RSS_START=""
for round in $(seq "$ROUNDS"); do
    echo "-- round $round"
    for s in 1 64 256; do
        run direct "http://127.0.0.1:$SIM/v1/chat/completions" $s
        run aviary-tls/h1 "https://$AV_TLS/v1/chat/completions" $s
        run aviary-tls/h2c "https://$AV_TLS/v1/chat/completions" $s "x-back: h2c"
        run nginx-tls/h1 "https://127.0.0.1:$NG_TLS/v1/chat/completions" $s
        run aviary-h2c/h1 "http://$AV_H2C/v1/chat/completions" $s
        run aviary-h2c/h2c "http://$AV_H2C/v1/chat/completions" $s "x-back: h2c"
        run nginx-h2c/h1 "http://127.0.0.1:$NG_H2C/v1/chat/completions" $s
    done
    [ -n "$RSS_START" ] || RSS_START=$(rss_kb "$AV_PID")
done
RSS_END=$(rss_kb "$AV_PID")

echo
echo "== aviary / nginx (nginx always keep-alive HTTP/1.1 to the sim), median over $ROUNDS rounds"
echo "   (throughput: higher is better; added latency = proxy minus direct: lower is better)"
for s in 1 64 256; do
    ratio_line "tls, h1 back/$s" "aviary-tls/h1/$s" "nginx-tls/h1/$s" "direct/$s"
    ratio_line "tls, h2c back/$s" "aviary-tls/h2c/$s" "nginx-tls/h1/$s" "direct/$s"
    ratio_line "h2c, h1 back/$s" "aviary-h2c/h1/$s" "nginx-h2c/h1/$s" "direct/$s"
    ratio_line "h2c, h2c back/$s" "aviary-h2c/h2c/$s" "nginx-h2c/h1/$s" "direct/$s"
done
echo
echo "aviary RSS: ${RSS_START} KiB after round 1, ${RSS_END} KiB after round $ROUNDS"
echo "aviary KPI lines written: $(wc -l <"$T/kpi.log" 2>/dev/null || echo 0)"
