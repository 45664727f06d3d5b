#include "eval/multiple_choice.hpp"

#include <algorithm>
#include <cctype>
#include <chrono>
#include <fstream>

#include "core/error.hpp"
#include "core/json.hpp"

namespace competelm {
namespace {

bool is_space(char c) { return std::isspace(static_cast<unsigned char>(c)) != 0; }

int parse_label(const JsonValue& v, const std::string& where) {
  if (v.is_string()) {  // some exports write the label as "2"
    const std::string& s = v.as_string();
    if (s.empty() || s.size() > 6 || !std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; }))
      fail("{}: \"label\" must be an integer index, got \"{}\"", where, s);
    return std::stoi(s);
  }
  const int64_t l = v.as_int64(where + ": \"label\"");
  if (l < 0 || l > 1'000'000) fail("{}: \"label\" {} is not a valid index", where, l);
  return int(l);
}

}  // namespace

std::vector<McItem> read_mc_jsonl(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail_hint("give a HellaSwag-style .jsonl file", "{}: cannot open the multiple-choice file", path);
  std::vector<McItem> items;
  std::string line;
  for (int line_no = 1; std::getline(in, line); ++line_no) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (std::all_of(line.begin(), line.end(), is_space)) continue;
    const std::string where = fmt::format("{}:{}", path, line_no);
    const JsonValue obj = parse_json(line, where);
    obj.as_object(where);
    McItem it;
    it.line = line_no;
    const JsonValue* ctx = obj.find("ctx");
    if (!ctx) ctx = obj.find("context");
    if (!ctx) fail("{}: missing key \"ctx\" (or \"context\")", where);
    it.ctx = ctx->as_string(where + ": \"ctx\"");
    const JsonValue* endings = obj.find("endings");
    if (!endings) fail("{}: missing key \"endings\"", where);
    for (const JsonValue& e : endings->as_array(where + ": \"endings\""))
      it.endings.push_back(e.as_string(where + ": \"endings\" element"));
    if (it.endings.size() < 2) fail("{}: \"endings\" needs at least 2 choices, got {}", where, it.endings.size());
    const JsonValue* label = obj.find("label");
    if (!label) fail("{}: missing key \"label\"", where);
    it.label = parse_label(*label, where);
    if (it.label >= int(it.endings.size()))
      fail("{}: \"label\" {} is out of range for {} endings (0-based)", where, it.label, it.endings.size());
    items.push_back(std::move(it));
  }
  if (items.empty()) fail("{}: no items (expected one JSON object per line)", path);
  return items;
}

McSequence mc_sequence(const Gpt2Tokenizer& tokenizer, const std::string& ctx, const std::string& ending, int T) {
  const bool join_space = !ctx.empty() && !is_space(ctx.back()) && !ending.empty() && !is_space(ending.front());
  std::vector<uint32_t> ctx_tokens = ctx.empty() ? std::vector<uint32_t>{tokenizer.eot()} : tokenizer.encode(ctx);
  const std::vector<uint32_t> end_tokens = tokenizer.encode(join_space ? " " + ending : ending);
  if (end_tokens.empty()) fail("multiple choice: an ending encodes to no token (empty ending)");
  McSequence seq;
  seq.tokens.reserve(ctx_tokens.size() + end_tokens.size());
  for (uint32_t t : ctx_tokens) seq.tokens.push_back(int32_t(t));
  for (uint32_t t : end_tokens) seq.tokens.push_back(int32_t(t));
  const size_t keep = size_t(T) + 1;  // T inputs predict T targets
  if (seq.tokens.size() > keep) seq.tokens.erase(seq.tokens.begin(), seq.tokens.end() - keep);
  // The first kept token is never predicted, so at most size − 1 ending tokens are scored.
  seq.ending_tokens = int(std::min(end_tokens.size(), seq.tokens.size() - 1));
  return seq;
}

McResult evaluate_mc(GPT2& model, int maxB, int T, const Gpt2Tokenizer& tokenizer, const std::vector<McItem>& items) {
  McResult res;
  const auto t0 = std::chrono::steady_clock::now();
  const int V = model.shape().vocab_size;
  for (const McItem& item : items) {
    McItemScore sc;
    sc.label = item.label;
    std::vector<McSequence> seqs;
    for (const std::string& e : item.endings) {
      seqs.push_back(mc_sequence(tokenizer, item.ctx, e, T));
      for (int32_t id : seqs.back().tokens)
        if (id >= V) fail("line {}: token id {} is outside the model's vocabulary ({})", item.line, id, V);
    }
    for (size_t first = 0; first < seqs.size(); first += size_t(maxB)) {
      const size_t last = std::min(seqs.size(), first + size_t(maxB));
      const int B = int(last - first);
      int Tb = 1;
      for (size_t i = first; i < last; ++i) Tb = std::max(Tb, int(seqs[i].tokens.size()) - 1);
      // Rows padded with token 0 after their end: causal attention keeps padding from
      // reaching the real positions, and padded positions are not read back.
      std::vector<int32_t> inputs(size_t(B) * Tb, 0), targets(size_t(B) * Tb, 0);  // (B, Tb)
      for (int r = 0; r < B; ++r) {
        const auto& tok = seqs[first + r].tokens;
        for (size_t t = 0; t + 1 < tok.size(); ++t) {
          inputs[size_t(r) * Tb + t] = tok[t];
          targets[size_t(r) * Tb + t] = tok[t + 1];
        }
      }
      model.forward(inputs.data(), targets.data(), B, Tb);
      const std::vector<float> losses = model.losses_host();  // (B, Tb)
      for (int r = 0; r < B; ++r) {
        const McSequence& s = seqs[first + r];
        const int n_targets = int(s.tokens.size()) - 1;
        double sum = 0.0;
        for (int t = n_targets - s.ending_tokens; t < n_targets; ++t) sum += losses[size_t(r) * Tb + t];
        sc.sum_loss.push_back(sum);
        sc.tokens.push_back(s.ending_tokens);
      }
    }
    for (size_t i = 1; i < sc.sum_loss.size(); ++i) {
      if (sc.sum_loss[i] < sc.sum_loss[sc.pred_sum]) sc.pred_sum = int(i);
      if (sc.mean_loss(i) < sc.mean_loss(sc.pred_norm)) sc.pred_norm = int(i);
    }
    res.correct += sc.pred_sum == sc.label;
    res.correct_norm += sc.pred_norm == sc.label;
    res.items.push_back(std::move(sc));
  }
  res.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return res;
}

}  // namespace competelm
