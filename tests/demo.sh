#!/bin/sh
# tests/demo.sh BUILDDIR: aviary in front of two aviary-sim backends on loopback:
# a few requests through it, streamed and not, then the KPI lines they produced.
set -eu
cd "$(dirname "$0")/.."
B=${1:-build}
T=$(mktemp -d "${TMPDIR:-/tmp}/aviary-demo.XXXXXX")
pids=""
trap 'for p in $pids; do kill "$p" 2>/dev/null || true; done; rm -rf "$T"' EXIT
"$B/src/aviary-sim" -l 127.0.0.1:0 --port-file "$T/p1" --ttft-ms 150 --tps 40 --models llama-3.1-8b 2>/dev/null & pids="$pids $!"
"$B/src/aviary-sim" -l 127.0.0.1:0 --port-file "$T/p2" --ttft-ms 80 --tps 80 --models llama-3.3-8b 2>/dev/null & pids="$pids $!"
i=0; while [ ! -s "$T/p1" ] || [ ! -s "$T/p2" ]; do i=$((i + 1)); [ $i -lt 100 ] || exit 1; sleep 0.05; done
sed -e "s|127.0.0.1:8080|127.0.0.1:0|; s|127.0.0.1:9901|127.0.0.1:0|; s|\"kpi\": \"-\"|\"kpi\": \"$T/kpi.log\"|" \
    -e "s|127.0.0.1:8001|127.0.0.1:$(cat "$T/p1")|; s|127.0.0.1:8002|127.0.0.1:$(cat "$T/p2")|" conf/aviary.json >"$T/aviary.json"
"$B/src/aviary" -c "$T/aviary.json" --ready-file "$T/ready" 2>"$T/aviary.err" & AV_PID=$!; pids="$pids $AV_PID"
i=0; while [ ! -s "$T/ready" ]; do i=$((i + 1)); [ $i -lt 100 ] || { cat "$T/aviary.err"; exit 1; }; sleep 0.05; done
AV=$(awk '$1 == "listen" {print $2; exit}' "$T/ready")
body='{"model":"any","messages":[{"role":"user","content":"Say hello"}]}'
sbody='{"model":"any","stream":true,"messages":[{"role":"user","content":"Say hello"}]}'

echo "== aviary on $AV, two aviary-sim backends"
echo; echo "== 1. a chat completion (route chat, variant stable)"
curl -s --max-time 10 "http://$AV/v1/chat/completions" -H 'content-type: application/json' -d "$body"
echo; echo "== 2. the same, streamed: events print as they arrive"
curl -s -N --max-time 10 "http://$AV/v1/chat/completions" -H 'content-type: application/json' -d "$sbody" | grep -v '^$' | awk 'NR <= 4 || /DONE/'
echo "   ..."
echo; echo "== 3. streamed from the preview variant (x-preview: 1)"
curl -s -N --max-time 10 "http://$AV/v1/chat/completions" -H 'x-preview: 1' -d "$sbody" | grep -c '^data:' | sed 's/$/ events/'
echo; echo "== 4. a path no route matches: an OpenAI-style error"
curl -s --max-time 10 "http://$AV/v2/nothing"
kill -TERM "$AV_PID"; wait "$AV_PID" || true
echo; echo "== the KPI log: one JSON line per request"
cat "$T/kpi.log"
