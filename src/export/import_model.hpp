#pragma once
// competelm-import: GPT-2 weights from elsewhere → a committed competelm checkpoint
// RUN_DIR/checkpoints/step_00000000 (model.bin, optim.bin with zero moments, state.txt at
// step 0, config.yaml), which competelm-train --resume-from and the tools for saved models
// open like any other checkpoint.
//
// SOURCE: a Hugging Face GPT-2 directory (model.safetensors + config.json; F32/F16/BF16) or
// an llm.c checkpoint file (export/llmc_checkpoint.hpp; fp32 or bf16).
// Config: the model section (n_layer, d_model, n_head, seq_len, vocab_size) comes from the
// source; moe.n_experts is forced to 0 (GPT-2 is dense); run.dir is RUN_DIR; every other key
// comes from the base config (defaults if none).
#include <string>

#include "config/config.hpp"
#include "model/gpt2.hpp"

namespace competelm {

struct ImportResult {
  std::string checkpoint_dir;
  std::string source_kind;  // "hf" | "llm.c v3 (fp32)" | "llm.c v5 (bf16)"
  ModelShape shape;
  size_t parameters = 0;
  Config config;            // as written into the checkpoint
};

// Refuses a run_dir that already holds checkpoints.
ImportResult import_model(const std::string& source, const std::string& run_dir, const Config& base);

}  // namespace competelm
