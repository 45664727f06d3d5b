#include "eval/inspect.hpp"

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>

#include <fmt/format.h>

#include "core/error.hpp"
#include "core/json.hpp"
#include "core/tensor_table.hpp"
#include "model/saved_model.hpp"
#include "moe/moe_options.hpp"

namespace competelm {
namespace fs = std::filesystem;
namespace {

// The metrics.jsonl record of `step` (the last one if several), or "".
std::string metrics_line_for(const std::string& file, int64_t step) {
  std::ifstream in(file);
  std::string line, found;
  const std::string key = "\"step\":";
  while (std::getline(in, line)) {
    const auto p = line.find(key);
    if (p == std::string::npos) continue;
    if (std::strtoll(line.c_str() + p + key.size(), nullptr, 10) == step) found = line;
  }
  return found;
}

std::string hex64(uint64_t v) { return fmt::format("{:016x}", v); }

std::string count_str(double n) {
  if (n >= 1e9) return fmt::format("{:.2f}B", n / 1e9);
  if (n >= 1e6) return fmt::format("{:.2f}M", n / 1e6);
  if (n >= 1e3) return fmt::format("{:.1f}k", n / 1e3);
  return fmt::format("{:.0f}", n);
}

}  // namespace

CheckpointInspection inspect_checkpoint(const std::string& path) {
  CheckpointInspection in;
  // The smallest model that holds the weights: one token (parameter counts need the model).
  SavedModel sm = load_saved_model(path, 1, 1, "cpu", 0);
  in.dir = sm.dir;
  in.step = sm.step;
  in.config = sm.config;
  in.parameters = sm.model->num_parameters();
  in.active_parameters = sm.model->num_active_parameters();
  in.moe_layers = sm.model->num_moe_layers();
  if (in.moe_layers > 0) in.router = router_name(sm.model->moe().options.router);

  const Checkpoint ck(in.dir);
  in.files = ck.files();
  in.config_yaml = ck.read_text("config.yaml");
  std::ifstream meta_in(in.dir + "/meta.json", std::ios::binary);  // verified by Checkpoint's constructor
  const std::string meta_text((std::istreambuf_iterator<char>(meta_in)), std::istreambuf_iterator<char>());
  const JsonValue meta = parse_json(meta_text, in.dir + "/meta.json");
  if (const JsonValue* t = meta.find("time_utc"); t && t->is_string()) in.time_utc = t->as_string();
  if (const JsonValue* t = meta.find("tokens_seen"); t && t->is_integer())
    in.tokens_seen = t->as_uint64(in.dir + "/meta.json: tokens_seen");
  for (auto& [name, t] : ck.read_assembled("model")) {  // std::map: sorted by name; any layout
    TensorSummary s;
    s.name = name;
    s.shape = t.shape;
    s.numel = int64_t(t.data.size());
    s.checksum = checksum64(t.data.data(), t.data.size() * sizeof(float));
    in.tensors.push_back(std::move(s));
  }
  // Checkpoints live in run_dir/checkpoints/step_N: the run's metrics are two levels up.
  const fs::path metrics = fs::path(in.dir).lexically_normal().parent_path().parent_path() / "metrics.jsonl";
  if (fs::exists(metrics)) {
    in.metrics_file = metrics.string();
    in.metrics_line = metrics_line_for(in.metrics_file, in.step);
  }
  return in;
}

std::string inspection_text(const CheckpointInspection& in, bool list_tensors) {
  const Config& c = in.config;
  std::string out;
  out += fmt::format("checkpoint   {}\n", in.dir);
  out += fmt::format("step         {}{}{}\n", in.step,
                     in.tokens_seen ? fmt::format(" ({} tokens seen)", *in.tokens_seen) : "",
                     in.time_utc.empty() ? "" : ", written " + in.time_utc);
  out += fmt::format("model        {} layers × d_model {} × {} heads, seq_len {}, vocab {}\n", c.model.n_layer,
                     c.model.d_model, c.model.n_head, c.model.seq_len, c.model.vocab_size);
  if (in.moe_layers > 0)
    out += fmt::format("moe          {} MoE layer(s) ({}), {} experts top-{} + {} shared, router {}\n", in.moe_layers,
                       c.moe.layers, c.moe.n_experts, c.moe.top_k, c.moe.shared_experts, in.router);
  else
    out += "moe          none (dense)\n";
  out += fmt::format("parameters   {} total ({}), {} active per token ({})\n", count_str(double(in.parameters)),
                     in.parameters, count_str(double(in.active_parameters)), in.active_parameters);
  out += fmt::format("training     {} steps, micro_batch {}, batch_tokens {}, lr {} ({}), seed {}\n", c.train.steps,
                     c.train.micro_batch, c.train.batch_tokens, c.optim.lr, c.optim.schedule, c.run.seed);
  out += fmt::format("data         train {} | val {}\n", c.data.train, c.data.val);
  out += "files\n";
  for (const CheckpointFile& f : in.files)
    out += fmt::format("  {:<28} {:>14} bytes  checksum {}\n", f.name, f.bytes, hex64(f.checksum));
  int64_t numel = 0;
  for (const TensorSummary& t : in.tensors) numel += t.numel;
  const bool sharded =
      std::none_of(in.files.begin(), in.files.end(), [](const CheckpointFile& f) { return f.name == "model.bin"; });
  out += fmt::format("tensors      {} in {}, {} elements{}\n", in.tensors.size(), sharded ? "model.shard-*.bin" : "model.bin", numel,
                     list_tensors ? ":" : " (--tensors lists them)");
  if (list_tensors)
    for (const TensorSummary& t : in.tensors)
      out += fmt::format("  {:<40} {:<18} {:>10}  {}\n", t.name, shape_str(t.shape), t.numel, hex64(t.checksum));
  if (in.metrics_line.empty()) {
    out += in.metrics_file.empty() ? "metrics      no metrics.jsonl next to the checkpoints\n"
                                   : fmt::format("metrics      no record of step {} in {}\n", in.step, in.metrics_file);
  } else {
    const JsonValue m = parse_json(in.metrics_line, in.metrics_file);
    std::string line;
    for (const char* key : {"loss", "lm_loss", "aux_loss", "val_loss", "lr", "grad_norm", "tokens_per_s", "step_ms"})
      if (const JsonValue* v = m.find(key); v && v->is_number()) line += fmt::format(" | {} {:.6g}", key, v->as_double());
    out += fmt::format("metrics      step {}{}\n", in.step, line);
  }
  return out;
}

std::string inspection_json(const CheckpointInspection& in, bool list_tensors) {
  const Config& c = in.config;
  JsonObject o;
  o.add("checkpoint", in.dir).add("step", in.step);
  if (in.tokens_seen) o.add("tokens_seen", *in.tokens_seen);
  else o.add_null("tokens_seen");
  o.add("time_utc", in.time_utc);
  JsonObject model;
  model.add("n_layer", c.model.n_layer).add("d_model", c.model.d_model).add("n_head", c.model.n_head);
  model.add("seq_len", c.model.seq_len).add("vocab_size", c.model.vocab_size);
  model.add("moe_layers", in.moe_layers).add("n_experts", c.moe.n_experts).add("top_k", c.moe.top_k);
  model.add("router", in.router);
  o.add("model", model);
  o.add("parameters", in.parameters).add("active_parameters", in.active_parameters);
  o.add("config_yaml", in.config_yaml);
  std::string files = "[";
  for (size_t i = 0; i < in.files.size(); ++i) {
    if (i) files += ',';
    files += JsonObject().add("name", in.files[i].name).add("bytes", in.files[i].bytes)
                 .add("checksum", hex64(in.files[i].checksum)).str();
  }
  files += ']';
  o.add_raw("files", files);
  o.add("tensor_count", in.tensors.size());
  if (list_tensors) {
    std::string ts = "[";
    for (size_t i = 0; i < in.tensors.size(); ++i) {
      const TensorSummary& t = in.tensors[i];
      std::string shape = "[";
      for (size_t d = 0; d < t.shape.size(); ++d) {
        if (d) shape += ',';
        shape += std::to_string(t.shape[d]);
      }
      shape += ']';
      if (i) ts += ',';
      ts += JsonObject().add("name", t.name).add_raw("shape", shape).add("numel", t.numel)
                .add("checksum", hex64(t.checksum)).str();
    }
    ts += ']';
    o.add_raw("tensors", ts);
  }
  if (in.metrics_line.empty()) o.add_null("metrics");
  else o.add_raw("metrics", in.metrics_line);  // the record as the trainer wrote it
  return o.str();
}

}  // namespace competelm
