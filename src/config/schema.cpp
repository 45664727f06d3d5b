// The table of every config key. Defaults are not written here: they are read from a
// default-constructed Config (config.hpp), so the struct stays the one place they live.
#include "config/schema.hpp"

#include <charconv>
#include <cmath>
#include <limits>
#include <type_traits>

#include <fmt/format.h>

#include "config/suggest.hpp"

namespace competelm::config_schema {

namespace {

// K(optim, lr, "description", .min = 0.0, ...): one key whose field is cfg.optim.lr.
#define K(sec, name, desc, ...)                                         \
  KeySpec {                                                             \
    .key = #sec "." #name,                                              \
    .field = [](Config& c) -> FieldRef { return &c.sec.name; },         \
    .description = desc __VA_OPT__(, ) __VA_ARGS__                      \
  }

std::vector<KeySpec> build_keys() {
  return {
      // ---- run ----
      K(run, dir, "Run directory: checkpoints, logs and the resolved config go here",
        .non_empty = true),
      K(run, seed, "Random seed for initialisation, data order and sampling"),
      K(run, device, "Compute device: cpu, cuda, or auto (CUDA when this build has it and a GPU is visible, else the CPU)",
        .allowed = {"auto", "cpu", "cuda"}),
      K(run, precision,
        "Matrix-product precision: fp32 (exact, the CPU's), tf32 or bf16 (tensor-core operands, "
        "fp32 accumulation; storage stays fp32), or auto (bf16 on CUDA, fp32 on the CPU)",
        .allowed = {"auto", "fp32", "tf32", "bf16"}),
      K(run, threads, "OpenMP/BLAS threads on the CPU backend (0 = all cores)", .min = 0.0),
      // ---- model ----
      K(model, n_layer, "Number of transformer blocks", .min = 1.0),
      K(model, d_model, "Residual stream width (embedding size); a multiple of model.n_head",
        .min = 1.0),
      K(model, n_head, "Attention heads per block", .min = 1.0),
      K(model, seq_len, "Context length in tokens (also the training sequence length)",
        .min = 1.0),
      K(model, vocab_size, "Vocabulary size (50257 for the GPT-2 tokenizer)", .min = 1.0),
      K(model, init_std, "Standard deviation of the normal weight initialisation", .min = 0.0,
        .min_open = true),
      // ---- moe (../shared/spec/competesmoe.md; unused while n_experts = 0) ----
      K(moe, n_experts, "Routed experts per MoE layer (0 = dense model: every FFN is an MLP)",
        .min = 0.0),
      K(moe, top_k, "Experts each token is routed to (K); at most moe.n_experts", .min = 1.0),
      K(moe, router,
        "Routing: softmax_topk = plain SMoE, competesmoe = SMoE plus scheduled competition "
        "and router distillation, sigmoid_topk = SMoE with sigmoid instead of softmax router scores",
        .allowed = {"softmax_topk", "competesmoe", "sigmoid_topk"}),
      K(moe, layers,
        "Which blocks get an MoE FFN: all, none, every:N[:OFFSET] (OFFSET, OFFSET+N, ...) or "
        "a list of block indices such as \"0,2,5\"",
        .non_empty = true),
      K(moe, expert_hidden,
        "Hidden width of each expert (0 = 4·d_model/top_k rounded up to a multiple of 8, so "
        "K experts cost about one dense MLP)",
        .min = 0.0),
      K(moe, shared_experts, "Always-on experts (same width) added to the routed output",
        .min = 0.0),
      K(moe, balance, "Router load-balance loss on non-competition steps",
        .allowed = {"entropy", "switch"}),
      K(moe, balance_coef, "Weight of the router load-balance loss", .min = 0.0),
      K(moe, z_loss_coef, "Weight of the router z-loss mean(logsumexp(logits)^2) (0 = off)",
        .min = 0.0),
      K(moe, competition_score,
        "Expert response that competition routes by: softplus_mean (2025 paper, "
        "sum-normalised gates) or l2 (2024 paper, softmax gates)",
        .allowed = {"softplus_mean", "l2"}),
      K(moe, competition_rate,
        "Probability that an (MoE layer, step) pair after warm-up competes (competesmoe)",
        .min = 0.0, .max = 1.0),
      K(moe, competition_warmup, "Fraction of train.steps at the start without competition",
        .min = 0.0, .max = 1.0),
      K(moe, competition_max_layers, "At most this many layers compete in one step",
        .min = 1.0),
      K(moe, router_coef, "Weight of the router distillation loss on competition steps",
        .min = 0.0),
      K(moe, distill_theta,
        "Extra distillation weight on the K competition winners ('hybrid'; 0 = off)",
        .min = 0.0),
      K(moe, distill_target,
        "Distillation target: full = softmax of all experts' scores, topk = softmax over the "
        "winners only (2024 paper)",
        .allowed = {"full", "topk"}),
      K(moe, diversity_coef,
        "Weight of the winners' pairwise output cosine similarity on competition steps",
        .min = 0.0),
      K(moe, competition_balance_coef,
        "Weight of the entropy balance loss on the competition affinities (competition steps)",
        .min = 0.0),
      // ---- data ----
      K(data, train, "Glob of the training token shards (.bin)", .non_empty = true),
      K(data, val, "Glob of the validation token shards (.bin)"),
      K(data, shuffle, "Shuffle the order of training sequences each epoch"),
      // ---- optim ----
      K(optim, lr, "Peak learning rate (AdamW)", .min = 0.0, .min_open = true),
      K(optim, min_lr_frac, "Final learning rate as a fraction of optim.lr", .min = 0.0,
        .max = 1.0),
      K(optim, schedule, "Learning-rate schedule after warmup",
        .allowed = {"cosine", "linear", "constant", "wsd"}),
      K(optim, warmup_steps, "Steps of linear warmup from 0 to optim.lr", .min = 0.0),
      K(optim, wsd_decay_frac, "wsd schedule: final share of the steps that decay", .min = 0.0,
        .max = 1.0),
      K(optim, beta1, "AdamW first-moment decay", .min = 0.0, .max = 1.0, .max_open = true),
      K(optim, beta2, "AdamW second-moment decay", .min = 0.0, .max = 1.0, .max_open = true),
      K(optim, eps, "AdamW epsilon", .min = 0.0, .min_open = true),
      K(optim, weight_decay, "Decoupled weight decay on the matrices", .min = 0.0),
      K(optim, grad_clip, "Clip the global gradient norm to this (0 = off)", .min = 0.0),
      K(optim, decay_embeddings, "Apply weight decay to the embeddings too"),
      K(optim, decay_norms, "Apply weight decay to LayerNorm weights too (biases never decay)"),
      // ---- train ----
      K(train, steps, "Optimizer steps to train", .min = 1.0),
      K(train, micro_batch, "Sequences per rank per micro-step", .min = 1.0),
      K(train, batch_tokens,
        "Global tokens per step, reached by gradient accumulation (0 = one micro-batch per rank)",
        .min = 0.0),
      K(train, spike_factor, "Warn when the loss exceeds this times its running mean (0 = off)",
        .min = 0.0),
      K(train, on_nan, "What to do on a NaN/inf loss: stop the run or skip the step",
        .allowed = {"stop", "skip"}),
      // ---- checkpoint ----
      K(checkpoint, every, "Save a checkpoint every this many steps (0 = only at the end / on signal)",
        .min = 0.0),
      K(checkpoint, keep, "Keep the newest this many checkpoints", .min = 1.0),
      K(checkpoint, resume, "auto: resume from the newest checkpoint in run.dir if there is one",
        .allowed = {"never", "auto"}),
      K(checkpoint, fallback, "Resume from an older checkpoint if the newest is unreadable"),
      K(checkpoint, at_end, "Save a checkpoint after the last step"),
      K(checkpoint, on_error,
        "When a checkpoint cannot be written (disk full, I/O error): stop the run (non-zero exit), "
        "or continue training with a warning and retry at the next checkpoint (the previous "
        "checkpoint always stays intact)",
        .allowed = {"stop", "continue"}),
      // ---- log ----
      K(log, every, "Log training metrics every this many steps", .min = 1.0),
      K(log, level, "Log level", .allowed = {"trace", "debug", "info", "warn", "error"}),
      // ---- eval ----
      K(eval, every, "Validate every this many steps and at the last step (0 = off)",
        .min = 0.0),
      K(eval, val_batches, "Micro-batches per validation", .min = 1.0),
      K(eval, sample_every, "Print a text sample every this many steps (0 = off)", .min = 0.0),
      K(eval, sample_tokens, "Tokens to generate per sample", .min = 1.0),
      K(eval, temperature, "Sampling temperature", .min = 0.0, .min_open = true),
      K(eval, prompt, "Prompt the samples start from"),
      K(eval, tokenizer_dir, "Directory with the GPT-2 tokenizer files (encoder.json, vocab.bpe)"),
      // ---- dist (multi-rank runs: mpirun -np N) ----
      K(dist, expert_parallel,
        "Expert parallel size P: each MoE layer's experts are split over P ranks (P divides the "
        "rank count and moe.n_experts); 1 = every rank holds every expert",
        .min = 1.0),
      K(dist, gpu_comm,
        "Collectives on GPU memory (CUDA backend, several ranks): mpi = MPI over host copies of "
        "the buffers, nccl = NCCL on the device buffers, auto = mpi until the NCCL path is "
        "verified on GPUs; ignored on the CPU",
        .allowed = {"auto", "nccl", "mpi"}),
      K(dist, bucket_mb,
        "Data parallel: gradients are reduced in buckets of about this many MB (fp32), each "
        "started as soon as the backward has finished its layers, so that the reduction overlaps "
        "the backward of the layers before them; 0 = one reduction after the whole backward",
        .min = 0.0),
  };
}

#undef K

// A double-quoted YAML string: safe for ':', '#', quotes, leading spaces and control bytes.
std::string quote(const std::string& s) {
  std::string out = "\"";
  for (unsigned char ch : s) {
    switch (ch) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\t': out += "\\t"; break;
      case '\r': out += "\\r"; break;
      default:
        if (ch < 0x20 || ch == 0x7f)
          out += fmt::format("\\x{:02x}", ch);
        else
          out += static_cast<char>(ch);
    }
  }
  return out + "\"";
}

std::string format_bound(double v) { return fmt::format("{}", v); }

// Parses a whole string as an integer of type T ('+' allowed); nothing if it is not one.
template <typename T>
std::optional<ValueError> parse_integer(const std::string& text, T& out) {
  std::string_view s = text;
  if (s.starts_with('+')) s.remove_prefix(1);
  T value{};
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), value);
  if (ec == std::errc::result_out_of_range)
    return ValueError{fmt::format("'{}' does not fit in {} (allowed {} to {})", text,
                                  std::is_same_v<T, int> ? "a 32-bit integer" : "a 64-bit integer",
                                  std::numeric_limits<T>::min(), std::numeric_limits<T>::max()),
                      {}};
  if (s.empty() || ec != std::errc() || end != s.data() + s.size())
    return ValueError{
        fmt::format("expected {}, got '{}'",
                    std::is_unsigned_v<T> ? "a non-negative integer" : "an integer", text),
        {}};
  out = value;
  return std::nullopt;
}

