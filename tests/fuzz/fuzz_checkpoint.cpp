// Fuzz target: the checkpoint reader (checkpoint/checkpoint.cpp, tensor_file.cpp,
// file_io.cpp, core/json.cpp). The first input byte picks what the rest is:
//   even: meta.json. Beside it lies a valid model.bin and a text file. If the text contains
//         "meta_checksum": "<16 chars>", the harness writes the true checksum there first,
//         so the fuzzer reaches the fields behind the seal instead of stopping at it.
//   odd:  model.bin (a CLMTENS tensor file), listed with its true size and checksum in a
//         meta.json the harness writes, so the tensor-file parser itself is exercised.
// Then the checkpoint is opened and every listed file read (as tensors and as text).
// Property: every tensor read back has as many floats as its shape says.
#include <filesystem>
#include <string>
#include <vector>

#include "checkpoint/checkpoint.hpp"
#include "checkpoint/file_io.hpp"
#include "core/error.hpp"
#include "core/json.hpp"
#include "fuzz_targets.hpp"

namespace competelm::fuzz {

namespace {

constexpr const char* kSealKey = "\"meta_checksum\": \"";

// Replaces the 16 characters after the last "meta_checksum": " with the checksum of the
// text with those characters zeroed, as CheckpointWriter::commit seals meta.json.
void seal(std::string& meta) {
  const size_t at = meta.rfind(kSealKey);
  if (at == std::string::npos) return;
  const size_t pos = at + std::char_traits<char>::length(kSealKey);
  if (pos + 16 > meta.size()) return;
  meta.replace(pos, 16, 16, '0');
  meta.replace(pos, 16, checksum_hex(checksum64(meta.data(), meta.size())));
}

std::string file_entry(const std::string& name, const std::string& bytes) {
  return json_quote(name) + ": {\"bytes\": " + std::to_string(bytes.size()) + ", \"checksum\": \"" +
         checksum_hex(checksum64(bytes.data(), bytes.size())) + "\"}";
}

std::string meta_listing(const std::vector<std::pair<std::string, std::string>>& files) {
  std::string meta = "{\n  \"format\": \"competelm-checkpoint\",\n  \"version\": 1,\n  \"step\": 7,\n"
                     "  \"time_utc\": \"2024-05-01T12:00:00Z\",\n  \"files\": {";
  for (size_t i = 0; i < files.size(); ++i)
    meta += (i ? ",\n    " : "\n    ") + file_entry(files[i].first, files[i].second);
  meta += "\n  },\n  \"meta_checksum\": \"0000000000000000\"\n}\n";
  seal(meta);
  return meta;
}

// A valid two-tensor file: "w" (2, 3) and "b" (3), built with the real writer once.
const std::string& valid_model_bin() {
  static const std::string bytes = [] {
    const std::string run = scratch_dir() + "/template_run";
    const float w[6] = {1, 2, 3, 4, 5, 6}, b[3] = {-1, 0, 1};
    CheckpointWriter writer(run, 1);
    writer.write_tensors("model.bin", {{"w", {2, 3}, w}, {"b", {3}, b}});
    const std::string dir = writer.commit();
    std::string out = read_file(dir + "/model.bin");
    std::filesystem::remove_all(run);
    return out;
  }();
  return bytes;
}

void read_everything(const std::string& dir) {
  const Checkpoint ck(dir);
  for (const CheckpointFile& f : ck.files()) {
    try {
      for (const auto& [name, t] : ck.read_tensors(f.name)) {
        uint64_t numel = 1;
        for (int64_t d : t.shape) numel *= uint64_t(d);
        if (numel != t.data.size())
          property_failed("tensor data size differs from its shape", f.name + ": " + name);
      }
    } catch (const Error&) {
    }
    try {
      (void)ck.read_text(f.name);
    } catch (const Error&) {
    }
  }
}

}  // namespace

int fuzz_checkpoint(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string dir = scratch_dir() + "/ckpt";
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  std::filesystem::create_directory(dir);
  const std::string rest(reinterpret_cast<const char*>(data) + 1, size - 1);
  std::string meta;
  if (data[0] % 2 == 0) {
    const std::string& model = valid_model_bin();
    write_bytes(dir + "/model.bin", model.data(), model.size());
    write_bytes(dir + "/notes.txt", "hello\n", 6);
    meta = rest;
    seal(meta);
  } else {
    write_bytes(dir + "/model.bin", rest.data(), rest.size());
    meta = meta_listing({{"model.bin", rest}});
  }
  write_bytes(dir + "/meta.json", meta.data(), meta.size());
  try {
    read_everything(dir);
  } catch (const Error&) {
  }
  return 0;
}

}  // namespace competelm::fuzz
