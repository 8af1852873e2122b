#!/usr/bin/env bash
# Runs the package's autopkgtest (debian/tests/) against the .deb installed
# as a user installs it (dpkg -i), without touching this machine's
# PostgreSQL: in a private mount namespace whose /usr, /etc, /var/lib/dpkg
# and /var/log are overlays on throwaway directories, so the installed files
# vanish with the namespace.  Needs root and mount namespaces.
#   test/autopkgtest.sh DEB...
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -gt 0 ] || { echo "usage: $0 DEB..." >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "$0: needs root (dpkg -i in a mount namespace)" >&2; exit 2; }
if ! unshare -m true 2>/dev/null; then
    echo "SKIP autopkgtest: no mount namespaces here (run it where unshare -m works)" >&2
    exit 0
fi
scratch=$(mktemp -d /tmp/voipbin-autopkgtest.XXXXXX)
trap 'rm -rf "$scratch"' EXIT
debs=()
for d in "$@"; do debs+=("$(readlink -f "$d")"); done
src="$scratch/src"
mkdir "$src"
git ls-files -z --cached --others --exclude-standard | while IFS= read -r -d '' f; do
    [ -e "$f" ] && printf '%s\0' "$f"
done | xargs -0 cp --parents -t "$src"
export scratch src
unshare -m --propagation private bash -euo pipefail -c '
    for dir in /usr /etc /var/lib/dpkg /var/log; do
        n=$(echo "$dir" | tr / _)
        mkdir -p "$scratch/$n/upper" "$scratch/$n/work"
        mount -t overlay overlay \
            -o "lowerdir=$dir,upperdir=$scratch/$n/upper,workdir=$scratch/$n/work" "$dir"
    done
    # only what the package brings: not files a `make install` left here
    rm -f /usr/lib/postgresql/*/lib/voipbin.so /usr/share/postgresql/*/extension/voipbin*
    dpkg -i "$@" >"$scratch/dpkg.log" 2>&1 || { cat "$scratch/dpkg.log"; exit 1; }
    dpkg-query -W "postgresql-*-voipbin"
    cd "$src"
    for t in $(sed -n "s/^Tests: *//p" debian/tests/control); do
        echo "== autopkgtest $t"
        debian/tests/$t
    done
' autopkgtest "${debs[@]}"
