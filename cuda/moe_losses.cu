// MoE auxiliary losses (entropy / Switch balance, z-loss, router distillation, diversity) and
// routing statistics on the GPU (src/backend/cpu/moe_losses.cpp is the oracle). Every value is
// computed in double: per-row (or per-sequence, per-expert) terms go to scratch and one block
// sums them in a fixed order (finish_sum), the host fetches the double. Column sums over
// tokens run in fixed chunks of rows, then the chunks are added in order. Gradients
// ACCUMULATE scale·∂loss/∂x, each element written by exactly one thread: deterministic.
#include <cmath>

#include "cuda_backend.cuh"
#include "cuda_common.cuh"
#include "moe_common.cuh"

namespace competelm::cuda {
namespace {
using namespace moe;

constexpr double kTiny = 1e-30;      // floor inside log() so an exactly-empty expert stays finite
constexpr int kChunkRows = 256;      // rows per partial column sum
constexpr int kColThreads = 128;     // columns (experts) per block of a column kernel
constexpr int kReduceThreads = 1024;  // the one block of finish_sum
constexpr int kDiversityThreads = 128;

// *out = (Σ_r Σ_c v[r, c]) · mul / div: each thread sums whole rows (columns in order) for
// the rows r ≡ tid (mod blockDim), then block_sum's fixed tree. One block.
__global__ void finish_sum_kernel(double* out, const double* v, int rows, int cols, double mul, double div) {
  __shared__ double red[kWarp];
  double acc = 0.0;
  for (int r = threadIdx.x; r < rows; r += blockDim.x) {
    const double* vr = v + static_cast<size_t>(r) * cols;
    double s = 0.0;
    for (int c = 0; c < cols; c++) s += vr[c];
    acc += s;
  }
  acc = block_sum(acc, red);
  if (threadIdx.x == 0) *out = acc * mul / div;
}

void finish_sum(cudaStream_t st, double* out, const double* v, int rows, int cols, double mul, double div) {
  finish_sum_kernel<<<1, kReduceThreads, 0, st>>>(out, v, rows, cols, mul, div);
  CUDA_CHECK_LAUNCH();
}

// Scratch carved into consecutive arrays (doubles first, so every array stays aligned).
struct Carve {
  char* p;
  template <typename T>
  T* take(size_t n) {
    T* r = reinterpret_cast<T*>(p);
    p += ((n * sizeof(T) + 15) / 16) * 16;
    return r;
  }
};
template <typename T>
size_t carve_bytes(size_t n) {
  return ((n * sizeof(T) + 15) / 16) * 16;
}

// ---- entropy balance ----------------------------------------------------------------------

// partial[(b·cps + j)·E + e] = Σ_{t in chunk j of sequence b} p[b, t, e] (double, t in order).
__global__ void seq_column_partials_kernel(double* partial, const float* p, int T, int E, int cps) {
  const int e = blockIdx.y * blockDim.x + threadIdx.x;
  if (e >= E) return;
  const int c = blockIdx.x, b = c / cps, j = c % cps;
  const int t0 = j * kChunkRows, t1 = min(T, t0 + kChunkRows);
  const float* base = p + static_cast<size_t>(b) * T * E + e;
  double s = 0.0;
  for (int t = t0; t < t1; t++) s += base[static_cast<size_t>(t) * E];
  partial[static_cast<size_t>(c) * E + e] = s;
}

// P_be (mean over the sequence), the loss term P log P and the gradient c·(log P + 1).
__global__ void entropy_stats_kernel(double* term, float* g, const double* partial, int B, int T, int E, int cps,
                                     double c) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= B * E) return;
  const int b = i / E, e = i % E;
  double P = 0.0;
  for (int j = 0; j < cps; j++) P += partial[(static_cast<size_t>(b) * cps + j) * E + e];
  P /= T;
  const double L = log(fmax(P, kTiny));
  term[i] = P * L;
  g[i] = static_cast<float>(c * (L + 1.0));
}

// dp[n, e] += g[n / T, e]
__global__ void add_seq_grad_kernel(float* dp, const float* g, int T, int E, size_t total) {
  const size_t i = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= total) return;
  const size_t n = i / E;
  const int e = static_cast<int>(i % E);
  dp[i] += g[(n / T) * E + e];
}

