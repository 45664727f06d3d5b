#pragma once
// Multiple-choice evaluation on HellaSwag-style JSONL: one object per line,
//   {"ctx": "A man is sitting on a roof. He", "endings": ["...", "...", ...], "label": 2}
// ("context" is accepted for "ctx"; other keys are ignored; blank lines are skipped).
//
// Each ending is scored by the model's cross-entropy on the ending's tokens given the context:
//   sequence = tokens(ctx) + tokens(joiner + ending), joiner = " " unless ctx is empty, ctx ends
//   in whitespace or the ending starts with whitespace (HellaSwag's endings continue the
//   context's last word with a space, as llm.c's evaluation joins them); an empty ctx starts
//   with end-of-text so the ending's first token has something to be predicted from.
//   The sequence is cut from the left to seq_len + 1 tokens (the ending's tokens are kept).
//   sum loss  = Σ over the ending's tokens of −ln p(token | everything before it)
//   mean loss = sum loss / number of ending tokens scored
// acc      : fraction of items where the ending with the lowest SUM loss is the label
//            (unnormalised: favours short endings).
// acc_norm : the same with the lowest MEAN (per-token, length-normalised) loss.
// Ties go to the lowest index.
#include <string>
#include <vector>

#include "model/gpt2.hpp"
#include "tokenizer/gpt2_tokenizer.hpp"

namespace competelm {

struct McItem {
  std::string ctx;
  std::vector<std::string> endings;
  int label = 0;
  int line = 0;  // 1-based line in the file, for messages
};

// Reads the JSONL file. Throws Error "FILE:LINE: ..." on malformed JSON, a missing or
// mistyped key, fewer than two endings, or a label outside [0, endings).
std::vector<McItem> read_mc_jsonl(const std::string& path);

struct McItemScore {
  std::vector<double> sum_loss;   // per ending
  std::vector<int> tokens;        // ending tokens scored, per ending
  int pred_sum = 0, pred_norm = 0, label = 0;
  double mean_loss(size_t i) const { return sum_loss[i] / tokens[i]; }
};

struct McResult {
  std::vector<McItemScore> items;
  int correct = 0, correct_norm = 0;
  double acc() const { return items.empty() ? 0.0 : double(correct) / double(items.size()); }
  double acc_norm() const { return items.empty() ? 0.0 : double(correct_norm) / double(items.size()); }
  double seconds = 0.0;
};

// The token sequence scored for one ending and how many of its last tokens are the ending's
// (see the top of this file). T = the longest input the model takes (seq_len).
struct McSequence {
  std::vector<int32_t> tokens;  // ≤ T + 1
  int ending_tokens = 0;        // the last ending_tokens of `tokens` are scored (≤ size − 1)
};
McSequence mc_sequence(const Gpt2Tokenizer& tokenizer, const std::string& ctx, const std::string& ending, int T);

// Scores every item with `model` (allocated for up to maxB rows of T tokens): one forward per
// item (endings in the batch dimension, padded), chunked when an item has more than maxB.
McResult evaluate_mc(GPT2& model, int maxB, int T, const Gpt2Tokenizer& tokenizer, const std::vector<McItem>& items);

}  // namespace competelm
