// Fuzz target: the GPT-2 BPE tokenizer (tokenizer/*.cpp). The first input byte picks what the
// rest is (byte % 4):
//   0: text to encode. Property: decode(encode(text)) gives back the text (after the UTF-8
//      decoder's replacement of invalid bytes by U+FFFD), and every id is in the vocabulary.
//   1: token ids to decode (little-endian uint16 each, so that in-range ids are common).
//      Property: decode(ids) is the concatenation of decode_token(id) when every id is valid.
//   2: an encoder.json, loaded with a fixed vocab.bpe, then used to encode a sample.
//   3: a vocab.bpe, loaded with a fixed encoder.json, then used to encode a sample.
// Modes 0 and 1 use a small synthetic vocabulary (all 256 bytes and a few merges), so the
// target needs no downloaded files and replays deterministically. To fuzz them against the
// real GPT-2 files, set COMPETELM_FUZZ_TOKENIZER_DIR=data/tokenizer (made by
// scripts/prepare_data.sh).
#include <cstdlib>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/error.hpp"
#include "fuzz_targets.hpp"
#include "tokenizer/byte_symbols.hpp"
#include "tokenizer/gpt2_tokenizer.hpp"
#include "tokenizer/utf8.hpp"

namespace competelm::fuzz {

namespace {

// Merges of the synthetic vocabulary, by priority, as raw bytes ("Ġ" of the files is ' ').
const std::vector<std::pair<std::string, std::string>>& synthetic_merges() {
  static const std::vector<std::pair<std::string, std::string>> merges = {
      {"t", "h"}, {"h", "e"}, {"th", "e"}, {" ", "t"}, {" t", "he"}, {"i", "n"}, {"e", "r"},
      {"a", "n"}, {" ", "a"}, {"o", "n"}, {"in", "g"}, {"\xC3", "\xA9"},
      {"\n", "\n"}, {"e", "d"}, {" a", "n"}, {" an", "d"}, {"1", "2"}};
  return merges;
}

// A token's bytes spelled in GPT-2 byte symbols, as a JSON string.
std::string spelled_json(const ByteSymbols& symbols, const std::string& bytes) {
  std::string out = "\"";
  for (unsigned char b : bytes) {
    const char32_t s = symbols.symbol(b);
    if (s == U'"' || s == U'\\') out += '\\';
    utf8::append(out, s);
  }
  return out + "\"";
}

std::string spelled_bpe(const ByteSymbols& symbols, const std::string& bytes) {
  std::string out;
  for (unsigned char b : bytes) utf8::append(out, symbols.symbol(b));
  return out;
}

struct SyntheticFiles {
  std::string encoder_json, vocab_bpe;  // paths
};

const SyntheticFiles& synthetic_files() {
  static const SyntheticFiles files = [] {
    const ByteSymbols symbols;
    std::string enc = "{", bpe = "#version: 0.2\n";
    for (int b = 0; b < 256; ++b)
      enc += (b ? ", " : "") + spelled_json(symbols, std::string(1, char(b))) + ": " + std::to_string(b);
    uint32_t next_id = 256;
    for (const auto& [l, r] : synthetic_merges()) {
      enc += ", " + spelled_json(symbols, l + r) + ": " + std::to_string(next_id++);
      bpe += spelled_bpe(symbols, l) + " " + spelled_bpe(symbols, r) + "\n";
    }
    enc += "}\n";
    SyntheticFiles f{scratch_dir() + "/synthetic_encoder.json", scratch_dir() + "/synthetic_vocab.bpe"};
    write_bytes(f.encoder_json, enc.data(), enc.size());
    write_bytes(f.vocab_bpe, bpe.data(), bpe.size());
    return f;
  }();
  return files;
}

const Gpt2Tokenizer& tokenizer() {
  static const Gpt2Tokenizer tok = [] {
    const char* dir = std::getenv("COMPETELM_FUZZ_TOKENIZER_DIR");
    if (dir && *dir) return Gpt2Tokenizer::load(std::string(dir) + "/encoder.json", std::string(dir) + "/vocab.bpe");
    return Gpt2Tokenizer::load(synthetic_files().encoder_json, synthetic_files().vocab_bpe);
  }();
  return tok;
}

std::string utf8_normalized(std::string_view text) {
  std::string out;
  for (char32_t cp : utf8::decode(text)) utf8::append(out, cp);
  return out;
}

void check_encode(const Gpt2Tokenizer& tok, std::string_view text) {
  const std::vector<uint32_t> ids = tok.encode(text);
  for (uint32_t id : ids)
    if (id >= tok.vocab_size()) property_failed("encode produced an id outside the vocabulary", std::to_string(id));
  if (tok.decode(ids) != utf8_normalized(text))
    property_failed("decode(encode(text)) differs from the text", std::string(text));
}

void fuzz_decode(const Gpt2Tokenizer& tok, std::string_view rest) {
  std::vector<uint32_t> ids;
  for (size_t i = 0; i + 1 < rest.size(); i += 2)
    ids.push_back(uint32_t(uint8_t(rest[i])) | uint32_t(uint8_t(rest[i + 1])) << 8);
  std::string concatenated;
  bool all_valid = true;
  for (uint32_t id : ids) {
    try {
      concatenated += tok.decode_token(id);
    } catch (const Error&) {
      all_valid = false;
    }
  }
  std::string whole;
  try {
    whole = tok.decode(ids);
  } catch (const Error&) {
    if (all_valid) property_failed("decode() refused ids that decode_token() accepts", "");
    return;
  }
  if (!all_valid || whole != concatenated)
    property_failed("decode() differs from decode_token() of each id", "");
}

// Loads a tokenizer from one fuzzed file and one fixed file, then uses it.
void fuzz_files(std::string_view rest, bool fuzzed_encoder) {
  const SyntheticFiles& fixed = synthetic_files();
  const std::string fuzzed = scratch_dir() + (fuzzed_encoder ? "/fuzzed_encoder.json" : "/fuzzed_vocab.bpe");
  write_bytes(fuzzed, rest.data(), rest.size());
  try {
    const Gpt2Tokenizer tok = fuzzed_encoder ? Gpt2Tokenizer::load(fuzzed, fixed.vocab_bpe)
                                             : Gpt2Tokenizer::load(fixed.encoder_json, fuzzed);
    // A vocabulary that loads may still not fit its merges: encode reports that as an Error.
    const std::vector<uint32_t> ids = tok.encode("the thing and 12 caf\xC3\xA9\n\n");
    (void)tok.decode(ids);
  } catch (const Error&) {
  }
}

}  // namespace

int fuzz_tokenizer(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string_view rest(reinterpret_cast<const char*>(data) + 1, size - 1);
  switch (data[0] % 4) {
    case 0: check_encode(tokenizer(), rest); break;
    case 1: fuzz_decode(tokenizer(), rest); break;
    case 2: fuzz_files(rest, true); break;
    case 3: fuzz_files(rest, false); break;
  }
  return 0;
}

}  // namespace competelm::fuzz
