#!/usr/bin/env bash
# The integration suite (and pg_regress) once against an ASAN+UBSAN build of
# the extension: fails on any sanitizer report, as well as on any test.
#
#   test/sanitize.sh [pytest args…]        (as root, like test/run)
#
# The extension is built with clang -fsanitize=address,undefined from a copy
# of the tree (the normal build's objects stay as they are) into a private
# copy of PostgreSQL (test/private-pg.sh asan).  postgres itself is not
# instrumented: in that copy bin/postgres becomes a wrapper that preloads
# the ASAN runtime (which carries UBSAN's) and sets the sanitizers' options,
# so every server any test starts, however it starts it, runs under them.
# Reports go to files, one per process, collected at the end.
#
# Leak detection is off: postgres keeps much of its memory for life and
# frees it by exiting, so LSan would report PostgreSQL, not us (the src/net/
# fuzz targets of test/fuzz.sh look for leaks).  Memory handed out by
# palloc() sits inside blocks ASAN sees whole, so an overrun within one is
# not seen; overruns of malloc() memory (libwebsockets, libcurl, OpenSSL,
# our src/net/ code), use after free, stack and global overruns, and every
# kind of undefined behaviour UBSAN checks are.
set -euo pipefail
cd "$(dirname "$0")/.."
top=$PWD
export CLANG=${CLANG:-clang-14}
name=${SANITIZE_PG:-asan}

bindir=$(test/private-pg.sh "$name")
[ -e "$bindir/postgres.real" ] || mv "$bindir/postgres" "$bindir/postgres.real"

work=$(mktemp -d /tmp/voipbin-sanitize-XXXXXX)
trap '[ -n "${SANITIZE_KEEP:-}" ] || rm -rf "$work"' EXIT
chmod 755 "$work"
reports=$work/reports
mkdir -m 1777 "$reports"

make -s -f test/fuzz/Makefile test/fuzz/build/asan_shim.so
cp test/fuzz/build/asan_shim.so "$bindir/asan_shim.so"
runtime=$($CLANG -print-resource-dir)/lib/linux/libclang_rt.asan-x86_64.so
# Reports are written unsymbolised (symbolize=0) and symbolised at the end
# (asan_symbolize): a server stopped in the middle of its report (at the end
# of a test) still leaves a whole stack, where llvm-symbolizer run from the
# dying process leaves half of one, or none.
common="halt_on_error=1:abort_on_error=0:symbolize=0"
# The wrapper runs the postgres.real beside it with argv[0] its own path:
# postgres finds its lib directory from argv[0] and records it in
# postmaster.opts (pg_ctl restart starts what is recorded there), and a copy
# of this installation (test_upgrade.py's released 1.0) must run its own
# library, not this one.
cat >"$bindir/postgres" <<EOF
#!/bin/bash
# written by test/sanitize.sh: postgres under ASAN+UBSAN
export LD_PRELOAD="$runtime $bindir/asan_shim.so"
export ASAN_OPTIONS="detect_leaks=0:quarantine_size_mb=32:malloc_context_size=16:allocator_may_return_null=1:log_path=$reports/asan:$common"
export UBSAN_OPTIONS="print_stacktrace=1:log_path=$reports/ubsan:$common"
exec -a "\$0" "\${0%/*}/postgres.real" "\$@"
EOF
chmod 755 "$bindir/postgres"

echo "== sanitize: building the extension with ASAN+UBSAN into $(dirname "$(dirname "$bindir")")"
mkdir "$work/src"
git ls-files -z -co --exclude-standard | tar --null -T - -c | tar -x -C "$work/src"
san="-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer -shared-libsan"
quiet="-Wno-ignored-attributes -Wno-unknown-warning-option -Wno-compound-token-split-by-macro"
if ! make -C "$work/src" -s -j"$(nproc)" PG_CONFIG="$bindir/pg_config" CC="$CLANG" with_llvm=no \
        COPT="$san $quiet" install >"$work/build.log" 2>&1; then
    cat "$work/build.log"; exit 1
fi
if [ "$(nm -D "$(dirname "$bindir")/lib/voipbin.so" | grep -c __asan_report)" -eq 0 ]; then
    echo "sanitize: the installed voipbin.so is not instrumented"; exit 1
fi

status=0
echo "== sanitize: pg_regress"
PATH="$bindir:$PATH" test/run_regress.sh || status=1
echo "== sanitize: integration tests"
# Wall-clock bounds (a second to shut down, a backoff's spacing, a 200 ms
# statement timeout, an outage's length) and a bound on the worker's RSS
# (ASAN keeps freed memory in quarantine) fail under ASAN without any memory
# error; the plain suite checks them.  So does test/test_chaos.py, which
# bounds the worker's RSS and times its runs.
args=("$@")
[ ${#args[@]} -gt 0 ] || args=(test/
    --deselect test/test_reliability.py::test_fast_shutdown_within_a_second
    --deselect test/test_reliability.py::test_backoff_grows_between_failures
    --deselect test/test_repair.py::test_an_outage_is_recorded
    --deselect test/test_repair.py::test_a_big_repair_holds_little_memory
    --deselect test/test_rest.py::test_statement_timeout_stops_a_hanging_call
    --deselect test/test_reliability.py::test_locked_table_never_stops_reading
    --ignore test/test_chaos.py)
# A test that fails is run once more (--last-failed), alone: on a loaded
# machine a deadline the plain suite meets can be missed under ASAN.  A
# sanitizer report fails the run whatever the tests did.
#
# SANITIZE_JOBS (2) tests run at once (pytest-xdist): the tests wait on
# timers far more than they compute, and each xdist worker has a cluster of
# its own (conftest's session fixtures), fake servers on ports of their own
# and temporary directories of its own.  1 runs them one by one.
cache="-o cache_dir=$work/pytest-cache"
jobs=${SANITIZE_JOBS:-2}
parallel=()
if [ "$jobs" -gt 1 ]; then
    /usr/bin/python3 -c "import xdist" 2>/dev/null ||
        { echo "sanitize: SANITIZE_JOBS=$jobs needs python3-pytest-xdist"; exit 1; }
    parallel=(-n "$jobs")
fi
start=$SECONDS
if ! PATH="$bindir:$PATH" /usr/bin/python3 -m pytest -q $cache "${parallel[@]}" "${args[@]}"; then
    echo "== sanitize: the failed tests once more"
    PATH="$bindir:$PATH" /usr/bin/python3 -m pytest -q $cache --last-failed \
        --last-failed-no-failures none "${args[@]}" || status=1
fi
echo "== sanitize: integration tests took $((SECONDS - start)) s"

# Any file there is a report: ASAN and UBSAN open it only to write one.
found=$(find "$reports" -type f | wc -l)
if [ "$found" -gt 0 ]; then
    echo "== sanitize: $found sanitizer report(s)"
    out=$top/test/sanitize-reports
    rm -rf "$out"
    mkdir -p "$out"
    symbolizer=$(command -v llvm-symbolizer-14 || command -v llvm-symbolizer || echo "")
    symbolize=$(command -v asan_symbolize-14 || command -v asan_symbolize || echo cat)
    for f in "$reports"/*; do
        LLVM_SYMBOLIZER_PATH=$symbolizer "$symbolize" <"$f" >"$out/$(basename "$f")" 2>&1 ||
            cp "$f" "$out/$(basename "$f")"
        echo "--- $(basename "$f")"
        head -80 "$out/$(basename "$f")"
    done
    echo "== sanitize: the reports are in test/sanitize-reports/"
    status=1
else
    echo "== sanitize: no sanitizer report"
fi
exit $status
