// CompeteSMoE scoring on the GPU (src/backend/cpu/moe_compete.cpp is the oracle): one expert's
// output rows reduced to a score per token, its backward, and the running per-token top-K
// that copies the winners' o and h rows. One warp per token row throughout.
//
// The CPU's softplus is a vectorised polynomial (error < 5e-8 per element); here it is
// log1pf(expf(−|x|)): the scores agree to a few float ulps, not bit for bit.
#include <cmath>

#include "cuda_backend.cuh"
#include "cuda_common.cuh"
#include "moe_common.cuh"

namespace competelm::cuda {
namespace {
using namespace moe;

__device__ inline float softplusf(float x) { return fmaxf(x, 0.0f) + log1pf(expf(-fabsf(x))); }

// scores[n·stride] = mean_c softplus(o[n,c]) or ||o[n,:]||₂ (float lane partials, warp_sum).
__global__ void expert_score_kernel(float* scores, int stride, const float* o, int N, int C, bool l2) {
  const int n = warp_row();
  if (n >= N) return;
  const int lane = lane_id();
  const float* r = o + static_cast<size_t>(n) * C;
  float s = 0.0f;
  if (l2)
    for (int c = lane; c < C; c += kWarp) s += r[c] * r[c];
  else
    for (int c = lane; c < C; c += kWarp) s += softplusf(r[c]);
  s = warp_sum(s);
  if (lane == 0) scores[static_cast<size_t>(n) * stride] = l2 ? sqrtf(s) : s / static_cast<float>(C);
}

// d_o[n,:] += dscores[n·stride]·∂s/∂o: sigmoid(o)/C (softplus mean) or o/||o|| (l2). A zero
// score gradient leaves the row untouched (as the CPU, even where o is not finite).
__global__ void expert_score_backward_kernel(float* d_o, const float* dscores, int stride, const float* o, int N,
                                             int C, bool l2) {
  const int n = warp_row();
  if (n >= N) return;
  const float ds = dscores[static_cast<size_t>(n) * stride];  // the same value in every lane
  if (ds == 0.0f) return;
  const int lane = lane_id();
  const float* r = o + static_cast<size_t>(n) * C;
  float* d = d_o + static_cast<size_t>(n) * C;
  if (l2) {
    float ss = 0.0f;
    for (int c = lane; c < C; c += kWarp) ss += r[c] * r[c];
    ss = warp_sum(ss);
    const float a = ds / fmaxf(sqrtf(ss), 1e-30f);
    for (int c = lane; c < C; c += kWarp) d[c] += a * r[c];
  } else {
    const float a = ds / static_cast<float>(C);
    for (int c = lane; c < C; c += kWarp) d[c] += a / (1.0f + expf(-r[c]));
  }
}

// Lane 0 updates token n's K slots exactly as the CPU: expert 0 empties them; the expert takes
// the first empty slot, else the worst held one (lowest score; among equal scores the highest
// expert index) if its score is strictly greater. Slots are not kept sorted. The chosen slot
// is broadcast and the warp copies the o row (C) and h row (H) into keep_o / keep_h there.
__global__ void compete_insert_kernel(int32_t* idx, float* best, float* keep_o, float* keep_h, const float* scores,
                                      int stride, const float* o, const float* h, int expert, int N, int K, int C,
                                      int H) {
  const int n = warp_row();
  if (n >= N) return;
  const int lane = lane_id();
  int slot = -1;
  if (lane == 0) {
    const float s = scores[static_cast<size_t>(n) * stride];
    int32_t* id = idx + static_cast<size_t>(n) * K;
    float* bs = best + static_cast<size_t>(n) * K;
    if (expert == 0)
      for (int k = 0; k < K; k++) id[k] = -1;
    for (int k = 0; k < K && slot < 0; k++)
      if (id[k] < 0) slot = k;
    if (slot < 0) {
      int worst = 0;
      for (int k = 1; k < K; k++)
        if (bs[k] < bs[worst] || (bs[k] == bs[worst] && id[k] > id[worst])) worst = k;
      if (s > bs[worst]) slot = worst;  // ties keep the earlier (lower-index) expert
    }
    if (slot >= 0) {
      id[slot] = expert;
      bs[slot] = s;
    }
  }
  slot = __shfl_sync(0xffffffffu, slot, 0);
  if (slot < 0) return;
  const size_t sl = static_cast<size_t>(n) * K + slot;
  const float* on = o + static_cast<size_t>(n) * C;
  const float* hn = h + static_cast<size_t>(n) * H;
  float* ko = keep_o + sl * C;
  float* kh = keep_h + sl * H;
  for (int c = lane; c < C; c += kWarp) ko[c] = on[c];
  for (int c = lane; c < H; c += kWarp) kh[c] = hn[c];
}

}  // namespace

void CudaBackend::moe_expert_score(float* scores, int stride, const float* o, int N, int C, bool l2) {
  if (N <= 0) return;
  expert_score_kernel<<<row_blocks(N), kRowThreads, 0, stream()>>>(scores, stride, o, N, C, l2);
  CUDA_CHECK_LAUNCH();
}

void CudaBackend::moe_expert_score_backward(float* d_o, const float* dscores, int stride, const float* o, int N,
                                            int C, bool l2) {
  if (N <= 0) return;
  expert_score_backward_kernel<<<row_blocks(N), kRowThreads, 0, stream()>>>(d_o, dscores, stride, o, N, C, l2);
  CUDA_CHECK_LAUNCH();
}

void CudaBackend::moe_compete_insert(int32_t* idx, float* best, float* keep_o, float* keep_h, const float* scores,
                                     int stride, const float* o, const float* h, int expert, int N, int K, int C,
                                     int H) {
  if (N <= 0 || K < 1) return;
  compete_insert_kernel<<<row_blocks(N), kRowThreads, 0, stream()>>>(idx, best, keep_o, keep_h, scores, stride, o,
                                                                      h, expert, N, K, C, H);
  CUDA_CHECK_LAUNCH();
}

}  // namespace competelm::cuda