// ---- Switch balance -----------------------------------------------------------------------

// Per chunk of tokens: Σ p[n, e] and the count of tokens whose top-1 is e (as doubles).
__global__ void switch_partials_kernel(double* pp, double* pc, const float* p, const int32_t* idx, int N, int E,
                                       int K) {
  const int e = blockIdx.y * blockDim.x + threadIdx.x;
  if (e >= E) return;
  const int c = blockIdx.x, n0 = c * kChunkRows, n1 = min(N, n0 + kChunkRows);
  double s = 0.0;
  int cnt = 0;
  for (int n = n0; n < n1; n++) {
    s += p[static_cast<size_t>(n) * E + e];
    cnt += idx[static_cast<size_t>(n) * K] == e;
  }
  pp[static_cast<size_t>(c) * E + e] = s;
  pc[static_cast<size_t>(c) * E + e] = cnt;
}

// f_e, P_e; term_e = f_e P_e / N; g_e = scale·E·f_e / N.
__global__ void switch_stats_kernel(double* term, float* g, const double* pp, const double* pc, int N, int E,
                                    int chunks, float scale) {
  const int e = blockIdx.x * blockDim.x + threadIdx.x;
  if (e >= E) return;
  double P = 0.0, f = 0.0;
  for (int j = 0; j < chunks; j++) {
    P += pp[static_cast<size_t>(j) * E + e];
    f += pc[static_cast<size_t>(j) * E + e];
  }
  f /= N;
  term[e] = f * P / N;
  g[e] = static_cast<float>(static_cast<double>(scale) * E * f / N);
}

// dp[n, e] += g[e]
__global__ void add_col_grad_kernel(float* dp, const float* g, int E, size_t total) {
  const size_t i = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= total) return;
  dp[i] += g[i % E];
}

// ---- z-loss -------------------------------------------------------------------------------

// per_row[n] = lse_n²; dlogits += (2·scale·lse_n / N)·softmax(g_n). Warp per row.
__global__ void z_loss_kernel(double* per_row, float* dlogits, const float* logits, int N, int E, float scale) {
  const int n = warp_row();
  if (n >= N) return;
  const int lane = lane_id();
  const float* g = logits + static_cast<size_t>(n) * E;
  float fmx = -INFINITY;
  for (int e = lane; e < E; e += kWarp) fmx = fmaxf(fmx, g[e]);
  const double mx = warp_max(fmx);
  double sum = 0.0;
  for (int e = lane; e < E; e += kWarp) sum += exp(g[e] - mx);
  sum = warp_sum(sum);
  const double lse = mx + log(sum);
  if (lane == 0) per_row[n] = lse * lse;
  if (dlogits) {
    const double c = 2.0 * scale * lse / N;
    float* d = dlogits + static_cast<size_t>(n) * E;
    for (int e = lane; e < E; e += kWarp) d[e] += static_cast<float>(c * exp(g[e] - lse));
  }
}

// ---- router distillation ------------------------------------------------------------------

// Warp per row. Target t = softmax(scores) (or over the K winners only, 0 elsewhere), computed
// per column from (mx, sum); per_row[n] = mean_e (p − t)² + theta·mean_k (p − t)²[idx].
__global__ void distill_kernel(double* per_row, float* dp, const float* p, const float* scores, const int32_t* idx,
                               int N, int E, int K, float theta, bool topk_target, float scale) {
  const int n = warp_row();
  if (n >= N) return;
  const int lane = lane_id();
  const float* s = scores + static_cast<size_t>(n) * E;
  const float* pr = p + static_cast<size_t>(n) * E;
  const int32_t* w = idx + static_cast<size_t>(n) * K;
  double mx = -INFINITY, sum = 0.0;
  if (topk_target) {  // K values: every lane the same serial loop (the CPU's order)
    for (int k = 0; k < K; k++) mx = fmax(mx, static_cast<double>(s[w[k]]));
    for (int k = 0; k < K; k++) sum += exp(s[w[k]] - mx);
  } else {
    float fmx = -INFINITY;
    for (int e = lane; e < E; e += kWarp) fmx = fmaxf(fmx, s[e]);
    mx = warp_max(fmx);
    for (int e = lane; e < E; e += kWarp) sum += exp(s[e] - mx);
    sum = warp_sum(sum);
  }
  auto target = [&](int e) -> double {
    if (topk_target) {
      bool won = false;
      for (int k = 0; k < K; k++) won |= w[k] == e;
      if (!won) return 0.0;
    }
    return exp(s[e] - mx) / sum;
  };
  double full = 0.0;
  for (int e = lane; e < E; e += kWarp) {
    const double d = pr[e] - target(e);
    full += d * d;
  }
  full = warp_sum(full);
  if (lane == 0) {
    double hyb = 0.0;
    for (int k = 0; k < K; k++) {
      const double d = pr[w[k]] - target(w[k]);
      hyb += d * d;
    }
    per_row[n] = full / E + theta * hyb / K;
  }
  if (dp) {
    float* d = dp + static_cast<size_t>(n) * E;
    const double cf = 2.0 * scale / (static_cast<double>(N) * E);
    const double ch = 2.0 * scale * theta / (static_cast<double>(N) * K);
    for (int e = lane; e < E; e += kWarp) {
      const double diff = pr[e] - target(e);
      float v = d[e];
      v += static_cast<float>(cf * diff);
      for (int k = 0; k < K; k++)  // the CPU's second pass over the winners, in k order
        if (w[k] == e) v += static_cast<float>(ch * diff);
      d[e] = v;
    }
  }
}

