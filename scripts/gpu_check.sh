#!/usr/bin/env bash
# On a GPU machine: build with CUDA and run the GPU tests (ctest label `gpu`) plus the unit
# tests that need no prepared corpus, and write a summary. GPU time is scarce: this one
# command does it all. Machines without Debian packages: carry third_party/prefix
# (third_party/fetch_debs.sh) and the build finds the libraries there.
#   scripts/gpu_check.sh [SUMMARY_DIR]      (default: build-gpu/)
set -uo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build-gpu}
OUT_DIR=${1:-$BUILD_DIR}
mkdir -p "$OUT_DIR"
SUMMARY="$OUT_DIR/gpu_summary.txt"
{
  echo "# competelm gpu_check $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 || echo "nvidia-smi: not available"
  nvcc --version 2>&1 | tail -n 1
} >"$SUMMARY"
# The reference tests need a Python with torch: the first python3 on PATH that has it.
PYTHON=${PYTHON:-}
for p in $(which -a python3 2>/dev/null) /usr/bin/python3; do
  [ -z "$PYTHON" ] && "$p" -c "import torch" 2>/dev/null && PYTHON=$p
done
echo "python for the reference tests: ${PYTHON:-none with torch}" >>"$SUMMARY"
if ! cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release ${PYTHON:+-DCOMPETELM_PYTHON="$PYTHON"} \
       >"$OUT_DIR/configure.log" 2>&1 ||
   ! cmake --build "$BUILD_DIR" -j "$(nproc)" >"$OUT_DIR/build.log" 2>&1; then
  echo "BUILD FAILED (see configure.log / build.log)" >>"$SUMMARY"
  tail -n 30 "$OUT_DIR/build.log" "$OUT_DIR/configure.log" 2>/dev/null
  cat "$SUMMARY"
  exit 1
fi
grep -E "CUDA toolchain" "$OUT_DIR/configure.log" >>"$SUMMARY"
rc=0
(cd "$BUILD_DIR" && ctest -L gpu --output-on-failure) >"$OUT_DIR/ctest_gpu.log" 2>&1 || rc=1
grep -E "tests passed|Skipped|Failed|PASS|FAIL|GPUs" "$OUT_DIR/ctest_gpu.log" >>"$SUMMARY"
# Unit tests that need no corpus (the corpus needs node + network to prepare).
(cd "$BUILD_DIR" && ctest -L unit -E "JavaScript reference|encode gives the known ids|tokenizer files" -j 4 --output-on-failure) >"$OUT_DIR/ctest_unit.log" 2>&1 || rc=1
tail -n 3 "$OUT_DIR/ctest_unit.log" >>"$SUMMARY"
cat "$SUMMARY"
exit $rc
