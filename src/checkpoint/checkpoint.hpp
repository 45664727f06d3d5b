#pragma once
// Checkpoints: run.dir/checkpoints/step_NNNNNNNN/ holding named-tensor files, opaque state
// blobs, the resolved config and meta.json (human-readable: step, time, one checksum per
// file). Written into a temporary sibling directory, every file fsynced, meta.json written
// last, then renamed into place and the parent directory fsynced: a crash at any moment
// leaves either the complete new checkpoint or none, and never touches the previous one.
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

namespace competelm {

// A tensor by its global identity (name + shape); data is host memory, fp32.
struct NamedTensor {
  std::string name;
  std::vector<int64_t> shape;
  const float* data = nullptr;
};

struct LoadedTensor {
  std::vector<int64_t> shape;
  std::vector<float> data;
};

// One file of a checkpoint as listed in its meta.json.
struct CheckpointFile {
  std::string name;
  uint64_t bytes = 0;
  uint64_t checksum = 0;  // checksum64 of the whole file
};

class CheckpointFileWriter;  // checkpoint/file_io.hpp

class CheckpointWriter {
 public:
  // Starts checkpoints/step_<step>.tmp-<pid>/ under run_dir (removing a stale one).
  CheckpointWriter(const std::string& run_dir, int64_t step);
  ~CheckpointWriter();  // an uncommitted checkpoint's temporary directory is removed
  CheckpointWriter(const CheckpointWriter&) = delete;
  CheckpointWriter& operator=(const CheckpointWriter&) = delete;

  // file_name is a plain name such as "model.bin". Each call writes and fsyncs one file.
  void write_tensors(const std::string& file_name, const std::vector<NamedTensor>& tensors);
  void write_text(const std::string& file_name, const std::string& text);

  // Writes meta.json (step, UTC time, `extra_json_fields` — a JSON object body such as
  // "\"loss\": 3.2" — and per-file sizes and checksums), fsyncs, renames into place.
  // Returns the final directory. Throws competelm::Error (leaving the old checkpoints and
  // removing the temporary directory) on any I/O failure, naming the file.
  std::string commit(const std::string& extra_json_fields = {});

 private:
  std::string run_dir_, tmp_dir_, final_dir_;
  int64_t step_;
  bool committed_ = false;
  int lock_fd_ = -1;  // tmp_dir_ opened and flock()ed: tells prune_checkpoints it is live
  std::vector<CheckpointFile> files_;

  void abandon() noexcept;  // removes tmp_dir_; the writer accepts no more calls
  // The checks and bookkeeping every file shares; body writes the contents.
  void write_file(const std::string& file_name, const std::function<void(CheckpointFileWriter&)>& body);
};

class Checkpoint {
 public:
  // Opens a committed checkpoint directory and verifies every file's checksum and size
  // against meta.json. Throws competelm::Error naming the file that fails.
  explicit Checkpoint(const std::string& dir);

  const std::string& dir() const { return dir_; }
  int64_t step() const { return step_; }
  std::map<std::string, LoadedTensor> read_tensors(const std::string& file_name) const;
  std::string read_text(const std::string& file_name) const;
  bool has_file(const std::string& file_name) const;
  const std::vector<CheckpointFile>& files() const { return files_; }

 private:
  std::string dir_;
  int64_t step_ = 0;
  std::vector<CheckpointFile> files_;

  const CheckpointFile& file(const std::string& file_name) const;  // throws if not listed
};

// Committed checkpoint directories of a run, oldest first (temporary ones are ignored).
std::vector<std::string> list_checkpoints(const std::string& run_dir);

// Removes all but the newest `keep` committed checkpoints (and stale temporary dirs).
void prune_checkpoints(const std::string& run_dir, int keep);

// Checksum used for every checkpoint file (64-bit, fast: ≥ 1 GB/s).
uint64_t checksum64(const void* data, size_t bytes, uint64_t seed = 0);

}  // namespace competelm