// ---- diversity ----------------------------------------------------------------------------

// One block per token. Norms and pairwise dots of its K rows by block reductions (double);
// c_i = Σ_{j≠i} cos_ij accumulated over the pairs i < j in loop order, which adds each c_i's
// terms in increasing j as the CPU does. Gradient: d rows[row(n,i)] += a_i (U − (c_i + 1) u_i),
// U = Σ_j u_j (float, j in order), a_i = 2·scale / (K² N |o_i|).
__global__ void diversity_kernel(double* per_row, float* drows, const float* rows, const int32_t* row_of_slot,
                                 int N, int K, int C, double c0) {
  extern __shared__ double norm_ci[];  // norm[K], ci[K]
  __shared__ double red[kWarp];
  double* norm = norm_ci;
  double* ci = norm_ci + K;
  const int n = blockIdx.x, tid = threadIdx.x;
  const int32_t* r = row_of_slot + static_cast<size_t>(n) * K;
  for (int i = 0; i < K; i++) {
    const float* oi = rows + static_cast<size_t>(r[i]) * C;
    double ss = 0.0;
    for (int c = tid; c < C; c += blockDim.x) ss += static_cast<double>(oi[c]) * oi[c];
    ss = block_sum(ss, red);
    if (tid == 0) {
      norm[i] = fmax(sqrt(ss), 1e-12);
      ci[i] = 0.0;
    }
  }
  double tot = 0.0;  // meaningful on thread 0, which also owns norm / ci until the sync below
  for (int i = 0; i < K; i++)
    for (int j = i + 1; j < K; j++) {
      const float* oi = rows + static_cast<size_t>(r[i]) * C;
      const float* oj = rows + static_cast<size_t>(r[j]) * C;
      double dot = 0.0;
      for (int c = tid; c < C; c += blockDim.x) dot += static_cast<double>(oi[c]) * oj[c];
      dot = block_sum(dot, red);
      if (tid == 0) {
        const double cs = dot / (norm[i] * norm[j]);
        ci[i] += cs;
        ci[j] += cs;
        tot += 2.0 * cs;
      }
    }
  if (tid == 0) per_row[n] = tot / (static_cast<double>(K) * K);
  if (!drows) return;
  __syncthreads();  // norm and ci visible to every thread
  for (int c = tid; c < C; c += blockDim.x) {
    float U = 0.0f;
    for (int j = 0; j < K; j++) {
      const float inv = static_cast<float>(1.0 / norm[j]);
      U += rows[static_cast<size_t>(r[j]) * C + c] * inv;
    }
    for (int i = 0; i < K; i++) {
      const size_t at = static_cast<size_t>(r[i]) * C + c;
      const float a = static_cast<float>(c0 / norm[i]);
      const float ui = static_cast<float>(1.0 / norm[i]);
      const float b = static_cast<float>(ci[i] + 1.0);  // U − u_i − c_i·u_i = U − (c_i + 1)·u_i
      drows[at] += a * (U - b * ui * rows[at]);
    }
  }
}

