#!/usr/bin/env bash
# The suite on another PostgreSQL major, inside a Debian root of its own:
#   test/matrix.sh 17      Debian trixie's PostgreSQL 17
#   test/matrix.sh 18      Debian sid's PostgreSQL 18
# (15 is the host's: test/run.)  The root is made with debootstrap from the
# host's Debian mirror the first time and kept under $VOIPBIN_ROOTS
# (default /var/cache/voipbin-roots/<suite>): later runs reuse it, and a
# root left half-made is made again.  The host cannot run the root's
# binaries (a newer glibc), so everything runs inside it: the dependencies
# (test/install-deps.sh learns the major), the build, make installcheck, the
# integration suite and the Debian package with its pg_buildext installcheck.
# The tree copied in is this checkout's, uncommitted changes included, with
# its git history (test_upgrade builds the released 1.0 from it).
# For 17 and later the host's PostgreSQL 15, with this tree's voipbin built
# for it on the host, is put in the root too: test_pg_upgrade.py upgrades a
# 15 cluster to the root's major with pg_upgrade (VOIPBIN_OLD_BINDIR).
#   MATRIX_PYTEST_ARGS   extra pytest arguments (e.g. "-k worker")
#   MATRIX_TESTS         what pytest runs (default test/; e.g. test/test_pg_upgrade.py)
#   MATRIX_SKIP_DEB=1    no package build
#   MATRIX_SKIP_TESTS=1  no integration tests (the build and pg_regress only)
# Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
major=${1:?usage: test/matrix.sh 17|18}
case "$major" in
    17) suite=trixie ;;
    18) suite=sid ;;
    *) echo "test/matrix.sh: no Debian suite known for PostgreSQL $major (17: trixie, 18: sid)" >&2; exit 2 ;;
esac
[ "$(id -u)" = 0 ] || { echo "test/matrix.sh: run as root (debootstrap, chroot, mounts)" >&2; exit 2; }

