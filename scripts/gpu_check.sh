#!/usr/bin/env bash
# On a GPU machine: build with CUDA and run the GPU tests (ctest label `gpu`) plus the unit
# tests that need no prepared corpus, the GPU tests under compute-sanitizer memcheck, the bf16
# tests again with the gated defaults off (their fallbacks), and
# competelm-bench on CUDA (GPT-2 124M dense and MoE with each router, RESULT lines kept),
# and write a summary. GPU time is scarce: this one
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
if ! cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release ${CUDA_ARCHS:+-DCMAKE_CUDA_ARCHITECTURES="$CUDA_ARCHS"} ${PYTHON:+-DCOMPETELM_PYTHON="$PYTHON"} \
       >"$OUT_DIR/configure.log" 2>&1 ||
   ! cmake --build "$BUILD_DIR" -j "$(nproc)" >"$OUT_DIR/build.log" 2>&1; then
  echo "BUILD FAILED (see configure.log / build.log)" >>"$SUMMARY"
  tail -n 30 "$OUT_DIR/build.log" "$OUT_DIR/configure.log" 2>/dev/null
  cat "$SUMMARY"
  exit 1
fi
grep -E "CUDA toolchain" "$OUT_DIR/configure.log" >>"$SUMMARY"
rc=0
if [ "${GPU_CHECK_TESTS:-1}" = 0 ]; then
  echo "tests: skipped (GPU_CHECK_TESTS=0)" >>"$SUMMARY"
else
  (cd "$BUILD_DIR" && ctest -L gpu --output-on-failure) >"$OUT_DIR/ctest_gpu.log" 2>&1 || rc=1
  grep -E "tests passed|Skipped|Failed|PASS|FAIL|GPUs" "$OUT_DIR/ctest_gpu.log" >>"$SUMMARY"
  # Unit tests that need no corpus (the corpus needs node + network to prepare); GPU_CHECK_UNIT=0
  # skips them where device time is short (CI runs them anyway).
  if [ "${GPU_CHECK_UNIT:-1}" != 0 ]; then
    (cd "$BUILD_DIR" && ctest -L unit -E "JavaScript reference|encode gives the known ids|tokenizer files" -j 4 --output-on-failure) >"$OUT_DIR/ctest_unit.log" 2>&1 || rc=1
    tail -n 3 "$OUT_DIR/ctest_unit.log" >>"$SUMMARY"
  fi
fi

# Each further step logs to $OUT_DIR/NAME.log and records "NAME: ok" or "NAME: FAILED (rc N)"
# in the summary; a failure is remembered and the script goes on.
run_step() {
  local name=$1
  shift
  local step_rc=0
  "$@" >"$OUT_DIR/$name.log" 2>&1 || step_rc=$?
  if [ "$step_rc" -eq 0 ]; then
    echo "$name: ok" >>"$SUMMARY"
  else
    echo "$name: FAILED (rc $step_rc, see $name.log)" >>"$SUMMARY"
    tail -n 20 "$OUT_DIR/$name.log"
    rc=1
  fi
  grep -E "^RESULT" "$OUT_DIR/$name.log" | sed "s/^/$name: /" >>"$SUMMARY"
  return 0
}

# Device memory errors (out-of-bounds, misaligned, uninitialised reads) in the CUDA kernels:
# the op and model tests under compute-sanitizer (not the training runs or the 8 GiB test,
# which would take too long instrumented, nor [nccl]: NCCL's initialisation probes its kernels
# with cudaFuncGetAttributes and handles the "no kernel image" errors for other architectures
# itself, which memcheck reports as 8 API errors). GPU_CHECK_TESTS=0 / GPU_CHECK_MEMCHECK=0 /
# GPU_CHECK_BENCH=0 skip a part, to split the check over several shorter commands (the build
# is reused: it only recompiles what changed).
SANITIZER=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null || true)
if [ "${GPU_CHECK_MEMCHECK:-1}" = 0 ]; then
  echo "memcheck: skipped (GPU_CHECK_MEMCHECK=0)" >>"$SUMMARY"
elif [ -n "$SANITIZER" ]; then
  run_step memcheck timeout "${MEMCHECK_TIMEOUT:-300}" "$SANITIZER" --tool memcheck --error-exitcode 1 \
    "$BUILD_DIR/bin/competelm-gpu-tests" "${MEMCHECK_FILTER:-[cuda]~[train]~[large]~[nccl]}"
  grep -E "ERROR SUMMARY" "$OUT_DIR/memcheck.log" | tail -n 1 >>"$SUMMARY"
else
  echo "memcheck: skipped (compute-sanitizer not found)" >>"$SUMMARY"
fi

# The verified defaults' fallbacks, which the plain test run above no longer takes: the bf16 tests
# with the bf16 parameter copy off (per-GEMM rounding, COMPETELM_BF16_PARAM_COPY=0) and the
# epilogue, model and bf16 tests with the fused GEMM + GELU epilogue off (COMPETELM_GEMM_EPILOGUES=0).
# GPU_CHECK_FALLBACKS=0 skips them.
if [ "${GPU_CHECK_TESTS:-1}" = 0 ] || [ "${GPU_CHECK_FALLBACKS:-1}" = 0 ]; then
  echo "fallbacks: skipped" >>"$SUMMARY"
