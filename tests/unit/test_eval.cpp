// Evaluation of saved models (src/eval, competelm-eval, competelm-inspect) on checkpoints
// written by training the tiny MoE config on synthetic shards: the evaluated validation loss
// equals the trainer's own val_loss, bits per byte and perplexity follow from the loss, the
// routing counts add up, multiple choice picks the ending an independent forward scores
// best, and bad input is refused with messages naming the file.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <numbers>
#include <sstream>

#include "checkpoint/checkpoint.hpp"
#include "core/error.hpp"
#include "core/json.hpp"
#include "eval/inspect.hpp"
#include "eval/lm_eval.hpp"
#include "eval/multiple_choice.hpp"
#include "model/from_config.hpp"
#include "model/saved_model.hpp"
#include "tokenizer/byte_symbols.hpp"
#include "train/trainer.hpp"
#include "train_fixture.hpp"

using namespace competelm;
using namespace competelm::testing;
namespace fs = std::filesystem;

namespace {

const std::vector<std::string> kMoe = {"moe.n_experts=4", "moe.top_k=2", "moe.router=competesmoe",
                                       "moe.competition_rate=0.5", "moe.competition_warmup=0.1"};

// Trains the tiny CompeteSMoE config (8 steps, checkpoints + validation at 4 and 8).
Config train_tiny_moe(const TempDir& tmp, std::vector<std::string> extra = {}) {
  write_pattern_shards(tmp.str(), 64, 20000, 2000);
  std::vector<std::string> o = kMoe;
  o.insert(o.end(), extra.begin(), extra.end());
  Config cfg = tiny_config(tmp.str(), o);
  TrainerOptions q;
  q.quiet = true;
  REQUIRE(train(cfg, q) == 0);
  return cfg;
}

// A byte-level GPT-2-format tokenizer: byte b is token b (no merge ever applies to ASCII), so
// text of bytes below 64 maps onto the tiny model's 64-token vocabulary and every token is
// one byte.
Gpt2Tokenizer write_byte_tokenizer(const std::string& dir) {
  const ByteSymbols sym;
  std::string json = "{";
  for (int b = 0; b < 256; ++b) json += fmt::format("\"\\u{:04x}\": {}, ", uint32_t(sym.symbol(uint8_t(b))), b);
  json += "\"\\u00f0\\u00f1\": 256}";
  std::ofstream(dir + "/encoder.json") << json;
  std::ofstream(dir + "/vocab.bpe") << "#version: 0.2\n\u00f0 \u00f1\n";
  return Gpt2Tokenizer::load(dir + "/encoder.json", dir + "/vocab.bpe");
}

double meta_val_loss(const std::string& ckpt) {
  std::ifstream in(ckpt + "/meta.json");
  const std::string text((std::istreambuf_iterator<char>(in)), {});
  return parse_json(text, "meta.json").at("val_loss").as_double();
}

// Runs a command, returns its exit status; stdout+stderr go to `out`.
int run(const std::string& cmd, std::string& out, const std::string& scratch) {
  const std::string log = scratch + "/cmd.log";
  const int rc = std::system((cmd + " > " + log + " 2>&1").c_str());
  std::ifstream in(log);
  out.assign((std::istreambuf_iterator<char>(in)), {});
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

const std::string kBin = std::string(COMPETELM_BUILD_DIR) + "/bin/";

// The text of the pattern the synthetic shards follow (x → 3x+1 mod 64) as bytes.
std::string pattern_text(uint32_t x, int n) {
  std::string s;
  for (int i = 0; i < n; ++i) {
    x = (x * 3 + 1) % 64;
    s.push_back(char(x));
  }
  return s;
}

}  // namespace

TEST_CASE("eval: validation loss equals the trainer's val_loss and bpb, ppl and routing add up", "[eval]") {
  TempDir tmp("eval-val");
  const Config cfg = train_tiny_moe(tmp);
  const Gpt2Tokenizer tok = write_byte_tokenizer(tmp.str());
  const auto ckpts = list_checkpoints(cfg.run.dir);
  REQUIRE(ckpts.size() == 2);  // steps 4 and 8, each right after a validation
  const auto logged = metric_values(cfg.run.dir + "/metrics.jsonl", "val_loss");
  REQUIRE(logged.size() == 2);

  for (size_t c = 0; c < ckpts.size(); ++c) {
    SavedModel sm = load_saved_model(ckpts[c], cfg.train.micro_batch, cfg.model.seq_len, "cpu", 1);
    const LmEvalOptions opts = validation_options(sm.config);
    const LmEvalResult r = evaluate_lm(*sm.model, opts, &tok);
    const double trainer = meta_val_loss(ckpts[c]);
    CAPTURE(c, r.total.loss, trainer, logged[c]);
    CHECK(std::abs(r.total.loss - trainer) <= 1e-5 * trainer);
    CHECK(std::abs(r.total.loss - std::stod(logged[c])) <= 1e-5 * trainer);

    const int64_t N = int64_t(cfg.eval.val_batches) * cfg.train.micro_batch * cfg.model.seq_len;
    CHECK(r.total.tokens == N);
    CHECK(r.total.batches == cfg.eval.val_batches);
    CHECK(r.total.perplexity == Approx(std::exp(r.total.loss)).epsilon(1e-12));
    REQUIRE(r.total.bytes);
    CHECK(*r.total.bytes == uint64_t(N));  // every id below 64 decodes to one byte
    REQUIRE(r.total.bpb);
    CHECK(*r.total.bpb == Approx(r.total.total_nats / std::numbers::ln2 / double(N)).epsilon(1e-12));
    CHECK(*r.total.bpb == Approx(r.total.loss / std::numbers::ln2).epsilon(1e-6));
    CHECK(r.tokens_per_s > 0);

    REQUIRE(r.routing.size() == 2);  // both blocks are MoE layers
    for (const RoutingLayerEval& L : r.routing) {
      int64_t sum = 0;
      int dead = 0;
      double frac = 0;
      for (size_t e = 0; e < L.tokens_per_expert.size(); ++e) {
        sum += L.tokens_per_expert[e];
        dead += L.tokens_per_expert[e] == 0;
        frac += L.fraction(int(e));
      }
      CHECK(L.tokens == N);
      CHECK(sum == N * 2);  // N · K
      CHECK(L.dead == dead);
      CHECK(frac == Approx(1.0));
      CHECK(L.entropy > 0.0);
      CHECK(L.entropy <= std::log(4.0) + 1e-9);
      REQUIRE(L.overlap);  // competesmoe: measured by a forward with every layer competing
      CHECK(*L.overlap >= 0.0);
      CHECK(*L.overlap <= 1.0);
    }
  }

  // The same through the tool's JSON (default data = the run's data.val).
  std::string out;
  const std::string json = tmp.str() + "/eval.json";
  REQUIRE(run(kBin + "competelm-eval " + ckpts[1] + " --device cpu --threads 1 --tokenizer-dir " + tmp.str() + " --json " + json,
              out, tmp.str()) == 0);
  std::ifstream in(json);
  const std::string text((std::istreambuf_iterator<char>(in)), {});
  const JsonValue j = parse_json(text, json);
  CHECK(std::abs(j.at("lm").at("loss").as_double() - meta_val_loss(ckpts[1])) <= 1e-5 * meta_val_loss(ckpts[1]));
  CHECK(j.at("routing").at("layers").as_array().size() == 2);
  CHECK(out.find("perplexity") != std::string::npos);
  CHECK(out.find("tok/s") != std::string::npos);
}

TEST_CASE("eval: dense and softmax_topk models report no routing or no overlap and text files are evaluated whole",
          "[eval]") {
  TempDir tmp("eval-text");
  write_pattern_shards(tmp.str(), 64, 4000, 2000);
  const Gpt2Tokenizer tok = write_byte_tokenizer(tmp.str());
  // GPT-2's vocabulary size: text documents start with end-of-text (50256).
  Config cfg = tiny_config(tmp.str(), {"model.vocab_size=50257", "moe.n_experts=4", "moe.top_k=2",
                                       "moe.router=softmax_topk"});
  auto backend = make_backend("cpu", 1);
  GPT2 model(*backend, model_shape(cfg), model_init(cfg), 4, 16, model_moe(cfg));
  model.init_weights(3);

  // 100 bytes → end-of-text + 100 tokens → 100 predictions: 4×16, then 2×16, then 1×4.
  std::string text;
  for (int i = 0; i < 100; ++i) text.push_back(char(32 + (i * 7) % 30));
  std::ofstream(tmp.str() + "/a.txt") << text;
  LmEvalOptions o;
  o.B = 4;
  o.T = 16;
  o.sources.push_back({EvalSource::Kind::Text, tmp.str() + "/a.txt", 0});
  const LmEvalResult r = evaluate_lm(model, o, &tok);
  CHECK(r.total.tokens == 100);
  CHECK(r.total.batches == 3);
  REQUIRE(r.total.bytes);
  CHECK(*r.total.bytes == 100);
  REQUIRE(r.routing.size() == 2);
  CHECK_FALSE(r.routing[0].overlap);  // no competition for softmax_topk: n/a
  CHECK(r.routing[0].tokens == 100);

  CHECK(r.total.loss > 0);
  CHECK(r.total.perplexity == Approx(std::exp(r.total.loss)));

  // Two sources: each counted on its own, the total token-weighted.
  o.sources.push_back({EvalSource::Kind::Text, tmp.str() + "/a.txt", 1});
  const LmEvalResult two = evaluate_lm(model, o, &tok);
  REQUIRE(two.sources.size() == 2);
  CHECK(two.sources[0].tokens == 100);
  CHECK(*two.sources[0].bytes == 100);
  CHECK(two.sources[1].tokens == 64);  // one batch of 4 × 16
  CHECK(*two.sources[1].bytes == 64);
  CHECK(two.total.tokens == 164);
  CHECK(*two.total.bytes == 164);
  CHECK(two.total.loss == Approx((two.sources[0].total_nats + two.sources[1].total_nats) / 164));
  CHECK(*two.total.bpb == Approx(two.total.total_nats / std::numbers::ln2 / 164));
  o.sources.pop_back();

  // A model whose vocabulary lacks end-of-text (which starts every text document) refuses it.
  Config small = tiny_config(tmp.str());
  GPT2 smodel(*backend, model_shape(small), model_init(small), 4, 16);
  smodel.init_weights(3);
  try {
    evaluate_lm(smodel, o, &tok);
    FAIL("expected an error");
  } catch (const Error& e) {
    CHECK_THAT(e.what(), Catch::Contains("a.txt") && Catch::Contains("50256"));
  }

  // A dense model: no routing section.
  LmEvalOptions so = validation_options(small);
  so.sources[0].batches = 0;  // one pass: 2000 tokens → 124 windows of 16+1 → 31 batches
  const LmEvalResult d = evaluate_lm(smodel, so, nullptr);
  CHECK(d.routing.empty());
  CHECK(d.total.batches == 31);
  CHECK_FALSE(d.total.bpb);  // no tokenizer: bits per byte unknown
  CHECK_FALSE(d.total.wrapped);
  so.sources[0].batches = 40;
  CHECK(evaluate_lm(smodel, so, nullptr).total.wrapped);
}

TEST_CASE("eval: multiple choice picks the ending with the lowest loss of an independent forward", "[eval]") {
  TempDir tmp("eval-mc");
  // Longer training, so the model has learned the pattern the shards follow.
  const Config cfg = train_tiny_moe(tmp, {"train.steps=30", "checkpoint.every=0", "eval.every=0"});
  const Gpt2Tokenizer tok = write_byte_tokenizer(tmp.str());
  SavedModel sm = load_saved_model(cfg.run.dir, 4, 0, "cpu", 1);
  const int T = sm.config.model.seq_len;  // 16

  // Items over bytes below 64 (the model's vocabulary). Pattern items: the context follows
  // x → 3x+1 (mod 64) and ends on byte 53, whose successor is 32 (' ': no joining space is
  // added); the right ending continues the pattern, the wrong ones are scrambled.
  const std::string ctx = pattern_text(0, 40);
  std::vector<std::string> lines;
  auto quoted = [](const std::string& s) { return json_quote(s); };
  std::string ctx53 = ctx;
  while (uint32_t(uint8_t(ctx53.back())) != 53) ctx53 += pattern_text(uint32_t(uint8_t(ctx53.back())), 1);
  const std::string right = pattern_text(53, 6);
  REQUIRE(right[0] == ' ');
  const std::vector<std::string> wrong = {" !#%')", " ?>=<;", " 0000*"};
  for (int label = 0; label < 3; ++label) {
    std::vector<std::string> endings = wrong;
    endings.insert(endings.begin() + label, right);
    std::string arr = "[";
    for (size_t e = 0; e < endings.size(); ++e) {
      if (e) arr += ',';
      arr += quoted(endings[e]);
    }
    lines.push_back("{\"ctx\": " + quoted(ctx53) + ", \"endings\": " + arr + "], \"label\": " +
                    std::to_string(label) + "}");
  }
  // Ordinary items (joined by a space), one with "context", 5 endings (> B = 4: chunked).
  lines.push_back(R"({"context": "0123", "endings": ["4567", "!!!!", "89:;<=>?0123", "?"], "label": 0})");
  lines.push_back(R"J({"ctx": "((((", "endings": ["))))", "()()", ")", "**", "++++++"], "label": 4})J");
  lines.push_back("");  // blank lines are skipped
  std::string file = tmp.str() + "/mc.jsonl";
  {
    std::ofstream out(file);
    for (const auto& l : lines) out << l << "\n";
  }
  const std::vector<McItem> items = read_mc_jsonl(file);
  REQUIRE(items.size() == 5);
  CHECK(items[3].ctx == "0123");
  CHECK(items[4].endings.size() == 5);