roots=${VOIPBIN_ROOTS:-/var/cache/voipbin-roots}
root=$roots/$suite
# the host's own mirror: the only archive this machine may reach
mirror=$(sed -n 's/^URIs: *\(http[^ ]*\/debian\)$/\1/p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)
[ -n "$mirror" ] || mirror=$(sed -n 's/^deb \(http[^ ]*\/debian\) .*/\1/p' /etc/apt/sources.list 2>/dev/null | head -1)
[ -n "$mirror" ] || mirror=http://deb.debian.org/debian

# Unmounts whatever is mounted under the root (an earlier run killed before
# its cleanup, say): never delete through a bind mount of the host's /dev.
unmount_all() {
    local m
    for m in $(awk -v r="$1" '$5 == r || index($5, r "/") == 1 {print $5}' /proc/self/mountinfo | sort -r); do
        umount -l "$m" 2>/dev/null || true
    done
}

mounted=()
cleanup() {
    local i
    for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do
        umount -l "${mounted[$i]}" 2>/dev/null || true
    done
}
trap cleanup EXIT
bind() {  # bind SRC DST: mount, remembered for the cleanup
    mkdir -p "$2"
    mount --bind "$1" "$2"
    mounted+=("$2")
}

log() { echo "== matrix $major ($suite): $*"; }

if [ ! -f "$root/.voipbin-root-ready" ]; then
    command -v debootstrap >/dev/null || {
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null ||
            { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null; }
    }
    log "making the root with debootstrap from $mirror"
    unmount_all "$root"
    rm -rf --one-file-system "$root"
    mkdir -p "$roots"
    # ca-certificates: libcurl verifies every certificate, and a minimal root has none
    debootstrap --variant=minbase --include=ca-certificates "$suite" "$root" "$mirror" > "$roots/$suite.debootstrap.log" 2>&1 ||
        { tail -20 "$roots/$suite.debootstrap.log"; exit 1; }
    # a package's service must not start inside the root
    printf '#!/bin/sh\nexit 101\n' > "$root/usr/sbin/policy-rc.d"
    chmod 755 "$root/usr/sbin/policy-rc.d"
    # sid's archive index may be past its validity date on a mirror snapshot
    echo 'Acquire::Check-Valid-Until "false";' > "$root/etc/apt/apt.conf.d/99voipbin"
    touch "$root/.voipbin-root-ready"
fi
cp /etc/resolv.conf "$root/etc/resolv.conf" 2>/dev/null || true
unmount_all "$root"

# unshare(1) inside a plain chroot (the tests' network namespaces) needs the
# root to be a mount point of its own
bind "$root" "$root"
bind /proc "$root/proc"
bind /sys "$root/sys"
bind /dev "$root/dev"
bind /dev/pts "$root/dev/pts"
bind /dev/shm "$root/dev/shm"   # PostgreSQL's dynamic shared memory

# this checkout, history included, as it is now (uncommitted changes too)
work=/work/voipbin
rm -rf --one-file-system "${root:?}$work"
mkdir -p "$(dirname "$root$work")"
git clone -q --no-hardlinks "$PWD" "$root$work"
git ls-files -z --modified --others --exclude-standard | while IFS= read -r -d '' f; do
    if [ -e "$f" ]; then
        mkdir -p "$(dirname "$root$work/$f")"
        cp -a "$f" "$root$work/$f"
    else
        rm -f "$root$work/$f"
    fi
done

log "dependencies"
chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
    bash -c "cd $work && PG_MAJOR=$major test/install-deps.sh"

# The host's PostgreSQL 15 with this tree's voipbin, for test/test_pg_upgrade.py
# (a 15 cluster upgraded with the root's pg_upgrade).  The host's binaries
# run in the root with the few shared libraries the root lacks (bookworm's
# sonames: libicu72, libldap-2.5, libwebsockets17 …) beside them, in a
# directory only they see: each program of $old_bindir is a script that puts
# it on LD_LIBRARY_PATH and execs the real one, which finds lib and share
# relative to itself; the old server pg_upgrade starts inherits it.
old=/opt/voipbin-pg15            # inside the root
old_bindir=
prepare_old_15() {
    local pg15=/usr/lib/postgresql/15 stage build f so path
    [ -x "$pg15/bin/pg_config" ] || { log "no PostgreSQL 15 on the host: test_pg_upgrade.py skips"; return 0; }
    log "PostgreSQL 15 from the host, with this tree's voipbin, in $old"
    rm -rf --one-file-system "${root:?}$old"
    mkdir -p "$root$old/usr/lib/postgresql" "$root$old/usr/share/postgresql" "$root$old/compat-lib" "$root$old/bin"
    # not JIT (llvmjit.so, its bitcode, libLLVM): without it 15 runs queries without JIT
    (cd "$pg15/.." && tar -c --exclude=15/lib/bitcode --exclude='15/lib/llvmjit*' 15) |
        tar -x -C "$root$old/usr/lib/postgresql"
    cp -a /usr/share/postgresql/15 "$root$old/usr/share/postgresql/"
    # whatever voipbin the host has installed is not this tree's
    rm -f "$root$old$pg15/lib/voipbin.so" "$root$old/usr/share/postgresql/15/extension/voipbin"*
    # built on the host, in a copy of the tree copied in (the checkout stays clean)
    build=$root/var/tmp/voipbin-pg15-build
    stage=$root/var/tmp/voipbin-pg15-stage
    rm -rf --one-file-system "$build" "$stage"
    cp -a "$root$work" "$build"
    make -s -C "$build" -j2 PG_CONFIG="$pg15/bin/pg_config" >/dev/null
    make -s -C "$build" install PG_CONFIG="$pg15/bin/pg_config" DESTDIR="$stage" >/dev/null
    cp -a "$stage$pg15/lib/voipbin.so" "$root$old$pg15/lib/"
    cp -a "$stage/usr/share/postgresql/15/extension/"voipbin* "$root$old/usr/share/postgresql/15/extension/"
    rm -rf --one-file-system "$build" "$stage"
    # the sonames the host's binaries need that the root has none of
    local have
    have=$(chroot "$root" /sbin/ldconfig -p | awk '{print $1}' | sort -u)
    for f in "$root$old$pg15"/bin/* "$root$old$pg15"/lib/*.so; do   # a script: ldd prints no "=>"
        ldd "$f" 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// {print $1, $3}'
    done | sort -u | while read -r so path; do
        grep -qxF "$so" <<<"$have" || cp -L "$path" "$root$old/compat-lib/$so"
    done
    for f in "$root$old$pg15"/bin/*; do
        printf '#!/bin/sh\n# the host'\''s PostgreSQL 15 %s, with the libraries the root lacks\nLD_LIBRARY_PATH=%s/compat-lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} exec %s "$@"\n' \
            "$(basename "$f")" "$old" "$old$pg15/bin/$(basename "$f")" > "$root$old/bin/$(basename "$f")"
        chmod 755 "$root$old/bin/$(basename "$f")"
    done
    log "compat libraries: $(ls "$root$old/compat-lib" | tr '\n' ' ')"
    old_bindir=$old/bin
}
if [ "$major" -ge 17 ]; then
    prepare_old_15
fi

inside() {
    chroot "$root" /usr/bin/env -i PATH=/usr/lib/postgresql/$major/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        HOME=/root LANG=C.UTF-8 CI="${CI:-}" VOIPBIN_OLD_BINDIR="$old_bindir" bash -c "cd $work && $*"
}

log "build and install"
inside "make -s -j2 PG_CONFIG=/usr/lib/postgresql/$major/bin/pg_config && make -s install PG_CONFIG=/usr/lib/postgresql/$major/bin/pg_config"
log "pg_regress (make installcheck)"
inside "test/run_regress.sh"
if [ "${MATRIX_SKIP_TESTS:-}" != 1 ]; then
    log "integration tests"
    inside "/usr/bin/python3 -m pytest -q -p no:cacheprovider ${MATRIX_PYTEST_ARGS:-} ${MATRIX_TESTS:-test/}"
fi
if [ "${MATRIX_SKIP_DEB:-}" != 1 ]; then
    log "Debian package (dpkg-buildpackage, pg_buildext installcheck)"
    inside "debs=\$(mktemp -d /tmp/voipbin-deb.XXXXXX) && test/build_deb.sh \"\$debs\" && ls \"\$debs\"/postgresql-$major-voipbin_*.deb && rm -rf \"\$debs\""
fi
log "passed"
