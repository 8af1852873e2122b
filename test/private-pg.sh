#!/usr/bin/env bash
# A private copy of the installed PostgreSQL 15 under /opt/pg/NAME, for
# developers who build and test several trees at once: `make install` and
# the tests then touch only that copy.  PostgreSQL finds its lib and share
# directories relative to its binaries, so the copy works as installed.
#   export PATH=$(test/private-pg.sh NAME):$PATH
set -euo pipefail
name=${1:?usage: test/private-pg.sh NAME}
src_bin=$(/usr/bin/pg_config --bindir 2>/dev/null || echo /usr/lib/postgresql/15/bin)
ver=$(basename "$(dirname "$src_bin")")
root=/opt/pg/$name
if [ ! -x "$root/usr/lib/postgresql/$ver/bin/postgres" ]; then
    mkdir -p "$root/usr/lib/postgresql" "$root/usr/share/postgresql" "$root/usr/include"
    cp -a "/usr/lib/postgresql/$ver" "$root/usr/lib/postgresql/"
    cp -a "/usr/share/postgresql/$ver" "$root/usr/share/postgresql/"
    cp -a /usr/include/postgresql "$root/usr/include/"
fi
echo "$root/usr/lib/postgresql/$ver/bin"