std::optional<ValueError> parse_float(const std::string& text, float& out) {
  std::string_view s = text;
  if (s.starts_with('+')) s.remove_prefix(1);
  float value = 0;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), value);
  if (ec == std::errc::result_out_of_range)
    return ValueError{fmt::format("'{}' is out of the range of a 32-bit float", text), {}};
  if (s.empty() || ec != std::errc() || end != s.data() + s.size())
    return ValueError{fmt::format("expected a number, got '{}'", text), {}};
  if (!std::isfinite(value))
    return ValueError{fmt::format("expected a finite number, got '{}'", text), {}};
  out = value;
  return std::nullopt;
}

std::optional<ValueError> parse_bool(const std::string& text, bool& out) {
  if (text == "true" || text == "True" || text == "TRUE") {
    out = true;
    return std::nullopt;
  }
  if (text == "false" || text == "False" || text == "FALSE") {
    out = false;
    return std::nullopt;
  }
  return ValueError{fmt::format("expected true or false, got '{}'", text), {}};
}

std::string_view expected_text(ValueType type) {
  switch (type) {
    case ValueType::Int:
    case ValueType::Int64: return "an integer";
    case ValueType::UInt64: return "a non-negative integer";
    case ValueType::Float: return "a number";
    case ValueType::Bool: return "true or false";
    case ValueType::String: return "a string";
    case ValueType::Enum: return "one of the allowed values";
  }
  return "a value";
}

