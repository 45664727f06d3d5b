// Host implementation of the emulated CUDA runtime and cuBLASLt declared in shim/. The
// emulator's state is global because CUDA's is (threadIdx, blockIdx, the current launch).
#include "cublasLt.h"
#include <cmath>
#include <semaphore>
#include <map>
#include <set>
#include <string>

thread_local uint3 threadIdx, blockIdx;
dim3 blockDim, gridDim;
namespace emu {
std::barrier<>* g_bar;
std::vector<Warp>* g_warps;
std::atomic<long> g_errors{0};
size_t g_malloc_count = 0;
long g_live_streams = 0, g_live_events = 0;
long g_lt_gelu_calls = 0;
long g_lt_dgelu_calls = 0;
bool g_serial = false;
unsigned char* g_dyn_smem = nullptr;
std::mutex g_atomic;
std::map<void*, size_t> g_allocs;
std::map<KernelId, size_t> g_smem_opt_in;
void set_smem_opt_in(KernelId k, int bytes) { g_smem_opt_in[k] = bytes > 0 ? size_t(bytes) : 0; }
size_t smem_opt_in(KernelId k) {
  const auto it = g_smem_opt_in.find(k);
  return it == g_smem_opt_in.end() ? 0 : it->second;
}
void fail(const char* what) { std::fprintf(stderr, "EMU ERROR: %s\n", what); ++g_errors; }

// The CUDA threads of a block: worker threads kept across launches (creating up to 1024 threads
// per block would dominate the run time). run(n, f) calls f(t) on workers t = 0..n-1 and returns
// when all have finished.
class Pool {
 public:
  void run(unsigned n, const std::function<void(unsigned)>& f) {
    while (workers_.size() < n) {
      workers_.push_back(std::make_unique<Worker>());
      Worker& w = *workers_.back();
      const unsigned id = unsigned(workers_.size() - 1);
      w.th = std::thread([this, &w, id] { for (;;) { w.go.acquire(); if (stop_) return; (*job_)(id); if (--remaining_ == 0) done_.release(); } });
    }
    job_ = &f; remaining_ = n;
    for (unsigned t = 0; t < n; ++t) workers_[t]->go.release();  // wakes only the block's threads
    done_.acquire();
  }
  ~Pool() {
    stop_ = true;
    for (auto& w : workers_) { w->go.release(); w->th.join(); }
  }

 private:
  struct Worker { std::binary_semaphore go{0}; std::thread th; };
  std::vector<std::unique_ptr<Worker>> workers_;
  const std::function<void(unsigned)>* job_ = nullptr;  // set before any worker is released
  std::atomic<unsigned> remaining_{0};
  std::binary_semaphore done_{0};
  std::atomic<bool> stop_{false};
};
Pool& pool() { static Pool p; return p; }

void run_blocks(const Cfg& c, const std::function<void()>& body, size_t opt_in) {
  const unsigned threads = c.block.x * c.block.y * c.block.z;
  if (c.block.y != 1 || c.block.z != 1) fail("2D/3D blocks not emulated");
  if (threads == 0 || threads > 1024) fail("block size out of range");
  if (c.grid.x == 0 || c.grid.y == 0 || c.grid.z == 0) fail("empty grid (cudaErrorInvalidConfiguration)");
  if (c.grid.y > 65535 || c.grid.z > 65535) fail("grid.y/z > 65535");
  if (c.shmem > 48 * 1024 && c.shmem > opt_in) fail("dynamic shared memory > 48 KiB beyond the kernel's cudaFuncSetAttribute");
  if (c.shmem > 227 * 1024) fail("dynamic shared memory > 227 KiB (sm_90's limit)");
  if (c.s == nullptr) fail("launch on the legacy default stream");
  gridDim = c.grid; blockDim = c.block;
  std::vector<unsigned char> dyn(c.shmem + 1);  // + 1: never a null pointer
  g_dyn_smem = dyn.data();
  if (g_serial) {  // kernels without barriers or shuffles: run every thread in turn on this thread
    g_bar = nullptr; g_warps = nullptr;
    for (unsigned bx = 0; bx < c.grid.x; ++bx) for (unsigned t = 0; t < threads; ++t) {
      threadIdx = {t, 0, 0}; blockIdx = {bx, 0, 0}; body(); }
    return;
  }
  for (unsigned bz = 0; bz < c.grid.z; ++bz)
    for (unsigned by = 0; by < c.grid.y; ++by)
      for (unsigned bx = 0; bx < c.grid.x; ++bx) {
        std::fill(dyn.begin(), dyn.end(), 0xFF);  // fresh shared memory is garbage: NaN-poison it
        std::barrier<> bar(threads); g_bar = &bar;
        std::vector<Warp> warps((threads + 31) / 32);
        for (unsigned w = 0; w < warps.size(); ++w) {
          warps[w].bar = std::make_unique<std::barrier<>>(std::min(32u, threads - 32 * w));
          for (bool& e : warps[w].exited) e = false;
        }
        g_warps = &warps;
        pool().run(threads, [&](unsigned t) {
          threadIdx = {t, 0, 0}; blockIdx = {bx, by, bz};
          body();
          warps[t / 32].exited[t % 32] = true;
          warps[t / 32].bar->arrive_and_drop();
          bar.arrive_and_drop();
        });
      }
}
}  // namespace emu

