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

// Consumes the whole file and checks its checksum (in.finish()). Whole tensors only: a slice
// entry is refused, naming the file and the tensor.
std::map<std::string, LoadedTensor> read_tensor_file(CheckpointFileReader& in);
// The same for any entries (versions 1 and 2): each with its element range.
std::map<std::string, LoadedSlice> read_tensor_slices(CheckpointFileReader& in);

}  // namespace competelm
