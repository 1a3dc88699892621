#!/bin/sh
# tests/fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]: builds the fuzz targets
# when needed (tests/fuzz/build.sh) and runs each one (all, or those named:
# config, jscan, ...) for SECONDS (default 60) on a copy of its corpus, one at
# a time and niced, from the repository's root. Exits non-zero when a target
# found something, naming the reproducer. The copies and logs stay in
# FUZZ_WORK (default OUTDIR/run) for merging back or reading.
#   tests/fuzz/run.sh findings   runs each tests/fuzz/findings/<target>-* on a build
#                                without the detours (FUZZ_ALL=1): which still reproduce
# Environment: FUZZ_OUT (build dir, default tests/fuzz/out, or tests/fuzz/out-all
# with FUZZ_ALL=1), FUZZ_WORK, FUZZ_ARGS (more libFuzzer options, e.g. -jobs=2).
set -u
cd "$(dirname "$0")/../.."
root=$(pwd)

if [ "${1:-}" = findings ]; then
    export FUZZ_ALL=1
    out=${FUZZ_OUT:-tests/fuzz/out-all}
    sh tests/fuzz/build.sh "$out" >"${TMPDIR:-/tmp}/fuzz-build.$$" 2>&1 || { cat "${TMPDIR:-/tmp}/fuzz-build.$$" >&2; exit 2; }
    rm -f "${TMPDIR:-/tmp}/fuzz-build.$$"
    open=0
    for f in tests/fuzz/findings/*; do
        [ -f "$f" ] || continue
        name=$(basename "$f")
        target=${name%%-*}
        if [ ! -x "$out/fuzz_$target" ]; then
            echo "?    $name: no target fuzz_$target"
            continue
        fi
        if "$out/fuzz_$target" "$f" >"$out/$name.log" 2>&1; then
            echo "fixed $name (add it to tests/fuzz/corpus/$target/ and drop its detour)"
        else
            why=$(grep -a -m1 -A1 -E 'invariant broken|runtime error|ERROR: AddressSanitizer|ERROR: LeakSanitizer' \
                "$out/$name.log" | sed 's/^ *//' | tr '\n' ' ')
            echo "open  $name: $why"
            open=$((open + 1))
        fi
    done
    echo "$open finding(s) still reproduce"
    exit 0
fi

secs=${1:-60}
[ $# -gt 0 ] && shift
case "$secs" in *[!0-9]* | '') echo "usage: tests/fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...] | findings" >&2; exit 2 ;; esac
if [ "${FUZZ_ALL:-0}" = 1 ]; then out=${FUZZ_OUT:-tests/fuzz/out-all}; else out=${FUZZ_OUT:-tests/fuzz/out}; fi
sh tests/fuzz/build.sh "$out" || exit 2
case "$out" in /*) ;; *) out="$root/$out" ;; esac
work=${FUZZ_WORK:-$out/run}

targets=$*
if [ -z "$targets" ]; then
    for t in tests/fuzz/fuzz_*.c; do
        t=$(basename "$t" .c)
        targets="$targets ${t#fuzz_}"
    done
fi

status=0
for t in $targets; do
    t=${t#fuzz_}
    bin="$out/fuzz_$t"
    if [ ! -x "$bin" ]; then
        echo "FAIL fuzz_$t: no such target (tests/fuzz/fuzz_$t.c)"
        status=1
        continue
    fi
    dir="$work/$t"
    rm -rf "$dir"
    mkdir -p "$dir/corpus"
    [ -d "tests/fuzz/corpus/$t" ] && cp "tests/fuzz/corpus/$t/"* "$dir/corpus/" 2>/dev/null
    # per target options: a line "fuzz-options: ..." in its source; a dictionary beside it
    opts=$(sed -n 's/.*fuzz-options: *\([^*]*\).*/\1/p' "tests/fuzz/fuzz_$t.c" | head -n 1)
    [ -f "tests/fuzz/$t.dict" ] && opts="$opts -dict=tests/fuzz/$t.dict"
    # shellcheck disable=SC2086
    nice -n 19 "$bin" -max_total_time="$secs" -timeout=25 -print_final_stats=1 -artifact_prefix="$dir/" \
        $opts ${FUZZ_ARGS:-} "$dir/corpus" >"$dir/log" 2>&1
    rc=$?
    found=$(ls "$dir"/crash-* "$dir"/leak-* "$dir"/timeout-* "$dir"/oom-* "$dir"/slow-unit-* 2>/dev/null | head -n 1)
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$dir/log" | tail -n 1)
    speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$dir/log" | tail -n 1)
    cov=$(grep -a -o 'cov: [0-9]*' "$dir/log" | tail -n 1 | cut -d' ' -f2)
    if [ "$rc" -ne 0 ] || [ -n "$found" ]; then
        echo "FAIL fuzz_$t: ${found:-exit status $rc, see $dir/log}"
        grep -a -m3 -E 'invariant broken|runtime error|ERROR: [A-Za-z]*Sanitizer|ERROR: libFuzzer' "$dir/log" | sed 's/^/     /'
        [ -n "$found" ] && echo "     reproduce: $bin $found"
        status=1
    else
        echo "ok   fuzz_$t: ${secs} s, ${runs:-?} runs, ${speed:-?} exec/s, cov ${cov:-?}"
    fi
done
exit $status
