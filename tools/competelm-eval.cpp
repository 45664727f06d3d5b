// competelm-eval CHECKPOINT [--shards GLOB]... [--text FILE]... [--batches N] [--mc FILE.jsonl] [--json OUT|-]
// Evaluates a saved model: validation loss / perplexity / bits per byte, the MoE layers'
// routing statistics, and multiple-choice accuracy on HellaSwag-style JSONL.
#include <cstdio>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>

#include <fmt/format.h>

#include "config/config.hpp"
#include "core/cli.hpp"
#include "core/error.hpp"
#include "eval/eval_report.hpp"
#include "eval/lm_eval.hpp"
#include "eval/multiple_choice.hpp"
#include "model/saved_model.hpp"
#include "moe/moe_options.hpp"

using namespace competelm;

namespace {

constexpr const char* kDescription =
    "Evaluates a saved model (a checkpoint directory, or a run directory: its newest checkpoint).\n"
    "\n"
    "Language modelling: the mean next-token cross-entropy of the LM head (nats per token; the\n"
    "MoE aux losses are not included), perplexity = exp(loss), and bits per byte\n"
    "bpb = Σ nats / ln 2 / Σ UTF-8 bytes of the predicted tokens (each token decoded with the\n"
    "GPT-2 tokenizer; end-of-text counts 0 bytes). With no --shards/--text it reads the run's\n"
    "data.val exactly as the trainer's validation does (no shuffle, B = train.micro_batch,\n"
    "T = model.seq_len, eval.val_batches batches), so the loss equals the val_loss the trainer\n"
    "logged for the same checkpoint. --text files are tokenized on the fly (one document each)\n"
    "and evaluated whole unless --batches is given.\n"
    "\n"
    "Routing (MoE models), over the same tokens: tokens per expert and their share of N·K,\n"
    "dead experts (no token at all), mean router entropy, and for the competesmoe router the\n"
    "router-competition agreement: a second forward with every layer competing, mean\n"
    "|router top-K ∩ competition top-K| / K.\n"
    "\n"
    "Multiple choice (--mc): one JSON object per line, {\"ctx\": ..., \"endings\": [...], \"label\": i}\n"
    "(\"context\" also accepted). Each ending is scored by the loss of its tokens given the\n"
    "context (joined by a space; cut from the left to seq_len):\n"
    "  acc      = share of items whose lowest TOTAL (summed, unnormalised) ending loss is the label\n"
    "  acc_norm = share of items whose lowest MEAN loss per ending token (length-normalised) is the label\n"
    "\n"
    "Output: a table on stdout (stderr with --json -); --json writes the same numbers as JSON.";

std::string read_text_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("{}: cannot read", path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

int parse_int(const Cli& cli, const std::string& name, int fallback, int min) {
  if (!cli.has(name)) return fallback;
  const std::string s = cli.get(name);
  size_t used = 0;
  int v = 0;
  try {
    v = std::stoi(s, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != s.size() || s.empty()) fail("--{}: '{}' is not an integer", name, s);
  if (v < min) fail("--{}: {} must be ≥ {}", name, v, min);
  return v;
}

int main_eval(int argc, char** argv) {
  Cli cli("competelm-eval",
          "CHECKPOINT [--shards GLOB]... [--text FILE]... [--batches N] [--micro-batch B] [--seq-len T] "
          "[--mc FILE.jsonl] [--json OUT|-] [--device cpu|cuda|auto] [--tokenizer-dir DIR]",
          kDescription);
  cli.positional("CHECKPOINT", "checkpoint directory (run/checkpoints/step_N) or run directory (newest checkpoint)");
  cli.option("shards", "GLOB", "token shards to evaluate (default: the run config's data.val)", true);
  cli.option("text", "FILE", "raw UTF-8 text file to evaluate, tokenized on the fly", true);
  cli.option("batches", "N", "micro-batches per source; 0 = all the data (default: eval.val_batches for shards, all for text)");
  cli.option("micro-batch", "B", "sequences per forward (default: train.micro_batch)");
  cli.option("seq-len", "T", "tokens per sequence, ≤ model.seq_len (default: model.seq_len)");
  cli.option("mc", "FILE.jsonl", "multiple-choice items (HellaSwag-style JSONL)");
  cli.option("no-lm", "", "skip the language-modelling and routing evaluation (e.g. with --mc only)");
  cli.option("json", "OUT|-", "also write the results as JSON to OUT (- = stdout; the table then goes to stderr)");
  cli.option("device", "cpu|cuda|auto", "compute device (default: auto)");
  cli.option("threads", "N", "CPU threads (default: all cores)");
  cli.option("tokenizer-dir", "DIR", "GPT-2 tokenizer files encoder.json + vocab.bpe (default: eval.tokenizer_dir)");
  if (!cli.parse(argc, argv)) return 0;

  // The config decides the defaults of B and T, which the model is allocated for.
  const std::string dir = resolve_checkpoint_dir(cli.get("CHECKPOINT"));
  const Config cfg = parse_config(read_text_file(dir + "/config.yaml"), dir + "/config.yaml");
  const int B = parse_int(cli, "micro-batch", cfg.train.micro_batch, 1);
  const int T = parse_int(cli, "seq-len", cfg.model.seq_len, 1);
  const int batches = parse_int(cli, "batches", -1, 0);  // -1: the per-kind default
  const int threads = parse_int(cli, "threads", 0, 0);
  const std::string device = cli.get("device", "auto");
  SavedModel sm = load_saved_model(dir, B, T, device, threads);

  const bool want_lm = !cli.has("no-lm");
  LmEvalOptions lo;
  lo.B = B;
  lo.T = T;
  lo.seed = cfg.run.seed;
  for (const std::string& g : cli.all("shards"))
    lo.sources.push_back({EvalSource::Kind::Shards, g, batches >= 0 ? batches : cfg.eval.val_batches});
  for (const std::string& f : cli.all("text"))
    lo.sources.push_back({EvalSource::Kind::Text, f, batches >= 0 ? batches : 0});
  if (want_lm && lo.sources.empty()) {
    if (cfg.data.val.empty())
      fail_hint("give --shards GLOB or --text FILE", "{}/config.yaml: data.val is empty: nothing to evaluate", dir);
    lo.sources.push_back({EvalSource::Kind::Shards, cfg.data.val, batches >= 0 ? batches : cfg.eval.val_batches});
  }

  // The tokenizer: needed for text and multiple choice; for shards only for bits per byte.
  const std::string tok_dir = cli.get("tokenizer-dir", cfg.eval.tokenizer_dir);
  const bool need_tokenizer = cli.has("mc") || (want_lm && !cli.all("text").empty());
  std::optional<Gpt2Tokenizer> tokenizer;
  try {
    tokenizer.emplace(Gpt2Tokenizer::load(tok_dir + "/encoder.json", tok_dir + "/vocab.bpe"));
  } catch (const Error& e) {
    if (need_tokenizer) throw;
    fmt::print(stderr, "competelm-eval: warning: no tokenizer ({}): bits per byte is n/a\n", e.what());
  }

  EvalReport rep;
  rep.checkpoint = sm.dir;
  rep.step = sm.step;
  rep.device = sm.backend->name();
  rep.router = sm.model->num_moe_layers() > 0 ? router_name(sm.model->moe().options.router) : "";
  rep.B = B;
  rep.T = T;
  if (want_lm) rep.lm = evaluate_lm(*sm.model, lo, tokenizer ? &*tokenizer : nullptr);
  if (cli.has("mc")) {
    rep.mc_file = cli.get("mc");
    rep.mc = evaluate_mc(*sm.model, B, T, *tokenizer, read_mc_jsonl(rep.mc_file));
  }

  const std::string json_out = cli.get("json");
  std::fputs(eval_table(rep).c_str(), json_out == "-" ? stderr : stdout);
  if (!json_out.empty()) {
    const std::string json = eval_json(rep) + "\n";
    if (json_out == "-") {
      std::fputs(json.c_str(), stdout);
    } else {
      std::ofstream out(json_out, std::ios::trunc);
      if (!(out << json) || !(out.flush())) fail("{}: cannot write the JSON results", json_out);
    }
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return run_tool("competelm-eval", main_eval, argc, argv); }
