#!/usr/bin/env bash
# Fuzzes the input parsers with libFuzzer (+ AddressSanitizer, UndefinedBehaviorSanitizer):
# the YAML config loader, the token shard reader, the checkpoint reader and the tokenizer
# (targets in tests/fuzz/, see fuzz_targets.hpp). Builds them with clang into build-fuzz/,
# runs each for SECONDS_PER_TARGET from the committed seeds and regressions, and fails if any
# target crashes, trips a sanitizer, breaks a property, hangs (-timeout) or exceeds the
# memory limit (-rss_limit_mb; single allocations above it count too).
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]    (default 20 s; targets: config shard
#                                                        checkpoint tokenizer)
#   scripts/fuzz.sh 15          CI: about a minute of fuzzing plus the build
#   scripts/fuzz.sh 600         a longer local run (the corpus grows in build-fuzz/fuzz-corpus/
#                               and is reused by the next run)
#
# A failure leaves the input in build-fuzz/fuzz-artifacts/<target>/. Reproduce it without
# clang with build/bin/competelm-fuzz-replay tests/fuzz <target> FILE, fix the parser, then
# commit the file under tests/fuzz/regressions/<target>/ (ctest fuzz.replay replays it).
# Environment: FUZZ_BUILD_DIR (build-fuzz), FUZZ_MAX_LEN (4096), JOBS (nproc).
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_PER_TARGET=${1:-20}
[ $# -gt 0 ] && shift
TARGETS=("$@")
[ ${#TARGETS[@]} -eq 0 ] && TARGETS=(config shard checkpoint tokenizer)
BUILD_DIR=${FUZZ_BUILD_DIR:-build-fuzz}
MAX_LEN=${FUZZ_MAX_LEN:-4096}
JOBS=${JOBS:-$(nproc)}

if ! command -v clang++ >/dev/null; then
  echo "fuzz.sh: clang++ not found (scripts/install_deps.sh installs clang and libclang-rt-14-dev)" >&2
  exit 1
fi

start=$(date +%s)
if [ ! -f "$BUILD_DIR/CMakeCache.txt" ]; then
  CC=clang CXX=clang++ cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCOMPETELM_FUZZ=ON -DCOMPETELM_CUDA=OFF -DCOMPETELM_MPI=OFF >/dev/null
fi
cmake --build "$BUILD_DIR" -j "$JOBS" --target "${TARGETS[@]/#/fuzz_}"
echo "fuzz.sh: build took $(( $(date +%s) - start )) s"

export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=0:detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
failed=()
summary=()
for t in "${TARGETS[@]}"; do
  corpus="$BUILD_DIR/fuzz-corpus/$t"        # grows; the first directory gets new inputs
  artifacts="$BUILD_DIR/fuzz-artifacts/$t"
  log="$BUILD_DIR/fuzz-logs/$t.log"
  mkdir -p "$corpus" "$artifacts" "$(dirname "$log")" "tests/fuzz/regressions/$t"
  echo "fuzz.sh: fuzz_$t for ${SECONDS_PER_TARGET} s (log: $log)"
  rc=0
  "$BUILD_DIR/bin/fuzz_$t" -max_total_time="$SECONDS_PER_TARGET" -max_len="$MAX_LEN" \
    -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$artifacts/" "$corpus" "tests/fuzz/seeds/$t" "tests/fuzz/regressions/$t" \
    >"$log" 2>&1 || rc=$?
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -1 || true)
  summary+=("$(printf '%-11s %9s execs  %6s exec/s  %s  rc=%s' "$t" "${runs:-?}" "${rate:-?}" "$cov" "$rc")")
  if [ "$rc" -ne 0 ]; then
    failed+=("$t")
    echo "fuzz.sh: fuzz_$t FAILED (rc=$rc); the end of its log:" >&2
    grep -E -A25 'ERROR:|runtime error|property violated|Timeout|out-of-memory|deadly signal' "$log" | head -60 >&2 || tail -40 "$log" >&2
    ls "$artifacts" >&2
  fi
done

printf '%s\n' "fuzz.sh: summary (${SECONDS_PER_TARGET} s per target):" "${summary[@]}"
echo "fuzz.sh: total $(( $(date +%s) - start )) s"
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz.sh: FAILED targets: ${failed[*]} (inputs in $BUILD_DIR/fuzz-artifacts/)" >&2
  exit 1
fi
