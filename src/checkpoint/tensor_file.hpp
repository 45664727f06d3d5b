#pragma once
// Encoding and decoding of the named-tensor file format (CLMTENS v1/v2, specified at the top
// of checkpoint.cpp). Decoding trusts nothing in the file: every count, length, shape and
// offset is checked against caps and the file size before anything is allocated.
#include <map>
#include <string>
#include <vector>

#include "checkpoint/checkpoint.hpp"
#include "checkpoint/file_io.hpp"

namespace competelm {

// Writes version 1 when every tensor is whole, else version 2 (element ranges recorded).
void write_tensor_file(CheckpointFileWriter& out, const std::vector<NamedTensor>& tensors,
                       const std::string& path_for_errors);

// One directory entry of a tensor file: elements [begin, end) of the tensor `name` of global
// shape `shape`, stored at byte `offset` of the file ((end - begin) * 4 bytes).
struct TensorFileEntry {
  std::string name;
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;
  uint64_t offset = 0;
};

// The directory alone, validated exactly as the full readers validate it (caps, shapes,
// ranges, every block inside the file and in order, the file ending with the last block),
// read with in.read_at in small chunks: a few KB of I/O whatever the file's size. The
// checksum is not checked (verify the file separately).
std::vector<TensorFileEntry> read_tensor_index(CheckpointFileReader& in);

// Consumes the whole file and checks its checksum (in.finish()). Whole tensors only: a slice
// entry is refused, naming the file and the tensor.
std::map<std::string, LoadedTensor> read_tensor_file(CheckpointFileReader& in);
// The same for any entries (versions 1 and 2): each with its element range.
std::map<std::string, LoadedSlice> read_tensor_slices(CheckpointFileReader& in);

}  // namespace competelm
