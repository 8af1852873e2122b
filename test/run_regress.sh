#!/usr/bin/env bash
# pg_regress through `make installcheck`, which brings its own temporary
# instance with the library preloaded (see the Makefile).  initdb refuses
# root, so as root the test files are copied to a directory the postgres OS
# user owns (the checkout may sit where that user cannot write) and the
# target runs there as postgres, or as the OS user REGRESS_USER names (the
# suite must pass for any user: test/run runs it as one of its own too).
# Uses the pg_config first on PATH.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
    exec make -s installcheck
fi
work=$(mktemp -d /tmp/voipbin-regress.XXXXXX)
mkdir "$work/test"
cp Makefile ./*.control "$work/"
cp test/regress.conf "$work/test/"
for d in sql expected input output data; do
    [ -d "$d" ] && cp -r "$d" "$work/"
done
user=${REGRESS_USER:-postgres}
chown -R "$user": "$work"
status=0
runuser -u "$user" -- env PATH="$PATH" make -s -C "$work" installcheck || status=$?
if [ $status -ne 0 ] && [ -f "$work/regression.diffs" ]; then
    cat "$work/regression.diffs"
    cp "$work/regression.diffs" . 2>/dev/null || true
fi
[ $status -eq 0 ] && rm -rf "$work"
exit $status
