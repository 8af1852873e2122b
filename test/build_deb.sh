#!/usr/bin/env bash
# Builds the Debian package the way a packager does (dpkg-buildpackage -b
# -us -uc, pg_buildext running the regression suite against a temporary
# instance), in a copy of the tree so the checkout stays clean, then checks
# what the .deb holds and depends on.  As root the build runs as the
# postgres OS user (initdb refuses root).  Touches no PostgreSQL install:
# the package is built and inspected, not installed.
#   test/build_deb.sh [OUTDIR]      # the .deb files are left in OUTDIR
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-$(mktemp -d /tmp/voipbin-deb.XXXXXX)}
mkdir -p "$out"
version=$(dpkg-parsechangelog -S Version)
work=$(mktemp -d /tmp/voipbin-debbuild.XXXXXX)
trap 'rm -rf "$work"' EXIT
src="$work/voipbin-${version%-*}"
mkdir "$src"
# what a fresh clone has, plus uncommitted edits: tracked and new files
git ls-files -z --cached --others --exclude-standard | while IFS= read -r -d '' f; do
    [ -e "$f" ] && printf '%s\0' "$f"
done | xargs -0 cp --parents -t "$src"
# debian/control names the packages for the majors this machine builds for
# (debian/pgversions and the server-dev packages installed): postgresql-15-voipbin
# on Debian 12, postgresql-17-voipbin in test/matrix.sh's trixie root …
(cd "$src" && pg_buildext updatecontrol >/dev/null)
as=()
if [ "$(id -u)" = 0 ]; then
    # as the postgres OS user, or the one DEB_USER names (any user must be able to build it)
    chown -R "${DEB_USER:-postgres}": "$work"
    as=(runuser -u "${DEB_USER:-postgres}" --)
fi
echo "== dpkg-buildpackage -b -us -uc ($version)"
if ! (cd "$src" && "${as[@]}" dpkg-buildpackage -b -us -uc >"$work/build.log" 2>&1); then
    tail -n 80 "$work/build.log"
    cp "$work/build.log" "$out/"
    echo "dpkg-buildpackage failed; full log: $out/build.log" >&2
    exit 1
fi
grep -E '^test .*\.\.\.|tests passed|^### ' "$work/build.log" || true
cp "$work"/*.deb "$work"/*.buildinfo "$work"/*.changes "$out/"
cp "$work/build.log" "$out/"

# what the package must hold
fail=0
check() { if ! eval "$2"; then echo "FAIL: $1" >&2; fail=1; else echo "ok: $1"; fi; }
for v in $(cd "$src" && pg_buildext supported-versions); do
    deb="$out/postgresql-${v}-voipbin_${version}_$(dpkg --print-architecture).deb"
    check "$deb built" '[ -f "$deb" ]'
    [ -f "$deb" ] || continue
    files=$(dpkg-deb -c "$deb" | awk '{print $6}')
    depends=$(dpkg-deb -f "$deb" Depends)
    check "voipbin.so in PostgreSQL $v's lib" \
        'grep -qx "./usr/lib/postgresql/$v/lib/voipbin.so" <<<"$files"'
    for f in voipbin.control $(sed -n 's/^DATA = //p' Makefile); do
        check "$f in PostgreSQL $v's extension directory" \
            'grep -qx "./usr/share/postgresql/$v/extension/$f" <<<"$files"'
    done
    check "depends on postgresql-$v" 'grep -Eq "(^|, )postgresql-$v( |,|$)" <<<"$depends"'
    for lib in libwebsockets libcurl libssl; do
        check "depends on $lib (shlibs)" 'grep -q "$lib" <<<"$depends"'
    done
    echo "   Depends: $depends"
done
[ $fail = 0 ] && echo "packages in $out"
exit $fail