struct CUstream_st { int dummy; };
static CUstream_st g_stream;
cudaError_t cudaMalloc(void** p, size_t bytes) {
  *p = std::malloc(bytes);
  std::memset(*p, 0xFF, bytes);  // fresh device memory is garbage: NaN-poison it
  emu::g_allocs[*p] = bytes; ++emu::g_malloc_count;
  return cudaSuccess;
}
cudaError_t cudaFree(void* p) { if (p) { if (!emu::g_allocs.erase(p)) emu::fail("cudaFree of unknown pointer"); std::free(p); } return cudaSuccess; }
cudaError_t cudaMemsetAsync(void* p, int v, size_t n, cudaStream_t) { std::memset(p, v, n); return cudaSuccess; }
cudaError_t cudaMemset(void* p, int v, size_t n) { std::memset(p, v, n); return cudaSuccess; }
cudaError_t cudaMemcpyAsync(void* d, const void* s, size_t n, cudaMemcpyKind, cudaStream_t) { std::memcpy(d, s, n); return cudaSuccess; }
cudaError_t cudaMemcpy(void* d, const void* s, size_t n, cudaMemcpyKind) { std::memcpy(d, s, n); return cudaSuccess; }
cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
cudaError_t cudaDeviceSynchronize() { return cudaSuccess; }
cudaError_t cudaStreamCreate(cudaStream_t* s) { *s = &g_stream; return cudaSuccess; }
// Streams of cudaStreamCreateWithFlags and events are heap objects tracked in these sets, so
// that a stale or foreign handle is reported (a GPU would fail or misbehave on one).
static std::set<CUstream_st*> g_streams;
struct CUevent_st { int dummy; };
static std::set<CUevent_st*> g_events;
static bool known_stream(cudaStream_t s) { return s == &g_stream || g_streams.count(s) > 0; }
cudaError_t cudaStreamDestroy(cudaStream_t s) {
  if (s == &g_stream) return cudaSuccess;
  if (!g_streams.erase(s)) { emu::fail("cudaStreamDestroy of an unknown or destroyed stream"); return cudaErrorInvalidValue; }
  delete s; --emu::g_live_streams;
  return cudaSuccess;
}
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned flags) {
  if (!s || (flags & ~unsigned(cudaStreamNonBlocking))) { emu::fail("cudaStreamCreateWithFlags: bad arguments"); return cudaErrorInvalidValue; }
  *s = new CUstream_st{}; g_streams.insert(*s); ++emu::g_live_streams;
  return cudaSuccess;
}
cudaError_t cudaStreamQuery(cudaStream_t s) {
  if (!known_stream(s)) { emu::fail("cudaStreamQuery of an unknown stream"); return cudaErrorInvalidValue; }
  return cudaSuccess;
}
cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t e, unsigned flags) {
  if (!known_stream(s) || !g_events.count(e) || flags != 0) { emu::fail("cudaStreamWaitEvent: unknown stream or event"); return cudaErrorInvalidValue; }
  return cudaSuccess;  // a never-recorded event is legal and waits for nothing, as on a GPU
}
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* e, unsigned flags) {
  if (!e || (flags & ~unsigned(cudaEventDisableTiming))) { emu::fail("cudaEventCreateWithFlags: bad arguments"); return cudaErrorInvalidValue; }
  *e = new CUevent_st{}; g_events.insert(*e); ++emu::g_live_events;
  return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s) {
  if (!g_events.count(e) || !known_stream(s)) { emu::fail("cudaEventRecord: unknown event or stream"); return cudaErrorInvalidValue; }
  return cudaSuccess;
}
cudaError_t cudaEventDestroy(cudaEvent_t e) {
  if (!g_events.erase(e)) { emu::fail("cudaEventDestroy of an unknown or destroyed event"); return cudaErrorInvalidValue; }
  delete e; --emu::g_live_events;
  return cudaSuccess;
}
cudaError_t cudaGetDeviceCount(int* c) { *c = 1; return cudaSuccess; }
cudaError_t cudaSetDevice(int) { return cudaSuccess; }
cudaError_t cudaGetLastError() { return cudaSuccess; }
const char* cudaGetErrorName(cudaError_t) { return "cudaErrorEmu"; }
const char* cudaGetErrorString(cudaError_t) { return "emu"; }

