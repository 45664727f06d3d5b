// The CudaBackend members that competelm-cuda-emu does not emulate (attention.cu, moe_*.cu: not
// compiled into it). Each aborts, so that a test reaching one fails loudly instead of linking
// against nothing.
#include <cstdlib>

#include "cuda_backend.cuh"

namespace competelm::cuda {
size_t CudaBackend::attention_state_elements(int B, int NH, int T) const { std::abort(); }
size_t CudaBackend::attention_scratch_elements(int B, int NH, int T) const { std::abort(); }
void CudaBackend::attention_forward(float* out, float* att, const float* qkv, int B, int T, int C, int NH) { std::abort(); }
void CudaBackend::attention_backward(float* dqkv, float* scratch, const float* dout, const float* qkv, const float* att, int B, int T, int C, int NH) { std::abort(); }
void CudaBackend::moe_router_forward(float* act, float* probs, const float* logits, int N, int E, bool sigmoid) { std::abort(); }
void CudaBackend::moe_router_backward(float* dlogits, const float* dval, const int32_t* idx, const float* dprobs, const float* act, const float* probs, int N, int E, int K, bool sigmoid) { std::abort(); }
void CudaBackend::moe_topk(int32_t* idx, float* val, const float* x, int N, int E, int K) { std::abort(); }
void CudaBackend::moe_gate_forward(float* gate, const float* val, int N, int K, bool softmax) { std::abort(); }
void CudaBackend::moe_gate_backward(float* dval, const float* dgate, const float* gate, const float* val, int N, int K, bool softmax) { std::abort(); }
void CudaBackend::moe_softmax_forward(float* out, const float* inp, int N, int E) { std::abort(); }
void CudaBackend::moe_softmax_backward(float* dinp, const float* dout, const float* out, int N, int E) { std::abort(); }
double CudaBackend::moe_entropy_balance(float* dp, const float* p, int B, int T, int E, float scale) { std::abort(); }
double CudaBackend::moe_switch_balance(float* dp, const float* p, const int32_t* idx, int N, int E, int K, float scale) { std::abort(); }
double CudaBackend::moe_z_loss(float* dlogits, const float* logits, int N, int E, float scale) { std::abort(); }
double CudaBackend::moe_distill_loss(float* dp, const float* p, const float* scores, const int32_t* idx, int N, int E, int K, float theta, bool topk_target, float scale) { std::abort(); }
double CudaBackend::moe_diversity_loss(float* drows, const float* rows, const int32_t* row_of_slot, int N, int K, int C, float scale) { std::abort(); }
double CudaBackend::moe_mean_entropy(const float* p, int N, int E) { std::abort(); }
double CudaBackend::moe_topk_overlap(const int32_t* a, const int32_t* b, int N, int K) { std::abort(); }
void CudaBackend::moe_permute(int32_t* offsets, int32_t* row_of_slot, int32_t* slot_of_row, const int32_t* idx, int N, int E, int K) { std::abort(); }
void CudaBackend::moe_gather_rows(float* out, const float* inp, const int32_t* src, int div, int R, int C) { std::abort(); }
void CudaBackend::moe_combine_forward(float* out, const float* rows, const float* gate, const int32_t* row_of_slot, int N, int K, int C) { std::abort(); }
void CudaBackend::moe_combine_backward(float* drows, float* dgate, const float* dout, const float* rows, const float* gate, const int32_t* row_of_slot, int N, int K, int C) { std::abort(); }
void CudaBackend::moe_scatter_rows(float* dinp, const float* drows, const int32_t* row_of_slot, int N, int K, int C) { std::abort(); }
void CudaBackend::moe_expert_score(float* scores, int stride, const float* o, int N, int C, bool l2) { std::abort(); }
void CudaBackend::moe_expert_score_backward(float* d_o, const float* dscores, int stride, const float* o, int N, int C, bool l2) { std::abort(); }
void CudaBackend::moe_compete_insert(int32_t* idx, float* best, float* keep_o, float* keep_h, const float* scores, int stride, const float* o, const float* h, int expert, int N, int K, int C, int H) { std::abort(); }
}  // namespace competelm::cuda
