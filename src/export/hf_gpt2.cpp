#include "export/hf_gpt2.hpp"

#include <cmath>
#include <set>

#include "core/error.hpp"
#include "core/fs_util.hpp"
#include "core/json.hpp"
#include "core/tensor_table.hpp"

namespace competelm {

std::vector<float> transpose(const std::vector<float>& m, int64_t rows, int64_t cols) {
  std::vector<float> t(m.size());
  for (int64_t r = 0; r < rows; r++)
    for (int64_t c = 0; c < cols; c++) t[size_t(c * rows + r)] = m[size_t(r * cols + c)];
  return t;
}

namespace {

// One tensor's correspondence: names, and whether HF stores it transposed (Conv1D weights).
struct Mapping {
  std::string ours, hf;
  bool transposed;
};

std::vector<Mapping> mappings(const ModelShape& s) {
  std::vector<Mapping> m = {{"wte", "wte.weight", false}, {"wpe", "wpe.weight", false}};
  for (int l = 0; l < s.n_layer; l++) {
    const std::string o = "blocks." + std::to_string(l) + ".", h = "h." + std::to_string(l) + ".";
    m.push_back({o + "ln1.weight", h + "ln_1.weight", false});
    m.push_back({o + "ln1.bias", h + "ln_1.bias", false});
    m.push_back({o + "attn.qkv.weight", h + "attn.c_attn.weight", true});
    m.push_back({o + "attn.qkv.bias", h + "attn.c_attn.bias", false});
    m.push_back({o + "attn.proj.weight", h + "attn.c_proj.weight", true});
    m.push_back({o + "attn.proj.bias", h + "attn.c_proj.bias", false});
    m.push_back({o + "ln2.weight", h + "ln_2.weight", false});
    m.push_back({o + "ln2.bias", h + "ln_2.bias", false});
    m.push_back({o + "mlp.fc.weight", h + "mlp.c_fc.weight", true});
    m.push_back({o + "mlp.fc.bias", h + "mlp.c_fc.bias", false});
    m.push_back({o + "mlp.proj.weight", h + "mlp.c_proj.weight", true});
    m.push_back({o + "mlp.proj.bias", h + "mlp.c_proj.bias", false});
  }
  m.push_back({"lnf.weight", "ln_f.weight", false});
  m.push_back({"lnf.bias", "ln_f.bias", false});
  return m;
}

// Our shape of each tensor (the model's parameter table holds the same; recomputed here so
// the mapping does not need a model instance).
std::vector<int64_t> our_shape(const std::string& name, const ModelShape& s) {
  const int64_t C = s.d_model;
  if (name == "wte") return {s.padded_vocab(), C};
  if (name == "wpe") return {s.seq_len, C};
  auto ends = [&](const char* suffix) { return name.ends_with(suffix); };
  if (ends("attn.qkv.weight")) return {3 * C, C};
  if (ends("attn.qkv.bias")) return {3 * C};
  if (ends("attn.proj.weight")) return {C, C};
  if (ends("mlp.fc.weight")) return {4 * C, C};
  if (ends("mlp.fc.bias")) return {4 * C};
  if (ends("mlp.proj.weight")) return {C, 4 * C};
  return {C};  // layer norms, attn.proj.bias, mlp.proj.bias
}

}  // namespace

std::vector<std::pair<std::string, LoadedTensor>> to_hf_gpt2(const std::map<std::string, LoadedTensor>& ours,
                                                             const ModelShape& shape) {
  std::vector<std::pair<std::string, LoadedTensor>> out;
  const int64_t C = shape.d_model, V = shape.vocab_size;
  for (const Mapping& m : mappings(shape)) {
    auto it = ours.find(m.ours);
    if (it == ours.end()) fail("export: the model has no tensor '{}' (needed for {})", m.ours, m.hf);
    LoadedTensor t = it->second;
    if (m.ours == "wte") {  // drop the padding rows: HF's vocabulary is V rows
      t.data.resize(size_t(V * C));
      t.shape = {V, C};
    } else if (m.transposed) {
      t.data = transpose(t.data, t.shape[0], t.shape[1]);
      t.shape = {t.shape[1], t.shape[0]};
    }
    out.emplace_back(m.hf, std::move(t));
  }
  return out;
}

std::map<std::string, LoadedTensor> from_hf_gpt2(const std::map<std::string, LoadedTensor>& hf,
                                                 const ModelShape& shape, const std::string& file) {
  // Strip the optional "transformer." prefix (GPT2LMHeadModel state dicts carry it).
  std::map<std::string, const LoadedTensor*> by_name;
  for (const auto& [name, t] : hf) {
    const std::string n = name.starts_with("transformer.") ? name.substr(12) : name;
    if (!by_name.emplace(n, &t).second) fail("{}: tensor '{}' appears with and without the 'transformer.' prefix", file, n);
  }
  std::map<std::string, LoadedTensor> out;
  std::set<std::string> used;
  const int64_t C = shape.d_model, V = shape.vocab_size;
  for (const Mapping& m : mappings(shape)) {
    auto it = by_name.find(m.hf);
    if (it == by_name.end()) fail("{}: tensor '{}' is missing (a GPT-2 model has it)", file, m.hf);
    used.insert(m.hf);
    const LoadedTensor& src = *it->second;
    const std::vector<int64_t> ours = our_shape(m.ours, shape);
    std::vector<int64_t> expect = ours;
    if (m.ours == "wte") expect = {V, C};
    else if (m.transposed) expect = {ours[1], ours[0]};
    if (src.shape != expect)
      fail("{}: tensor '{}' has shape {} but config.json describes {}", file, m.hf, shape_str(src.shape),
           shape_str(expect));
    LoadedTensor t;
    t.shape = ours;
    if (m.ours == "wte") {
      t.data = src.data;
      t.data.resize(size_t(ours[0] * C), 0.0f);  // padding rows: zero (never a logit we use)
    } else if (m.transposed) {
      t.data = transpose(src.data, src.shape[0], src.shape[1]);
    } else {
      t.data = src.data;
    }
    out.emplace(m.ours, std::move(t));
  }
  for (const auto& [name, t] : by_name) {
    if (used.count(name)) continue;
    if (name.ends_with(".attn.bias") || name.ends_with(".attn.masked_bias")) continue;  // causal-mask buffers
    if (name == "lm_head.weight") {  // tied: must equal wte
      const LoadedTensor& wte = *by_name.at("wte.weight");
      if (t->shape != wte.shape || t->data != wte.data)
        fail_hint("competelm ties the LM head to the token embedding; an untied model cannot be imported",
                  "{}: lm_head.weight differs from wte.weight", file);
      continue;
    }
    fail("{}: unexpected tensor '{}' (not part of a GPT-2 model)", file, name);
  }
  return out;
}

std::string hf_gpt2_config_json(const ModelShape& s) {
  JsonObject o;
  o.add_raw("architectures", "[\"GPT2LMHeadModel\"]")
      .add("model_type", "gpt2")
      .add("vocab_size", s.vocab_size)
      .add("n_positions", s.seq_len)
      .add("n_ctx", s.seq_len)
      .add("n_embd", s.d_model)
      .add("n_layer", s.n_layer)
      .add("n_head", s.n_head)
      .add_null("n_inner")
      .add("activation_function", "gelu_new")
      .add("layer_norm_epsilon", 1e-5)
      .add("initializer_range", 0.02)
      .add("resid_pdrop", 0.0)
      .add("embd_pdrop", 0.0)
      .add("attn_pdrop", 0.0)
      .add("bos_token_id", 50256)
      .add("eos_token_id", 50256)
      .add("tie_word_embeddings", true)
      .add("torch_dtype", "float32");
  // One key per line: readable, and what transformers itself writes.
  std::string text = o.str(), pretty = "{\n  ";
  bool in_str = false;
  int depth = 0;
  for (size_t i = 1; i + 1 < text.size(); i++) {
    const char c = text[i];
    if (c == '"' && text[i - 1] != '\\') in_str = !in_str;
    if (!in_str && (c == '[' || c == '{')) depth++;
    if (!in_str && (c == ']' || c == '}')) depth--;
    if (!in_str && c == ',' && depth == 0) {
      pretty += ",\n  ";
      continue;
    }
    if (!in_str && c == ':' && depth == 0) {
      pretty += ": ";
      continue;
    }
    pretty += c;
  }
  return pretty + "\n}\n";
}

ModelShape read_hf_gpt2_config(const std::string& path) {
  const JsonValue cfg = parse_json(read_file(path), path);
  if (!cfg.is_object()) fail("{}: not a JSON object", path);
  auto get_int = [&](const char* key) -> int {
    const JsonValue* v = cfg.find(key);
    if (!v) fail("{}: key '{}' is missing", path, key);
    const int64_t x = v->as_int64(path + ": " + key);
    if (x < 1 || x > (1 << 30)) fail("{}: {} = {} is out of range", path, key, x);
    return int(x);
  };
  if (const JsonValue* t = cfg.find("model_type"); t && t->is_string() && t->as_string() != "gpt2")
    fail_hint("only GPT-2 models can be imported", "{}: model_type is '{}', not 'gpt2'", path, t->as_string());
  ModelShape s;
  s.n_layer = get_int("n_layer");
  s.d_model = get_int("n_embd");
  s.n_head = get_int("n_head");
  s.seq_len = get_int("n_positions");
  s.vocab_size = get_int("vocab_size");
  if (s.d_model % s.n_head != 0) fail("{}: n_embd = {} is not divisible by n_head = {}", path, s.d_model, s.n_head);
  if (const JsonValue* a = cfg.find("activation_function"); a && a->as_string(path + ": activation_function") != "gelu_new")
    fail_hint("competelm's GELU is the tanh approximation (gelu_new)",
              "{}: activation_function '{}' is not supported", path, a->as_string());
  if (const JsonValue* e = cfg.find("layer_norm_epsilon"); e && std::fabs(e->as_double() - 1e-5) > 1e-12)
    fail("{}: layer_norm_epsilon = {} (competelm's layer norm uses 1e-5)", path, e->as_double());
  if (const JsonValue* n = cfg.find("n_inner"); n && !n->is_null() && n->as_int64(path + ": n_inner") != 4 * s.d_model)
    fail("{}: n_inner = {} (competelm's MLP is 4·n_embd = {} wide)", path, n->as_int64(), 4 * s.d_model);
  if (const JsonValue* t = cfg.find("tie_word_embeddings"); t && !t->as_bool(path + ": tie_word_embeddings"))
    fail("{}: tie_word_embeddings is false (competelm ties the LM head to wte)", path);
  return s;
}

}  // namespace competelm
