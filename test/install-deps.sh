#!/usr/bin/env bash
# Installs, from Debian's archive, everything voipbin needs to build and to be
# tested.  Does nothing when all of it is already there.
#   PG_MAJOR   the PostgreSQL major to build against: 15 (Debian 12, the
#              default) or the one of the Debian root test/matrix.sh runs in
#              (17 on trixie, 18 on sid).  The fuzzers and the sanitizer run
#              (clang) are the host's only: they run on 15.
set -euo pipefail
major=${PG_MAJOR:-15}
packages=(
    build-essential pkg-config openssl ca-certificates
    postgresql-"$major" postgresql-server-dev-"$major"
    libwebsockets-dev libcurl4-openssl-dev libssl-dev
    libmicrohttpd-dev  # the webhook receiver (src/net/webhook/webhook_receiver.c)
    nginx-light  # test_webhook.py runs docs/webhooks.md's reverse-proxy snippet (its own nginx, not the service)
    python3-aiohttp python3-pytest python3-psycopg2
    python3-pytest-xdist  # test/sanitize.sh runs the suite two tests at a time
    git  # test_upgrade.py builds the released 1.0 from history; make dist
    debhelper postgresql-server-dev-all  # dpkg-buildpackage: dh --with pgxs, pg_buildext
    nodejs  # node --check of examples/live_transcripts.js
    prometheus-postgres-exporter  # test_metrics.py runs examples/postgres_exporter.yaml in it
    util-linux procps  # unshare (pgcluster.py), ps/kill in tests
)
if [ "$major" = 15 ]; then
    packages+=(clang-14 libclang-rt-14-dev llvm-14)  # test/fuzz.sh, test/sanitize.sh: libFuzzer, ASAN+UBSAN, symbolizer
    packages+=(debootstrap)  # test/matrix.sh: the Debian roots of PostgreSQL 17 and 18
fi
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
