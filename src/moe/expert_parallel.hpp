#pragma once
// Expert parallelism of one MoE layer: the E experts are split over the P ranks of an
// expert-parallel group, rank p holding the contiguous block [p·E/P, (p+1)·E/P). Tokens stay
// on their home rank for the router, the combine and every loss; their rows travel to the
// rank of their expert and back (all-to-all with per-rank counts).
namespace competelm {

class Comm;

struct ExpertParallel {
  Comm* comm = nullptr;  // the group (null when size == 1)
  int rank = 0;          // position in the group
  int size = 1;          // P
  bool active() const { return size > 1; }
  int local_experts(int E) const { return E / size; }
  int first_expert(int E) const { return rank * (E / size); }
};

}  // namespace competelm
