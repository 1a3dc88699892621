# t_sdk.sh: the official OpenAI and Anthropic SDKs (npm packages, versions
# pinned in tests/sdk/package-lock.json) drive aviary in front of aviary-sim,
# one route per dialect (and one to an h2c backend): chat, tool calls, the
# Responses API, embeddings, messages, tool use, count_tokens, every class
# of error as the SDK's typed
# error, streams cut by the backend and stopped by a policy; each request's
# KPI line is checked, then /metrics, /kpi and the KPI log are compared.
# Needs node 18+ (the SDKs name 20+; every case here passes on Debian 12's
# 18.20) and `npm ci --prefix tests/sdk` (tests/bootstrap.sh does both);
# without them it fails and says so.
. "$(dirname "$0")/lib.sh"

SDK="$S/tests/sdk"
# node and the packages are prerequisites: missing, the test fails (never skips)
if ! command -v node >/dev/null 2>&1; then
    not_ok "node is installed" "node is missing: apt-get install nodejs npm (tests/bootstrap.sh test does it)"
    done_testing; exit 1
fi
node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
if [ "$node_major" -lt 18 ]; then
    not_ok "node is 18 or newer" "node $(node --version) is too old: the SDKs need fetch and web streams (Node.js 18+)"
    done_testing; exit 1
fi
for pkg in openai @anthropic-ai/sdk; do
    want=$(node -p "require('$SDK/package.json').dependencies['$pkg']")
    got=$(node -p "require('$SDK/node_modules/$pkg/package.json').version" 2>/dev/null || echo missing)
    if [ "$got" != "$want" ]; then
        not_ok "npm package $pkg $want is installed" "tests/sdk/node_modules has $pkg $got: run npm ci --prefix tests/sdk"
        done_testing; exit 1
    fi
done
ok "node $(node --version), openai and @anthropic-ai/sdk as pinned"

start_sim sim
start_sim gone
stop_pid "$gone_PID" # a backend that is down: its port refuses
mkdir -p "$T/pol"
cat >"$T/pol/sdkstop.lua" <<'LUA'
-- sdkstop: stops a stream at the event x-stop-at names
return {
  fail = "open",
  on_chunk = function(r, ev)
    local at = tonumber(r:header("x-stop-at") or "")
    if at and ev.index == at then r:stop("the answer broke a rule", "sdk_stop") end
  end,
}
LUA
cp "$S/lua/policies/content_denylist.lua" "$T/pol/"
cat >"$T/a.json" <<JSON
{
  "listen": [{"address": "127.0.0.1:0"}], "workers": 2, "admin": {"address": "127.0.0.1:0"},
  "log": {"kpi": "$T/kpi.log", "level": "info"}, "policy": {"dir": "pol"},
  "pricing": {"gpt-sim": {"input": 2, "output": 8, "cached_input": 0.5},
              "claude-sim": {"input": 3, "output": 15, "cached_input": 0.3},
              "embed-sim": {"input": 0.1, "output": 0}},
  "backends": {
    "sim":  {"url": "http://127.0.0.1:$sim_PORT"},
    "h2c":  {"url": "http://127.0.0.1:$sim_PORT", "protocol": "h2c"},
    "slow": {"url": "http://127.0.0.1:$sim_PORT", "first_byte_timeout_ms": 300},
    "down": {"url": "http://127.0.0.1:$gone_PORT", "connect_timeout_ms": 300}
  },
  "routes": [
    {"name": "down", "match": {"headers": {"x-route": "down"}}, "variants": [{"name": "v", "backend": "down"}]},
    {"name": "slow", "match": {"headers": {"x-route": "slow"}}, "variants": [{"name": "v", "backend": "slow"}]},
    {"name": "h2", "match": {"headers": {"x-route": "h2"}}, "variants": [{"name": "v", "backend": "h2c"}]},
    {"name": "guarded", "match": {"headers": {"x-route": "guarded"}}, "policies": ["sdkstop"],
     "variants": [{"name": "v", "backend": "sim"}]},
    {"name": "redacted", "match": {"headers": {"x-route": "redacted"}}, "policies": ["content_denylist"],
     "policy_params": {"content_denylist": {"terms": ["gateway"], "action": "redact"}},
     "variants": [{"name": "v", "backend": "sim", "model": "gpt-sim"}]},
    {"name": "chat", "match": {"path": "/v1/chat/completions"}, "dialect": "openai_chat",
     "variants": [{"name": "gpt", "backend": "sim", "model": "gpt-sim"}]},
    {"name": "responses", "match": {"path": "/v1/responses"}, "dialect": "openai_responses",
     "variants": [{"name": "gpt", "backend": "sim", "model": "gpt-sim"}]},
    {"name": "embeddings", "match": {"path": "/v1/embeddings"}, "dialect": "openai_embeddings",
     "variants": [{"name": "embed", "backend": "sim", "model": "embed-sim"}]},
    {"name": "messages", "match": {"path_prefix": "/v1/messages"}, "dialect": "anthropic",
     "variants": [{"name": "claude", "backend": "sim", "model": "claude-sim"}]}
  ]
}
JSON
start_aviary "$T/a.json"

