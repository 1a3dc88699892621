# tests/bench/lib.sh: what the benchmarks share: CPU pinning, free ports,
# the CPU time of processes, and the within-round ratio summary. Sourced by
# run.sh (HTTP/1.1 with wrk) and h2.sh (HTTP/2 with h2load); bash.
NCPU=$(nproc)
# proxies on the last core, the sim and the load generator on the others (or all on one)
PROXY_CPU=$((NCPU - 1)); OTHER_CPU=$([ "$NCPU" -gt 1 ] && echo "0-$((NCPU - 2))" || echo 0)
HZ=$(getconf CLK_TCK)
free_port() { while :; do p=$((20000 + RANDOM % 20000)); ss -ltn | grep -q ":$p " || { echo $p; return; }; done; }
wait_file() { for _ in $(seq 100); do [ -s "$1" ] && return 0; sleep 0.05; done; return 1; }

# ticks PID...: CPU time (user + system, all threads, clock ticks) of the processes
# and their children (nginx's worker)
ticks() {
    local t=0 p
    for p in "$@" $(for q in "$@"; do pgrep -P "$q"; done); do
        t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0)))
    done
    echo "$t"
}

# cpu_per_req TICKS REQUESTS: CPU microseconds per request
cpu_per_req() { awk -v d="$1" -v hz="$HZ" -v n="$2" 'BEGIN { printf "%.1f", (n > 0 ? d * 1e6 / hz / n : 0) }'; }

declare -A RPS P50 P99 CPU
# record KEY RPS P50 P99 CPU: one round's figures for a case
record() { RPS[$1]+=" $2"; P50[$1]+=" $3"; P99[$1]+=" $4"; CPU[$1]+=" $5"; }

# ratio_line LABEL A B D: the median over rounds of A/B within each round for
# req/s and requests per CPU-second, and of (A - D)/(B - D) for p50 and p99
# (the latency each proxy adds over D, the direct run)
ratio_line() {
    awk -v ar="${RPS[$2]}" -v nr="${RPS[$3]}" \
        -v a50="${P50[$2]}" -v n50="${P50[$3]}" -v d50="${P50[$4]}" \
        -v a99="${P99[$2]}" -v n99="${P99[$3]}" -v d99="${P99[$4]}" -v k="$1" \
        -v ac="${CPU[$2]}" -v nc="${CPU[$3]}" '
        function median(s,    v, n, i, j, t) {
            n = split(s, v, " ")
            for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (v[j] < v[i]) { t = v[i]; v[i] = v[j]; v[j] = t }
            return n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
        }
        # ratio of a over b per round; with d, of (a - d) over (b - d)
        function ratios(a, b, d,    x, y, z, n, i, out, den) {
            n = split(a, x, " "); split(b, y, " "); split(d, z, " "); out = ""
            for (i = 1; i <= n; i++) {
                den = d == "" ? y[i] : y[i] - z[i]
                out = out " " (den > 0 ? (d == "" ? x[i] : x[i] - z[i]) / den : 0)
            }
            return median(out)
        }
        BEGIN {
            printf "%-16s req/s %.2f   req per CPU-second %.2f   added p50 %.3f vs %.3f ms (%.2f)   added p99 %.3f vs %.3f ms (%.2f)\n",
                k, ratios(ar, nr, ""), ratios(nc, ac, ""),
                median(a50) - median(d50), median(n50) - median(d50), ratios(a50, n50, d50),
                median(a99) - median(d99), median(n99) - median(d99), ratios(a99, n99, d99)
        }'
}
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

# to_ms VALUE: wrk's "1.23ms" / "456.00us" / "1.02s" in milliseconds
to_ms() { awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n = n; else if (v ~ /s$/) n *= 1000; printf "%.3f", n }'; }

# wrk_run NAME PID URL MODE CONC [SUFFIX]: one wrk run ($T/MODE[SUFFIX].lua, SECS seconds) against
# URL; records and prints req/s, p50, p99 and the CPU time PID (and its children) spent per request
wrk_run() {
    local t0 t1 out nreq cpu rps p50 p99 errs
    t0=$(ticks "$2")
    out=$(taskset -c "$OTHER_CPU" wrk -t1 -c"$5" -d"${SECS}s" --latency -s "$T/$4${6:-}.lua" "$3" 2>&1)
    t1=$(ticks "$2")
    nreq=$(printf '%s\n' "$out" | awk '/requests in/ {print $1}')
    cpu=$(cpu_per_req $((t1 - t0)) "$nreq")
    rps=$(printf '%s\n' "$out" | awk '/^Requests\/sec/ {print $2}')
    p50=$(to_ms "$(printf '%s\n' "$out" | awk '$1 == "50%" {print $2}')")
    p99=$(to_ms "$(printf '%s\n' "$out" | awk '$1 == "99%" {print $2}')")
    errs=$(printf '%s\n' "$out" | awk '/Non-2xx|Socket errors/ {print}' | tr '\n' ' ')
    record "$1/$4/$5" "$rps" "$p50" "$p99" "$cpu"
    printf '%-9s %-7s c=%-3s %10s req/s  p50 %8s ms  p99 %8s ms  cpu %6s us/req %s\n' \
        "$1" "$4" "$5" "$rps" "$p50" "$p99" "$cpu" "$errs"
}

# nginx_h1_conf PORT SIMPORT: $T/nginx.conf for nginx as a keep-alive HTTP/1.1 proxy_pass to
# the sim on 127.0.0.1:PORT (one worker, buffered access log, unbuffered proxying); start it
# with -g 'daemon off;' (and 'master_process off;' for one process)
nginx_h1_conf() {
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
    upstream sim { server 127.0.0.1:$2; keepalive 256; }
    server {
        listen 127.0.0.1:$1;
        location /v1/ {
            proxy_pass http://sim;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }
    }
}
CONF
}