std::optional<ValueError> check_range(const KeySpec& spec, double value, const std::string& text) {
  const bool below = spec.min && (spec.min_open ? value <= *spec.min : value < *spec.min);
  const bool above = spec.max && (spec.max_open ? value >= *spec.max : value > *spec.max);
  if (below || above)
    return ValueError{fmt::format("{} is out of range; allowed: {}", text, allowed_text(spec)), {}};
  return std::nullopt;
}

// Parses the text into the field the key points at; one overload per field type.
struct AssignVisitor {
  const KeySpec& spec;
  const std::string& text;
  template <typename T>
  std::optional<ValueError> number(T* field) const {
    T value{};
    std::optional<ValueError> err;
    if constexpr (std::is_same_v<T, float>)
      err = parse_float(text, value);
    else
      err = parse_integer(text, value);
    if (!err) err = check_range(spec, static_cast<double>(value), text);
    if (!err) *field = value;
    return err;
  }
  std::optional<ValueError> operator()(int* v) const { return number(v); }
  std::optional<ValueError> operator()(int64_t* v) const { return number(v); }
  std::optional<ValueError> operator()(uint64_t* v) const { return number(v); }
  std::optional<ValueError> operator()(float* v) const { return number(v); }
  std::optional<ValueError> operator()(bool* v) const { return parse_bool(text, *v); }
  std::optional<ValueError> operator()(std::string* v) const {
    if (!spec.allowed.empty()) {
      for (std::string_view allowed : spec.allowed)
        if (allowed == text) {
          *v = text;
          return std::nullopt;
        }
      const auto guess = closest_match(text, spec.allowed);
      return ValueError{
          fmt::format("unknown value '{}'; allowed: {}", text, allowed_text(spec)),
          guess ? fmt::format("did you mean '{}'?", *guess) : std::string()};
    }
    if (spec.non_empty && text.empty()) return ValueError{"must not be empty", {}};
    *v = text;
    return std::nullopt;
  }
};

}  // namespace

