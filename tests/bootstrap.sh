#!/bin/sh
# tests/bootstrap.sh: set up a fresh Debian 12 machine (as root) and build Aviary.
#   sh tests/bootstrap.sh demo   install, build, run the demo (aviary + two aviary-sim)
#   sh tests/bootstrap.sh test   install, build, run every test, then again under ASan+UBSan
#   sh tests/bootstrap.sh deps   install the Debian packages only
set -eu
cd "$(dirname "$0")/.."

# Build and test dependencies; docker/Dockerfile installs the same list (a unit test checks).
PACKAGES="build-essential autoconf automake libtool pkg-config
  libevent-dev libssl-dev libnghttp2-dev libhttp-parser-dev libcjson-dev libluajit2-5.1-dev libmaxminddb-dev
  libhiredis-dev curl ca-certificates openssl nghttp2-client python3 libmaxmind-db-writer-perl prometheus redis-server"
# What only the test run needs: clang for its -Werror build and the fuzz
# targets (libFuzzer's runtime), llvm for clang's archiver.
TEST_PACKAGES="clang llvm libclang-rt-14-dev"

deps() {
    if [ "$(id -u)" -ne 0 ]; then
        echo "bootstrap: run as root (it installs Debian packages with apt-get)" >&2
        exit 1
    fi
    echo "== installing Debian packages"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $PACKAGES ${1:-} >/dev/null
}

# The SDK tests (t_sdk.sh): Node.js 18+ and npm, the machine's own where it
# has them (NodeSource's nodejs conflicts with Debian's npm), else Debian's;
# then the SDKs tests/sdk/package-lock.json pins, into tests/sdk/node_modules.
sdk_deps() {
    command -v npm >/dev/null 2>&1 ||
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
    echo "== npm ci (tests/sdk)"
    npm ci --prefix tests/sdk --no-audit --no-fund --loglevel=error
}

# build DIR [configure args]: an out-of-tree build, so a plain and a sanitizer build live side by side
build() {
    dir=$1; shift
    [ -x configure ] || { echo "== autoreconf"; autoreconf -fi >/dev/null 2>&1 || autoreconf -fi; }
    mkdir -p "$dir"
    echo "== configure $dir $*"
    (cd "$dir" && ../configure -q "$@")
    echo "== make $dir"
    make -s -C "$dir" -j"$(nproc)" >/dev/null
}

case "${1:-}" in
deps)
    deps ;;
demo)
    deps
    build build
    sh tests/demo.sh build ;;
test)
    deps "$TEST_PACKAGES"
    sdk_deps
    build build
    echo "== make check (build)"
    rc=0
    make -s -C build check || rc=1
    build build-asan --enable-sanitizers
    echo "== make check (build-asan: AddressSanitizer + UndefinedBehaviorSanitizer)"
    ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
        make -s -C build-asan check || rc=1
    exit $rc ;;
*)
    echo "usage: sh tests/bootstrap.sh demo|test|deps" >&2
    exit 2 ;;
esac
