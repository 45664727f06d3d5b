// The CUDA backend's device, stream, cuBLASLt handle and memory: allocation (zeroed, with
// live/peak accounting), host ↔ device copies, the shared scratch buffer.
#include <algorithm>

#include "cuda_backend.cuh"
#include "cuda_common.cuh"
#include "matmul_cache.cuh"

namespace competelm::cuda {
namespace {
constexpr size_t kLtWorkspaceBytes = size_t{32} << 20;  // cuBLASLt workspace: 32 MiB
}  // namespace

CudaBackend::CudaBackend(int device) : device_(device), matmul_cache_(std::make_unique<MatmulCache>()) {
  int count = 0;
  const cudaError_t count_err = cudaGetDeviceCount(&count);
  if (count_err != cudaSuccess)
    fail_hint("check the driver with nvidia-smi, or set run.device: cpu",
              "run.device: cuda: cannot use GPU {}: no usable CUDA device ({}: {})", device, cudaGetErrorName(count_err),
              cudaGetErrorString(count_err));
  if (device < 0 || device >= count)
    fail_hint("check CUDA_VISIBLE_DEVICES and the number of ranks per node, or set run.device: cpu",
              "run.device: cuda: GPU {} requested but this process sees {} GPU(s)", device, count);
  const cudaError_t set_err = cudaSetDevice(device);
  if (set_err != cudaSuccess)
    fail_hint("check the GPU with nvidia-smi (it may be in exclusive mode, busy or faulted), or set run.device: cpu",
              "run.device: cuda: cudaSetDevice({}) failed: {} ({})", device, cudaGetErrorName(set_err),
              cudaGetErrorString(set_err));
  try {
    // A blocking stream: it also orders against the legacy default stream, so a stray
    // synchronous cudaMemcpy elsewhere can never overtake work queued here.
    CUDA_CHECK(cudaStreamCreate(&stream_));
    CUBLAS_CHECK(cublasLtCreate(&lt_));
    lt_workspace_ = device_malloc(kLtWorkspaceBytes, "the cuBLASLt workspace");
    lt_workspace_bytes_ = kLtWorkspaceBytes;
  } catch (...) {
    release();
    throw;
  }
}

CudaBackend::~CudaBackend() { release(); }

void CudaBackend::release() noexcept {
  // Teardown never throws: errors (e.g. a device already lost) are ignored.
  if (stream_) cudaStreamSynchronize(stream_);
  matmul_cache_.reset();
  for (const auto& kv : sizes_) cudaFree(kv.first);  // blocks the owner forgot to dealloc
  sizes_.clear();
  if (param_copy_) cudaFree(param_copy_);
  param_copy_ = nullptr;
  param_copy_capacity_ = 0;
  params_ = nullptr;
  params_n_ = 0;
  param_copy_valid_ = false;
  for (int i = 0; i < kScratchSlots; ++i) {
    if (scratch_[i]) cudaFree(scratch_[i]);
    scratch_[i] = nullptr;
    scratch_bytes_[i] = 0;
  }
  if (lt_workspace_) cudaFree(lt_workspace_);
  lt_workspace_ = nullptr;
  lt_workspace_bytes_ = 0;
  if (lt_) cublasLtDestroy(lt_);
  lt_ = nullptr;
  if (stream_) cudaStreamDestroy(stream_);
  stream_ = nullptr;
  live_bytes_ = 0;
}

void* CudaBackend::device_malloc(size_t bytes, const char* what) {
  void* p = nullptr;
  const cudaError_t err = cudaMalloc(&p, std::max<size_t>(bytes, 1));
  if (err != cudaSuccess) {
    (void)cudaGetLastError();  // an allocation failure is not sticky: clear it
    fail_hint("lower train.micro_batch or model.seq_len, or use a GPU with more memory",
              "cuda backend: cannot allocate {:.1f} MiB for {} on GPU {} ({} MiB already held by competelm): {}",
              bytes / 1048576.0, what, device_, live_bytes_ >> 20, cudaGetErrorString(err));
  }
  live_bytes_ += bytes;
  peak_bytes_ = std::max(peak_bytes_, live_bytes_);
  return p;
}

void CudaBackend::device_free(void* p, size_t bytes) noexcept {
  cudaFree(p);
  live_bytes_ -= std::min(live_bytes_, bytes);
}

void* CudaBackend::alloc(size_t bytes) {
  void* p = device_malloc(bytes, "a tensor buffer");
  try {
    CUDA_CHECK(cudaMemsetAsync(p, 0, std::max<size_t>(bytes, 1), stream_));  // alloc returns zeroed memory
    sizes_[p] = bytes;
  } catch (...) {
    device_free(p, bytes);
    throw;
  }
  return p;
}

void CudaBackend::dealloc(void* p) {
  if (!p) return;
  const auto it = sizes_.find(p);
  if (it == sizes_.end()) fail("cuda backend: dealloc of {} which this backend did not allocate", p);
  // Work still queued on the stream may read the block: finish it before freeing. Not
  // checked: dealloc runs in destructors (also while an earlier CUDA error unwinds the
  // stack), and a sticky error resurfaces at the next checked call anyway.
  (void)cudaStreamSynchronize(stream_);
  const size_t bytes = it->second;
  // The parameter buffer's block going away: unbind it (the copy's memory is freed with it), so
  // that a later block at the same address is never mistaken for it.
  if (params_ && reinterpret_cast<uintptr_t>(params_) >= reinterpret_cast<uintptr_t>(p) &&
      reinterpret_cast<uintptr_t>(params_) < reinterpret_cast<uintptr_t>(p) + std::max<size_t>(bytes, 1))
    unbind_param_buffer();  // the stream is idle (above); never throws, as dealloc runs in destructors
  sizes_.erase(it);
  device_free(p, bytes);
}

void CudaBackend::upload(void* dst, const void* src_host, size_t bytes) {
  if (bytes == 0) return;
  invalidate_param_copy(dst, bytes);
  CUDA_CHECK(cudaMemcpyAsync(dst, src_host, bytes, cudaMemcpyHostToDevice, stream_));
  // The caller may free or reuse the (pageable) host buffer as soon as we return.
  CUDA_CHECK(cudaStreamSynchronize(stream_));
}

void CudaBackend::download(void* dst_host, const void* src, size_t bytes) {
  if (bytes == 0) return;
  CUDA_CHECK(cudaMemcpyAsync(dst_host, src, bytes, cudaMemcpyDeviceToHost, stream_));
  CUDA_CHECK(cudaStreamSynchronize(stream_));
}

void CudaBackend::zero(void* p, size_t bytes) {
  if (bytes == 0) return;
  invalidate_param_copy(p, bytes);
  CUDA_CHECK(cudaMemsetAsync(p, 0, bytes, stream_));
}

void CudaBackend::synchronize() { CUDA_CHECK(cudaStreamSynchronize(stream_)); }

void* CudaBackend::scratch(size_t bytes, int slot) {
  if (slot < 0 || slot >= kScratchSlots) fail("cuda backend: scratch slot {} out of range", slot);
  void*& buf = scratch_[slot];
  size_t& have = scratch_bytes_[slot];
  if (bytes <= have && buf) return buf;
  // Grow (by at least 1.5× so that a slowly growing demand reallocates rarely). Queued ops may
  // still use the old buffer: finish them first.
  CUDA_CHECK(cudaStreamSynchronize(stream_));
  const size_t grown = std::max(bytes, have + have / 2);
  if (buf) device_free(buf, have);
  buf = nullptr;
  have = 0;
  buf = device_malloc(grown, "the backend's scratch buffer");
  have = grown;
  return buf;
}

double CudaBackend::fetch_double(const double* dev) {
  double host = 0.0;
  CUDA_CHECK(cudaMemcpyAsync(&host, dev, sizeof(double), cudaMemcpyDeviceToHost, stream_));
  CUDA_CHECK(cudaStreamSynchronize(stream_));
  return host;
}

}  // namespace competelm::cuda
