#pragma once
// Encoding and decoding of the named-tensor file format (CLMTENS v1, specified at the top
// of checkpoint.cpp). Decoding trusts nothing in the file: every count, length, shape and
// offset is checked against caps and the file size before anything is allocated.
#include <map>
#include <string>
#include <vector>

#include "checkpoint/checkpoint.hpp"
#include "checkpoint/file_io.hpp"

namespace competelm {

void write_tensor_file(CheckpointFileWriter& out, const std::vector<NamedTensor>& tensors,
                       const std::string& path_for_errors);

// Consumes the whole file and checks its checksum (in.finish()).
std::map<std::string, LoadedTensor> read_tensor_file(CheckpointFileReader& in);

}  // namespace competelm
