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

// A tensor by its global identity (name + global shape), or the slice [begin, end) of its
// flat (row-major) elements; data is host memory, fp32, end - begin elements (all of them
// when end < 0: the whole tensor).
struct NamedTensor {
  std::string name;
  std::vector<int64_t> shape;
  const float* data = nullptr;
  int64_t begin = 0, end = -1;
};

struct LoadedTensor {
  std::vector<int64_t> shape;
  std::vector<float> data;
};

// One entry of a tensor file: elements [begin, end) of the tensor of global shape `shape`.
struct LoadedSlice {
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;
  std::vector<float> data;  // (end - begin)
  uint64_t numel() const {
    uint64_t n = 1;
    for (int64_t d : shape) n *= uint64_t(d);
    return n;
  }
};

// One file of a checkpoint as listed in its meta.json.
struct CheckpointFile {
  std::string name;
  uint64_t bytes = 0;
  uint64_t checksum = 0;  // checksum64 of the whole file
};

class CheckpointFileWriter;  // checkpoint/file_io.hpp

// Where every element of the tensors of one kind ("model", "optim") lives, from the
// directories of its files alone (no data read): Checkpoint::read_index builds it, checking
// that every element of every tensor is stored exactly once; read_ranges reads from it.
struct TensorKindIndex {
  struct Piece {
    size_t file = 0;              // into files
    uint64_t begin = 0, end = 0;  // elements [begin, end) of the tensor
    uint64_t offset = 0;          // byte offset of element `begin` in that file
  };
  struct Tensor {
    std::vector<int64_t> shape;  // global
    uint64_t numel = 0;
    std::vector<Piece> pieces;   // sorted by begin, tiling [0, numel)
  };
  std::string kind;
  std::vector<CheckpointFile> files;  // <kind>.bin, or the shards in rank order
  std::map<std::string, Tensor> tensors;
};

// Elements [begin, end) of the tensor `name`, to be written to dst (end - begin floats).
struct TensorRangeRequest {
  std::string name;
  uint64_t begin = 0, end = 0;
  float* dst = nullptr;
};

// The file of rank `rank` of `ranks` in a sharded checkpoint: "<kind>.shard-00001-of-00004.bin".
std::string shard_file_name(const std::string& kind, int rank, int ranks);

class CheckpointWriter {
 public:
  // Starts checkpoints/step_<step>.tmp-<pid>/ under run_dir (removing a stale one).
  CheckpointWriter(const std::string& run_dir, int64_t step);
  // A helper writer for another process's checkpoint (a multi-rank save): writes and fsyncs
  // files into that writer's temporary_dir(). It never commits and never removes the
  // directory (on failure the owning writer does); written() goes to the owner's add_files.
  CheckpointWriter(const std::string& temporary_dir, int64_t step, bool helper);
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

  // Multi-rank saves: the directory helpers write into, the files this writer has written,
  // and the owner's record of files helpers wrote there (each checked to exist with its size;
  // a name written twice is refused). Throws (abandoning the checkpoint) on a mismatch.
  const std::string& temporary_dir() const { return tmp_dir_; }
  const std::vector<CheckpointFile>& written() const { return files_; }
  void add_files(const std::vector<CheckpointFile>& files);

 private:
  std::string run_dir_, tmp_dir_, final_dir_;
  int64_t step_;
  bool helper_ = false;
  bool committed_ = false;
  int lock_fd_ = -1;  // tmp_dir_ opened and flock()ed: tells prune_checkpoints it is live
  std::vector<CheckpointFile> files_;

  void abandon() noexcept;  // removes tmp_dir_; the writer accepts no more calls
  // The checks and bookkeeping every file shares; body writes the contents.
  void write_file(const std::string& file_name, const std::function<void(CheckpointFileWriter&)>& body);
};

class Checkpoint {
 public:
  // all: every file's checksum is verified on opening. none: meta.json is still parsed and
  // verified (its own checksum) and every listed file checked to exist with its listed size,
  // but file contents are not read: for readers that split verification (verify_files) among
  // processes, e.g. the ranks of a resume (train/run_state.cpp).
  enum class Verify { all, none };
  // Opens a committed checkpoint directory and verifies it against meta.json. Throws
  // competelm::Error naming the file that fails.
  explicit Checkpoint(const std::string& dir, Verify verify = Verify::all);

  const std::string& dir() const { return dir_; }
  int64_t step() const { return step_; }
  // Verifies (size and checksum, reading each whole) the files at these indices of files().
  void verify_files(const std::vector<size_t>& indices) const;
  // A split verification's share: indices into files() for part `part` of `parts`. The parts
  // partition the files, balanced by bytes (greedy, largest file first), and are the same on
  // every process that reads this meta.json.
  std::vector<size_t> verification_share(int part, int parts) const;

  // Selective loading. read_index reads only the directories of <kind>'s files (a few KB
  // each) and checks the exact-coverage rule as read_assembled does (same errors); read_ranges
  // then reads just the bytes of the requested elements (pread of the overlapping pieces).
  // Neither verifies checksums: open with Verify::all, or verify the files (split) first.
  TensorKindIndex read_index(const std::string& kind) const;
  void read_ranges(const TensorKindIndex& index, const std::vector<TensorRangeRequest>& wanted) const;
  // Bytes this object has read from the checkpoint's files (meta.json excluded) so far:
  // verification, indexes, ranges, tensors, text. Not synchronized: one thread per Checkpoint.
  uint64_t bytes_read() const { return bytes_read_; }
  // A file of whole tensors (a slice entry is refused: see read_assembled).
  std::map<std::string, LoadedTensor> read_tensors(const std::string& file_name) const;
  // The whole tensors of `kind` ("model", "optim"), from <kind>.bin or, in a multi-rank
  // checkpoint, from all of <kind>.shard-R-of-N.bin: every element of every tensor must be
  // stored exactly once (a gap or an overlap is refused, naming the tensor and the range).
  std::map<std::string, LoadedTensor> read_assembled(const std::string& kind) const;
  std::string read_text(const std::string& file_name) const;
  bool has_file(const std::string& file_name) const;
  const std::vector<CheckpointFile>& files() const { return files_; }

 private:
  std::string dir_;
  int64_t step_ = 0;
  std::vector<CheckpointFile> files_;
  mutable uint64_t bytes_read_ = 0;

  const CheckpointFile& file(const std::string& file_name) const;  // throws if not listed
  // The files of a tensor kind: <kind>.bin, or all shards in rank order (a missing one refused).
  std::vector<const CheckpointFile*> kind_files(const std::string& kind) const;
};

// Committed checkpoint directories of a run, oldest first (temporary ones are ignored).
std::vector<std::string> list_checkpoints(const std::string& run_dir);

// Removes all but the newest `keep` committed checkpoints (and stale temporary dirs).
void prune_checkpoints(const std::string& run_dir, int keep);

// Checksum used for every checkpoint file (64-bit, fast: ≥ 1 GB/s).
uint64_t checksum64(const void* data, size_t bytes, uint64_t seed = 0);

}  // namespace competelm
