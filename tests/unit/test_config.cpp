// The config system: schema coverage, strict loading, overrides, errors, round trips.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "config/config.hpp"
#include "config/schema.hpp"
#include "config/suggest.hpp"
#include "core/error.hpp"

using namespace competelm;
namespace schema = competelm::config_schema;

namespace {

// The Error a call throws; fails the test if it throws nothing.
template <typename F>
Error error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e;
  }
  FAIL("expected a competelm::Error");
  return Error("unreachable");
}

Error parse_error(const std::string& yaml, const std::vector<std::string>& overrides = {}) {
  return error_of([&] { parse_config(yaml, "test.yaml", overrides); });
}

// Every key's value as text: equal texts mean equal configs (floats print exactly).
std::vector<std::string> values_of(const Config& cfg) {
  std::vector<std::string> out;
  for (const auto& spec : schema::keys())
    out.push_back(std::string(spec.key) + "=" + schema::format_value(spec, cfg));
  return out;
}

// Counts an aggregate's fields: the most initializers T{...} accepts (C++20 aggregates).
struct AnyField {
  template <typename T>
  operator T() const;  // never defined: only used in unevaluated contexts
};
template <typename T, typename... Fields>
constexpr std::size_t count_fields() {
  if constexpr (requires { T{Fields{}..., AnyField{}}; })
    return count_fields<T, Fields..., AnyField>();
  else
    return sizeof...(Fields);
}

const void* address_of(const schema::FieldRef& ref) {
  return std::visit([](auto* p) -> const void* { return p; }, ref);
}

}  // namespace

TEST_CASE("config: every struct field has exactly one schema key", "[config]") {
  Config cfg;
  struct SectionInfo {
    const char* name;
    const void* begin;
    std::size_t size;
    std::size_t fields;
  };
  const std::vector<SectionInfo> sections = {
      {"run", &cfg.run, sizeof cfg.run, count_fields<RunSection>()},
      {"model", &cfg.model, sizeof cfg.model, count_fields<ModelSection>()},
      {"moe", &cfg.moe, sizeof cfg.moe, count_fields<MoeSection>()},
      {"data", &cfg.data, sizeof cfg.data, count_fields<DataSection>()},
      {"optim", &cfg.optim, sizeof cfg.optim, count_fields<OptimSection>()},
      {"train", &cfg.train, sizeof cfg.train, count_fields<TrainSection>()},
      {"checkpoint", &cfg.checkpoint, sizeof cfg.checkpoint, count_fields<CheckpointSection>()},
      {"log", &cfg.log, sizeof cfg.log, count_fields<LogSection>()},
      {"eval", &cfg.eval, sizeof cfg.eval, count_fields<EvalSection>()},
      {"dist", &cfg.dist, sizeof cfg.dist, count_fields<DistSection>()},
  };
  // The section list matches the struct (Config = 10 sections + source).
  STATIC_REQUIRE(count_fields<Config>() == 11);
  REQUIRE(schema::sections().size() == sections.size());
  std::size_t total = 0;
  std::set<const void*> seen;
  for (std::size_t i = 0; i < sections.size(); ++i) {
    const SectionInfo& s = sections[i];
    CAPTURE(s.name);
    REQUIRE(schema::sections()[i] == s.name);
    std::size_t n = 0;
    for (const auto& spec : schema::keys()) {
      if (spec.section() != s.name) continue;
      CAPTURE(spec.key);
      const auto* p = static_cast<const char*>(address_of(spec.field(cfg)));
      const auto* b = static_cast<const char*>(s.begin);
      CHECK((p >= b && p < b + s.size));      // the key's field lies in its own section
      CHECK(seen.insert(p).second);           // and no two keys share a field
      CHECK(spec.leaf().find('.') == std::string_view::npos);
      CHECK(!spec.description.empty());
      ++n;
    }
    CHECK(n == s.fields);
    total += n;
  }
  CHECK(total == schema::keys().size());
  CHECK(schema::keys().size() == 67);
}

