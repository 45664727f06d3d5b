// STUB (to be replaced by the core ops): every member fails with "not implemented yet".
#include "cuda_backend.cuh"
#include "cuda_common.cuh"

namespace competelm::cuda {

CudaBackend::CudaBackend(int device) : device_(device) {
  fail("cuda backend: not implemented yet (device {})", device);
}
CudaBackend::~CudaBackend() = default;
void* CudaBackend::scratch(size_t bytes) { fail("cuda backend: scratch is not implemented yet ({})", bytes); }
double CudaBackend::fetch_double(const double*) { fail("cuda backend: fetch_double is not implemented yet"); }

void* CudaBackend::alloc(size_t bytes) {
  fail("cuda backend: alloc is not implemented yet");
}

void CudaBackend::dealloc(void* p) {
  fail("cuda backend: dealloc is not implemented yet");
}

void CudaBackend::upload(void* dst, const void* src_host, size_t bytes) {
  fail("cuda backend: upload is not implemented yet");
}

void CudaBackend::download(void* dst_host, const void* src, size_t bytes) {
  fail("cuda backend: download is not implemented yet");
}

void CudaBackend::zero(void* p, size_t bytes) {
  fail("cuda backend: zero is not implemented yet");
}

void CudaBackend::synchronize() {
  fail("cuda backend: synchronize is not implemented yet");
}

void CudaBackend::encoder_forward(float* out, const int32_t* tokens, const float* wte, const float* wpe, int B, int T, int C) {
  fail("cuda backend: encoder_forward is not implemented yet");
}

void CudaBackend::encoder_backward(float* dwte, float* dwpe, const float* dout, const int32_t* tokens, int B, int T, int C) {
  fail("cuda backend: encoder_backward is not implemented yet");
}

void CudaBackend::layernorm_forward(float* out, float* mean, float* rstd, const float* inp, const float* weight, const float* bias, int N, int C) {
  fail("cuda backend: layernorm_forward is not implemented yet");
}

void CudaBackend::layernorm_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp, const float* weight, const float* mean, const float* rstd, int N, int C) {
  fail("cuda backend: layernorm_backward is not implemented yet");
}

void CudaBackend::matmul_forward(float* out, const float* inp, const float* weight, const float* bias, int N, int C, int OC) {
  fail("cuda backend: matmul_forward is not implemented yet");
}

void CudaBackend::matmul_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp, const float* weight, int N, int C, int OC) {
  fail("cuda backend: matmul_backward is not implemented yet");
}

void CudaBackend::gelu_forward(float* out, const float* inp, size_t n) {
  fail("cuda backend: gelu_forward is not implemented yet");
}

void CudaBackend::gelu_backward(float* dinp, const float* inp, const float* dout, size_t n) {
  fail("cuda backend: gelu_backward is not implemented yet");
}

void CudaBackend::residual_forward(float* out, const float* a, const float* b, size_t n) {
  fail("cuda backend: residual_forward is not implemented yet");
}

void CudaBackend::accumulate(float* y, const float* x, size_t n) {
  fail("cuda backend: accumulate is not implemented yet");
}

void CudaBackend::scale(float* x, float s, size_t n) {
  fail("cuda backend: scale is not implemented yet");
}

void CudaBackend::crossentropy_forward(float* losses, const float* logits, const int32_t* targets, int N, int V, int Vp) {
  fail("cuda backend: crossentropy_forward is not implemented yet");
}

void CudaBackend::crossentropy_backward(float* dlogits, const float* logits, const float* losses, const int32_t* targets, float dloss, int N, int V, int Vp) {
  fail("cuda backend: crossentropy_backward is not implemented yet");
}

double CudaBackend::sum_squares(const float* x, size_t n) {
  fail("cuda backend: sum_squares is not implemented yet");
}

void CudaBackend::adamw_update(float* params, const float* grads, float* m, float* v, size_t n, float lr, float beta1, float beta2, float eps, float weight_decay, float grad_scale, int t) {
  fail("cuda backend: adamw_update is not implemented yet");
}


}  // namespace competelm::cuda