// ---- statistics ---------------------------------------------------------------------------

__global__ void entropy_rows_kernel(double* per_row, const float* p, int N, int E) {
  const int n = warp_row();
  if (n >= N) return;
  const int lane = lane_id();
  const float* r = p + static_cast<size_t>(n) * E;
  double h = 0.0;
  for (int e = lane; e < E; e += kWarp)
    if (r[e] > 0) h -= r[e] * log(static_cast<double>(r[e]));
  h = warp_sum(h);
  if (lane == 0) per_row[n] = h;
}

__global__ void overlap_rows_kernel(double* per_row, const int32_t* a, const int32_t* b, int N, int K) {
  const int n = blockIdx.x * blockDim.x + threadIdx.x;
  if (n >= N) return;
  const int32_t* an = a + static_cast<size_t>(n) * K;
  const int32_t* bn = b + static_cast<size_t>(n) * K;
  int hits = 0;
  for (int i = 0; i < K; i++)
    for (int j = 0; j < K; j++) hits += an[i] == bn[j];
  per_row[n] = hits;  // integers: exact in double, so the sum is order-independent
}

}  // namespace

double CudaBackend::moe_entropy_balance(float* dp, const float* p, int B, int T, int E, float scale) {
  const int cps = (T + kChunkRows - 1) / kChunkRows;  // chunks per sequence
  const size_t chunks = static_cast<size_t>(B) * cps;
  Carve cv{static_cast<char*>(scratch(carve_bytes<double>(1) + carve_bytes<double>(chunks * E) +
                                      carve_bytes<double>(static_cast<size_t>(B) * E) +
                                      carve_bytes<float>(static_cast<size_t>(B) * E)))};
  double* out = cv.take<double>(1);
  double* partial = cv.take<double>(chunks * E);
  double* term = cv.take<double>(static_cast<size_t>(B) * E);
  float* g = cv.take<float>(static_cast<size_t>(B) * E);
  if (B > 0 && T > 0 && E > 0) {
    const dim3 grid(static_cast<unsigned>(chunks), blocks_for(static_cast<size_t>(E), kColThreads));
    seq_column_partials_kernel<<<grid, kColThreads, 0, stream()>>>(partial, p, T, E, cps);
    CUDA_CHECK_LAUNCH();
    const double c = static_cast<double>(scale) / (static_cast<double>(B) * T);
    entropy_stats_kernel<<<blocks_for(static_cast<size_t>(B) * E, 256), 256, 0, stream()>>>(term, g, partial, B, T,
                                                                                            E, cps, c);
    CUDA_CHECK_LAUNCH();
    if (dp) {
      const size_t total = static_cast<size_t>(B) * T * E;
      add_seq_grad_kernel<<<blocks_for(total, 256), 256, 0, stream()>>>(dp, g, T, E, total);
      CUDA_CHECK_LAUNCH();
    }
  }
  finish_sum(stream(), out, term, B, E, 1.0, static_cast<double>(B));
  return fetch_double(out);
}

double CudaBackend::moe_switch_balance(float* dp, const float* p, const int32_t* idx, int N, int E, int K,
                                       float scale) {
  const int chunks = (N + kChunkRows - 1) / kChunkRows;
  const size_t ce = static_cast<size_t>(chunks) * E;
  Carve cv{static_cast<char*>(scratch(carve_bytes<double>(1) + 2 * carve_bytes<double>(ce) +
                                      carve_bytes<double>(E) + carve_bytes<float>(E)))};
  double* out = cv.take<double>(1);
  double* pp = cv.take<double>(ce);
  double* pc = cv.take<double>(ce);
  double* term = cv.take<double>(E);
  float* g = cv.take<float>(E);
  if (N > 0 && E > 0) {
    const dim3 grid(static_cast<unsigned>(chunks), blocks_for(static_cast<size_t>(E), kColThreads));
    switch_partials_kernel<<<grid, kColThreads, 0, stream()>>>(pp, pc, p, idx, N, E, K);
    CUDA_CHECK_LAUNCH();
    switch_stats_kernel<<<blocks_for(static_cast<size_t>(E), kColThreads), kColThreads, 0, stream()>>>(
        term, g, pp, pc, N, E, chunks, scale);
    CUDA_CHECK_LAUNCH();
    if (dp) {
      const size_t total = static_cast<size_t>(N) * E;
      add_col_grad_kernel<<<blocks_for(total, 256), 256, 0, stream()>>>(dp, g, E, total);
      CUDA_CHECK_LAUNCH();
    }
  }
  // loss = E · Σ_e f_e P_e / N, the e-sum serial in index order (one row of E columns)
  finish_sum(stream(), out, term, 1, E, static_cast<double>(E), 1.0);
  return fetch_double(out);
}

