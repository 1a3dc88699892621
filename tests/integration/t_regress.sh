# t_regress.sh: defects that once crashed or corrupted the gateway and need
# no hostile backend to show: HEAD requests whose answers carry a body (as
# aviary-sim's do) at concurrency above max_connections, and config that once
# read past a url or made two edits of one body member.
. "$(dirname "$0")/lib.sh"

start_sim sim
write_config "$T/a.json" "$sim_PORT" '' ', "max_connections": 4'
start_aviary "$T/a.json"

# 300 HEAD requests, 100 at a time, on 4 backend connections: each answer
# carries a body it should not, so every connection closes after its answer
# (it once read the connection it had just freed)
i=0
while [ "$i" -lt 3 ]; do
    j=0; pids=""
    while [ "$j" -lt 100 ]; do
        curl -s -I --max-time 10 -o /dev/null -w '%{http_code}\n' "http://$AV/v1/models" >>"$T/head.codes" &
        pids="$pids $!"; j=$((j + 1))
    done
    for p in $pids; do wait "$p"; done
    i=$((i + 1))
done
is "300 HEAD requests, 100 at a time: all answered with the backend's status" \
   "$(sort "$T/head.codes" | uniq -c | tr -s ' ')" " 300 404"
check "the gateway is up after them" kill -0 "$AV_PID"
code=$(curl -s --max-time 10 -o /dev/null -w '%{http_code}' "http://$AV/v1/chat/completions" -d '{"model":"m","messages":[]}')
is "and answers a chat request" "$code" 200

# a backend answer with extra bytes after it (HEAD with a body) is not
# mistaken for the next answer on a reused connection
codes=""
k=0
while [ "$k" -lt 5 ]; do
    curl -s -I --max-time 5 -o /dev/null "http://$AV/v1/models"
    codes="$codes$(curl -s --max-time 5 -o /dev/null -w '%{http_code}' "http://$AV/v1/chat/completions" -d '{"messages":[]}')"
    k=$((k + 1))
done
is "HEAD then POST, five times: every POST gets its own answer" "$codes" 200200200200200
stop_pid "$AV_PID"
is "aviary exits 0 after them" "$?" 0
is "a KPI line for each of the 311 requests" "$(wc -l <"$T/kpi.log" | tr -d ' ')" 311

# config: a url that once made the loader read before its buffer, and params
# that once made two overlapping edits of one member
write_config "$T/b.json" 1
sed 's|"url": "http://127.0.0.1:1"|"url": "http://["|' "$T/b.json" >"$T/c.json"
out=$("$B/src/aviary" -t -c "$T/c.json" 2>&1); rc=$?
is "url http://[ is refused" "$rc" 1
like "and the error says where and why" "$out" 'c.json:[0-9]+:[0-9]+: backends.sim.url: "http://\[": an IPv6 host goes in brackets'
echo "You are terse." >"$T/p.txt"
sed 's|"model": "sim-large"}|"model": "sim-large", "system_prompt": "p.txt", "params": {"messages": []}}|' "$T/b.json" >"$T/d.json"
out=$("$B/src/aviary" -t -c "$T/d.json" 2>&1); rc=$?
is "params.messages beside a system_prompt is refused" "$rc" 1
like "and the error names the key" "$out" 'routes\[0\].variants\[0\].params.messages: the variant.s "system_prompt" is written into "messages"'
done_testing
