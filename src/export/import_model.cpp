#include "export/import_model.hpp"

#include <filesystem>

#include "backend/backend.hpp"
#include "checkpoint/checkpoint.hpp"
#include "core/error.hpp"
#include "export/hf_gpt2.hpp"
#include "export/llmc_checkpoint.hpp"
#include "export/safetensors.hpp"
#include "model/from_config.hpp"
#include "model/saved_model.hpp"
#include "train/adamw.hpp"
#include "train/run_state.hpp"

namespace competelm {
namespace fs = std::filesystem;

ImportResult import_model(const std::string& source, const std::string& run_dir, const Config& base) {
  if (!fs::exists(source)) fail("{}: no such file or directory", source);
  ImportResult res;
  std::map<std::string, LoadedTensor> tensors;
  std::string file;  // names the source in errors
  if (fs::is_directory(source)) {
    const std::string cfg = source + "/config.json", st = source + "/model.safetensors";
    for (const std::string& p : {cfg, st})
      if (!fs::exists(p))
        fail_hint("a Hugging Face GPT-2 directory holds model.safetensors and config.json (pytorch_model.bin is "
                  "not read)",
                  "{}: missing", p);
    res.shape = read_hf_gpt2_config(cfg);
    tensors = from_hf_gpt2(read_safetensors(st).tensors, res.shape, st);
    res.source_kind = "hf";
    file = st;
  } else if (looks_like_llmc_checkpoint(source)) {
    LlmcCheckpoint ck = read_llmc_checkpoint(source);
    res.shape = ck.shape;
    tensors = std::move(ck.tensors);
    res.source_kind = ck.version == 3 ? "llm.c v3 (fp32)" : "llm.c v5 (bf16)";
    file = source;
  } else {
    fail_hint("give a Hugging Face GPT-2 directory (model.safetensors + config.json) or an llm.c checkpoint (.bin)",
              "{}: neither a directory nor an llm.c checkpoint (magic {} missing)", source, kLlmcMagic);
  }
  if (!list_checkpoints(run_dir).empty())
    fail_hint("import into a new, empty run directory", "{}: already holds checkpoints", run_dir);

  Config cfg = base;
  cfg.run.dir = run_dir;
  cfg.model.n_layer = res.shape.n_layer;
  cfg.model.d_model = res.shape.d_model;
  cfg.model.n_head = res.shape.n_head;
  cfg.model.seq_len = res.shape.seq_len;
  cfg.model.vocab_size = res.shape.vocab_size;
  cfg.moe.n_experts = 0;
  cfg = parse_config(to_yaml(cfg), "imported config for " + run_dir);  // validated like any config

  std::unique_ptr<Backend> backend = make_backend("cpu");
  GPT2 model(*backend, model_shape(cfg), model_init(cfg), 1, 1, model_moe(cfg));
  load_model_tensors(model, *backend, tensors, file);
  AdamWOptions ao;
  ao.beta1 = cfg.optim.beta1, ao.beta2 = cfg.optim.beta2, ao.eps = cfg.optim.eps, ao.weight_decay = cfg.optim.weight_decay;
  AdamW opt(*backend, model.params(), ao);  // zero moments, t = 0
  TrainState state;                         // step 0, loader at the start
  fs::create_directories(run_dir);
  res.checkpoint_dir = save_run_checkpoint(run_dir, cfg, model, opt, state, *backend);
  res.parameters = model.num_parameters();
  res.config = cfg;
  return res;
}

}  // namespace competelm
