// competelm-cuda-emu moe: the CUDA backend's 22 MoE ops (cuda/moe_{routing,losses,rows,compete}.cu)
// against the CPU backend, on small shapes with and without ties. Emulated device memory is host
// memory, so the ops read and write std::vectors directly. Tolerances: exact for indices,
// permutations, top-k values, gathers and compete_insert; 1e-5 / 2e-4 relative for float results
// whose sums the kernels reorder; 1e-9 relative for the double-accumulated losses (both sides
// sum in double, in different orders).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "backend/cpu/ops.hpp"
#include "cuda_backend.cuh"

namespace cpu = competelm::cpu;
using competelm::cuda::CudaBackend;

namespace {
using F = std::vector<float>;
using I = std::vector<int32_t>;
std::mt19937 rng(1234);
int g_fail = 0;
F randn(size_t n, float s = 1.f) { std::normal_distribution<float> d(0, s); F v(n); for (auto& x : v) x = d(rng); return v; }
// Values on a grid of 7, so that rows hold ties (the top-k / compete tie rule: lower index wins).
F ties(size_t n) { std::uniform_int_distribution<int> d(-3, 3); F v(n); for (auto& x : v) x = 0.5f * d(rng); return v; }
// Largest |a - b| / (1e-6 + |b|); NaN must match NaN.
double relerr(const F& a, const F& b, double* absmax) {
  double w = 0, am = 0;
  if (a.size() != b.size()) return 1e30;
  for (size_t i = 0; i < a.size(); i++) {
    const double d = std::fabs(double(a[i]) - b[i]);
    if (std::isnan(d)) { if (std::isnan(a[i]) && std::isnan(b[i])) continue; return 1e30; }
    am = std::max(am, d); w = std::max(w, d / (1e-6 + std::fabs(double(b[i]))));
  }
  *absmax = am;
  return w;
}
void check(const std::string& what, const F& gpu, const F& ref, double tol) {
  double am = -1; const double r = relerr(gpu, ref, &am);
  const bool ok = r <= tol;
  g_fail += !ok;
  std::printf("%-48s abs %.2e rel %.2e %s\n", what.c_str(), am, r, ok ? "ok" : "FAIL");
}
void checkd(const std::string& what, double gpu, double ref, double tol) {
  const double r = std::fabs(gpu - ref) / (1e-12 + std::fabs(ref));
  const bool ok = r <= tol || std::fabs(gpu - ref) < 1e-12;
  g_fail += !ok;
  std::printf("%-48s gpu %.9g cpu %.9g rel %.2e %s\n", what.c_str(), gpu, ref, r, ok ? "ok" : "FAIL");
}
void checki(const std::string& what, const I& gpu, const I& ref) {
  size_t bad = gpu.size() == ref.size() ? 0 : 1;
  for (size_t i = 0; i < std::min(gpu.size(), ref.size()); i++) bad += gpu[i] != ref[i];
  g_fail += bad != 0;
  std::printf("%-48s %zu/%zu mismatches %s\n", what.c_str(), bad, ref.size(), bad ? "FAIL" : "ok");
}
std::string sh(const char* op, int N, int E, int K, int extra = -1) {
  char b[128];
  std::snprintf(b, sizeof b, "%s N=%d E=%d K=%d%s", op, N, E, K, extra >= 0 ? (" x=" + std::to_string(extra)).c_str() : "");
  return b;
}

void routing(CudaBackend& g, int N, int E, int K) {
  for (int sig = 0; sig < 2; sig++) {
    F logits = randn(size_t(N) * E, 2.f);
    F a1(logits.size()), p1(logits.size()), a2 = a1, p2 = p1;
    cpu::moe_router_forward(a1.data(), p1.data(), logits.data(), N, E, sig);
    g.moe_router_forward(a2.data(), p2.data(), logits.data(), N, E, sig);
    check(sh(sig ? "router_fwd sigmoid act" : "router_fwd softmax act", N, E, K), a2, a1, 1e-5);
    check(sh("router_fwd probs", N, E, K), p2, p1, 1e-5);
    if (!sig) { F al = logits, bl = logits; cpu::moe_router_forward(al.data(), al.data(), al.data(), N, E, false);
      g.moe_router_forward(bl.data(), bl.data(), bl.data(), N, E, false); check(sh("router_fwd aliased", N, E, K), bl, al, 1e-5); }
    I idx(size_t(N) * K); F val(idx.size());
    cpu::moe_topk(idx.data(), val.data(), p1.data(), N, E, K);
    for (int mode = 0; mode < 3; mode++) {
      F dval = randn(idx.size()), dprobs = randn(logits.size());
      F d1(logits.size(), 7.f), d2 = d1;
      const float* dv = mode == 1 ? nullptr : dval.data();
      const float* dp = mode == 2 ? nullptr : dprobs.data();
      cpu::moe_router_backward(d1.data(), dv, idx.data(), dp, a1.data(), p1.data(), N, E, K, sig);
      g.moe_router_backward(d2.data(), dv, idx.data(), dp, a1.data(), p1.data(), N, E, K, sig);
      check(sh(sig ? "router_bwd sigmoid mode" : "router_bwd softmax mode", N, E, K, mode), d2, d1, 2e-4);
    }
  }
  for (int t = 0; t < 2; t++) {
    F x = t ? ties(size_t(N) * E) : randn(size_t(N) * E);
    I i1(size_t(N) * K), i2(i1.size(), -7); F v1(i1.size()), v2(i1.size(), -7.f);
    cpu::moe_topk(i1.data(), v1.data(), x.data(), N, E, K);
    g.moe_topk(i2.data(), v2.data(), x.data(), N, E, K);
    checki(sh(t ? "topk idx (ties)" : "topk idx", N, E, K), i2, i1);
    check(sh("topk val", N, E, K), v2, v1, 0);
  }
  for (int sm = 0; sm < 2; sm++) {
    F val(size_t(N) * K); for (auto& v : val) v = std::uniform_real_distribution<float>(0.01f, 1.f)(rng);
    if (sm) val = randn(val.size(), 2.f);
    F g1(val.size()), g2(val.size(), -9.f);
    cpu::moe_gate_forward(g1.data(), val.data(), N, K, sm);
    g.moe_gate_forward(g2.data(), val.data(), N, K, sm);
    check(sh(sm ? "gate_fwd softmax" : "gate_fwd sum", N, E, K), g2, g1, 1e-5);
    F dg = randn(val.size()), d1(val.size(), 3.f), d2 = d1;
    cpu::moe_gate_backward(d1.data(), dg.data(), g1.data(), val.data(), N, K, sm);
    g.moe_gate_backward(d2.data(), dg.data(), g1.data(), val.data(), N, K, sm);
    check(sh(sm ? "gate_bwd softmax" : "gate_bwd sum", N, E, K), d2, d1, 2e-4);
  }
  F inp = randn(size_t(N) * E, 3.f), o1(inp.size()), o2(inp.size(), 5.f);
  cpu::moe_softmax_forward(o1.data(), inp.data(), N, E);
  g.moe_softmax_forward(o2.data(), inp.data(), N, E);
  check(sh("softmax_fwd", N, E, K), o2, o1, 1e-5);
  F dout = randn(inp.size()), di1 = randn(inp.size()), di2 = di1;
  cpu::moe_softmax_backward(di1.data(), dout.data(), o1.data(), N, E);
  g.moe_softmax_backward(di2.data(), dout.data(), o1.data(), N, E);
  check(sh("softmax_bwd", N, E, K), di2, di1, 2e-4);
}

F probs(int N, int E) { F l = randn(size_t(N) * E, 2.f), p(l.size()); cpu::moe_softmax_forward(p.data(), l.data(), N, E); return p; }

void losses(CudaBackend& g, int B, int T, int E, int K, int C) {
  const int N = B * T;
  F p = probs(N, E);
  for (int wd = 0; wd < 2; wd++) {
    F d1 = randn(p.size()), d2 = d1;
    double v1 = cpu::moe_entropy_balance(wd ? d1.data() : nullptr, p.data(), B, T, E, 0.7f);
    double v2 = g.moe_entropy_balance(wd ? d2.data() : nullptr, p.data(), B, T, E, 0.7f);
    checkd(sh("entropy_balance value", N, E, K, T), v2, v1, 1e-9);
    if (wd) check(sh("entropy_balance grad", N, E, K, T), d2, d1, 1e-4);
  }
  I idx(size_t(N) * K); F val(idx.size());
  cpu::moe_topk(idx.data(), val.data(), p.data(), N, E, K);
  for (int wd = 0; wd < 2; wd++) {
    F d1 = randn(p.size()), d2 = d1;
    double v1 = cpu::moe_switch_balance(wd ? d1.data() : nullptr, p.data(), idx.data(), N, E, K, 0.3f);
    double v2 = g.moe_switch_balance(wd ? d2.data() : nullptr, p.data(), idx.data(), N, E, K, 0.3f);
    checkd(sh("switch_balance value", N, E, K), v2, v1, 1e-9);
    if (wd) check(sh("switch_balance grad", N, E, K), d2, d1, 1e-4);
  }
  {
    F logits = randn(p.size(), 3.f), d1 = randn(p.size()), d2 = d1;
    double v1 = cpu::moe_z_loss(d1.data(), logits.data(), N, E, 0.5f);
    double v2 = g.moe_z_loss(d2.data(), logits.data(), N, E, 0.5f);
    checkd(sh("z_loss value", N, E, K), v2, v1, 1e-7);
    check(sh("z_loss grad", N, E, K), d2, d1, 1e-4);
    checkd(sh("z_loss value (no grad)", N, E, K), g.moe_z_loss(nullptr, logits.data(), N, E, 0.5f), v1, 1e-7);
  }
  for (int tt = 0; tt < 2; tt++) {
    F scores = randn(p.size(), 2.f), d1 = randn(p.size()), d2 = d1;
    I w(size_t(N) * K); F wv(w.size()); cpu::moe_topk(w.data(), wv.data(), scores.data(), N, E, K);
    double v1 = cpu::moe_distill_loss(d1.data(), p.data(), scores.data(), w.data(), N, E, K, 0.6f, tt, 1.3f);
    double v2 = g.moe_distill_loss(d2.data(), p.data(), scores.data(), w.data(), N, E, K, 0.6f, tt, 1.3f);
    checkd(sh(tt ? "distill value topk_target" : "distill value full", N, E, K), v2, v1, 1e-7);
    check(sh(tt ? "distill grad topk_target" : "distill grad full", N, E, K), d2, d1, 1e-4);
  }
  {
    I idx2(idx.size()); F v2(idx.size()); F p2 = probs(N, E);
    cpu::moe_topk(idx2.data(), v2.data(), p2.data(), N, E, K);
    checkd(sh("topk_overlap", N, E, K), g.moe_topk_overlap(idx.data(), idx2.data(), N, K), cpu::moe_topk_overlap(idx.data(), idx2.data(), N, K), 1e-12);
    F pz = p; for (size_t i = 0; i < pz.size(); i += 3) pz[i] = 0.f;
    checkd(sh("mean_entropy", N, E, K), g.moe_mean_entropy(pz.data(), N, E), cpu::moe_mean_entropy(pz.data(), N, E), 1e-9);
  }
  if (K >= 1) {  // diversity over permuted rows
    I off(E + 1), ros(size_t(N) * K), sor(ros.size());
    cpu::moe_permute(off.data(), ros.data(), sor.data(), idx.data(), N, E, K);
    F rows = randn(size_t(N) * K * C), d1 = randn(rows.size()), d2 = d1;
    double v1 = cpu::moe_diversity_loss(d1.data(), rows.data(), ros.data(), N, K, C, 0.9f);
    double v2 = g.moe_diversity_loss(d2.data(), rows.data(), ros.data(), N, K, C, 0.9f);
    checkd(sh("diversity value", N, E, K, C), v2, v1, 1e-7);
    check(sh("diversity grad", N, E, K, C), d2, d1, 1e-3);
  }
}

void rows(CudaBackend& g, int N, int E, int K, int C, bool tied) {
  F x = tied ? ties(size_t(N) * E) : randn(size_t(N) * E);
  I idx(size_t(N) * K); F val(idx.size());
  cpu::moe_topk(idx.data(), val.data(), x.data(), N, E, K);
  const int R = N * K;
  I o1(E + 1), r1(R), s1(R), o2(E + 1, -5), r2(R, -5), s2(R, -5);
  cpu::moe_permute(o1.data(), r1.data(), s1.data(), idx.data(), N, E, K);
  g.moe_permute(o2.data(), r2.data(), s2.data(), idx.data(), N, E, K);
  checki(sh("permute offsets", N, E, K), o2, o1);
  checki(sh("permute row_of_slot", N, E, K), r2, r1);
  checki(sh("permute slot_of_row", N, E, K), s2, s1);
  F inp = randn(size_t(N) * C);
  for (int div : {K, 1}) {
    const int RR = div == 1 ? N : R;
    I src(RR); for (int r = 0; r < RR; r++) src[r] = div == 1 ? (r * 7) % N : s1[r];
    F a(size_t(RR) * C), b(a.size(), 1.f);
    cpu::moe_gather_rows(a.data(), inp.data(), src.data(), div, RR, C);
    g.moe_gather_rows(b.data(), inp.data(), src.data(), div, RR, C);
    check(sh("gather_rows div", N, E, K, div), b, a, 0);
  }
  F rws = randn(size_t(R) * C), gate = randn(R), c1(size_t(N) * C), c2(c1.size(), 4.f);
  cpu::moe_combine_forward(c1.data(), rws.data(), gate.data(), r1.data(), N, K, C);
  g.moe_combine_forward(c2.data(), rws.data(), gate.data(), r1.data(), N, K, C);
  check(sh("combine_fwd", N, E, K, C), c2, c1, 1e-5);
  F dout = randn(size_t(N) * C), dr1(rws.size(), 2.f), dr2 = dr1, dg1(R, 2.f), dg2 = dg1;
  cpu::moe_combine_backward(dr1.data(), dg1.data(), dout.data(), rws.data(), gate.data(), r1.data(), N, K, C);
  g.moe_combine_backward(dr2.data(), dg2.data(), dout.data(), rws.data(), gate.data(), r1.data(), N, K, C);
  check(sh("combine_bwd drows", N, E, K, C), dr2, dr1, 1e-5);
  check(sh("combine_bwd dgate", N, E, K, C), dg2, dg1, 1e-3);
  F di1 = randn(size_t(N) * C), di2 = di1;
  cpu::moe_scatter_rows(di1.data(), rws.data(), r1.data(), N, K, C);
  g.moe_scatter_rows(di2.data(), rws.data(), r1.data(), N, K, C);
  check(sh("scatter_rows", N, E, K, C), di2, di1, 1e-5);
}

void compete(CudaBackend& g, int N, int E, int K, int C, int H, bool tied) {
  const int stride = E;
  for (int l2 = 0; l2 < 2; l2++) {
    F o = randn(size_t(N) * C, 2.f), s1(size_t(N) * stride, -1.f), s2 = s1;
    cpu::moe_expert_score(s1.data(), stride, o.data(), N, C, l2);
    g.moe_expert_score(s2.data(), stride, o.data(), N, C, l2);
    check(sh(l2 ? "expert_score l2" : "expert_score softplus", N, E, K, C), s2, s1, 1e-5);
    F ds = randn(s1.size()); for (size_t i = 0; i < ds.size(); i += 5) ds[i] = 0.f;
    F d1 = randn(o.size()), d2 = d1;
    cpu::moe_expert_score_backward(d1.data(), ds.data(), stride, o.data(), N, C, l2);
    g.moe_expert_score_backward(d2.data(), ds.data(), stride, o.data(), N, C, l2);
    check(sh(l2 ? "expert_score_bwd l2" : "expert_score_bwd softplus", N, E, K, C), d2, d1, 1e-4);
  }
  I i1(size_t(N) * K, 99), i2 = i1; F b1(i1.size(), 3.f), b2 = b1;
  F ko1(size_t(N) * K * C, 8.f), ko2 = ko1, kh1(size_t(N) * K * H, 8.f), kh2 = kh1;
  for (int e = 0; e < E; e++) {
    F sc = tied ? ties(size_t(N) * stride + 1) : randn(size_t(N) * stride + 1);
    F o = randn(size_t(N) * C), h = randn(size_t(N) * H);
    cpu::moe_compete_insert(i1.data(), b1.data(), ko1.data(), kh1.data(), sc.data() + 1, stride, o.data(), h.data(), e, N, K, C, H);
    g.moe_compete_insert(i2.data(), b2.data(), ko2.data(), kh2.data(), sc.data() + 1, stride, o.data(), h.data(), e, N, K, C, H);
  }
  checki(sh(tied ? "compete idx (ties)" : "compete idx", N, E, K, C), i2, i1);
  check(sh("compete best", N, E, K), b2, b1, 0);
  check(sh("compete keep_o", N, E, K, C), ko2, ko1, 0);
  check(sh("compete keep_h", N, E, K, H), kh2, kh1, 0);
}


void edge(CudaBackend& g) {
  routing(g, 5, 16, 16);                     // K = E: full sort (topk_kernel<32>)
  { const int N = 3, E = 300, K = 40;        // topk_kernel<256>, ties
    F x = ties(size_t(N) * E); I i1(N * K), i2(N * K, -3); F v1(N * K), v2(N * K);
    cpu::moe_topk(i1.data(), v1.data(), x.data(), N, E, K); g.moe_topk(i2.data(), v2.data(), x.data(), N, E, K);
    checki(sh("topk idx (ties, K=40)", N, E, K), i2, i1); check(sh("topk val (K=40)", N, E, K), v2, v1, 0); }
  { const int N = 6, E = 5; F l = randn(N * E, 60.f), a1(N * E), p1(N * E), a2(N * E), p2(N * E);
    cpu::moe_router_forward(a1.data(), p1.data(), l.data(), N, E, true); g.moe_router_forward(a2.data(), p2.data(), l.data(), N, E, true);
    check(sh("router_fwd sigmoid |logit|~60 probs", N, E, 1), p2, p1, 1e-5);
    cpu::moe_router_forward(a1.data(), p1.data(), l.data(), N, E, false); g.moe_router_forward(a2.data(), p2.data(), l.data(), N, E, false);
    check(sh("router_fwd softmax |logit|~60", N, E, 1), a2, a1, 1e-5); }
  rows(g, 5, 3, 3, 1, true);                 // K = E, C = 1
  rows(g, 1, 1, 1, 2, false);
  rows(g, 33, 2, 1, 31, true);
  compete(g, 9, 5, 1, 7, 2, true);
  compete(g, 9, 3, 3, 7, 2, true);           // K = E: never evicts
  losses(g, 3, 5, 4, 4, 9);                  // K = E (distill / diversity over every expert)
  losses(g, 1, 9, 3, 1, 9);                  // K = 1: diversity 0
  { F d(4, 1.f); I id(4, 0);                 // N = 0: wrappers must not launch empty grids
    g.moe_router_forward(d.data(), d.data(), d.data(), 0, 4, false); g.moe_topk(id.data(), d.data(), d.data(), 0, 4, 2);
    g.moe_gather_rows(d.data(), d.data(), id.data(), 1, 0, 4); g.moe_combine_forward(d.data(), d.data(), d.data(), id.data(), 0, 2, 4);
    g.moe_combine_backward(d.data(), d.data(), d.data(), d.data(), d.data(), id.data(), 0, 2, 4); g.moe_scatter_rows(d.data(), d.data(), id.data(), 0, 2, 4);
    g.moe_expert_score(d.data(), 1, d.data(), 0, 4, true); g.moe_compete_insert(id.data(), d.data(), d.data(), d.data(), d.data(), 1, d.data(), d.data(), 0, 0, 2, 4, 4);
    I off(5, -1); g.moe_permute(off.data(), id.data(), id.data(), id.data(), 0, 4, 2);
    checki("permute N=0 offsets", off, I(5, 0));
    std::printf("N=0 values: z %g distill %g entropy %g overlap %g (cpu z %g)\n", g.moe_z_loss(nullptr, d.data(), 0, 4, 1.f),
      g.moe_distill_loss(nullptr, d.data(), d.data(), id.data(), 0, 4, 2, 0.f, false, 1.f), g.moe_mean_entropy(d.data(), 0, 4),
      g.moe_topk_overlap(id.data(), id.data(), 0, 2), cpu::moe_z_loss(nullptr, d.data(), 0, 4, 1.f)); }
}

}  // namespace

// Called by emu_main.cpp for `competelm-cuda-emu moe`; returns the number of failed checks.
int run_moe_checks() {
  CudaBackend g(0);
  struct S { int N, E, K, C; } shapes[] = {{1, 1, 1, 3}, {7, 4, 2, 5}, {37, 16, 3, 40}, {9, 40, 10, 8}};
  for (auto s : shapes) {
    routing(g, s.N, s.E, std::min(s.K, s.E));
    rows(g, s.N, s.E, s.K, s.C, false);
    rows(g, s.N, s.E, s.K, s.C, true);
    compete(g, s.N, s.E, s.K, s.C, s.C / 2 + 1, false);
    compete(g, s.N, s.E, s.K, s.C, 3, true);
    if (s.N == 7 || s.N == 37) losses(g, 2, (s.N + 1) / 2, s.E, std::min(s.K, s.E), s.C);  // the slowest to emulate
  }
  losses(g, 1, 260, 5, 2, 8);  // > kChunkRows (256) tokens per sequence / chunk
  rows(g, 300, 6, 4, 3, true);  // R = 1200 > one tile of 1024 slots
  edge(g);
  std::printf("moe: %d failures\n", g_fail);
  return g_fail;
}