else
  run_step no_param_copy env COMPETELM_BF16_PARAM_COPY=0 timeout 600 "$BUILD_DIR/bin/competelm-gpu-tests" "[cuda][bf16]"
  grep -E "All tests passed|test cases" "$OUT_DIR/no_param_copy.log" | tail -n 1 | sed "s/^/no_param_copy: /" >>"$SUMMARY"
  run_step no_gemm_epilogues env COMPETELM_GEMM_EPILOGUES=0 timeout 600 "$BUILD_DIR/bin/competelm-gpu-tests" \
    "[epilogue],[cuda][model],[cuda][bf16]"
  grep -E "All tests passed|test cases" "$OUT_DIR/no_gemm_epilogues.log" | tail -n 1 | sed "s/^/no_gemm_epilogues: /" >>"$SUMMARY"
fi

# The register-resident mma.sync attention (cuda/attention_mma.cu, the default since its GPU
# check; its own tests run with the whole suite above): the attention, model and bf16 tests on the wmma
# fallback (COMPETELM_ATTENTION_MMA=0), then its speed against the wmma path.
# GPU_CHECK_ATTENTION_MMA=0 skips it.
if [ "${GPU_CHECK_TESTS:-1}" = 0 ] || [ "${GPU_CHECK_ATTENTION_MMA:-1}" = 0 ]; then
  echo "attention_mma: skipped" >>"$SUMMARY"
else
  run_step attention_wmma env COMPETELM_ATTENTION_MMA=0 timeout 600 "$BUILD_DIR/bin/competelm-gpu-tests" \
    "[cuda][attention],[cuda][model],[cuda][bf16]"
  grep -E "All tests passed|test cases" "$OUT_DIR/attention_wmma.log" | tail -n 1 | sed "s/^/attention_wmma: /" >>"$SUMMARY"
  run_step attention_mma_bench timeout 120 "$BUILD_DIR/bin/competelm-gpu-tests" "[mma][.bench]" -s
  grep -E "^attention bf16" "$OUT_DIR/attention_mma_bench.log" | sed "s/^/attention_mma_bench: /" >>"$SUMMARY"
fi

# The fused GELU backward (cuBLASLt DGELU epilogue in matmul_backward_gelu; off unless
# COMPETELM_DGELU_EPILOGUE=1 until it is verified here, docs/cuda.md): its tests, the model, MoE
# and bf16 tests (training and bit-for-bit resume included) with it on, then the dense bench with
# it on for the comparison. If they pass, set kDgeluEpilogueVerified. GPU_CHECK_DGELU=0 skips it.
if [ "${GPU_CHECK_TESTS:-1}" = 0 ] || [ "${GPU_CHECK_DGELU:-1}" = 0 ]; then
  echo "dgelu_epilogue: skipped" >>"$SUMMARY"
else
  run_step dgelu_epilogue env COMPETELM_DGELU_EPILOGUE=1 timeout 600 "$BUILD_DIR/bin/competelm-gpu-tests" \
    "[epilogue],[cuda][model],[cuda][moe],[cuda][bf16]"
  grep -E "All tests passed|test cases" "$OUT_DIR/dgelu_epilogue.log" | tail -n 1 | sed "s/^/dgelu_epilogue: /" >>"$SUMMARY"
  if [ "${GPU_CHECK_BENCH:-1}" != 0 ]; then
    run_step bench_gpt2_124m_dgelu timeout 240 env COMPETELM_DGELU_EPILOGUE=1 "$BUILD_DIR/bin/competelm-bench" \
      configs/gpt2-124m.yaml --device cuda --set train.micro_batch=16 --set model.seq_len=1024 \
      --steps ${BENCH_STEPS:-3} --warmup 1
  fi
fi

# Throughput on the GPU: GPT-2 124M dense and the 124M-active MoE with each router, B=16, T=1024.
BENCH="$BUILD_DIR/bin/competelm-bench"
BENCH_ARGS=(--device cuda --set train.micro_batch=16 --set model.seq_len=1024 --steps ${BENCH_STEPS:-3} --warmup 1)
if [ "${GPU_CHECK_BENCH:-1}" = 0 ]; then
  echo "bench: skipped (GPU_CHECK_BENCH=0)" >>"$SUMMARY"
else
  run_step bench_gpt2_124m timeout 240 "$BENCH" configs/gpt2-124m.yaml "${BENCH_ARGS[@]}"
  # …and with the wmma attention (COMPETELM_ATTENTION_MMA=0) for the comparison.
  run_step bench_gpt2_124m_attention_wmma timeout 240 env COMPETELM_ATTENTION_MMA=0 "$BENCH" configs/gpt2-124m.yaml \
    "${BENCH_ARGS[@]}"
  for router in softmax_topk competesmoe sigmoid_topk; do
    run_step "bench_gpt2_124m_moe_$router" timeout 240 "$BENCH" configs/gpt2-124m-moe.yaml "${BENCH_ARGS[@]}" \
      --set moe.router=$router
  done
  # The same MoE model in PyTorch (eager and torch.compile, fp32 and bf16 autocast): ours/torch tokens/s.
  run_step bench_vs_torch_moe timeout "${TORCH_TIMEOUT:-900}" env BENCH="$BENCH" PYTHON="${PYTHON:-}" STEPS="${BENCH_STEPS:-5}" WARMUP=2 \
    scripts/bench_vs_torch_gpu.sh configs/gpt2-124m-moe.yaml 16 1024
fi

cat "$SUMMARY"
exit $rc
