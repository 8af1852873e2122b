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
#   MATRIX_PYTEST_ARGS   extra pytest arguments (e.g. "-k worker")
#   MATRIX_SKIP_DEB=1    no package build
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

inside() {
    chroot "$root" /usr/bin/env -i PATH=/usr/lib/postgresql/$major/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        HOME=/root LANG=C.UTF-8 CI="${CI:-}" bash -c "cd $work && $*"
}

log "build and install"
inside "make -s -j2 PG_CONFIG=/usr/lib/postgresql/$major/bin/pg_config && make -s install PG_CONFIG=/usr/lib/postgresql/$major/bin/pg_config"
log "pg_regress (make installcheck)"
inside "test/run_regress.sh"
log "integration tests"
inside "/usr/bin/python3 -m pytest -q -p no:cacheprovider ${MATRIX_PYTEST_ARGS:-} test/"
if [ "${MATRIX_SKIP_DEB:-}" != 1 ]; then
    log "Debian package (dpkg-buildpackage, pg_buildext installcheck)"
    inside "debs=\$(mktemp -d /tmp/voipbin-deb.XXXXXX) && test/build_deb.sh \"\$debs\" && ls \"\$debs\"/postgresql-$major-voipbin_*.deb && rm -rf \"\$debs\""
fi
log "passed"
