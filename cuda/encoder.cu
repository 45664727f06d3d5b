// Token + position embeddings on the GPU.
//
// The backward has to add each position's gradient row into the wte row of its token, and
// tokens repeat. Without float atomics: a stable radix sort of the (token, position) pairs
// groups the positions of each token in increasing position order; one block per group then
// adds the group's rows into dwte in that order, exactly as the CPU oracle does (bit-identical
// to it, and the same bits on every run).
#include <algorithm>

#include <cub/device/device_radix_sort.cuh>

#include "cuda_backend.cuh"
#include "cuda_common.cuh"

namespace competelm::cuda {
namespace {

constexpr int kThreads = 256;

// out[bt, c] = wte[tokens[bt], c] + wpe[bt % T, c]; one thread per element (grid-stride).
__global__ void encoder_forward_kernel(float* out, const int32_t* tokens, const float* wte, const float* wpe,
                                       int T, int C, size_t n) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    const size_t bt = i / C;
    const int c = static_cast<int>(i % C);
    const int t = static_cast<int>(bt % T);
    out[i] = wte[size_t(tokens[bt]) * C + c] + wpe[size_t(t) * C + c];
  }
}

__global__ void iota_kernel(int32_t* v, int n) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) v[i] = i;
}

// Grid (BT, ceil(C / blockDim)): block (i, y) does channels [y·blockDim, +blockDim) of the group
// starting at sorted index i, if a group starts there (otherwise it exits at once).
// dwte[tok, c] += dout[pos_1, c]; += dout[pos_2, c]; ... in increasing position order.
__global__ void wte_backward_kernel(float* dwte, const float* dout, const int32_t* sorted_tokens,
                                    const int32_t* sorted_pos, int BT, int C) {
  const int i = blockIdx.x;
  const int tok = sorted_tokens[i];
  if (i > 0 && sorted_tokens[i - 1] == tok) return;  // not the first of its group
  const int c = blockIdx.y * blockDim.x + threadIdx.x;
  if (c >= C) return;
  float* row = dwte + size_t(tok) * C;
  float acc = row[c];
  for (int j = i; j < BT && sorted_tokens[j] == tok; ++j) acc += dout[size_t(sorted_pos[j]) * C + c];
  row[c] = acc;
}

// dwpe[t, c] += dout[0, t, c]; += dout[1, t, c]; ... (b in increasing order, as the CPU).
__global__ void wpe_backward_kernel(float* dwpe, const float* dout, int B, int T, int C) {
  const size_t n = size_t(T) * C;
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    float acc = dwpe[i];
    for (int b = 0; b < B; ++b) acc += dout[size_t(b) * n + i];
    dwpe[i] = acc;
  }
}

unsigned grid_for(size_t n) { return std::min<unsigned>(blocks_for(n, kThreads), 1u << 16); }
size_t align256(size_t bytes) { return (bytes + 255) / 256 * 256; }

}  // namespace

void CudaBackend::encoder_forward(float* out, const int32_t* tokens, const float* wte, const float* wpe, int B,
                                  int T, int C) {
  const size_t n = size_t(B) * T * C;
  if (n == 0) return;
  encoder_forward_kernel<<<grid_for(n), kThreads, 0, stream_>>>(out, tokens, wte, wpe, T, C, n);
  CUDA_CHECK_LAUNCH();
}

void CudaBackend::encoder_backward(float* dwte, float* dwpe, const float* dout, const int32_t* tokens, int B,
                                   int T, int C) {
  const int BT = B * T;
  if (BT == 0 || C == 0) return;
  // Scratch: positions (BT), sorted tokens (BT), sorted positions (BT), then cub's temp storage.
  size_t temp_bytes = 0;
  CUDA_CHECK(cub::DeviceRadixSort::SortPairs(nullptr, temp_bytes, static_cast<const int32_t*>(nullptr),
                                             static_cast<int32_t*>(nullptr), static_cast<const int32_t*>(nullptr),
                                             static_cast<int32_t*>(nullptr), BT, 0, 32, stream_));
  const size_t idx_bytes = align256(size_t(BT) * sizeof(int32_t));
  char* base = static_cast<char*>(scratch(3 * idx_bytes + temp_bytes));
  int32_t* pos = reinterpret_cast<int32_t*>(base);
  int32_t* sorted_tokens = reinterpret_cast<int32_t*>(base + idx_bytes);
  int32_t* sorted_pos = reinterpret_cast<int32_t*>(base + 2 * idx_bytes);
  void* temp = base + 3 * idx_bytes;

  iota_kernel<<<grid_for(size_t(BT)), kThreads, 0, stream_>>>(pos, BT);
  CUDA_CHECK_LAUNCH();
  // LSD radix sort is stable: equal tokens keep increasing positions.
  CUDA_CHECK(cub::DeviceRadixSort::SortPairs(temp, temp_bytes, tokens, sorted_tokens, pos, sorted_pos, BT, 0, 32,
                                             stream_));
  const dim3 grid(static_cast<unsigned>(BT), blocks_for(size_t(C), kThreads));
  wte_backward_kernel<<<grid, kThreads, 0, stream_>>>(dwte, dout, sorted_tokens, sorted_pos, BT, C);
  CUDA_CHECK_LAUNCH();
  wpe_backward_kernel<<<grid_for(size_t(T) * C), kThreads, 0, stream_>>>(dwpe, dout, B, T, C);
  CUDA_CHECK_LAUNCH();
}

}  // namespace competelm::cuda