# run_sdk SCRIPT: runs one script (bounded in time) and renumbers its TAP lines as ours
run_sdk() {
    AV_URL="http://$AV" AV_ADMIN="$ADMIN" AV_KPI="$T/kpi.log" \
        timeout 120 node "$SDK/$1" >"$T/$1.out" 2>"$T/$1.err"
    rc=$?
    seen=0
    while IFS= read -r line; do
        case "$line" in
        "ok - "*) ok "${line#ok - }"; seen=$((seen + 1)) ;;
        "not ok - "*) not_ok "${line#not ok - }"; seen=$((seen + 1)) ;;
        *) printf '%s\n' "$line" ;;
        esac
    done <"$T/$1.out"
    if [ "$rc" -ne 0 ] && ! grep -q '^not ok' "$T/$1.out"; then
        not_ok "$1 ran to its end" "exit status $rc" "$(tail -n 20 "$T/$1.err")"
    elif [ "$seen" -eq 0 ]; then
        not_ok "$1 ran its cases" "$(tail -n 20 "$T/$1.err")"
    fi
}

run_sdk openai.mjs
run_sdk anthropic.mjs
run_sdk metrics.mjs

stop_pid "$AV_PID"
is "aviary exits 0" "$?" 0
stop_pid "$sim_PID"

# aviary report reads the same books from the KPI log: requests, tokens and
# cost per route and variant as the lines sum them
"$B/src/aviary" report --json "$T/kpi.log" >"$T/report.json" 2>"$T/report.err"
is "aviary report reads the SDK traffic's KPI log" "$?" 0
out=$(python3 - "$T/kpi.log" "$T/report.json" <<'PY'
import json, sys
sums = {}
for line in open(sys.argv[1]):
    r = json.loads(line)
    if "route" not in r or r.get("type") is not None:
        continue
    k = (r["route"], r["variant"], r["shadow"])
    s = sums.setdefault(k, [0, 0, 0, 0.0])
    s[0] += 1
    s[1] += r.get("input_tokens") or 0
    s[2] += r.get("output_tokens") or 0
    s[3] += r.get("cost_usd") or 0.0
rep = json.load(open(sys.argv[2]))
bad = []
for g in rep["groups"]:
    k = (g["route"], g["variant"], g["shadow"])
    s = sums.pop(k, None)
    if s is None:
        bad.append("report has %s, the log not" % (k,))
        continue
    cost = g["cost_usd"] or 0.0
    if (g["requests"], g["input_tokens"], g["output_tokens"]) != tuple(s[:3]) or abs(cost - s[3]) > 1e-6:
        bad.append("%s: report %s %s %s %.9f, log %s %s %s %.9f" % (k, g["requests"], g["input_tokens"],
                   g["output_tokens"], cost, s[0], s[1], s[2], s[3]))
bad += ["the log has %s, the report not" % (k,) for k in sums]
print("agree %d groups" % len(rep["groups"]) if not bad else "; ".join(bad))
PY
)
like "aviary report and the KPI log agree on requests, tokens and cost per route and variant" "$out" '^agree [1-9]'
done_testing
