// STUB (to be replaced by the moe ops): every member fails with "not implemented yet".
#include "cuda_backend.cuh"
#include "cuda_common.cuh"

namespace competelm::cuda {

void CudaBackend::moe_router_forward(float* act, float* probs, const float* logits, int N, int E, bool sigmoid) {
  fail("cuda backend: moe_router_forward is not implemented yet");
}

void CudaBackend::moe_router_backward(float* dlogits, const float* dval, const int32_t* idx, const float* dprobs, const float* act, const float* probs, int N, int E, int K, bool sigmoid) {
  fail("cuda backend: moe_router_backward is not implemented yet");
}

void CudaBackend::moe_topk(int32_t* idx, float* val, const float* x, int N, int E, int K) {
  fail("cuda backend: moe_topk is not implemented yet");
}

void CudaBackend::moe_gate_forward(float* gate, const float* val, int N, int K, bool softmax) {
  fail("cuda backend: moe_gate_forward is not implemented yet");
}

void CudaBackend::moe_gate_backward(float* dval, const float* dgate, const float* gate, const float* val, int N, int K, bool softmax) {
  fail("cuda backend: moe_gate_backward is not implemented yet");
}

void CudaBackend::moe_softmax_forward(float* out, const float* inp, int N, int E) {
  fail("cuda backend: moe_softmax_forward is not implemented yet");
}

void CudaBackend::moe_softmax_backward(float* dinp, const float* dout, const float* out, int N, int E) {
  fail("cuda backend: moe_softmax_backward is not implemented yet");
}

double CudaBackend::moe_entropy_balance(float* dp, const float* p, int B, int T, int E, float scale) {
  fail("cuda backend: moe_entropy_balance is not implemented yet");
}

double CudaBackend::moe_switch_balance(float* dp, const float* p, const int32_t* idx, int N, int E, int K, float scale) {
  fail("cuda backend: moe_switch_balance is not implemented yet");
}

double CudaBackend::moe_z_loss(float* dlogits, const float* logits, int N, int E, float scale) {
  fail("cuda backend: moe_z_loss is not implemented yet");
}

double CudaBackend::moe_distill_loss(float* dp, const float* p, const float* scores, const int32_t* idx, int N, int E, int K, float theta, bool topk_target, float scale) {
  fail("cuda backend: moe_distill_loss is not implemented yet");
}

double CudaBackend::moe_diversity_loss(float* drows, const float* rows, const int32_t* row_of_slot, int N, int K, int C, float scale) {
  fail("cuda backend: moe_diversity_loss is not implemented yet");
}

double CudaBackend::moe_mean_entropy(const float* p, int N, int E) {
  fail("cuda backend: moe_mean_entropy is not implemented yet");
}

double CudaBackend::moe_topk_overlap(const int32_t* a, const int32_t* b, int N, int K) {
  fail("cuda backend: moe_topk_overlap is not implemented yet");
}

void CudaBackend::moe_permute(int32_t* offsets, int32_t* row_of_slot, int32_t* slot_of_row, const int32_t* idx, int N, int E, int K) {
  fail("cuda backend: moe_permute is not implemented yet");
}

void CudaBackend::moe_gather_rows(float* out, const float* inp, const int32_t* src, int div, int R, int C) {
  fail("cuda backend: moe_gather_rows is not implemented yet");
}

void CudaBackend::moe_combine_forward(float* out, const float* rows, const float* gate, const int32_t* row_of_slot, int N, int K, int C) {
  fail("cuda backend: moe_combine_forward is not implemented yet");
}

void CudaBackend::moe_combine_backward(float* drows, float* dgate, const float* dout, const float* rows, const float* gate, const int32_t* row_of_slot, int N, int K, int C) {
  fail("cuda backend: moe_combine_backward is not implemented yet");
}

void CudaBackend::moe_scatter_rows(float* dinp, const float* drows, const int32_t* row_of_slot, int N, int K, int C) {
  fail("cuda backend: moe_scatter_rows is not implemented yet");
}

void CudaBackend::moe_expert_score(float* scores, int stride, const float* o, int N, int C, bool l2) {
  fail("cuda backend: moe_expert_score is not implemented yet");
}

void CudaBackend::moe_expert_score_backward(float* d_o, const float* dscores, int stride, const float* o, int N, int C, bool l2) {
  fail("cuda backend: moe_expert_score_backward is not implemented yet");
}

void CudaBackend::moe_compete_insert(int32_t* idx, float* best, float* keep_o, float* keep_h, const float* scores, int stride, const float* o, const float* h, int expert, int N, int K, int C, int H) {
  fail("cuda backend: moe_compete_insert is not implemented yet");
}


}  // namespace competelm::cuda
