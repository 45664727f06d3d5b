#pragma once
// llm.c's GPT-2 checkpoint (gpt2_124M.bin, written by llm.c's train_gpt2.py write_model and
// read by train_gpt2.c gpt2_build_from_checkpoint):
//
//   header  256 × int32: [0] magic 20240326, [1] version (3 = fp32, 5 = bf16), [2] maxT,
//           [3] V, [4] L, [5] NH, [6] C, [7] Vp (padded vocabulary); the rest 0
//   params  fp32 (v3) or bf16 (v5), concatenated in this order:
//           wte (Vp,C), wpe (maxT,C), ln1w (L,C), ln1b (L,C), qkvw (L,3C,C), qkvb (L,3C),
//           attprojw (L,C,C), attprojb (L,C), ln2w (L,C), ln2b (L,C), fcw (L,4C,C),
//           fcb (L,4C), fcprojw (L,C,4C), fcprojb (L,C), lnfw (C), lnfb (C)
//
// Weights are (out, in) like ours, so no transposes: only the per-layer stacks are split.
#include <map>
#include <string>

#include "checkpoint/checkpoint.hpp"
#include "model/gpt2.hpp"

namespace competelm {

constexpr int kLlmcMagic = 20240326;

struct LlmcCheckpoint {
  ModelShape shape;
  int version = 3;   // 3 = fp32, 5 = bf16
  int file_Vp = 0;   // the file's padded vocabulary
  std::map<std::string, LoadedTensor> tensors;  // our names and shapes (wte padded to our Vp)
};

// Throws Error naming the file (and the header field) on anything unexpected, including a
// file size that does not match the header.
LlmcCheckpoint read_llmc_checkpoint(const std::string& path);

bool looks_like_llmc_checkpoint(const std::string& path);  // magic number check only

}  // namespace competelm