// ---- cuBLASLt ----
struct EmuLtHandle { int x; };
struct EmuLtDesc { cublasComputeType_t ct; int32_t ta = CUBLAS_OP_N, tb = CUBLAS_OP_N; uint32_t epi = CUBLASLT_EPILOGUE_DEFAULT; const float* bias = nullptr; int32_t bias_type = -1;
  float* aux = nullptr; int64_t aux_ld = 0; };
struct EmuLtLayout { uint64_t rows, cols; int64_t ld; cudaDataType type; };
struct EmuLtPref { uint64_t ws = 0; uint32_t al[4] = {256, 256, 256, 256}; };
static EmuLtHandle g_lt;
cublasStatus_t cublasLtCreate(cublasLtHandle_t* h) { *h = &g_lt; return CUBLAS_STATUS_SUCCESS; }
cublasStatus_t cublasLtDestroy(cublasLtHandle_t) { return CUBLAS_STATUS_SUCCESS; }
cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t* d, cublasComputeType_t ct, cudaDataType_t st) {
  if (st != CUDA_R_32F) emu::fail("scale type must be CUDA_R_32F for COMPUTE_32F");
  *d = new EmuLtDesc{ct}; return CUBLAS_STATUS_SUCCESS; }
cublasStatus_t cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t d) { delete d; return CUBLAS_STATUS_SUCCESS; }
// Documented attribute types: TRANSA/TRANSB int32_t (cublasOperation_t), EPILOGUE uint32_t,
// BIAS_POINTER void*, BIAS_DATA_TYPE int32_t (cudaDataType), EPILOGUE_AUX_POINTER void*,
// EPILOGUE_AUX_LD int64_t.
cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t d, cublasLtMatmulDescAttributes_t a, const void* v, size_t n) {
  auto need = [&](size_t s) { if (n != s) { emu::fail("desc attribute size mismatch"); return false; } return true; };
  switch (a) {
    case CUBLASLT_MATMUL_DESC_TRANSA: if (need(4)) std::memcpy(&d->ta, v, 4); break;
    case CUBLASLT_MATMUL_DESC_TRANSB: if (need(4)) std::memcpy(&d->tb, v, 4); break;
    case CUBLASLT_MATMUL_DESC_EPILOGUE: if (need(4)) std::memcpy(&d->epi, v, 4); break;
    case CUBLASLT_MATMUL_DESC_BIAS_POINTER: if (need(sizeof(void*))) std::memcpy(&d->bias, v, sizeof(void*)); break;
    case CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE: if (need(4)) std::memcpy(&d->bias_type, v, 4); break;
    case CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER: if (need(sizeof(void*))) std::memcpy(&d->aux, v, sizeof(void*)); break;
    case CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD: if (need(8)) std::memcpy(&d->aux_ld, v, 8); break;
    default: emu::fail("unemulated desc attribute");
  }
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t* l, cudaDataType t, uint64_t r, uint64_t c, int64_t ld) {
  if (t != CUDA_R_32F && t != CUDA_R_16BF) emu::fail("layout type");
  // Docs: column-major by default; ld must be >= rows (and > 0).
  if (ld < int64_t(r) || ld <= 0) emu::fail("layout: ld < rows");
  *l = new EmuLtLayout{r, c, ld, t}; return CUBLAS_STATUS_SUCCESS; }
