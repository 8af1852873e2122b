#!/usr/bin/env bash
# Fuzzes the code that reads what others send or type: each libFuzzer target
# runs for FUZZ_SECONDS (45: eight targets, within .ci/run's half hour) under ASAN+UBSAN (and LSan where it can), from
# its corpus in test/fuzz/<target>/; regression inputs there (regress-*)
# run first every time.  No crash, no leak, no undefined behaviour, or this
# fails and leaves the input that did it in test/fuzz/artifacts/.
#
#   test/fuzz.sh [TARGET…]      (as root: PostgreSQL targets run as postgres)
#
# Targets that need the backend (frame, topic, endpoint, host) run inside
# `postgres --single` with the ASAN runtime preloaded (see
# test/fuzz/pg_fuzz.c); those of src/net/ (test/fuzz/fuzz_*.c) are plain
# libFuzzer binaries.
set -euo pipefail
cd "$(dirname "$0")/.."
top=$PWD
seconds=${FUZZ_SECONDS:-45}
export CLANG=${CLANG:-clang-14}
pg_targets=(frame topic endpoint host)
# a src/net/ target whose code is not written yet is skipped, and says so
net_targets=()
for f in test/fuzz/fuzz_*.c; do
    [ -e "$f" ] || continue
    t=${f#test/fuzz/fuzz_}; t=${t%.c}
    missing=
    for src in $(sed -n '1s|.*fuzz-sources:\(.*\)\*/.*|\1|p' "$f"); do
        [[ $src == -* || -e $src ]] || missing+=" $src"
    done
    if [ -n "$missing" ]; then
        echo "fuzz $t: skipped, no$missing yet"
    else
        net_targets+=("$t")
    fi
done
wanted=("$@")
[ ${#wanted[@]} -gt 0 ] || wanted=("${pg_targets[@]}" "${net_targets[@]}")

builds=(all)
for t in "${net_targets[@]}"; do builds+=("test/fuzz/build/fuzz_$t"); done
make -s -f test/fuzz/Makefile "${builds[@]}"
symbolizer=$(command -v llvm-symbolizer-14 || command -v llvm-symbolizer || echo "")
bindir=$(pg_config --bindir)

work=$(mktemp -d /tmp/voipbin-fuzz-XXXXXX)
trap '[ -n "${FUZZ_KEEP:-}" ] || rm -rf "$work"' EXIT
chmod 755 "$work"
cp test/fuzz/build/asan_shim.so "$work/"
preload="$($CLANG -print-resource-dir)/lib/linux/libclang_rt.asan-x86_64.so $work/asan_shim.so"
artifacts=$top/test/fuzz/artifacts

san_common="symbolize=1:external_symbolizer_path=$symbolizer:halt_on_error=1:abort_on_error=0"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:$san_common"

pg_ready=
pg_cluster() {
    [ -z "$pg_ready" ] || return 0
    mkdir "$work/pg"
    cp test/fuzz/build/voipbin_fuzz.so "$work/pg/"
    chown -R postgres: "$work/pg"
    runuser -u postgres -- "$bindir/initdb" -D "$work/pg/data" -A trust -U postgres \
        --no-sync -E UTF8 --locale=C.UTF-8 >"$work/initdb.log" 2>&1 \
        || { cat "$work/initdb.log"; exit 1; }
    pg_ready=1
}

# run TARGET LOG ARGS…: one libFuzzer run; its exit status
run_target() {
    local t=$1 log=$2; shift 2
    local corpus="$work/corpus-$t"
    mkdir -p "$corpus" "$work/art-$t"
    # copies: the checkout may sit where the postgres user cannot read
    cp -r "test/fuzz/$t" "$work/seed-$t"
    local args=("$corpus" "$work/seed-$t"
                "-max_total_time=$seconds" "-timeout=25" "-print_final_stats=1"
                "-use_value_profile=1" "-artifact_prefix=$work/art-$t/")
    if [ -f "test/fuzz/$t.dict" ]; then
        cp "test/fuzz/$t.dict" "$work/"
        args+=("-dict=$work/$t.dict")
    fi
    if [[ " ${pg_targets[*]} " == *" $t "* ]]; then
        pg_cluster
        chown -R postgres: "$corpus" "$work/art-$t" "$work/seed-$t"
        local sqlargs
        sqlargs=$(printf "'%s'," "${args[@]}")
        {
            echo "CREATE OR REPLACE FUNCTION voipbin_fuzz(text, text[]) RETURNS int AS '$work/pg/voipbin_fuzz.so', 'voipbin_fuzz' LANGUAGE C STRICT;"
            echo "SELECT voipbin_fuzz('$t', ARRAY[${sqlargs%,}]);"
        } >"$work/$t.sql"
        # postgres itself is not instrumented and keeps its memory for
        # life: LSan would see only its own, so leaks are looked for in
        # the src/net/ targets, whose memory is all malloc()'s.
        runuser -u postgres -- env LD_PRELOAD="$preload" \
            ASAN_OPTIONS="detect_leaks=0:$san_common" UBSAN_OPTIONS="$UBSAN_OPTIONS" \
            "$bindir/postgres" --single -D "$work/pg/data" -c fsync=off postgres \
            <"$work/$t.sql" >"$log" 2>&1
    else
        ASAN_OPTIONS="detect_leaks=1:$san_common" TMPDIR="$work" \
            "test/fuzz/build/fuzz_$t" "${args[@]}" >"$log" 2>&1
    fi
}

passed=0 failed=0
for t in "${wanted[@]}"; do
    log="$work/$t.log"
    rc=0
    run_target "$t" "$log" || rc=$?
    runs=$(sed -n 's/^Done \([0-9]*\) runs in \([0-9]*\) second.*/\1 execs in \2 s/p' "$log" | tail -1)
    if [ "$rc" -eq 0 ] && [ -n "$runs" ] && ! grep -q -E "ERROR: (Address|Leak|Undefined)Sanitizer|runtime error:" "$log"; then
        cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 || true)
        echo "fuzz $t: $runs, corpus $(ls "$work/corpus-$t" | wc -l) new inputs, $cov: no finding"
        passed=$((passed + 1))
    else
        failed=$((failed + 1))
        echo "fuzz $t: FAILED (exit $rc)"
        grep -v -E '^#[0-9]+\s+(NEW|REDUCE|pulse)' "$log" | tail -60 | sed "s/^/  $t| /"
        mkdir -p "$artifacts"
        for a in "$work/art-$t"/*; do
            [ -e "$a" ] || continue
            cp "$a" "$artifacts/$t-$(basename "$a")"
            echo "  input kept as test/fuzz/artifacts/$t-$(basename "$a") (add it to test/fuzz/$t/ as regress-…):"
            od -A d -c "$a" | head -20 | sed 's/^/    /'
        done
    fi
done
echo "fuzz: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