  const McResult res = evaluate_mc(*sm.model, 4, T, tok, items);
  REQUIRE(res.items.size() == 5);
  for (int i = 0; i < 3; ++i) {
    CAPTURE(i, res.items[i].sum_loss);
    CHECK(res.items[i].pred_sum == i);  // the model learned the pattern
    CHECK(res.items[i].pred_norm == i);
  }
  // Independently: each ending alone (B = 1), tokens built by hand, losses read back.
  for (size_t i = 0; i < items.size(); ++i) {
    const McItem& it = items[i];
    std::vector<double> sums, means;
    for (const std::string& e : it.endings) {
      const bool space = it.ctx.back() != ' ' && e.front() != ' ';
      std::vector<int32_t> seq;
      for (char ch : it.ctx) seq.push_back(ch);
      if (space) seq.push_back(' ');
      const size_t n_end = e.size() + (space ? 1 : 0);
      for (char ch : e) seq.push_back(ch);
      if (seq.size() > size_t(T) + 1) seq.erase(seq.begin(), seq.end() - (T + 1));  // cut from the left
      const int n = int(seq.size()) - 1;
      sm.model->forward(seq.data(), seq.data() + 1, 1, n);
      const std::vector<float> losses = sm.model->losses_host();
      double sum = 0;
      for (int t = n - int(n_end); t < n; ++t) sum += losses[t];
      sums.push_back(sum);
      means.push_back(sum / double(n_end));
    }
    const auto argmin = [](const std::vector<double>& v) { return int(std::min_element(v.begin(), v.end()) - v.begin()); };
    CAPTURE(i, sums, res.items[i].sum_loss);
    CHECK(res.items[i].pred_sum == argmin(sums));
    CHECK(res.items[i].pred_norm == argmin(means));
    for (size_t e = 0; e < sums.size(); ++e) CHECK(res.items[i].sum_loss[e] == Approx(sums[e]).epsilon(1e-4));
  }
  CHECK(res.acc() == Approx(double(res.correct) / 5));
  CHECK(res.correct >= 3);
  CHECK(res.correct_norm >= 3);