double CudaBackend::moe_z_loss(float* dlogits, const float* logits, int N, int E, float scale) {
  Carve cv{static_cast<char*>(scratch(carve_bytes<double>(1) + carve_bytes<double>(N)))};
  double* out = cv.take<double>(1);
  double* per_row = cv.take<double>(N);
  if (N > 0) {
    z_loss_kernel<<<row_blocks(N), kRowThreads, 0, stream()>>>(per_row, dlogits, logits, N, E, scale);
    CUDA_CHECK_LAUNCH();
  }
  finish_sum(stream(), out, per_row, N, 1, 1.0, static_cast<double>(N));
  return fetch_double(out);
}

double CudaBackend::moe_distill_loss(float* dp, const float* p, const float* scores, const int32_t* idx, int N,
                                     int E, int K, float theta, bool topk_target, float scale) {
  Carve cv{static_cast<char*>(scratch(carve_bytes<double>(1) + carve_bytes<double>(N)))};
  double* out = cv.take<double>(1);
  double* per_row = cv.take<double>(N);
  if (N > 0) {
    distill_kernel<<<row_blocks(N), kRowThreads, 0, stream()>>>(per_row, dp, p, scores, idx, N, E, K, theta,
                                                                 topk_target, scale);
    CUDA_CHECK_LAUNCH();
  }
  finish_sum(stream(), out, per_row, N, 1, 1.0, static_cast<double>(N));
  return fetch_double(out);
}

double CudaBackend::moe_diversity_loss(float* drows, const float* rows, const int32_t* row_of_slot, int N, int K,
                                       int C, float scale) {
  if (K < 2) return 0.0;  // as the CPU: no pairs, value 0, drows untouched
  Carve cv{static_cast<char*>(scratch(carve_bytes<double>(1) + carve_bytes<double>(N)))};
  double* out = cv.take<double>(1);
  double* per_row = cv.take<double>(N);
  if (N > 0) {
    const double c0 = 2.0 * scale / (static_cast<double>(K) * K * N);
    const size_t smem = sizeof(double) * 2 * static_cast<size_t>(K);
    diversity_kernel<<<static_cast<unsigned>(N), kDiversityThreads, smem, stream()>>>(per_row, drows, rows,
                                                                                       row_of_slot, N, K, C, c0);
    CUDA_CHECK_LAUNCH();
  }
  finish_sum(stream(), out, per_row, N, 1, 1.0, static_cast<double>(N));
  return fetch_double(out);
}

double CudaBackend::moe_mean_entropy(const float* p, int N, int E) {
  Carve cv{static_cast<char*>(scratch(carve_bytes<double>(1) + carve_bytes<double>(N)))};
  double* out = cv.take<double>(1);
  double* per_row = cv.take<double>(N);
  if (N > 0) {
    entropy_rows_kernel<<<row_blocks(N), kRowThreads, 0, stream()>>>(per_row, p, N, E);
    CUDA_CHECK_LAUNCH();
  }
  finish_sum(stream(), out, per_row, N, 1, 1.0, static_cast<double>(N));
  return fetch_double(out);
}

double CudaBackend::moe_topk_overlap(const int32_t* a, const int32_t* b, int N, int K) {
  Carve cv{static_cast<char*>(scratch(carve_bytes<double>(1) + carve_bytes<double>(N)))};
  double* out = cv.take<double>(1);
  double* per_row = cv.take<double>(N);
  if (N > 0) {
    overlap_rows_kernel<<<blocks_for(static_cast<size_t>(N), 128), 128, 0, stream()>>>(per_row, a, b, N, K);
    CUDA_CHECK_LAUNCH();
  }
  finish_sum(stream(), out, per_row, N, 1, 1.0, static_cast<double>(N) * K);
  return fetch_double(out);
}

}  // namespace competelm::cuda
