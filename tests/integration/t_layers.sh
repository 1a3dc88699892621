# t_layers.sh: the layout's rule (docs/internals.md): the gateway's sources
# live in src/<layer>/, the layers in the order Makefile.am builds their
# libraries (noinst_LIBRARIES, from the bottom up), and a file includes only
# headers of its own layer or of layers below it; src/main.c and
# src/worker.c are the top and may include anything. aviary-sim (sim/)
# uses the base layer alone. Every header name is in one place only, and
# every source file of src/ is in a layer's library or the top. Each layer's
# library, whole, links with only the libraries below it.
. "$(dirname "$0")/lib.sh"

order=$(awk '/^noinst_LIBRARIES *=/ {for (i = 3; i <= NF; i++) print $i}' "$S/Makefile.am" |
    sed -n 's|^src/\([a-z]*\)/lib\1\.a$|\1|p' | tr '\n' ' ')
like "Makefile.am names the layers, bottom up" "$order" '^base net config http ai policy proxy fleet rollout admin $'

# the check: header name -> layer (or "top"), then every include of every file
cat >"$T/check.py" <<'EOF'
import os, re, sys
root, order = sys.argv[1], sys.argv[2].split()
rank = {l: i for i, l in enumerate(order)}
rank["top"] = len(order)
where = {}   # header -> layer
dups = []
files = []   # (path, layer)
for layer in order:
    d = os.path.join(root, "src", layer)
    for f in sorted(os.listdir(d)):
        if f.endswith(".h"):
            if f in where:
                dups.append(f)
            where[f] = layer
        if f.endswith((".c", ".h")):
            files.append((os.path.join("src", layer, f), layer))
for f in sorted(os.listdir(os.path.join(root, "src"))):
    p = os.path.join(root, "src", f)
    if os.path.isfile(p):
        if f.endswith(".h"):
            if f in where:
                dups.append(f)
            where[f] = "top"
        files.append((os.path.join("src", f), "top"))
for f in sorted(os.listdir(os.path.join(root, "sim"))):
    if f.endswith((".c", ".h")):
        files.append((os.path.join("sim", f), "sim"))
sim_own = {f for f in os.listdir(os.path.join(root, "sim")) if f.endswith(".h")}
bad = []
for path, layer in files:
    for n, line in enumerate(open(os.path.join(root, path), encoding="utf-8"), 1):
        m = re.match(r'\s*#\s*include\s+"([^"]+)"', line)
        if not m:
            continue
        h = os.path.basename(m.group(1))
        if layer == "sim":
            if h not in sim_own and where.get(h) != "base":
                bad.append("%s:%d: the simulator includes %s (%s): it may use only the base layer" %
                           (path, n, h, where.get(h, "not a gateway header")))
            continue
        if h not in where:
            bad.append("%s:%d: includes %s, which is no header of src/" % (path, n, h))
        elif rank[where[h]] > rank[layer]:
            bad.append("%s:%d: %s (layer %s) includes %s of layer %s, above it" % (path, n, path, layer, h, where[h]))
print("files %d" % len(files))
for d in dups:
    print("dup %s" % d)
for b in bad:
    print("bad %s" % b)
EOF
python3 "$T/check.py" "$S" "$order" >"$T/report"
nfiles=$(sed -n 's/^files //p' "$T/report")
check "the check read the sources ($nfiles files)" test "${nfiles:-0}" -gt 80
is "no header name in two places" "$(grep '^dup ' "$T/report" | sed 's/^dup //' | tr '\n' ' ')" ""
is "no file includes a header of a layer above its own" "$(grep '^bad ' "$T/report" | sed 's/^bad //')" ""

# the check itself: an include that goes up is found
mkdir -p "$T/probe/src" "$T/probe/sim"
for l in $order; do mkdir -p "$T/probe/src/$l"; done
cp "$S/Makefile.am" "$T/probe/"
printf '#include "policy.h"\n' >"$T/probe/src/base/up.c"
printf '' >"$T/probe/src/policy/policy.h"
printf '#include "config.h"\n' >"$T/probe/sim/s.c"
printf '' >"$T/probe/src/config/config.h"
python3 "$T/check.py" "$T/probe" "$order" >"$T/probe.report"
like "the check finds a base file that includes a policy header" "$(cat "$T/probe.report")" \
    'bad src/base/up.c:1: src/base/up.c \(layer base\) includes policy.h of layer policy, above it'
like "the check finds the simulator including a gateway header above base" "$(cat "$T/probe.report")" \
    'bad sim/s.c:1: the simulator includes config.h \(config\): it may use only the base layer'

# every source of src/ is built: in a layer's library, or the top (main.c, worker.c)
missing=""
for f in "$S"/src/*/*.c "$S"/src/*.c; do
    rel=${f#"$S"/}
    grep -q "$rel" "$S/Makefile.am" || missing="$missing $rel"
done
is "every source of src/ is in Makefile.am" "$missing" ""

# and at link time: each layer's library, whole, links with the layers below it alone
out=$(make -s -C "$B" layer-links 2>&1)
for l in $order; do
    like "layer $l calls nothing above it (links with the layers below)" "$out" "(^| )$l: links with the layers below it"
done

done_testing
