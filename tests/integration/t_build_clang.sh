# t_build_clang.sh: the project builds with clang as with gcc, every warning
# an error (-Wall -Wextra -Werror and the rest of configure's list), link-time
# optimised with llvm-ar where it is installed. Build only: the tests run on
# the gcc build. Once per test run (skipped in the sanitizer pass).
. "$(dirname "$0")/lib.sh"

if ! command -v clang >/dev/null 2>&1; then
    ok "clang build # SKIP clang is not installed (tests/bootstrap.sh installs it)"
    done_testing
    exit 0
fi
if grep -q -- '--enable-sanitizers' "$B/config.status" 2>/dev/null; then
    ok "clang build # SKIP built in the plain pass"
    done_testing
    exit 0
fi

mkdir -p "$T/clang"
(cd "$T/clang" && CC=clang "$S/configure" -q >"$T/configure.out" 2>&1)
is "configure with CC=clang" "$?" 0
grep -q '"AV_CFLAGS"]=.*-Werror' "$T/clang/config.status"
is "warnings are errors in the clang build" "$?" 0
# the binaries and every check program, one make at a time on the test run's two cores
make -s -C "$T/clang" -j2 all check-programs >"$T/make.out" 2>&1
rc=$?
if [ "$rc" -eq 0 ]; then ok "clang builds aviary, aviary-sim and the test programs with -Werror"; else
    not_ok "clang builds aviary, aviary-sim and the test programs with -Werror" "$(grep -E 'error|warning' "$T/make.out" | head -n 20)"; fi
check "the clang-built aviary runs" sh -c "\"$T/clang/src/aviary\" --version >/dev/null"
done_testing
