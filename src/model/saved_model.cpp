#include "model/saved_model.hpp"

#include <cstring>
#include <filesystem>
#include <vector>

#include "core/error.hpp"
#include "model/from_config.hpp"

namespace competelm {
namespace fs = std::filesystem;

std::string resolve_checkpoint_dir(const std::string& path) {
  if (!fs::exists(path)) fail_hint("give a checkpoint directory (run_dir/checkpoints/step_N) or a run directory",
                                   "{}: no such file or directory", path);
  if (fs::exists(fs::path(path) / "meta.json")) return path;
  const std::vector<std::string> all = list_checkpoints(path);
  if (!all.empty()) return all.back();
  fail_hint("give a checkpoint directory (run_dir/checkpoints/step_N) or a run directory that has checkpoints",
            "{}: neither a checkpoint (no meta.json) nor a run directory with committed checkpoints", path);
}

void load_model_tensors(GPT2& model, Backend& backend, const std::map<std::string, LoadedTensor>& tensors,
                        const std::string& file) {
  const TensorTable& table = model.params();
  std::vector<float> host(table.total_elements(), 0.0f);
  for (const TensorSpec& s : table.specs()) {
    auto it = tensors.find(s.name);
    if (it == tensors.end()) fail("{}: tensor '{}' is missing", file, s.name);
    if (it->second.shape != s.shape)
      fail_hint("the file was written for a model of another shape",
                "{}: tensor '{}' has shape {} but the model expects {}", file, s.name,
                shape_str(it->second.shape), shape_str(s.shape));
    std::memcpy(host.data() + s.offset, it->second.data.data(), s.numel * sizeof(float));
  }
  backend.upload(model.param_buffer(), host.data(), host.size() * sizeof(float));
}

SavedModel load_saved_model(const std::string& path, int B, int T, const std::string& device, int threads) {
  SavedModel sm;
  sm.dir = resolve_checkpoint_dir(path);
  const Checkpoint ck(sm.dir);
  sm.step = ck.step();
  sm.config = parse_config(ck.read_text("config.yaml"), sm.dir + "/config.yaml");
  const int max_T = sm.config.model.seq_len;
  if (T == 0) T = max_T;
  if (T < 1 || T > max_T) fail("T = {} must be in [1, model.seq_len = {}] ({})", T, max_T, sm.dir);
  sm.backend = make_backend(device, threads);
  apply_precision(*sm.backend, sm.config.run.precision);
  sm.model = std::make_unique<GPT2>(*sm.backend, model_shape(sm.config), model_init(sm.config), B, T,
                                    model_moe(sm.config));
  // model.bin, or the shard files of a multi-rank checkpoint joined into whole tensors.
  load_model_tensors(*sm.model, *sm.backend, ck.read_assembled("model"), sm.dir + "/model");
  sm.backend->set_param_buffer(sm.model->param_buffer(), sm.model->params().total_elements());
  sm.backend->refresh_param_copy(sm.config.run.seed, uint64_t(sm.step));  // the bf16 weights training used
  return sm;
}

}  // namespace competelm