  // The long context is cut from the left to seq_len + 1 tokens.
  const McSequence s = mc_sequence(tok, ctx53, right, T);
  CHECK(s.tokens.size() == size_t(T) + 1);
  CHECK(s.ending_tokens == int(right.size()));
  CHECK(s.tokens.back() == int32_t(right.back()));

  // The tool reports the same accuracies.
  std::string out;
  REQUIRE(run(kBin + "competelm-eval " + cfg.run.dir + " --no-lm --device cpu --threads 1 --micro-batch 4 --tokenizer-dir " +
                  tmp.str() + " --mc " + file + " --json -",
              out, tmp.str()) == 0);
  const auto brace = out.rfind("\n{");
  REQUIRE(brace != std::string::npos);
  const JsonValue j = parse_json(out.substr(brace + 1), "stdout");
  CHECK(j.at("mc").at("correct").as_int64() == res.correct);
  CHECK(j.at("mc").at("correct_norm").as_int64() == res.correct_norm);
  CHECK(j.at("mc").at("items").as_int64() == 5);
}

TEST_CASE("eval: malformed multiple-choice files are errors naming FILE:LINE", "[eval]") {
  TempDir tmp("eval-mc-bad");
  const std::string f = tmp.str() + "/bad.jsonl";
  const std::string good = R"({"ctx": "a", "endings": ["b", "c"], "label": 1})";
  auto expect_error = [&](const std::string& second_line, const std::string& what) {
    std::ofstream(f) << good << "\n" << second_line << "\n";
    try {
      read_mc_jsonl(f);
      FAIL("no error for: " << second_line);
    } catch (const Error& e) {
      CAPTURE(e.what());
      CHECK_THAT(e.what(), Catch::Contains(f + ":2") && Catch::Contains(what));
    }
  };
  expect_error(R"({"ctx": "a", "endings": ["b", "c"], "label": 1)", "offset");  // unterminated object
  expect_error(R"({"endings": ["b", "c"], "label": 1})", "\"ctx\"");
  expect_error(R"({"ctx": "a", "label": 1})", "\"endings\"");
  expect_error(R"({"ctx": "a", "endings": ["b", "c"]})", "\"label\"");
  expect_error(R"({"ctx": "a", "endings": ["b", "c"], "label": 2})", "out of range");
  expect_error(R"({"ctx": "a", "endings": ["b", "c"], "label": -1})", "label");
  expect_error(R"({"ctx": "a", "endings": ["b", "c"], "label": "x"})", "label");
  expect_error(R"({"ctx": "a", "endings": ["b"], "label": 0})", "at least 2");
  expect_error(R"({"ctx": 5, "endings": ["b", "c"], "label": 0})", "ctx");
  std::ofstream(f) << good << "\n" << R"({"context": "a", "endings": ["b", "c"], "label": "0"})" << "\n";
  const auto items = read_mc_jsonl(f);
  REQUIRE(items.size() == 2);
  CHECK(items[1].label == 0);
  CHECK(items[1].line == 2);
  CHECK_THROWS_WITH(read_mc_jsonl(tmp.str() + "/missing.jsonl"), Catch::Contains("missing.jsonl"));
}

