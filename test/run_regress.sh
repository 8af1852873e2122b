#!/usr/bin/env bash
# pg_regress on a temporary instance with the library preloaded.  Postgres will
# not run as root, so the instance and the outputs live in a directory the
# postgres OS user owns; sql/ and expected/ are copied there because the
# checkout may sit where that user cannot read.
set -euo pipefail
cd "$(dirname "$0")/.."
pgxs=$(pg_config --pgxs)
pg_regress="$(dirname "$pgxs")/../test/regress/pg_regress"
tests=$(sed -n 's/^REGRESS = //p' Makefile)
work=$(mktemp -d /tmp/voipbin-regress.XXXXXX)
cp -r sql expected test/regress.conf "$work/"
chown -R postgres: "$work"
status=0
runuser -u postgres -- "$pg_regress" \
    --temp-instance="$work/tmp_check" --temp-config="$work/regress.conf" \
    --inputdir="$work" --outputdir="$work" --bindir="$(pg_config --bindir)" \
    --dbname=contrib_regression $tests || status=$?
if [ $status -ne 0 ] && [ -f "$work/regression.diffs" ]; then
    cat "$work/regression.diffs"
    cp "$work/regression.diffs" . 2>/dev/null || true
fi
[ $status -eq 0 ] && rm -rf "$work"
exit $status
