# t_fuzz.sh: the libFuzzer targets in tests/fuzz build with clang and each
# runs a few seconds over its corpus without a crash, a sanitizer report or
# a broken invariant (tests/fuzz/README.md). One line per target.
. "$(dirname "$0")/lib.sh"

if grep -q -- '--enable-sanitizers' "$B/config.status" 2>/dev/null; then
    ok "fuzz targets # SKIP run in the plain pass (the targets carry their own sanitizers)"
    done_testing
    exit 0
fi
if ! command -v clang >/dev/null 2>&1; then
    ok "fuzz targets # SKIP no clang"
    done_testing
    exit 0
fi

# two jobs for the test run's two cores; the targets' seconds each (FUZZ_SECONDS)
if JOBS=2 sh "$S/tests/fuzz/build.sh" "$T/fuzz" >"$T/build.out" 2>&1; then
    ok "fuzz targets build with clang"
else
    not_ok "fuzz targets build with clang" "$(grep -E 'error|build.sh' "$T/build.out" | head -n 15)"
    done_testing
    exit 1
fi

for src in "$S"/tests/fuzz/fuzz_*.c; do
    name=$(basename "$src" .c)
    out=$(FUZZ_OUT="$T/fuzz" FUZZ_WORK="$T/work" sh "$S/tests/fuzz/run.sh" "${FUZZ_SECONDS:-5}" "${name#fuzz_}" 2>&1)
    if [ $? -eq 0 ]; then
        ok "$(printf '%s' "$out" | grep '^ok ' | sed 's/^ok *//')"
    else
        # the reproducer outlives $T: beside the test logs
        kept=""
        for f in "$T/work/${name#fuzz_}"/crash-* "$T/work/${name#fuzz_}"/leak-* "$T/work/${name#fuzz_}"/timeout-*; do
            [ -f "$f" ] || continue
            mkdir -p "$B/tests/logs"
            cp "$f" "$B/tests/logs/$name-$(basename "$f")"
            kept="$B/tests/logs/$name-$(basename "$f")"
        done
        not_ok "$name runs clean" "$(printf '%s' "$out" | grep -v '^== ' | head -n 8)" "reproducer kept: ${kept:-none}"
    fi
done
done_testing