TEST_CASE("eval and inspect: a wrong path or a corrupt checkpoint is an error naming it and --help works", "[eval]") {
  TempDir tmp("eval-errors");
  const Config cfg = train_tiny_moe(tmp, {"train.steps=4", "checkpoint.every=0", "eval.every=0"});
  const auto ckpts = list_checkpoints(cfg.run.dir);
  REQUIRE(ckpts.size() == 1);
  std::string out;
  for (const char* tool : {"competelm-eval", "competelm-inspect"}) {
    CAPTURE(tool);
    const std::string missing = tmp.str() + "/no_such_run";
    CHECK(run(kBin + tool + " " + missing, out, tmp.str()) == 2);
    CHECK_THAT(out, Catch::Contains("error") && Catch::Contains(missing));
    CHECK(run(kBin + tool + " --help", out, tmp.str()) == 0);
    CHECK_THAT(out, Catch::Contains("usage:") && Catch::Contains("CHECKPOINT"));
  }
  CHECK_THAT(out, Catch::Contains("--tensors"));
  CHECK(run(kBin + "competelm-eval --help", out, tmp.str()) == 0);
  CHECK_THAT(out, Catch::Contains("acc_norm") && Catch::Contains("bpb"));

  // Flip one byte in model.bin: both tools refuse the checkpoint, naming the file.
  const std::string bin = ckpts[0] + "/model.bin";
  {
    std::fstream f(bin, std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(4096);
    char c = 0;
    f.read(&c, 1);
    c ^= 0x10;
    f.seekp(4096);
    f.write(&c, 1);
  }
  for (const char* tool : {"competelm-eval", "competelm-inspect"}) {
    CAPTURE(tool, out);
    CHECK(run(kBin + tool + " " + cfg.run.dir, out, tmp.str()) == 2);
    CHECK_THAT(out, Catch::Contains("model.bin"));
  }
  CHECK_THROWS_WITH(load_saved_model(ckpts[0], 1), Catch::Contains("model.bin"));
}

TEST_CASE("inspect: tensors, shapes, parameter counts and the step's metrics, --json parses", "[eval]") {
  TempDir tmp("eval-inspect");
  const Config cfg = train_tiny_moe(tmp, {"train.steps=4", "checkpoint.every=0", "eval.every=2"});
  const auto ckpts = list_checkpoints(cfg.run.dir);
  REQUIRE(ckpts.size() == 1);

  // What the model built from the config expects, by name.
  auto backend = make_backend("cpu", 1);
  GPT2 model(*backend, model_shape(cfg), model_init(cfg), 1, 1, model_moe(cfg));
  std::map<std::string, std::vector<int64_t>> expected;
  for (const TensorSpec& s : model.params().specs()) expected[s.name] = s.shape;

  std::string out;
  REQUIRE(run(kBin + "competelm-inspect " + cfg.run.dir + " --json --tensors", out, tmp.str()) == 0);
  const JsonValue j = parse_json(out, "competelm-inspect --json");
  CHECK(j.at("step").as_int64() == 4);
  CHECK(j.at("tokens_seen").as_int64() == 4 * 128);
  CHECK(j.at("parameters").as_uint64() == model.num_parameters());
  CHECK(j.at("active_parameters").as_uint64() == model.num_active_parameters());
  CHECK(j.at("active_parameters").as_uint64() < model.num_parameters());  // top-2 of 4 experts
  CHECK(j.at("tensor_count").as_uint64() == expected.size());
  const auto& tensors = j.at("tensors").as_array();
  REQUIRE(tensors.size() == expected.size());
  const Checkpoint ck(ckpts[0]);
  const auto loaded = ck.read_tensors("model.bin");
  uint64_t total = 0;
  for (const JsonValue& t : tensors) {
    const std::string& name = t.at("name").as_string();
    CAPTURE(name);
    REQUIRE(expected.count(name));
    std::vector<int64_t> shape;
    for (const JsonValue& d : t.at("shape").as_array()) shape.push_back(d.as_int64());
    CHECK(shape == expected[name]);
    total += t.at("numel").as_uint64();
    const LoadedTensor& lt = loaded.at(name);
    CHECK(t.at("checksum").as_string() ==
          fmt::format("{:016x}", checksum64(lt.data.data(), lt.data.size() * sizeof(float))));
  }
  CHECK(total == model.num_parameters());
  CHECK(j.at("files").as_array().size() == ck.files().size());
  const JsonValue& m = j.at("metrics");
  CHECK(m.at("step").as_int64() == 4);
  CHECK(m.at("val_loss").as_double() == Approx(meta_val_loss(ckpts[0])));
  CHECK(j.at("config_yaml").as_string().find("n_experts: 4") != std::string::npos);

  REQUIRE(run(kBin + "competelm-inspect " + ckpts[0] + " --tensors", out, tmp.str()) == 0);
  CHECK_THAT(out, Catch::Contains(fmt::format("tensors      {} in model.bin", expected.size())));
  CHECK_THAT(out, Catch::Contains("blocks.1.moe.experts.fc.weight") && Catch::Contains("(4, 64, 32)"));
  CHECK_THAT(out, Catch::Contains("metrics      step 4"));
}