ValueType KeySpec::type() const {
  struct Visitor {
    const KeySpec& spec;
    ValueType operator()(int*) const { return ValueType::Int; }
    ValueType operator()(int64_t*) const { return ValueType::Int64; }
    ValueType operator()(uint64_t*) const { return ValueType::UInt64; }
    ValueType operator()(float*) const { return ValueType::Float; }
    ValueType operator()(bool*) const { return ValueType::Bool; }
    ValueType operator()(std::string*) const {
      return spec.allowed.empty() ? ValueType::String : ValueType::Enum;
    }
  };
  static const Config probe;
  return std::visit(Visitor{*this}, ref(probe));
}

std::string_view KeySpec::section() const { return key.substr(0, key.find('.')); }

std::string_view KeySpec::leaf() const { return key.substr(key.find('.') + 1); }

FieldRef KeySpec::ref(const Config& cfg) const {
  // The schema only hands out mutable pointers; callers of ref() promise to only read.
  return field(const_cast<Config&>(cfg));
}

const std::vector<KeySpec>& keys() {
  static const std::vector<KeySpec> table = build_keys();
  return table;
}

const std::vector<std::string_view>& sections() {
  static const std::vector<std::string_view> names = {
      "run", "model", "moe", "data", "optim", "train", "checkpoint", "log", "eval", "dist"};
  return names;
}

const KeySpec* find(std::string_view key) {
  for (const KeySpec& spec : keys())
    if (spec.key == key) return &spec;
  return nullptr;
}

std::string_view type_name(ValueType type) {
  switch (type) {
    case ValueType::Int: return "int";
    case ValueType::Int64: return "int64";
    case ValueType::UInt64: return "uint64";
    case ValueType::Float: return "float";
    case ValueType::Bool: return "bool";
    case ValueType::String: return "string";
    case ValueType::Enum: return "enum";
  }
  return "?";
}

std::string format_value(const KeySpec& spec, const Config& cfg) {
  struct Visitor {
    const KeySpec& spec;
    std::string operator()(int* v) const { return fmt::format("{}", *v); }
    std::string operator()(int64_t* v) const { return fmt::format("{}", *v); }
    std::string operator()(uint64_t* v) const { return fmt::format("{}", *v); }
    // fmt's "{}" is the shortest text that reads back as the same float.
    std::string operator()(float* v) const { return fmt::format("{}", *v); }
    std::string operator()(bool* v) const { return *v ? "true" : "false"; }
    std::string operator()(std::string* v) const {
      return spec.allowed.empty() ? quote(*v) : *v;
    }
  };
  return std::visit(Visitor{spec}, spec.ref(cfg));
}

std::string allowed_text(const KeySpec& spec) {
  if (!spec.allowed.empty()) return fmt::format("{}", fmt::join(spec.allowed, ", "));
  if (spec.type() == ValueType::Bool) return "true, false";
  if (spec.non_empty) return "non-empty";
  if (spec.min && spec.max)
    return fmt::format("{}{}, {}{}", spec.min_open ? "(" : "[", format_bound(*spec.min),
                       format_bound(*spec.max), spec.max_open ? ")" : "]");
  if (spec.min) return fmt::format("{} {}", spec.min_open ? ">" : "≥", format_bound(*spec.min));
  if (spec.max) return fmt::format("{} {}", spec.max_open ? "<" : "≤", format_bound(*spec.max));
  return "";
}

std::optional<ValueError> assign(const KeySpec& spec, Config& cfg, const std::string& text,
                                 bool is_null) {
  const ValueType type = spec.type();
  if (is_null) {
    if (type == ValueType::String)
      return ValueError{"expected a string, got an empty value", "write \"\" for an empty string"};
    if (type == ValueType::Enum)
      return ValueError{fmt::format("expected one of {}, got an empty value", allowed_text(spec)),
                        {}};
    return ValueError{fmt::format("expected {}, got an empty value", expected_text(type)), {}};
  }

  return std::visit(AssignVisitor{spec, text}, spec.field(cfg));
}

}  // namespace competelm::config_schema
