// competelm-sample CHECKPOINT --prompt "..." [--max-tokens N] [--temperature X] [--top-k K]
//                  [--top-p P] [--seed S] [--no-kv-cache] [--tokenizer-dir DIR] [--device D]
//                  [--bench]
// Generates text from a saved model, streaming it to stdout as it is produced. With --bench:
// decoding speed with and without the KV cache at several context lengths instead.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "core/cli.hpp"
#include "core/error.hpp"
#include "core/rng.hpp"
#include "infer/generate.hpp"
#include "infer/kv_decoder.hpp"
#include "infer/utf8_stream.hpp"
#include "model/saved_model.hpp"
#include "tokenizer/gpt2_tokenizer.hpp"

using namespace competelm;

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Median ms per generated token at context length `prefix`, decoding `steps` tokens greedily
// (the median, not the mean: on a shared machine a few slow steps should not move it).
double ms_per_token(SavedModel& sm, int prefix, int steps, bool kv_cache) {
  GPT2& model = *sm.model;
  const int V = model.shape().vocab_size, Vp = model.shape().padded_vocab();
  Rng rng(1);
  std::vector<int32_t> seq(prefix);
  for (auto& t : seq) t = int32_t(rng.below(uint64_t(V)));
  auto argmax = [&](const float* row) { return int32_t(std::max_element(row, row + V) - row); };
  std::vector<double> ms;
  std::unique_ptr<KvDecoder> kv;
  int32_t next = 0;
  if (kv_cache) {
    kv = std::make_unique<KvDecoder>(*sm.backend, model);
    next = argmax(kv->append(seq.data(), prefix).data());  // prefill: not timed
  }
  for (int i = 0; i < steps; i++) {
    const auto t0 = std::chrono::steady_clock::now();
    if (kv_cache) {
      next = argmax(kv->append(&next, 1).data());
    } else {
      model.forward(seq.data(), nullptr, 1, int(seq.size()));
      const std::vector<float> logits = model.logits_host();
      seq.push_back(argmax(logits.data() + logits.size() - Vp));
    }
    ms.push_back(1e3 * seconds_since(t0));
  }
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

int run_bench(SavedModel& sm, int steps) {
  const int W = sm.model->shape().seq_len;
  steps = std::max(1, std::min(steps, W - 1));
  std::vector<int> prefixes;
  for (int p : {16, 64, 256}) if (p + steps <= W) prefixes.push_back(p);
  if (prefixes.empty() || prefixes.back() != W - steps) prefixes.push_back(W - steps);  // the full window
  const ModelShape& s = sm.model->shape();
  fmt::print("model {} layers × {} d_model × {} heads, window {}, {} parameters, {} backend; median of {} tokens per point\n",
             s.n_layer, s.d_model, s.n_head, W, sm.model->num_parameters(), sm.backend->name(), steps);
  fmt::print("{:>8} {:>14} {:>12} {:>14} {:>12} {:>9}\n", "context", "kv ms/token", "kv tok/s", "full ms/token",
             "full tok/s", "speedup");
  for (int p : prefixes) {
    ms_per_token(sm, p, 2, true);  // warm-up
    const double kv = ms_per_token(sm, p, steps, true), full = ms_per_token(sm, p, steps, false);
    fmt::print("{:>8} {:>14.3f} {:>12.1f} {:>14.3f} {:>12.1f} {:>8.1f}×\n", p, kv, 1e3 / kv, full, 1e3 / full, full / kv);
    std::fflush(stdout);
  }
  return 0;
}

int main_sample(int argc, char** argv) {
  Cli cli("competelm-sample", "CHECKPOINT --prompt TEXT [options]",
          "Generates text from a saved model (a checkpoint directory, or a run directory: its newest\n"
          "checkpoint) and streams it to stdout as it is produced: the prompt, then the continuation.\n"
          "Stops after --max-tokens tokens or at <|endoftext|>. When the context reaches the model's window\n"
          "(model.seq_len) it slides: the newest half of the window is kept and re-encoded. A fixed --seed\n"
          "gives the same text every time, with or without the KV cache.");
  cli.positional("CHECKPOINT", "checkpoint directory or run directory");
  cli.option("prompt", "TEXT", "text to continue (default: start from <|endoftext|>)");
  cli.option("max-tokens", "N", "tokens to generate (default 128; with --bench: tokens timed per point, default 32)");
  cli.option("temperature", "X", "sampling temperature; 0 = greedy (default 1.0)");
  cli.option("top-k", "K", "sample among the K most likely tokens only (default 0 = all)");
  cli.option("top-p", "P", "nucleus sampling: the smallest set with probability >= P (default 1.0 = all)");
  cli.option("seed", "S", "random seed (default 0)");
  cli.option("no-kv-cache", "", "recompute the whole context for every token (slow; for comparison)");
  cli.option("tokenizer-dir", "DIR", "GPT-2 tokenizer files (default: the run's eval.tokenizer_dir)");
  cli.option("device", "D", "cpu | cuda | auto (default cpu)");
  cli.option("threads", "N", "CPU threads (default 0 = all cores)");
  cli.option("bench", "", "print decoding speed with and without the KV cache at several context lengths");
  if (!cli.parse(argc, argv)) return 0;
  auto num = [&](const char* name, double fallback) {
    if (!cli.has(name)) return fallback;
    const std::string v = cli.get(name);
    try {
      size_t used = 0;
      const double x = std::stod(v, &used);
      if (used == v.size()) return x;
    } catch (const std::exception&) {
    }
    fail("--{}: '{}' is not a number", name, v);
  };
  GenerateOptions go;
  go.max_new_tokens = int(num("max-tokens", 128));
  if (go.max_new_tokens < 0) fail("--max-tokens must be >= 0");
  go.sampling.temperature = float(num("temperature", 1.0));
  go.sampling.top_k = int(num("top-k", 0));
  go.sampling.top_p = float(num("top-p", 1.0));
  go.seed = uint64_t(num("seed", 0));
  go.kv_cache = !cli.has("no-kv-cache");
  check_sampling_params(go.sampling);  // before the (slow) model load
  SavedModel sm = load_saved_model(cli.get("CHECKPOINT"), 1, 0, cli.get("device", "cpu"), int(num("threads", 0)));
  if (cli.has("bench")) return run_bench(sm, cli.has("max-tokens") ? go.max_new_tokens : 32);

  const std::string dir = cli.get("tokenizer-dir", sm.config.eval.tokenizer_dir);
  const Gpt2Tokenizer tok = Gpt2Tokenizer::load(dir + "/encoder.json", dir + "/vocab.bpe");
  const std::string prompt = cli.get("prompt");
  std::vector<uint32_t> ids = prompt.empty() ? std::vector<uint32_t>{tok.eot()} : tok.encode(prompt);
  go.stop_token = int(tok.eot()) < sm.model->shape().vocab_size ? int(tok.eot()) : -1;

  std::fputs(prompt.c_str(), stdout);
  std::fflush(stdout);
  Utf8Stream stream;
  const GenerateResult r = generate(*sm.backend, *sm.model, ids, go, [&](uint32_t t) {
    const std::string piece = stream.push(tok.decode_token(t));
    std::fwrite(piece.data(), 1, piece.size(), stdout);
    std::fflush(stdout);
    return true;
  });
  const std::string rest = stream.finish();
  std::fwrite(rest.data(), 1, rest.size(), stdout);
  std::fputc('\n', stdout);
  std::fflush(stdout);
  const char* why = r.stopped_at_stop_token ? "<|endoftext|>" : "max tokens";
  fmt::print(stderr, "[{} tokens in {:.2f} s: {:.1f} tok/s, {}; prompt {} tokens in {:.3f} s; stopped at {}{}]\n",
             r.tokens.size(), r.decode_seconds, r.decode_seconds > 0 ? r.tokens.size() / r.decode_seconds : 0.0,
             go.kv_cache ? "KV cache" : "no KV cache", ids.size(), r.prefill_seconds, why,
             r.slides ? fmt::format("; window slid {} time(s)", r.slides) : std::string());
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return run_tool("competelm-sample", main_sample, argc, argv); }