TEST_CASE("config: defaults come from the struct and pass their own validation", "[config]") {
  const Config c = parse_config("run: {}\n", "defaults.yaml");
  CHECK(values_of(c) == values_of(Config{}));
  CHECK(c.source == "defaults.yaml");
  CHECK(c.model.n_layer == 12);
  CHECK(c.optim.lr == 6e-4f);
  CHECK(c.optim.schedule == "cosine");
  CHECK(c.data.train == "data/brown/brown_train_*.bin");
  for (const auto& spec : schema::keys()) {
    CAPTURE(spec.key);
    Config probe;
    std::string text = schema::format_value(spec, Config{});
    if (spec.type() == schema::ValueType::String) text = text.substr(1, text.size() - 2);
    CHECK_FALSE(schema::assign(spec, probe, text, false).has_value());
  }
}

TEST_CASE("config: a full file parses into every section", "[config]") {
  const Config c = parse_config(R"(
run:
  dir: runs/x
  seed: 18446744073709551615
  device: cpu
  threads: 2
model:
  n_layer: 3
  d_model: 96
  n_head: 6
  seq_len: 64
  vocab_size: 512
  init_std: 0.01
moe:
data:
  train: "a/*.bin"
  val: b/*.bin
  shuffle: false
optim:
  lr: 3e-4
  min_lr_frac: 0
  schedule: wsd
  warmup_steps: 5
  wsd_decay_frac: 0.3
  beta1: 0.8
  beta2: 0.99
  eps: 1.0e-6
  weight_decay: 0.0
  grad_clip: 0.5
  decay_embeddings: true
  decay_norms: True
train:
  steps: 7
  micro_batch: 2
  batch_tokens: 256
  spike_factor: 0
  on_nan: skip
checkpoint:
  every: 3
  keep: 1
  resume: auto
  fallback: true
  at_end: false
log:
  every: 2
  level: debug
eval:
  every: 0
  val_batches: 1
  sample_every: 4
  sample_tokens: 9
  temperature: 0.7
  prompt: "Once upon: a time # not a comment"
  tokenizer_dir: tok
)",
                                "full.yaml");
  CHECK(c.run.dir == "runs/x");
  CHECK(c.run.seed == std::numeric_limits<uint64_t>::max());
  CHECK(c.run.device == "cpu");
  CHECK(c.run.threads == 2);
  CHECK(c.model.n_layer == 3);
  CHECK(c.model.d_model == 96);
  CHECK(c.model.vocab_size == 512);
  CHECK(c.model.init_std == 0.01f);
  CHECK(c.data.train == "a/*.bin");
  CHECK_FALSE(c.data.shuffle);
  CHECK(c.optim.lr == 3e-4f);
  CHECK(c.optim.schedule == "wsd");
  CHECK(c.optim.eps == 1e-6f);
  CHECK(c.optim.decay_embeddings);
  CHECK(c.optim.decay_norms);
  CHECK(c.train.batch_tokens == 256);
  CHECK(c.train.on_nan == "skip");
  CHECK(c.checkpoint.resume == "auto");
  CHECK_FALSE(c.checkpoint.at_end);
  CHECK(c.log.level == "debug");
  CHECK(c.eval.temperature == 0.7f);
  CHECK(c.eval.prompt == "Once upon: a time # not a comment");
}

TEST_CASE("config: an unknown key names file, line, column, key and the closest key",
          "[config]") {
  const Error e = parse_error("run:\n  dir: x\noptim:\n  lrr: 1e-3\n");
  CHECK(std::string(e.what()) == "test.yaml:4:3: unknown key 'optim.lrr'");
  CHECK(e.hint() == "did you mean 'optim.lr'?");

  // The right name in the wrong section, and a swap of two letters.
  CHECK(parse_error("train:\n  lr: 1\n").hint() == "did you mean 'optim.lr'?");
  CHECK(parse_error("optim:\n  wramup_steps: 1\n").hint() == "did you mean 'optim.warmup_steps'?");
  CHECK(parse_error("optim:\n  warmup: 1\n").hint() == "did you mean 'optim.warmup_steps'?");
  // Nothing close: no guess.
  const Error far = parse_error("model:\n  zebra_count: 1\n");
  CHECK(std::string(far.what()).find("'model.zebra_count'") != std::string::npos);
  CHECK(far.hint().empty());
}

TEST_CASE("config: an unknown section is an error with a suggestion", "[config]") {
  const Error e = parse_error("run:\n  dir: x\noptimizer:\n  lr: 1\n");
  CHECK_THAT(e.what(), Catch::Contains("test.yaml:3:1") && Catch::Contains("'optimizer'"));
  CHECK(e.hint() == "did you mean section 'optim'?");
  CHECK(parse_error("chekpoint:\n  every: 1\n").hint() == "did you mean section 'checkpoint'?");
  // A key written at the top level points at its section.
  CHECK_THAT(parse_error("lr: 1e-3\n").hint(), Catch::Contains("'optim.lr'"));
}

TEST_CASE("config: a value of the wrong type names file, line, key and value", "[config]") {
  CHECK(std::string(parse_error("optim:\n  lr: fast\n").what()) ==
        "test.yaml:2: optim.lr: expected a number, got 'fast'");
  CHECK_THAT(parse_error("model:\n  n_layer: 2.5\n").what(),
             Catch::Contains("test.yaml:2: model.n_layer: expected an integer, got '2.5'"));
  CHECK_THAT(parse_error("run:\n  seed: -1\n").what(),
             Catch::Contains("run.seed: expected a non-negative integer"));
  CHECK_THAT(parse_error("data:\n  shuffle: maybe\n").what(),
             Catch::Contains("data.shuffle: expected true or false, got 'maybe'"));
  CHECK_THAT(parse_error("optim:\n  lr: [1, 2]\n").what(),
             Catch::Contains("optim.lr: expected a single float, got a list"));
  CHECK_THAT(parse_error("optim:\n  lr: nan\n").what(), Catch::Contains("optim.lr"));
  CHECK_THAT(parse_error("optim:\n  lr:\n").what(),
             Catch::Contains("test.yaml:2: optim.lr: expected a number, got an empty value"));
  CHECK_THAT(parse_error("eval:\n  prompt:\n").hint(), Catch::Contains("\"\""));
}

TEST_CASE("config: a value out of range names key, file, line, value and range", "[config]") {
  CHECK(std::string(parse_error("run: {}\noptim:\n  beta1: 1.0\n").what()) ==
        "test.yaml:3: optim.beta1: 1.0 is out of range; allowed: [0, 1)");
  CHECK(std::string(parse_error("model:\n  n_layer: 0\n").what()) ==
        "test.yaml:2: model.n_layer: 0 is out of range; allowed: ≥ 1");
  CHECK_THAT(parse_error("optim:\n  lr: 0\n").what(), Catch::Contains("allowed: > 0"));
  CHECK_THAT(parse_error("train:\n  steps: 0\n").what(), Catch::Contains("train.steps"));
  CHECK_THAT(parse_error("checkpoint:\n  keep: 0\n").what(), Catch::Contains("checkpoint.keep"));
  CHECK_THAT(parse_error("run:\n  dir: \"\"\n").what(), Catch::Contains("run.dir: must not be empty"));
  CHECK_THAT(parse_error("model:\n  n_layer: 3000000000\n").what(),
             Catch::Contains("model.n_layer: '3000000000' does not fit in a 32-bit integer"));
  CHECK_THAT(parse_error("optim:\n  lr: 1e50\n").what(), Catch::Contains("32-bit float"));
}

TEST_CASE("config: a bad enum value lists the allowed values", "[config]") {
  const Error e = parse_error("optim:\n  schedule: cosin\n");
  CHECK(std::string(e.what()) ==
        "test.yaml:2: optim.schedule: unknown value 'cosin'; allowed: cosine, linear, constant, wsd");
  CHECK(e.hint() == "did you mean 'cosine'?");
  CHECK_THAT(parse_error("run:\n  device: gpu\n").what(), Catch::Contains("auto, cpu, cuda"));
  CHECK_THAT(parse_error("log:\n  level: verbose\n").what(),
             Catch::Contains("trace, debug, info, warn, error"));
  CHECK_THAT(parse_error("train:\n  on_nan: ignore\n").what(), Catch::Contains("stop, skip"));
  CHECK_THAT(parse_error("checkpoint:\n  resume: always\n").what(), Catch::Contains("never, auto"));
}

TEST_CASE("config: overrides apply, are type-checked, and later ones win", "[config]") {
  const std::string file = "optim:\n  lr: 1e-3\nmodel:\n  n_layer: 2\n";
  const Config c = parse_config(file, "o.yaml",
                                {"optim.lr=2e-3", "model.d_model=96", "optim.lr=3e-3",
                                 "eval.prompt=\"Hello: world # 1\"", "data.shuffle=false",
                                 "run.dir = runs/o"});
  CHECK(c.optim.lr == 3e-3f);
  CHECK(c.model.n_layer == 2);
  CHECK(c.model.d_model == 96);
  CHECK(c.eval.prompt == "Hello: world # 1");
  CHECK_FALSE(c.data.shuffle);
  CHECK(c.run.dir == "runs/o");

  CHECK_THAT(parse_error(file, {"optim.lr=abc"}).what(),
             Catch::StartsWith("--set optim.lr=abc: expected a number"));
  CHECK_THAT(parse_error(file, {"optim.beta2=1"}).what(),
             Catch::Contains("--set optim.beta2=1: 1 is out of range; allowed: [0, 1)"));
  CHECK_THAT(parse_error(file, {"optim.schedule=cosin"}).hint(), Catch::Contains("'cosine'"));
  CHECK_THAT(parse_error(file, {"eval.prompt=a: b"}).what(), Catch::Contains("got a map"));
}

TEST_CASE("config: malformed and unknown overrides are errors", "[config]") {
  const Error malformed = parse_error("run: {}\n", {"optim.lr"});
  CHECK_THAT(malformed.what(), Catch::Contains("--set optim.lr: malformed override"));
  CHECK_THAT(malformed.hint(), Catch::Contains("key=value"));
  CHECK_THAT(parse_error("run: {}\n", {"=3"}).what(), Catch::Contains("malformed"));

  const Error unknown = parse_error("run: {}\n", {"optim.lrr=3e-4"});
  CHECK(std::string(unknown.what()) == "--set optim.lrr=3e-4: unknown key 'optim.lrr'");
  CHECK(unknown.hint() == "did you mean 'optim.lr'?");
  const Error moe = parse_error("run: {}\n", {"moe.n_expert=8"});
  CHECK(std::string(moe.what()) == "--set moe.n_expert=8: unknown key 'moe.n_expert'");
  CHECK(moe.hint() == "did you mean 'moe.n_experts'?");
}

TEST_CASE("config: cross-key checks name both keys", "[config]") {
  const Error e = parse_error("model:\n  d_model: 100\n  n_head: 12\n");
  CHECK_THAT(e.what(), Catch::Contains("model.d_model (100, from test.yaml:2)") &&
                           Catch::Contains("model.n_head (12, from test.yaml:3)"));
  CHECK_THAT(e.hint(), Catch::Contains("96 or 108"));
  // An override can cause it too, and is named as the origin.
  CHECK_THAT(parse_error("run: {}\n", {"model.n_head=5"}).what(),
             Catch::Contains("model.n_head (5, from --set)"));
  // And an override can repair a file.
  CHECK(parse_config("model:\n  d_model: 100\n", "t.yaml", {"model.d_model=120"}).model.d_model ==
        120);
  CHECK_THAT(parse_error("model:\n  seq_len: 64\ntrain:\n  micro_batch: 2\n  batch_tokens: 1000\n")
                 .what(),
             Catch::Contains("train.batch_tokens (1000") && Catch::Contains("2 × 64 = 128"));
}

TEST_CASE("config: to_yaml reads back to an identical config", "[config]") {
  Config c;
  c.source = "weird\nname.yaml";
  c.run.dir = "runs/a: b # c";
  c.run.seed = std::numeric_limits<uint64_t>::max();
  c.data.train = "  leading spaces/*.bin";
  c.data.val = "";
  c.eval.prompt = "quote \" backslash \\ tab \t newline \n bell \x07 'single' é ✓";
  c.eval.tokenizer_dir = "true";  // a string that looks like a bool
  c.optim.lr = 0.1f;              // not exactly representable
  c.optim.eps = std::numeric_limits<float>::denorm_min();
  c.optim.beta2 = std::nextafter(1.0f, 0.0f);
  c.optim.weight_decay = std::numeric_limits<float>::max();
  c.model.init_std = 1.0f / 3.0f;
  c.train.batch_tokens = int64_t{1} << 40;
  c.train.micro_batch = 8;
  c.model.seq_len = 1024;
  c.optim.schedule = "constant";
  c.checkpoint.fallback = true;
  const std::string yaml = to_yaml(c);
  INFO(yaml);
  const Config back = parse_config(yaml, "resolved.yaml");
  CHECK(values_of(back) == values_of(c));
  CHECK(back.eval.prompt == c.eval.prompt);
  CHECK(back.run.dir == c.run.dir);
  CHECK(back.data.val.empty());
  CHECK(std::memcmp(&back.optim.eps, &c.optim.eps, sizeof(float)) == 0);
  CHECK(back.optim.beta2 == c.optim.beta2);
  CHECK(back.model.init_std == c.model.init_std);
  const std::string again = to_yaml(back);
  CHECK(again.substr(again.find("\nrun:")) == yaml.substr(yaml.find("\nrun:")));
  // Every key appears, sections in schema order.
  std::size_t last = 0;
  for (std::string_view section : schema::sections()) {
    const std::size_t at = yaml.find(fmt::format("\n{}:", section));
    REQUIRE(at != std::string::npos);
    CHECK(at > last);
    last = at;
  }
  for (const auto& spec : schema::keys())
    CHECK(yaml.find(fmt::format("\n  {}: ", spec.leaf())) != std::string::npos);
}

TEST_CASE("config: the Markdown reference lists every key with its default", "[config]") {
  const std::string md = config_reference_markdown();
  for (std::string_view section : schema::sections())
    CHECK(md.find(fmt::format("## `{}`", section)) != std::string::npos);
  for (const auto& spec : schema::keys()) {
    CAPTURE(spec.key);
    CHECK(md.find(fmt::format("| `{}` | {} | `{}` |", spec.key, schema::type_name(spec.type()),
                              schema::format_value(spec, Config{}))) != std::string::npos);
  }
  CHECK_THAT(md, Catch::Contains("| `optim.beta1` | float | `0.9` | [0, 1) |"));
  CHECK_THAT(md, Catch::Contains("cosine, linear, constant, wsd"));
}

TEST_CASE("config: moe may be absent, empty or null: a dense model", "[config]") {
  for (const char* ok : {"run: {}\n", "moe:\n", "moe: {}\n", "moe: ~\n", "moe: null\n"}) {
    CAPTURE(ok);
    const Config c = parse_config(ok, "m.yaml");
    CHECK(c.moe.n_experts == 0);
    CHECK(values_of(c) == values_of(Config{}));
  }
  const Error e = parse_error("moe:\n  n_expert: 8\n");
  CHECK(std::string(e.what()) == "test.yaml:2:3: unknown key 'moe.n_expert'");
  CHECK(e.hint() == "did you mean 'moe.n_experts'?");
  CHECK(parse_error("moe:\n  competition_rat: 0.1\n").hint() ==
        "did you mean 'moe.competition_rate'?");
  CHECK(parse_error("model:\n  n_experts: 8\n").hint() == "did you mean 'moe.n_experts'?");
}

TEST_CASE("config: every moe key parses", "[config]") {
  const Config c = parse_config(R"(
model:
  n_layer: 6
moe:
  n_experts: 16
  top_k: 4
  router: softmax_topk
  layers: "1, 3,5"
  expert_hidden: 320
  shared_experts: 1
  balance: switch
  balance_coef: 0.02
  z_loss_coef: 0.001
  competition_score: l2
  competition_rate: 0.1
  competition_warmup: 0
  competition_max_layers: 3
  router_coef: 0.01
  distill_theta: 0
  distill_target: topk
  diversity_coef: 0.0
  competition_balance_coef: 0.001
)",
                                "moe.yaml");
  const MoeSection& m = c.moe;
  CHECK(m.n_experts == 16);
  CHECK(m.top_k == 4);
  CHECK(m.router == "softmax_topk");
  CHECK(m.layers == "1, 3,5");
  CHECK(m.expert_hidden == 320);
  CHECK(m.shared_experts == 1);
  CHECK(m.balance == "switch");
  CHECK(m.balance_coef == 0.02f);
  CHECK(m.z_loss_coef == 0.001f);
  CHECK(m.competition_score == "l2");
  CHECK(m.competition_rate == 0.1f);
  CHECK(m.competition_warmup == 0.0f);
  CHECK(m.competition_max_layers == 3);
  CHECK(m.router_coef == 0.01f);
  CHECK(m.distill_theta == 0.0f);
  CHECK(m.distill_target == "topk");
  CHECK(m.diversity_coef == 0.0f);
  CHECK(m.competition_balance_coef == 0.001f);
  // A bare number and a bare list are scalars in YAML: one block, or several.
  CHECK(parse_config("model:\n  n_layer: 4\nmoe:\n  n_experts: 2\n  layers: 3\n", "a").moe.layers ==
        "3");
  CHECK(parse_config("model:\n  n_layer: 4\nmoe:\n  n_experts: 2\n  layers: 0,3\n", "a").moe.layers ==
        "0,3");
  // And they round-trip through the resolved YAML.
  const Config back = parse_config(to_yaml(c), "resolved.yaml");
  CHECK(values_of(back) == values_of(c));
}

TEST_CASE("config: moe enums and ranges are checked", "[config]") {
  const Error router = parse_error("moe:\n  router: compete\n");
  CHECK(std::string(router.what()) ==
        "test.yaml:2: moe.router: unknown value 'compete'; allowed: softmax_topk, competesmoe, "
        "sigmoid_topk");
  CHECK(router.hint() == "did you mean 'competesmoe'?");
  CHECK_THAT(parse_error("moe:\n  balance: aux\n").what(), Catch::Contains("entropy, switch"));
  CHECK_THAT(parse_error("moe:\n  competition_score: l1\n").what(),
             Catch::Contains("softplus_mean, l2"));
  CHECK_THAT(parse_error("moe:\n  distill_target: all\n").what(), Catch::Contains("full, topk"));

  const std::vector<std::pair<std::string, std::string>> out_of_range = {
      {"n_experts: -1", "≥ 0"},          {"top_k: 0", "≥ 1"},
      {"expert_hidden: -8", "≥ 0"},      {"shared_experts: -1", "≥ 0"},
      {"balance_coef: -0.1", "≥ 0"},     {"z_loss_coef: -1e-3", "≥ 0"},
      {"router_coef: -1", "≥ 0"},        {"diversity_coef: -1", "≥ 0"},
      {"competition_balance_coef: -1", "≥ 0"},
      {"competition_rate: 1.5", "[0, 1]"}, {"competition_rate: -0.1", "[0, 1]"},
      {"competition_warmup: 2", "[0, 1]"}, {"competition_max_layers: 0", "≥ 1"},
      {"distill_theta: -0.2", "≥ 0"},
  };
  for (const auto& [line, allowed] : out_of_range) {
    CAPTURE(line);
    const std::string key = "moe." + line.substr(0, line.find(':'));
    CHECK_THAT(parse_error("moe:\n  " + line + "\n").what(),
               Catch::StartsWith("test.yaml:2: " + key + ": ") &&
                   Catch::Contains("out of range; allowed: " + allowed));
  }
  // The limits themselves are allowed.
  CHECK_NOTHROW(parse_config("moe:\n  competition_rate: 1\n  competition_warmup: 1\n", "a"));
  CHECK_NOTHROW(parse_config("moe:\n  competition_rate: 0\n  competition_warmup: 0\n", "a"));
  CHECK_THAT(parse_error("moe:\n  layers: \"\"\n").what(), Catch::Contains("moe.layers: must not be empty"));
  CHECK_THAT(parse_error("moe:\n  layers: [0, 2]\n").what(),
             Catch::Contains("moe.layers: expected a single string, got a list"));
}

TEST_CASE("config: moe cross-key checks when there are experts", "[config]") {
  const Error k = parse_error("moe:\n  n_experts: 2\n  top_k: 3\n");
  CHECK(std::string(k.what()) == "test.yaml: moe.top_k (3, from test.yaml:3) must be at most "
                                 "moe.n_experts (2, from test.yaml:2)");
  CHECK_THAT(k.hint(), Catch::Contains("moe.top_k: 2"));
  CHECK_NOTHROW(parse_config("moe:\n  n_experts: 2\n  top_k: 2\n", "a"));
  CHECK_THAT(parse_error("moe:\n  n_experts: 1\n").what(),  // top_k defaults to 2
             Catch::Contains("moe.top_k (2, from default)"));

  const Error l = parse_error("model:\n  n_layer: 4\nmoe:\n  n_experts: 4\n  layers: 0,2,4\n");
  CHECK(std::string(l.what()) ==
        "test.yaml: moe.layers ('0,2,4', from test.yaml:5): in '0,2,4': block 4 does not exist: "
        "model.n_layer is 4 (blocks 0..3) (model.n_layer from test.yaml:2)");
  CHECK_THAT(l.hint(), Catch::Contains("every:N:OFFSET"));
  CHECK_THAT(parse_error("moe:\n  n_experts: 4\n  layers: 1,1\n").what(),
             Catch::Contains("block 1 is listed twice"));
  CHECK_THAT(parse_error("moe:\n  n_experts: 4\n  layers: every:0\n").what(),
             Catch::Contains("moe.layers ('every:0', from test.yaml:3)"));
  CHECK_THAT(parse_error("moe:\n  n_experts: 4\n  layers: alll\n").what(),
             Catch::Contains("'alll' is not a block index"));
  // An override can break it (naming --set) or repair it.
  CHECK_THAT(parse_error("moe:\n  n_experts: 4\n", {"model.n_layer=2", "moe.layers=3"}).what(),
             Catch::Contains("moe.layers ('3', from --set)") &&
                 Catch::Contains("model.n_layer from --set"));
  CHECK(parse_config("moe:\n  n_experts: 4\n  layers: 9\n", "a", {"moe.layers=every:2:1"})
            .moe.layers == "every:2:1");

  // Dense (n_experts 0): the moe keys are allowed but unused, so nothing is cross-checked.
  const Config dense = parse_config("model:\n  n_layer: 2\nmoe:\n  top_k: 5\n  layers: 7,7\n", "d");
  CHECK(dense.moe.n_experts == 0);
  CHECK(dense.moe.layers == "7,7");
  // ...until experts are switched on.
  CHECK_THAT(parse_error("model:\n  n_layer: 2\nmoe:\n  top_k: 9\n", {"moe.n_experts=8"}).what(),
             Catch::Contains("moe.top_k (9, from test.yaml:4)") &&
                 Catch::Contains("moe.n_experts (8, from --set)"));
  CHECK_THAT(parse_error("moe:\n  layers: 7,7\n", {"moe.n_experts=8"}).what(),
             Catch::Contains("block 7 is listed twice"));
}

TEST_CASE("config: malformed documents, duplicates, empty and missing files", "[config]") {
  CHECK_THAT(parse_error("optim:\n  lr: 1\n  lr: 2\n").what(),
             Catch::Contains("test.yaml:3:3: duplicate key 'optim.lr' (first set at line 2)"));
  CHECK_THAT(parse_error("optim:\n  lr: 1\nrun: {}\noptim:\n  eps: 1\n").what(),
             Catch::Contains("test.yaml:4:1: duplicate section 'optim'"));
  CHECK_THAT(parse_error("optim: 3\n").what(),
             Catch::Contains("section 'optim' must be a map of keys, got a value"));
  CHECK_THAT(parse_error("optim:\n  - lr\n").what(), Catch::Contains("got a list"));
  CHECK_THAT(parse_error("- a\n- b\n").what(), Catch::Contains("must be a map of sections"));
  CHECK_THAT(parse_error("optim:\n  lr: [1\n").what(), Catch::Contains("test.yaml:") &&
                                                          Catch::Contains("invalid YAML"));
  CHECK(std::string(parse_error("").what()) == "test.yaml: the config file is empty");
  CHECK_THAT(parse_error("# only a comment\n").what(), Catch::Contains("test.yaml: the config file is empty"));

  const Error missing = error_of([] { load_config("no/such/config.yaml"); });
  CHECK(std::string(missing.what()) == "no/such/config.yaml: config file not found");
  const auto dir = std::filesystem::temp_directory_path();
  CHECK_THAT(error_of([&] { load_config(dir.string()); }).what(),
             Catch::Contains(dir.string()) && Catch::Contains("directory"));
}

TEST_CASE("config: every file in configs/ loads", "[config]") {
  const std::filesystem::path dir = std::filesystem::path(COMPETELM_SOURCE_DIR) / "configs";
  std::size_t n = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    if (entry.path().extension() != ".yaml") continue;
    CAPTURE(entry.path().string());
    CHECK_NOTHROW(load_config(entry.path().string()));
    ++n;
  }
  CHECK(n >= 5);

  const Config tiny = load_config((dir / "tiny.yaml").string());
  CHECK(tiny.source == (dir / "tiny.yaml").string());
  CHECK(tiny.model.n_layer == 2);
  CHECK(tiny.model.d_model == 64);
  CHECK(tiny.model.seq_len == 32);
  CHECK(tiny.train.steps == 20);
  CHECK(tiny.eval.val_batches == 2);
  CHECK(tiny.run.dir == "runs/tiny");
  CHECK(tiny.moe.n_experts == 0);
  const Config gpt2 = load_config((dir / "gpt2-124m.yaml").string());
  CHECK(gpt2.train.batch_tokens == 524288);
  CHECK(gpt2.optim.warmup_steps == 700);
  CHECK(gpt2.moe.n_experts == 0);

  // The MoE configs: the dense shapes with experts, CompeteSMoE routing.
  const Config tiny_moe = load_config((dir / "tiny-moe.yaml").string());
  CHECK(tiny_moe.model.n_layer == tiny.model.n_layer);
  CHECK(tiny_moe.model.d_model == tiny.model.d_model);
  CHECK(tiny_moe.train.steps == tiny.train.steps);
  CHECK(tiny_moe.moe.n_experts == 4);
  CHECK(tiny_moe.moe.top_k == 2);
  CHECK(tiny_moe.moe.router == "competesmoe");
  CHECK(tiny_moe.run.dir != tiny.run.dir);
  const Config quick = load_config((dir / "quickstart.yaml").string());
  CHECK(quick.model.n_layer == 4);
  CHECK(quick.model.d_model == 128);
  CHECK(quick.train.steps == 600);
  CHECK(quick.train.batch_tokens == 1024);
  CHECK(quick.moe.n_experts == 8);
  CHECK(quick.moe.top_k == 2);
  CHECK(quick.moe.router == "competesmoe");
  CHECK(quick.moe.layers == "all");
  CHECK(load_config((dir / "quickstart.yaml").string(), {"moe.router=softmax_topk"}).moe.router ==
        "softmax_topk");
  const Config gpt2_moe = load_config((dir / "gpt2-124m-moe.yaml").string());
  CHECK(gpt2_moe.model.n_layer == 12);
  CHECK(gpt2_moe.model.d_model == 768);
  CHECK(gpt2_moe.train.batch_tokens == 524288);
  CHECK(gpt2_moe.moe.n_experts == 8);
  CHECK(gpt2_moe.moe.top_k == 2);
  CHECK(gpt2_moe.moe.layers == "all");
  CHECK(gpt2_moe.moe.router == "competesmoe");
  CHECK(gpt2_moe.moe.competition_rate == MoeSection{}.competition_rate);
  CHECK(gpt2_moe.run.dir != gpt2.run.dir);
}

TEST_CASE("config: edit distance and suggestions", "[config]") {
  CHECK(edit_distance("", "") == 0);
  CHECK(edit_distance("lr", "lrr") == 1);
  CHECK(edit_distance("wramup", "warmup") == 1);  // a swap counts once
  CHECK(edit_distance("kitten", "sitting") == 3);
  CHECK(close_enough("optimizer", "optim"));
  CHECK_FALSE(close_enough("zebra", "seed"));
  const std::vector<std::string_view> names = {"cosine", "linear", "constant"};
  CHECK(closest_match("constnat", names) == std::optional<std::string>("constant"));
  CHECK_FALSE(closest_match("xyz", names).has_value());
}
