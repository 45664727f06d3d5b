#pragma once
// Readers for OpenAI's GPT-2 tokenizer files. Both return tokens as raw bytes (the byte
// symbols of encoder.json / vocab.bpe already mapped back), so the BPE works on bytes.
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace competelm {

struct VocabEntry {
  std::string bytes;
  uint32_t id;
};

// encoder.json: one JSON object {"token": id, ...}. Throws competelm::Error naming the file,
// line and column of the first problem.
std::vector<VocabEntry> read_encoder_json(const std::string& path);

// vocab.bpe: a "#version" line, then one merge "left right" per line, by priority.
// Throws competelm::Error naming the file and line of a malformed merge.
std::vector<std::pair<std::string, std::string>> read_bpe_merges(const std::string& path);

// Whole file as bytes; throws competelm::Error naming the file when it cannot be read.
std::string read_file_bytes(const std::string& path, const std::string& what);

}  // namespace competelm
