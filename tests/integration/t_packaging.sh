# t_packaging.sh: what a fresh machine relies on stays consistent: the README's two
# commands, .ci/run, the package lists of bootstrap.sh and the Dockerfile, and the
# shipped configs pass aviary -t.
. "$(dirname "$0")/lib.sh"

readme_test=$(sed -n 's/^    \(sh tests\/bootstrap.sh test\)$/\1/p' "$S/README.md")
is "README has the test command" "$readme_test" "sh tests/bootstrap.sh test"
check "README has the demo command" grep -qx '    sh tests/bootstrap.sh demo' "$S/README.md"
check ".ci/run runs the README's test command" grep -qx "$readme_test" "$S/.ci/run"

pkgs() { tr ' \\\n' '\n\n\n' | grep -E '^[a-z0-9][a-z0-9.+-]+$' | grep -vE '^(apt-get|install|RUN|update|rm|DEBIAN_FRONTEND|PACKAGES)$' | sort -u; }
boot=$(sed -n '/^PACKAGES="/,/"$/p' "$S/tests/bootstrap.sh" | sed 's/PACKAGES="//; s/"//' | pkgs | tr '\n' ' ')
dock=$(sed -n '/^FROM debian:bookworm-slim AS build/,/^WORKDIR/p' "$S/docker/Dockerfile" | sed -n '/--no-install-recommends/,/rm -rf/p' | \
       sed 's/.*--no-install-recommends//; s/&&.*//' | pkgs | tr '\n' ' ')
is "Dockerfile build stage installs the bootstrap packages" "$dock" "$boot"
for p in $boot; do
    case "$p" in build-essential|autoconf|automake|libtool|pkg-config|curl|ca-certificates) continue ;; esac
    check "README names package $p" grep -q "$p" "$S/README.md"
done

for f in "$S/conf/aviary.json" "$S"/conf/examples/*.json; do
    [ -f "$f" ] || continue
    out=$("$B/src/aviary" -t -c "$f" 2>&1); rc=$?
    is "aviary -t $(basename "$f")" "$rc" 0
done
done_testing
