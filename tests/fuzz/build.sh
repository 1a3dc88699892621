#!/bin/sh
# tests/fuzz/build.sh [OUTDIR]: builds every libFuzzer target tests/fuzz/fuzz_*.c
# with clang, AddressSanitizer and UndefinedBehaviorSanitizer into OUTDIR
# (default tests/fuzz/out). The gateway's modules are compiled from src/ here
# (the autotools build makes gcc LTO objects clang cannot link) into one
# archive each target links; an object is rebuilt when its source or any
# header in src/ is newer. Environment: CC (clang), JOBS (2), FUZZ_ALL=1
# (drop the detours around known findings: fuzz.h), EXTRA_CFLAGS.
set -eu
cd "$(dirname "$0")/../.."
out=${1:-tests/fuzz/out}
CC=${CC:-clang}
JOBS=${JOBS:-2}

command -v "$CC" >/dev/null 2>&1 || { echo "build.sh: $CC not found (apt-get install clang libclang-rt-14-dev)" >&2; exit 2; }
PKGS="libevent libevent_openssl libevent_pthreads openssl libnghttp2 libcjson luajit libmaxminddb hiredis"
pkg_cflags=$(pkg-config --cflags $PKGS) || { echo "build.sh: pkg-config cannot find: $PKGS (tests/bootstrap.sh deps)" >&2; exit 2; }
pkg_libs=$(pkg-config --libs $PKGS)
# -fno-sanitize-recover: an UndefinedBehaviorSanitizer report stops the run like a crash
SAN="-fsanitize=fuzzer,address,undefined"
# src/ and each of its layers (src/<layer>/), as Makefile.am's LAYER_INCLUDES
layer_inc=$(for d in src src/*/; do printf -- '-I%s ' "${d%/}"; done)
CFLAGS="$SAN -fno-sanitize-recover=all -g -O1 -fno-omit-frame-pointer -D_GNU_SOURCE $layer_inc -Wall -Wextra -Wno-unused-parameter $pkg_cflags ${EXTRA_CFLAGS:-}"
[ "${FUZZ_ALL:-0}" = 1 ] && CFLAGS="$CFLAGS -DFUZZ_ALL"
LIBS="$pkg_libs -lhttp_parser -lpthread -lm"

mkdir -p "$out/obj"
out=$(cd "$out" && pwd)
# A fuzz-only build: objects made with other flags (FUZZ_ALL, another CC) are rebuilt.
stamp="$CC $CFLAGS"
if [ ! -f "$out/flags" ] || [ "$(cat "$out/flags")" != "$stamp" ]; then
    rm -f "$out/obj/"*.o "$out/libaviary-fuzz.a"
    printf '%s\n' "$stamp" >"$out/flags"
fi

# clang without the fuzzer runtime fails here, not on the first target
printf 'int LLVMFuzzerTestOneInput(const unsigned char *d, unsigned long n) { return 0; }\n' >"$out/probe.c"
if ! $CC $SAN -o "$out/probe" "$out/probe.c" 2>"$out/probe.err"; then
    cat "$out/probe.err" >&2
    echo "build.sh: $CC cannot link -fsanitize=fuzzer (apt-get install libclang-rt-14-dev)" >&2
    exit 2
fi
rm -f "$out/probe" "$out/probe.c" "$out/probe.err"

# the layers' sources, as Makefile.am lists them (src_<layer>_lib<layer>_a_SOURCES)
srcs=$(awk '/^src_[a-z]*_lib[a-z]*_a_SOURCES *=/ {on = 1} on {print; if ($0 !~ /\\$/) on = 0}' Makefile.am |
    tr ' \\\t' '\n\n\n' | grep '^src/.*\.c$')
[ -n "$srcs" ] || { echo "build.sh: no src_<layer>_lib<layer>_a_SOURCES in Makefile.am" >&2; exit 2; }

newest_header=$(ls -t src/*/*.h | head -n 1)
stale=""
for s in $srcs; do
    o="$out/obj/$(basename "$s" .c).o"
    if [ ! -f "$o" ] || [ "$s" -nt "$o" ] || [ "$newest_header" -nt "$o" ]; then
        stale="$stale $s"
    fi
done
if [ -n "$stale" ]; then
    echo "== compiling $(echo "$stale" | wc -w | tr -d ' ') modules of src/ with $CC"
    export CC CFLAGS out
    # shellcheck disable=SC2016
    printf '%s\n' $stale | xargs -P "$JOBS" -I{} sh -c \
        'o="$out/obj/$(basename {} .c).o"; $CC $CFLAGS -c {} -o "$o.tmp" && mv "$o.tmp" "$o"'
    for s in $stale; do
        [ -f "$out/obj/$(basename "$s" .c).o" ] || { echo "build.sh: $s did not compile" >&2; exit 1; }
    done
    rm -f "$out/libaviary-fuzz.a"
fi
lib="$out/libaviary-fuzz.a"
if [ ! -f "$lib" ]; then
    objs=""
    for s in $srcs; do objs="$objs $out/obj/$(basename "$s" .c).o"; done
    # shellcheck disable=SC2086
    ar rcs "$lib" $objs
fi

# Targets: tests/fuzz/fuzz_NAME.c -> OUTDIR/fuzz_NAME. A line "fuzz-ldflags: ..."
# in the file adds link flags (a --wrap that keeps a target off the network).
built=0
for t in tests/fuzz/fuzz_*.c; do
    name=$(basename "$t" .c)
    bin="$out/$name"
    if [ -f "$bin" ] && [ ! "$t" -nt "$bin" ] && [ ! "$lib" -nt "$bin" ] && [ ! tests/fuzz/fuzz.h -nt "$bin" ] &&
        [ ! "$newest_header" -nt "$bin" ]; then
        continue
    fi
    extra=$(sed -n 's/.*fuzz-ldflags: *\([^*]*\).*/\1/p' "$t" | head -n 1)
    # shellcheck disable=SC2086
    $CC $CFLAGS -Werror=implicit-function-declaration -Itests/fuzz -o "$bin" "$t" "$lib" $extra $LIBS
    built=$((built + 1))
done
echo "== $built target(s) built, all in $out"