cublasStatus_t cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t l) { delete l; return CUBLAS_STATUS_SUCCESS; }
cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t* p) { *p = new EmuLtPref; return CUBLAS_STATUS_SUCCESS; }
cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t p) { delete p; return CUBLAS_STATUS_SUCCESS; }
// Documented: MAX_WORKSPACE_BYTES uint64_t, MIN_ALIGNMENT_*_BYTES uint32_t.
cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t p, cublasLtMatmulPreferenceAttributes_t a, const void* v, size_t n) {
  if (a == CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES) { if (n != 8) emu::fail("pref ws size"); else std::memcpy(&p->ws, v, 8); }
  else if (a >= CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES && a <= CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES) {
    if (n != 4) emu::fail("pref align size"); else std::memcpy(&p->al[a - 5], v, 4); }
  else emu::fail("unemulated pref attribute");
  return CUBLAS_STATUS_SUCCESS;
}
struct EmuAlgo { const EmuLtPref* pref; };
cublasStatus_t cublasLtMatmulAlgoGetHeuristic(cublasLtHandle_t, cublasLtMatmulDesc_t, cublasLtMatrixLayout_t, cublasLtMatrixLayout_t,
  cublasLtMatrixLayout_t, cublasLtMatrixLayout_t, cublasLtMatmulPreference_t p, int req, cublasLtMatmulHeuristicResult_t* r, int* found) {
  if (req < 1) emu::fail("heuristic count");
  *r = {}; std::memcpy(r->algo.data, p->al, sizeof(p->al)); r->state = CUBLAS_STATUS_SUCCESS; *found = 1;
  return CUBLAS_STATUS_SUCCESS;
}
static bool aligned(const void* p, uint32_t a) { return reinterpret_cast<uintptr_t>(p) % a == 0; }
cublasStatus_t cublasLtMatmul(cublasLtHandle_t, cublasLtMatmulDesc_t d, const void* alpha_, const void* A_, cublasLtMatrixLayout_t la,
  const void* B_, cublasLtMatrixLayout_t lb, const void* beta_, const void* C_, cublasLtMatrixLayout_t lc, void* D_, cublasLtMatrixLayout_t ld,
  const cublasLtMatmulAlgo_t* algo, void* ws, size_t wsb, cudaStream_t) {
  const float alpha = *static_cast<const float*>(alpha_), beta = *static_cast<const float*>(beta_);
  const float* C = static_cast<const float*>(C_);
  if (lc->type != CUDA_R_32F || ld->type != CUDA_R_32F) emu::fail("C and D must be fp32");
  // A and B: fp32, or bf16 (exact in fp32: the tensor cores multiply them exactly).
  auto element = [](const void* p, cudaDataType t, uint64_t i) -> float {
    if (t == CUDA_R_32F) return static_cast<const float*>(p)[i];
    const uint32_t u = uint32_t(static_cast<const uint16_t*>(p)[i]) << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
  };
  float* D = static_cast<float*>(D_);
  uint32_t al[4]; std::memcpy(al, algo->data, sizeof(al));
  if (!aligned(A_, al[0]) || !aligned(B_, al[1]) || !aligned(C, al[2]) || !aligned(D, al[3])) emu::fail("pointer less aligned than the algo's min alignment");
  if (wsb && !ws) emu::fail("workspace");
  // op(A) is (m,k), op(B) is (k,n), C and D are (m,n).
  const uint64_t m = d->ta == CUBLAS_OP_N ? la->rows : la->cols, k = d->ta == CUBLAS_OP_N ? la->cols : la->rows;
  const uint64_t kb = d->tb == CUBLAS_OP_N ? lb->rows : lb->cols, n = d->tb == CUBLAS_OP_N ? lb->cols : lb->rows;
  if (kb != k || ld->rows != m || ld->cols != n || lc->rows != m || lc->cols != n) { emu::fail("matmul shape mismatch"); return CUBLAS_STATUS_INVALID_VALUE; }
  if (d->epi != CUBLASLT_EPILOGUE_DEFAULT && d->epi != CUBLASLT_EPILOGUE_BIAS && d->epi != CUBLASLT_EPILOGUE_GELU_AUX_BIAS &&
      d->epi != CUBLASLT_EPILOGUE_DGELU) emu::fail("unemulated epilogue");
  const bool has_bias = d->epi == CUBLASLT_EPILOGUE_BIAS || d->epi == CUBLASLT_EPILOGUE_GELU_AUX_BIAS;
  const bool gelu = d->epi == CUBLASLT_EPILOGUE_GELU_AUX_BIAS;
  if (has_bias && (!d->bias || d->bias_type != CUDA_R_32F)) emu::fail("bias epilogue without bias pointer/type");
  // Docs: the GELU input matrix's ld must be divisible by 8 and >= the rows of D.
  if (gelu && (!d->aux || d->aux_ld < int64_t(m) || d->aux_ld % 8 != 0)) emu::fail("GELU_AUX_BIAS without aux pointer / valid aux ld");
  // Not documented: the backend promises 16-byte aux alignment (as for the bias); hold it to it.
  if (gelu && !aligned(d->aux, 16)) emu::fail("GELU aux pointer less than 16-byte aligned");
  // DGELU: aux is the GELU input (an input here), laid out as D; same ld rule (the header's
  // AUX_LD note names DGELU_BGRAD, the aux pointer note requires AUX_LD for every aux epilogue).
  const bool dgelu = d->epi == CUBLASLT_EPILOGUE_DGELU;
  if (dgelu && (!d->aux || d->aux_ld < int64_t(m) || d->aux_ld % 8 != 0)) emu::fail("DGELU without aux pointer / valid aux ld");
  if (dgelu && !aligned(d->aux, 16)) emu::fail("DGELU aux pointer less than 16-byte aligned");
  if (dgelu && d->bias) emu::fail("DGELU with a bias pointer (the backend never sets one)");
  // D overwriting its own aux input would be a race on a GPU: refuse it.
  if (dgelu && static_cast<const void*>(d->aux) == D_) emu::fail("DGELU aux aliases D");
  auto a = [&](uint64_t i, uint64_t j) { return element(A_, la->type, d->ta == CUBLAS_OP_N ? i + j * la->ld : j + i * la->ld); };
  auto b = [&](uint64_t i, uint64_t j) { return element(B_, lb->type, d->tb == CUBLAS_OP_N ? i + j * lb->ld : j + i * lb->ld); };
  std::vector<float> out(m * n);
  for (uint64_t j = 0; j < n; ++j)
    for (uint64_t i = 0; i < m; ++i) {
      double s = 0; for (uint64_t p = 0; p < k; ++p) s += double(a(i, p)) * b(p, j);
      double v = alpha * s;
      if (beta != 0.0f) v += double(beta) * C[i + j * lc->ld];  // beta == 0: C is not read (may be NaN)
      if (has_bias) v += d->bias[i];  // bias: one per row of D
      out[i + j * m] = float(v);
    }
  if (gelu) ++emu::g_lt_gelu_calls;
  if (dgelu) ++emu::g_lt_dgelu_calls;
  if (dgelu)  // D = gelu'(aux) · (the GEMM result), the derivative of the tanh approximation
    for (uint64_t j = 0; j < n; ++j)
      for (uint64_t i = 0; i < m; ++i) {
        const double x = d->aux[i + j * uint64_t(d->aux_ld)];
        const double u = 0.7978845608028654 * (x + 0.044715 * x * x * x);
        const double t = std::tanh(u);
        const double du = 0.7978845608028654 * (1.0 + 3.0 * 0.044715 * x * x);
        const double g = 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * du;
        out[i + j * m] = float(g * double(out[i + j * m]));
      }
  if (gelu)  // aux = the pre-activation, D = its tanh-approximation GELU (as GPT-2's)
    for (uint64_t j = 0; j < n; ++j)
      for (uint64_t i = 0; i < m; ++i) {
        const float x = out[i + j * m];
        d->aux[i + j * uint64_t(d->aux_ld)] = x;
        const double xd = x;
        out[i + j * m] = float(0.5 * xd * (1.0 + std::tanh(0.7978845608028654 * (xd + 0.044715 * xd * xd * xd))));
      }
  for (uint64_t j = 0; j < n; ++j) for (uint64_t i = 0; i < m; ++i) D[i + j * ld->ld] = out[i + j * m];
  return CUBLAS_STATUS_SUCCESS;
}
