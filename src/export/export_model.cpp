#include "export/export_model.hpp"

#include <filesystem>

#include "core/error.hpp"
#include "core/fs_util.hpp"
#include "core/json.hpp"
#include "export/hf_gpt2.hpp"
#include "export/model_tensors.hpp"
#include "export/safetensors.hpp"
#include "model/saved_model.hpp"

namespace competelm {

ExportFormat parse_export_format(const std::string& s) {
  if (s == "hf") return ExportFormat::HuggingFace;
  if (s == "safetensors") return ExportFormat::Safetensors;
  fail("--format: '{}' is not a format (hf | safetensors)", s);
}

namespace {

// Our resolved config as JSON: the model shape and MoE section as numbers/strings (what a
// reader needs to rebuild the model), and the whole config as loadable YAML text.
std::string competelm_config_json(const SavedModel& sm) {
  const Config& c = sm.config;
  JsonObject model;
  model.add("n_layer", c.model.n_layer).add("d_model", c.model.d_model).add("n_head", c.model.n_head)
      .add("seq_len", c.model.seq_len).add("vocab_size", c.model.vocab_size)
      .add("padded_vocab_size", sm.model->shape().padded_vocab());
  JsonObject moe;
  const ModelMoe& m = sm.model->moe();
  std::string layers = "[";
  for (size_t l = 0; l < m.layers.size(); l++)
    if (m.layers[l]) {
      if (layers.size() > 1) layers += ',';
      layers += std::to_string(l);  // plain appends: GCC 12's -Wrestrict misfires on "x" + string
    }
  layers += "]";
  moe.add("n_experts", c.moe.n_experts).add("top_k", c.moe.top_k).add("router", c.moe.router)
      .add("expert_hidden", m.count() ? m.options.expert_hidden : 0).add("shared_experts", c.moe.shared_experts)
      .add_raw("moe_layers", layers);
  JsonObject root;
  root.add("format", "competelm").add("step", sm.step).add("model", model).add("moe", moe)
      .add("config_yaml", to_yaml(c));
  return root.str() + "\n";
}

}  // namespace

ExportResult export_checkpoint(const std::string& checkpoint, ExportFormat format, const std::string& out_dir) {
  SavedModel sm = load_saved_model(checkpoint, 1, 1, "cpu");
  const GPT2& model = *sm.model;
  if (format == ExportFormat::HuggingFace && model.moe().count() > 0)
    fail_hint("use --format safetensors: it exports any model with competelm's own tensor names (MoE experts "
              "stacked on dim 0)",
              "{}: the model has {} MoE layer(s); the Hugging Face GPT-2 layout has no place for experts",
              sm.dir, model.moe().count());
  std::filesystem::create_directories(out_dir);
  ExportResult res;
  res.checkpoint_dir = sm.dir;
  res.parameters = model.num_parameters();
  const std::map<std::string, LoadedTensor> ours = model_tensors_host(model, *sm.backend);
  const std::string st_path = out_dir + "/model.safetensors", cfg_path = out_dir + "/config.json";
  if (format == ExportFormat::HuggingFace) {
    const auto hf = to_hf_gpt2(ours, model.shape());
    std::vector<NamedTensor> views;
    for (const auto& [name, t] : hf) views.push_back({name, t.shape, t.data.data()});
    write_safetensors(st_path, views, {{"format", "pt"}});
    write_file_atomic(cfg_path, hf_gpt2_config_json(model.shape()));
    res.tensors = views.size();
    res.files = {st_path, cfg_path};
  } else {
    const std::vector<NamedTensor> views = named_views(model, ours);
    write_safetensors(st_path, views,
                      {{"format", "competelm"}, {"step", std::to_string(sm.step)}, {"source", sm.dir}});
    write_file_atomic(cfg_path, competelm_config_json(sm));
    const std::string yaml_path = out_dir + "/config.yaml";
    write_file_atomic(yaml_path, to_yaml(sm.config));
    res.tensors = views.size();
    res.files = {st_path, cfg_path, yaml_path};
  }
  return res;
}

}  // namespace competelm
