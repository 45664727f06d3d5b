#pragma once
// Expert parallelism of one MoE layer: the E experts are split over the P ranks of an
// expert-parallel group, rank p holding the contiguous block [p·E/P, (p+1)·E/P). Tokens stay
// on their home rank for the router, the combine and every loss; their rows travel to the
// rank of their expert and back (all-to-all with per-rank counts).
//
// Two communicators over the same group: comm for host buffers (per-expert counts, the
// competition scores), dcomm for buffers in the backend's memory (token rows, the group's
// activations and their gradients). On the CPU they may be one object (DistContext::ep, dep).
namespace competelm {

class Comm;

struct ExpertParallel {
  Comm* comm = nullptr;   // the group, host buffers (null when size == 1)
  int rank = 0;           // position in the group
  int size = 1;           // P
  Comm* dcomm = nullptr;  // the group, the backend's buffers (null: comm, if that memory is host)
  bool active() const { return size > 1; }
  int local_experts(int E) const { return E / size; }
  int first_expert(int E) const { return rank * (E / size); }
};

}  // namespace competelm
