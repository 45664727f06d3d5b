#pragma once
// The safetensors format (https://huggingface.co/docs/safetensors), our own writer and reader:
//
//   8 bytes   N, little-endian uint64: length of the header
//   N bytes   JSON object: {"__metadata__": {"key": "value", ...},
//                            "name": {"dtype": "F32", "shape": [d0, ...], "data_offsets": [b, e]}, ...}
//             padded with spaces so that N is a multiple of 8 (the data stays aligned)
//   rest      the data buffer: tensor `name` is bytes [b, e) of it, row-major, little-endian
//
// The writer stores F32. The reader accepts F32, F16 and BF16 (converted to fp32) and trusts
// nothing: the header length, the JSON, every dtype, shape and offset are checked against the
// file size before any data is read; tensors may not overlap or leave holes. Errors name the
// file (and the tensor).
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "checkpoint/checkpoint.hpp"

namespace competelm {

// Writes `path` atomically (temporary file + rename). Names must be unique and not
// "__metadata__"; metadata values are strings.
void write_safetensors(const std::string& path, const std::vector<NamedTensor>& tensors,
                       const std::vector<std::pair<std::string, std::string>>& metadata = {});

struct SafetensorsFile {
  std::map<std::string, LoadedTensor> tensors;  // as fp32
  std::map<std::string, std::string> dtypes;    // as stored: F32 | F16 | BF16
  std::map<std::string, std::string> metadata;  // __metadata__
  std::vector<std::string> order;               // tensor names in data-offset order
  uint64_t header_bytes = 0;                    // N
};

SafetensorsFile read_safetensors(const std::string& path);

// IEEE half and bfloat16 bit patterns → float (exact).
float f16_to_f32(uint16_t h);
float bf16_to_f32(uint16_t h);

}  // namespace competelm
