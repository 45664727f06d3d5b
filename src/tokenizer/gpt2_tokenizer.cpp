#include "tokenizer/gpt2_tokenizer.hpp"

#include <filesystem>
#include <limits>
#include <mutex>
#include <unordered_map>

#include "core/error.hpp"
#include "tokenizer/bpe_files.hpp"
#include "tokenizer/pretokenize.hpp"
#include "tokenizer/utf8.hpp"

namespace competelm {

namespace {
// Bound on the per-piece BPE cache so that tokenizing a huge corpus cannot grow it forever.
constexpr size_t kMaxCachedPieces = 1 << 20;
constexpr uint32_t kNoRank = std::numeric_limits<uint32_t>::max();
}  // namespace

struct Gpt2Tokenizer::Impl {
  std::unordered_map<std::string, uint32_t> token_ids;  // token bytes → id
  std::vector<std::string> token_bytes;                 // id → token bytes
  std::vector<bool> id_present;                         // ids may have gaps in a custom vocab
  // Merge priority keyed by "left,right" in bytes. The reference encoder keys its rank table by
  // the JS array's toString() (the same string), so pairs whose joined keys collide share the
  // later rank there; keying identically reproduces that quirk bit for bit.
  std::unordered_map<std::string, uint32_t> merge_ranks;

  mutable std::mutex cache_mutex;
  mutable std::unordered_map<std::string, std::vector<uint32_t>> cache;  // piece bytes → ids

  uint32_t rank(const std::string& left, const std::string& right, std::string& key) const {
    key.assign(left);
    key.push_back(',');
    key.append(right);
    auto it = merge_ranks.find(key);
    return it == merge_ranks.end() ? kNoRank : it->second;
  }

  // Byte-level BPE of one pre-tokenized piece, exactly as the reference bpe(): repeatedly merge
  // every occurrence of the lowest-ranked adjacent pair (ties → the later pair).
  std::vector<uint32_t> bpe(const std::string& piece) const {
    std::vector<std::string> word;
    word.reserve(piece.size());
    for (char c : piece) word.emplace_back(1, c);
    std::string key;
    while (word.size() > 1) {
      uint32_t best = kNoRank;
      size_t best_i = 0;
      for (size_t i = 0; i + 1 < word.size(); ++i) {
        const uint32_t r = rank(word[i], word[i + 1], key);
        if (r != kNoRank && r <= best) {
          best = r;
          best_i = i;
        }
      }
      if (best == kNoRank) break;
      const std::string first = word[best_i], second = word[best_i + 1];
      std::vector<std::string> merged;
      merged.reserve(word.size());
      for (size_t i = 0; i < word.size();) {
        if (i + 1 < word.size() && word[i] == first && word[i + 1] == second) {
          merged.push_back(first + second);
          i += 2;
        } else {
          merged.push_back(std::move(word[i]));
          i += 1;
        }
      }
      word = std::move(merged);
    }
    std::vector<uint32_t> ids;
    ids.reserve(word.size());
    for (const auto& symbol : word) {
      auto it = token_ids.find(symbol);
      if (it == token_ids.end())
        fail("tokenizer: BPE produced a token missing from encoder.json ({} bytes); "
             "encoder.json and vocab.bpe do not belong together", symbol.size());
      ids.push_back(it->second);
    }
    return ids;
  }

  void encode_piece(const std::string& piece, std::vector<uint32_t>& out) const {
    {
      std::lock_guard lock(cache_mutex);
      if (auto it = cache.find(piece); it != cache.end()) {
        out.insert(out.end(), it->second.begin(), it->second.end());
        return;
      }
    }
    std::vector<uint32_t> ids = bpe(piece);
    out.insert(out.end(), ids.begin(), ids.end());
    std::lock_guard lock(cache_mutex);
    if (cache.size() >= kMaxCachedPieces) cache.clear();
    cache.emplace(piece, std::move(ids));
  }
};

Gpt2Tokenizer::Gpt2Tokenizer() : impl_(std::make_unique<Impl>()) {}
Gpt2Tokenizer::Gpt2Tokenizer(Gpt2Tokenizer&&) noexcept = default;
Gpt2Tokenizer& Gpt2Tokenizer::operator=(Gpt2Tokenizer&&) noexcept = default;
Gpt2Tokenizer::~Gpt2Tokenizer() = default;

Gpt2Tokenizer Gpt2Tokenizer::load(const std::string& encoder_json, const std::string& vocab_bpe) {
  for (const std::string* path : {&encoder_json, &vocab_bpe})
    if (!std::filesystem::is_regular_file(*path))
      fail_hint("run scripts/prepare_data.sh to download the GPT-2 tokenizer files",
                "GPT-2 tokenizer file '{}' not found", *path);
  Gpt2Tokenizer tok;
  Impl& impl = *tok.impl_;
  const auto entries = read_encoder_json(encoder_json);
  uint32_t max_id = 0;
  for (const auto& e : entries) max_id = std::max(max_id, e.id);
  // The id → bytes table is sized by the largest id: bound it by the vocabulary's size so a
  // stray huge id (found by fuzzing: 4294967294 asked for 128 GiB) is an error, not an
  // allocation failure. Gaps stay allowed; a real vocabulary is (nearly) dense.
  const size_t max_allowed_id = std::max<size_t>(4 * entries.size(), size_t{1} << 16);
  if (max_id > max_allowed_id)
    fail("{}: token id {} is implausibly large for a vocabulary of {} tokens (at most {} allowed)",
         encoder_json, max_id, entries.size(), max_allowed_id);
  impl.token_bytes.resize(size_t{max_id} + 1);
  impl.id_present.assign(size_t{max_id} + 1, false);
  impl.token_ids.reserve(entries.size());
  for (const auto& e : entries) {
    impl.token_ids[e.bytes] = e.id;  // later duplicates win, as in JSON.parse
    impl.token_bytes[e.id] = e.bytes;
    impl.id_present[e.id] = true;
  }
  for (int b = 0; b < 256; ++b)
    if (!impl.token_ids.contains(std::string(1, static_cast<char>(b))))
      fail("{}: no token for the single byte {} (a byte-level BPE vocabulary needs all 256)",
           encoder_json, b);

  const auto merges = read_bpe_merges(vocab_bpe);
  impl.merge_ranks.reserve(merges.size());
  for (size_t i = 0; i < merges.size(); ++i)
    impl.merge_ranks[merges[i].first + "," + merges[i].second] = static_cast<uint32_t>(i);
  return tok;
}

std::vector<uint32_t> Gpt2Tokenizer::encode(std::string_view text) const {
  const std::vector<char32_t> cps = utf8::decode(text);
  std::vector<uint32_t> ids;
  ids.reserve(text.size() / 3 + 1);
  std::string piece;
  for (const PieceSpan& span : pretokenize(cps)) {
    piece.clear();
    for (size_t i = span.begin; i < span.end; ++i) utf8::append(piece, cps[i]);
    impl_->encode_piece(piece, ids);
  }
  return ids;
}

std::string Gpt2Tokenizer::decode_token(uint32_t id) const {
  if (id >= impl_->token_bytes.size() || !impl_->id_present[id])
    fail("tokenizer: token id {} is not in the vocabulary (size {})", id, vocab_size());
  return impl_->token_bytes[id];
}

std::string Gpt2Tokenizer::decode(const std::vector<uint32_t>& ids) const {
  std::string out;
  for (uint32_t id : ids) out += decode_token(id);
  return out;
}

size_t Gpt2Tokenizer::vocab_size() const { return impl_->token_bytes.size(); }

}  // namespace competelm
