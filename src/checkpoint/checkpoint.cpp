// Checkpoint storage: directory layout, commit protocol, verification, listing, pruning.
//
// ---- Layout ------------------------------------------------------------------------------
//   <run_dir>/checkpoints/step_00001000/           committed (8+ digit zero-padded step)
//       model.bin, optim.bin, ...                  tensor files (format below): one process
//       model.shard-00000-of-00004.bin, ...        or, saved by W > 1 ranks, one file per rank
//       optim.shard-00000-of-00004.bin, ...        and kind (the rank's slices, v2 below)
//       config.yaml, rng.txt, ...                  opaque text / blobs
//       meta.json                                  written last; its presence = committed
//   <run_dir>/checkpoints/step_00001000.tmp-<pid>  being written (or left by a crash)
//
// meta.json (version 1):
//   {"format": "competelm-checkpoint", "version": 1, "step": 1000,
//    "time_utc": "2024-05-01T12:00:00Z", <extra fields from the caller>,
//    "files": {"model.bin": {"bytes": 497759232, "checksum": "<16 hex digits>"}, ...},
//    "meta_checksum": "<16 hex digits>"}
//   checksum = checksum64 (XXH64, seed 0) of the whole file, lowercase hex; meta_checksum is
//   the same over meta.json itself with its own 16 digits replaced by '0' (always last).
//
// A sharded kind ("model", "optim") is complete when meta.json lists all N files
// <kind>.shard-R-of-N.bin (R = 0..N-1, 5 digits each) and their entries tile every tensor's
// elements exactly once; Checkpoint::read_assembled joins them (any reader, any rank count).
// A resuming rank reads less: read_index takes only the files' directories (same coverage
// checks) and read_ranges preads the bytes of the elements it holds; the ranks split the
// checksum verification (Verify::none + verify_files(verification_share(rank, W))).
// The saver adds "ranks": W, "expert_parallel": P to meta.json (informational).
//
// Multi-rank commit (train/run_state.cpp): rank 0 creates the temporary directory and sends
// its path to all; every rank writes and fsyncs its shard files there (CheckpointWriter's
// helper form); a failure anywhere is all-reduced, so every rank throws the failing rank's
// error and rank 0 removes the directory; otherwise the file records are gathered to rank 0,
// which writes the state/config files and meta.json last (the commit marker) and renames.
//
// Commit protocol: every file is written with checked write() calls and fsynced; meta.json
// is written and fsynced last; the temporary directory is fsynced; it is renamed onto the
// final name (atomically exchanged with an existing checkpoint of the same step, which is
// then deleted) and the checkpoints/ directory is fsynced. A crash at any point leaves
// either the complete new checkpoint or none, and earlier checkpoints are never modified.
// The writer holds flock() on its temporary directory so that prune_checkpoints can tell a
// live writer's directory from one abandoned by a crashed process (pids get reused).
//
// ---- Tensor file format "CLMTENS" versions 1 and 2 (stable; little-endian throughout) ----
//   offset 0   char[8]   magic "CLMTENS\0"
//          8   uint32    version = 1 (whole tensors) or 2 (slices)
//         12   uint32    count (number of tensors)
//         16   count directory entries, each:
//                uint32    name length L (1..4096)
//                char[L]   name (UTF-8, no terminator), unique within the file
//                uint32    dtype (0 = f32; no other value defined in version 1)
//                uint32    ndim (0..8)
//                int64     dims[ndim] (each >= 0; numel = product, 1 for ndim = 0): the
//                          tensor's global shape
//                uint64    begin  } version 2 only: the entry holds elements [begin, end)
//                uint64    end    } of the flat tensor (begin <= end <= numel); v1: [0, numel)
//                uint64    data offset from the file start, a multiple of 64
//   then the data blocks, (end - begin) * 4 bytes each, in directory order, each starting at its
//   offset (zero padding in between), not overlapping the directory or each other; the file
//   ends exactly where the last block ends (at the directory end when count = 0).
// Writers emit version 1 when every entry is whole (single-process files are unchanged).
// Readers validate all of this before allocating (name/ndim/count caps, shape overflow,
// every range inside its shape, every block inside the file) and throw competelm::Error
// naming file, tensor and offset.
// An incompatible change must bump the version; readers reject versions they do not know.
#include "checkpoint/checkpoint.hpp"

#include <fcntl.h>
#include <stdio.h>  // renameat2, RENAME_EXCHANGE (glibc >= 2.28)
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <ctime>
#include <thread>
#include <filesystem>
#include <optional>
#include <system_error>

#include "checkpoint/file_io.hpp"
#include "checkpoint/tensor_file.hpp"
#include "core/tensor_table.hpp"
#include "core/error.hpp"
#include "core/fs_util.hpp"
#include "core/json.hpp"

namespace competelm {

namespace fs = std::filesystem;

namespace {

constexpr const char* kMetaFile = "meta.json";
constexpr const char* kMetaFormat = "competelm-checkpoint";
constexpr int64_t kMetaVersion = 1;
constexpr uint64_t kMaxMetaBytes = 16u << 20;  // meta.json is tiny; refuse to slurp garbage

// meta.json protects itself: its last member is "meta_checksum": checksum64 of the file's
// exact bytes with those 16 hex digits replaced by '0'. A flipped byte anywhere in it is
// detected, not just in the per-file entries.
constexpr const char* kMetaChecksumKey = "meta_checksum";

// Position of the 16 hex digits of meta_checksum in the text, or npos.
size_t meta_checksum_pos(const std::string& text) {
  const std::string needle = fmt::format("\"{}\": \"", kMetaChecksumKey);
  size_t at = text.rfind(needle);
  if (at == std::string::npos || at + needle.size() + 16 > text.size()) return std::string::npos;
  return at + needle.size();
}

uint64_t meta_checksum_of(std::string text, size_t digits_pos) {
  text.replace(digits_pos, 16, 16, '0');
  return checksum64(text.data(), text.size());
}

void seal_meta(std::string& text) {
  size_t pos = meta_checksum_pos(text);
  CLM_ASSERT(pos != std::string::npos);
  text.replace(pos, 16, checksum_hex(meta_checksum_of(text, pos)));
}

std::string checkpoints_dir(const std::string& run_dir) { return run_dir + "/checkpoints"; }

std::string step_dir_name(int64_t step) { return fmt::format("step_{:08d}", step); }

// "step_00001000" → 1000; nullopt for anything else (temporary dirs included).
std::optional<int64_t> parse_step_dir_name(const std::string& name) {
  constexpr std::string_view kPrefix = "step_";
  if (name.size() < kPrefix.size() + 8 || name.size() > kPrefix.size() + 18) return std::nullopt;
  if (name.compare(0, kPrefix.size(), kPrefix) != 0) return std::nullopt;
  int64_t step = 0;
  for (size_t i = kPrefix.size(); i < name.size(); ++i) {
    if (name[i] < '0' || name[i] > '9') return std::nullopt;
    step = step * 10 + (name[i] - '0');
  }
  return step;
}

bool is_temporary_dir_name(const std::string& name) {
  return name.rfind("step_", 0) == 0 && name.find(".tmp-") != std::string::npos;
}

// A file name inside a checkpoint directory: one plain path component.
void check_file_name(const std::string& name, const std::string& context) {
  if (name.empty() || name == "." || name == ".." || name.find('/') != std::string::npos ||
      name.find('\0') != std::string::npos)
    fail("{}: invalid checkpoint file name '{}' (must be a plain file name)", context, name);
}

// TEST-ONLY: COMPETELM_TEST_CHECKPOINT_SLOW_MS=N sleeps N ms after each file of a checkpoint
// (before meta.json), so that tests/integration/kill_resume.sh lands a good share of its
// `kill -9`s inside a checkpoint write. Unset (production) = no pause. Read from the
// environment at each call: no process-wide state.
void test_slow_checkpoint_pause() {
  const char* ms = std::getenv("COMPETELM_TEST_CHECKPOINT_SLOW_MS");
  if (!ms || !*ms) return;
  const long n = std::strtol(ms, nullptr, 10);
  if (n > 0) std::this_thread::sleep_for(std::chrono::milliseconds(n));
}

std::string utc_now_iso8601() {
  std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

// Opens `dir` and takes an exclusive flock on it without blocking. Returns the fd, or -1 if
// another open file description holds the lock (a live writer, possibly in this process).
int try_lock_dir(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) fail_io("cannot open directory", dir, errno);
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    int err = errno;
    ::close(fd);
    if (err == EWOULDBLOCK) return -1;
    fail_io("cannot lock directory", dir, err);
  }
  return fd;
}

void remove_tree(const std::string& path) {
  std::error_code ec;
  fs::remove_all(path, ec);
  if (ec) fail("cannot remove {}: {}", path, ec.message());
}

// Moves `from` onto `to`, which may hold an older checkpoint of the same step: exchanged
// atomically where the filesystem supports it, else moved aside first; the old one is
// deleted only once the new one is in place.
void install_dir(const std::string& from, const std::string& to) {
  if (::rename(from.c_str(), to.c_str()) == 0) return;
  if (errno != ENOTEMPTY && errno != EEXIST) fail_io("cannot rename " + from + " to", to, errno);
  if (::renameat2(AT_FDCWD, from.c_str(), AT_FDCWD, to.c_str(), RENAME_EXCHANGE) == 0) {
    remove_tree(from);  // now holds the replaced checkpoint
    return;
  }
  if (errno != EINVAL && errno != ENOSYS && errno != ENOTSUP)
    fail_io("cannot exchange " + from + " with", to, errno);
  const std::string aside = from + ".old";
  if (::rename(to.c_str(), aside.c_str()) != 0) fail_io("cannot move aside", to, errno);
  if (::rename(from.c_str(), to.c_str()) != 0) {
    int err = errno;
    ::rename(aside.c_str(), to.c_str());  // put the old checkpoint back
    fail_io("cannot rename " + from + " to", to, err);
  }
  remove_tree(aside);
}

}  // namespace

// ---- CheckpointWriter ------------------------------------------------------------------

CheckpointWriter::CheckpointWriter(const std::string& run_dir, int64_t step)
    : run_dir_(run_dir), step_(step) {
  if (step < 0) fail("checkpoint step must be >= 0, got {}", step);
  const std::string parent = checkpoints_dir(run_dir);
  std::error_code ec;
  fs::create_directories(parent, ec);
  if (ec) fail("cannot create checkpoint directory {}: {}", parent, ec.message());
  final_dir_ = parent + "/" + step_dir_name(step);
  const std::string tmp = final_dir_ + ".tmp-" + std::to_string(::getpid());
  if (fs::exists(tmp, ec)) {  // left by an earlier writer of this process for the same step
    int fd = try_lock_dir(tmp);
    if (fd < 0) fail("{}: another CheckpointWriter for step {} is still open", tmp, step);
    ::close(fd);
    remove_tree(tmp);
  }
  if (::mkdir(tmp.c_str(), 0755) != 0) fail_io("cannot create", tmp, errno);
  tmp_dir_ = tmp;
  try {
    lock_fd_ = try_lock_dir(tmp_dir_);
    CLM_ASSERT(lock_fd_ >= 0);
  } catch (...) {
    abandon();
    throw;
  }
}

CheckpointWriter::CheckpointWriter(const std::string& temporary_dir, int64_t step, bool helper)
    : step_(step), helper_(true) {
  CLM_ASSERT(helper);
  std::error_code ec;
  const std::string base = fs::path(temporary_dir).filename().string();
  if (!is_temporary_dir_name(base) || !fs::is_directory(temporary_dir, ec))
    fail("{}: not a checkpoint's temporary directory (the owning rank's writer must create it)", temporary_dir);
  tmp_dir_ = temporary_dir;
}

CheckpointWriter::~CheckpointWriter() {
  if (!committed_) abandon();
}

void CheckpointWriter::abandon() noexcept {
  if (helper_) {  // the owning writer removes the directory
    tmp_dir_.clear();
    files_.clear();
    return;
  }
  if (!tmp_dir_.empty()) {
    std::error_code ec;
    fs::remove_all(tmp_dir_, ec);  // best effort: prune_checkpoints retries stale ones
    tmp_dir_.clear();
  }
  if (lock_fd_ >= 0) {
    ::close(lock_fd_);
    lock_fd_ = -1;
  }
  files_.clear();
}

void CheckpointWriter::write_file(const std::string& file_name,
                                  const std::function<void(CheckpointFileWriter&)>& body) {
  if (committed_ || tmp_dir_.empty())
    fail("checkpoint step {}: writing '{}' after commit or after a failure", step_, file_name);
  try {
    check_file_name(file_name, tmp_dir_);
    if (file_name == kMetaFile) fail("{}: '{}' is reserved", tmp_dir_, file_name);
    for (const auto& f : files_)
      if (f.name == file_name) fail("{}: '{}' written twice", tmp_dir_, file_name);
    CheckpointFileWriter out(file_name, tmp_dir_);
    body(out);
    files_.push_back(out.finish());
    test_slow_checkpoint_pause();
  } catch (...) {
    abandon();
    throw;
  }
}

void CheckpointWriter::write_tensors(const std::string& file_name, const std::vector<NamedTensor>& tensors) {
  write_file(file_name, [&](CheckpointFileWriter& out) { write_tensor_file(out, tensors, tmp_dir_ + "/" + file_name); });
}

void CheckpointWriter::write_text(const std::string& file_name, const std::string& text) {
  write_file(file_name, [&](CheckpointFileWriter& out) { out.write(text.data(), text.size()); });
}

void CheckpointWriter::add_files(const std::vector<CheckpointFile>& files) {
  if (committed_ || tmp_dir_.empty() || helper_)
    fail("checkpoint step {}: add_files on a helper, after commit or after a failure", step_);
  try {
    for (const CheckpointFile& f : files) {
      check_file_name(f.name, tmp_dir_);
      if (f.name == kMetaFile) fail("{}: '{}' is reserved", tmp_dir_, f.name);
      for (const auto& g : files_)
        if (g.name == f.name) fail("{}: '{}' written twice", tmp_dir_, f.name);
      const std::string path = tmp_dir_ + "/" + f.name;
      std::error_code ec;
      const auto size = fs::file_size(path, ec);
      if (ec) fail("{}: written by another rank but cannot be read: {}", path, ec.message());
      if (size != f.bytes) fail("{}: another rank wrote {} bytes but the file has {}", path, f.bytes, size);
      files_.push_back(f);
    }
  } catch (...) {
    abandon();
    throw;
  }
}

std::string CheckpointWriter::commit(const std::string& extra_json_fields) {
  if (helper_) fail("checkpoint step {}: a helper writer cannot commit (the owning rank does)", step_);
  if (committed_ || tmp_dir_.empty())
    fail("checkpoint step {}: commit() called twice or after a failure", step_);
  try {
    std::string extra = extra_json_fields;
    extra.erase(0, extra.find_first_not_of(" \t\r\n"));
    extra.erase(extra.find_last_not_of(" \t\r\n,") + 1);
    if (!extra.empty()) parse_json("{" + extra + "}", "checkpoint extra_json_fields");

    std::string meta = "{\n";
    meta += fmt::format("  \"format\": {},\n", json_quote(kMetaFormat));
    meta += fmt::format("  \"version\": {},\n", kMetaVersion);
    meta += fmt::format("  \"step\": {},\n", step_);
    meta += fmt::format("  \"time_utc\": {},\n", json_quote(utc_now_iso8601()));
    if (!extra.empty()) meta += "  " + extra + ",\n";
    meta += "  \"files\": {";
    for (size_t i = 0; i < files_.size(); ++i) {
      const CheckpointFile& f = files_[i];
      meta += fmt::format("{}\n    {}: {{\"bytes\": {}, \"checksum\": \"{}\"}}", i ? "," : "",
                          json_quote(f.name), f.bytes, checksum_hex(f.checksum));
    }
    meta += files_.empty() ? "},\n" : "\n  },\n";
    meta += fmt::format("  \"{}\": \"{}\"\n}}\n", kMetaChecksumKey, std::string(16, '0'));
    seal_meta(meta);
    // Catches extra fields that collide with ours (duplicate keys are rejected).
    parse_json(meta, "checkpoint meta.json (check extra_json_fields)");

    CheckpointFileWriter out(kMetaFile, tmp_dir_);
    out.write(meta.data(), meta.size());
    out.finish();
    if (::fsync(lock_fd_) != 0) fail_io("fsync failed for directory", tmp_dir_, errno);
    install_dir(tmp_dir_, final_dir_);
  } catch (...) {
    abandon();
    throw;
  }
  // The checkpoint is in place; from here on nothing may delete it.
  committed_ = true;
  tmp_dir_.clear();
  ::close(lock_fd_);
  lock_fd_ = -1;
  fsync_dir(checkpoints_dir(run_dir_));
  fsync_dir(run_dir_);
  return final_dir_;
}

// ---- Checkpoint (reader) ---------------------------------------------------------------

Checkpoint::Checkpoint(const std::string& dir, Verify verify) : dir_(dir) {
  const std::string meta_path = dir + "/" + kMetaFile;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) fail("checkpoint {}: not a directory", dir);
  auto meta_size = fs::file_size(meta_path, ec);
  if (ec)
    fail_hint("an interrupted save leaves no meta.json; use an earlier checkpoint",
              "checkpoint {}: cannot read meta.json: {}", dir, ec.message());
  if (meta_size > kMaxMetaBytes) fail("{}: implausibly large ({} bytes)", meta_path, meta_size);
  const std::string meta_text = read_file(meta_path);
  const JsonValue meta = parse_json(meta_text, meta_path);
  // Format and version first, so a future version's layout gets the clearer error.

  const std::string& format = meta.at("format", meta_path).as_string(meta_path + ": format");
  if (format != kMetaFormat) fail("{}: format is \"{}\", expected \"{}\"", meta_path, format, kMetaFormat);
  const int64_t version = meta.at("version", meta_path).as_int64(meta_path + ": version");
  if (version != kMetaVersion)
    fail_hint("use a competelm build that reads this checkpoint version",
              "{}: unsupported checkpoint version {} (this build reads {})", meta_path, version, kMetaVersion);
  const std::string& sealed = meta.at(kMetaChecksumKey, meta_path).as_string(meta_path + ": " + kMetaChecksumKey);
  const size_t digits_pos = meta_checksum_pos(meta_text);
  if (digits_pos == std::string::npos || meta_text.compare(digits_pos, 16, sealed) != 0)
    fail("{}: {} is not in the canonical form written by competelm", meta_path, kMetaChecksumKey);
  if (const uint64_t got = meta_checksum_of(meta_text, digits_pos); checksum_hex(got) != sealed)
    fail_hint("the file changed after it was written; resume from an earlier checkpoint",
              "{}: checksum mismatch (file corrupted?): meta_checksum is {}, content hashes to {}",
              meta_path, sealed, checksum_hex(got));
  step_ = meta.at("step", meta_path).as_int64(meta_path + ": step");
  const std::string base = fs::path(dir).filename().string();
  if (auto named = parse_step_dir_name(base); named && *named != step_)
    fail("{}: step {} does not match the directory name {}", meta_path, step_, base);

  const std::string files_what = meta_path + ": files";
  for (const auto& [name, entry] : meta.at("files", meta_path).as_object(files_what)) {
    const std::string what = files_what + "." + name;
    check_file_name(name, meta_path);
    CheckpointFile f;
    f.name = name;
    f.bytes = entry.at("bytes", what).as_uint64(what + ".bytes");
    const std::string& hex = entry.at("checksum", what).as_string(what + ".checksum");
    if (hex.size() != 16 || hex.find_first_not_of("0123456789abcdef") != std::string::npos)
      fail("{}.checksum: \"{}\" is not 16 lowercase hex digits", what, hex);
    f.checksum = std::stoull(hex, nullptr, 16);
    files_.push_back(std::move(f));
  }
  if (verify == Verify::all) {
    std::vector<size_t> every(files_.size());
    for (size_t i = 0; i < every.size(); ++i) every[i] = i;
    verify_files(every);
    return;
  }
  // Unverified contents, but the listing must hold: each file there with its size.
  for (const CheckpointFile& f : files_) {
    const std::string path = dir + "/" + f.name;
    const auto size = fs::file_size(path, ec);
    if (ec) fail("{}: listed in meta.json but cannot be read: {}", path, ec.message());
    if (size != f.bytes)
      fail("{}: size mismatch: meta.json lists {} bytes but the file has {} (truncated or corrupted?)", path,
           f.bytes, size);
  }
}

void Checkpoint::verify_files(const std::vector<size_t>& indices) const {
  for (size_t i : indices) {
    CLM_ASSERT(i < files_.size());
    verify_checkpoint_file(dir_, files_[i]);
    bytes_read_ += files_[i].bytes;
  }
}

std::vector<size_t> Checkpoint::verification_share(int part, int parts) const {
  CLM_ASSERT(parts > 0 && part >= 0 && part < parts);
  // Largest file first, each to the part with the fewest bytes so far (ties: the lower part):
  // deterministic, so every process reading this meta.json computes the same partition.
  std::vector<size_t> order(files_.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return files_[a].bytes > files_[b].bytes; });
  std::vector<uint64_t> load(size_t(parts), 0);
  std::vector<size_t> mine;
  for (size_t i : order) {
    const size_t to = size_t(std::min_element(load.begin(), load.end()) - load.begin());
    load[to] += files_[i].bytes;
    if (to == size_t(part)) mine.push_back(i);
  }
  std::sort(mine.begin(), mine.end());
  return mine;
}

const CheckpointFile& Checkpoint::file(const std::string& file_name) const {
  for (const CheckpointFile& f : files_)
    if (f.name == file_name) return f;
  fail("checkpoint {}: has no file '{}' (meta.json lists {} files)", dir_, file_name, files_.size());
}

bool Checkpoint::has_file(const std::string& file_name) const {
  return std::any_of(files_.begin(), files_.end(), [&](const CheckpointFile& f) { return f.name == file_name; });
}

std::map<std::string, LoadedTensor> Checkpoint::read_tensors(const std::string& file_name) const {
  CheckpointFileReader in(dir_, file(file_name));
  auto out = read_tensor_file(in);
  bytes_read_ += in.bytes_read();
  return out;
}

namespace {

// "<kind>.shard-00001-of-00004.bin" → {1, 4}; nullopt for any other name.
std::optional<std::pair<int, int>> parse_shard_file_name(const std::string& name, const std::string& kind) {
  const std::string prefix = kind + ".shard-";
  constexpr size_t kDigits = 5;
  if (name.size() != prefix.size() + kDigits + 4 + kDigits + 4 || name.compare(0, prefix.size(), prefix) != 0)
    return std::nullopt;
  auto number = [&](size_t at, int& out) {
    out = 0;
    for (size_t i = at; i < at + kDigits; ++i) {
      if (name[i] < '0' || name[i] > '9') return false;
      out = out * 10 + (name[i] - '0');
    }
    return true;
  };
  int rank = 0, ranks = 0;
  const size_t of = prefix.size() + kDigits;
  if (!number(prefix.size(), rank) || name.compare(of, 4, "-of-") != 0 || !number(of + 4, ranks) ||
      name.compare(of + 4 + kDigits, 4, ".bin") != 0)
    return std::nullopt;
  return std::make_pair(rank, ranks);
}

}  // namespace

std::string shard_file_name(const std::string& kind, int rank, int ranks) {
  CLM_ASSERT(rank >= 0 && rank < ranks && ranks <= 99999);
  return fmt::format("{}.shard-{:05d}-of-{:05d}.bin", kind, rank, ranks);
}

std::vector<const CheckpointFile*> Checkpoint::kind_files(const std::string& kind) const {
  std::vector<const CheckpointFile*> sources;
  const std::string whole_name = kind + ".bin";
  if (has_file(whole_name)) {
    sources.push_back(&file(whole_name));
    return sources;
  }
  int ranks = 0;
  std::map<int, const CheckpointFile*> by_rank;
  for (const CheckpointFile& f : files_) {
    auto shard = parse_shard_file_name(f.name, kind);
    if (!shard) continue;
    if (ranks != 0 && shard->second != ranks)
      fail("checkpoint {}: {} says {} ranks but another shard file says {}", dir_, f.name, shard->second, ranks);
    ranks = shard->second;
    if (shard->first >= ranks) fail("checkpoint {}: {}: rank {} of {} ranks", dir_, f.name, shard->first, ranks);
    by_rank[shard->first] = &f;
  }
  if (ranks == 0) fail("checkpoint {}: has neither {} nor {}.shard-*.bin files", dir_, whole_name, kind);
  for (int r = 0; r < ranks; ++r) {
    if (!by_rank.count(r))
      fail_hint("the checkpoint is incomplete; resume from an earlier one",
                "checkpoint {}: {} is missing (meta.json lists {} of {} {} shards)", dir_,
                shard_file_name(kind, r, ranks), by_rank.size(), ranks, kind);
    sources.push_back(by_rank[r]);
  }
  return sources;
}

TensorKindIndex Checkpoint::read_index(const std::string& kind) const {
  TensorKindIndex index;
  index.kind = kind;
  for (const CheckpointFile* f : kind_files(kind)) index.files.push_back(*f);
  // Upper bound on the elements the files can cover: an entry claiming a huge global shape
  // (corruption) is refused here, before any reader allocates its tensor.
  uint64_t budget = 0;
  for (const CheckpointFile& f : index.files) budget += f.bytes / sizeof(float);
  // Every directory first: a damaged file is reported as such, not as the gap it leaves.
  std::vector<std::vector<TensorFileEntry>> directories;
  for (const CheckpointFile& f : index.files) {
    CheckpointFileReader in(dir_, f);
    directories.push_back(read_tensor_index(in));
    bytes_read_ += in.bytes_read();
  }
  uint64_t claimed = 0;
  std::map<std::string, size_t> first_file;  // where each tensor was first seen
  for (size_t fi = 0; fi < index.files.size(); ++fi) {
    const CheckpointFile& f = index.files[fi];
    for (TensorFileEntry& e : directories[fi]) {
      auto it = index.tensors.find(e.name);
      if (it == index.tensors.end()) {
        TensorKindIndex::Tensor t;
        t.numel = 1;
        for (int64_t d : e.shape) t.numel *= uint64_t(d);  // no overflow: checked by the parser
        if (t.numel > budget - claimed)
          fail("{}/{}: tensor '{}' {} has more elements ({}) than the {} files hold", dir_, f.name, e.name,
               shape_str(e.shape), t.numel, kind);
        claimed += t.numel;
        t.shape = e.shape;
        it = index.tensors.emplace(e.name, std::move(t)).first;
        first_file[e.name] = fi;
      } else if (it->second.shape != e.shape) {
        fail("{}/{}: tensor '{}' has shape {} but {} gives it {}", dir_, f.name, e.name, shape_str(e.shape),
             index.files[first_file[e.name]].name, shape_str(it->second.shape));
      }
      it->second.pieces.push_back({fi, e.begin, e.end, e.offset});
    }
  }
  // Every element exactly once: the sorted pieces tile [0, numel).
  for (auto& [name, t] : index.tensors) {
    auto& list = t.pieces;
    std::stable_sort(list.begin(), list.end(),
                     [](const TensorKindIndex::Piece& a, const TensorKindIndex::Piece& b) { return a.begin < b.begin; });
    uint64_t covered = 0;
    const std::string* prev = nullptr;
    for (const TensorKindIndex::Piece& p : list) {
      if (p.begin > covered)
        fail("checkpoint {}: tensor '{}': elements [{}, {}) are in no {} file", dir_, name, covered, p.begin, kind);
      if (p.begin < covered)
        fail("checkpoint {}: tensor '{}': elements [{}, {}) are stored twice ({} and {})", dir_, name, p.begin,
             std::min(covered, p.end), *prev, index.files[p.file].name);
      covered = p.end;
      prev = &index.files[p.file].name;
    }
    if (covered != t.numel)
      fail("checkpoint {}: tensor '{}': elements [{}, {}) are in no {} file", dir_, name, covered, t.numel, kind);
  }
  return index;
}

void Checkpoint::read_ranges(const TensorKindIndex& index, const std::vector<TensorRangeRequest>& wanted) const {
  struct Read {
    uint64_t offset;  // in the file
    size_t bytes;
    float* dst;
  };
  std::vector<std::vector<Read>> by_file(index.files.size());
  for (const TensorRangeRequest& w : wanted) {
    auto it = index.tensors.find(w.name);
    if (it == index.tensors.end())
      fail("checkpoint {}: no {} file holds a tensor '{}'", dir_, index.kind, w.name);
    const TensorKindIndex::Tensor& t = it->second;
    if (w.begin > w.end || w.end > t.numel)
      fail("checkpoint {}: elements [{}, {}) of tensor '{}' {} requested, but it has {}", dir_, w.begin, w.end,
           w.name, shape_str(t.shape), t.numel);
    if (w.begin == w.end) continue;
    CLM_ASSERT(w.dst != nullptr);
    // The pieces tile [0, numel) in order: start at the last one beginning at or before w.begin.
    auto p = std::upper_bound(t.pieces.begin(), t.pieces.end(), w.begin,
                              [](uint64_t at, const TensorKindIndex::Piece& q) { return at < q.begin; });
    if (p != t.pieces.begin()) --p;
    for (; p != t.pieces.end() && p->begin < w.end; ++p) {
      const uint64_t lo = std::max(w.begin, p->begin), hi = std::min(w.end, p->end);
      if (lo >= hi) continue;
      by_file[p->file].push_back({p->offset + (lo - p->begin) * sizeof(float), size_t(hi - lo) * sizeof(float),
                                  w.dst + (lo - w.begin)});
    }
  }
  for (size_t fi = 0; fi < by_file.size(); ++fi) {
    std::vector<Read>& reads = by_file[fi];
    if (reads.empty()) continue;  // this reader needs nothing from that file: not even opened
    std::sort(reads.begin(), reads.end(), [](const Read& a, const Read& b) { return a.offset < b.offset; });
    CheckpointFileReader in(dir_, index.files[fi]);
    for (const Read& r : reads) in.read_at(r.offset, r.dst, r.bytes);
    bytes_read_ += in.bytes_read();
  }
}

std::map<std::string, LoadedTensor> Checkpoint::read_assembled(const std::string& kind) const {
  // The directories first: coverage and shapes checked before any tensor is allocated.
  const TensorKindIndex index = read_index(kind);
  std::map<std::string, LoadedTensor> out;
  for (const auto& [name, t] : index.tensors)
    out.emplace(name, LoadedTensor{t.shape, std::vector<float>(size_t(t.numel), 0.0f)});
  // Then every file streamed through its checksum.
  for (const CheckpointFile& f : index.files) {
    CheckpointFileReader in(dir_, f);
    for (auto& [name, slice] : read_tensor_slices(in)) {
      auto it = out.find(name);
      if (it == out.end() || it->second.shape != slice.shape || slice.end > it->second.data.size())
        fail("{}/{}: tensor '{}' changed while the checkpoint was being read", dir_, f.name, name);
      std::copy(slice.data.begin(), slice.data.end(), it->second.data.begin() + ptrdiff_t(slice.begin));
    }
    bytes_read_ += in.bytes_read();
  }
  return out;
}

std::string Checkpoint::read_text(const std::string& file_name) const {
  CheckpointFileReader in(dir_, file(file_name));
  std::string text(size_t(in.size()), '\0');
  in.read(text.data(), text.size());
  in.finish();
  bytes_read_ += in.bytes_read();
  return text;
}

// ---- listing and pruning ---------------------------------------------------------------

std::vector<std::string> list_checkpoints(const std::string& run_dir) {
  const std::string parent = checkpoints_dir(run_dir);
  std::vector<std::pair<int64_t, std::string>> found;
  std::error_code ec;
  fs::directory_iterator it(parent, ec);
  if (ec) {
    if (ec == std::errc::no_such_file_or_directory) return {};
    fail("cannot list {}: {}", parent, ec.message());
  }
  for (const fs::directory_entry& e : it) {
    const std::string name = e.path().filename().string();
    std::optional<int64_t> step = parse_step_dir_name(name);
    if (!step || !e.is_directory(ec)) continue;
    if (!fs::is_regular_file(e.path() / kMetaFile, ec)) continue;  // incomplete
    found.emplace_back(*step, parent + "/" + name);
  }
  std::sort(found.begin(), found.end());
  std::vector<std::string> dirs;
  for (auto& f : found) dirs.push_back(std::move(f.second));
  return dirs;
}

// keep <= 0 keeps every committed checkpoint (only temporary dirs are cleaned): deleting
// the last checkpoint of a run is never what a "keep" setting of 0 means in practice.
void prune_checkpoints(const std::string& run_dir, int keep) {
  const std::string parent = checkpoints_dir(run_dir);
  if (keep > 0) {
    std::vector<std::string> dirs = list_checkpoints(run_dir);
    const size_t excess = dirs.size() > size_t(keep) ? dirs.size() - size_t(keep) : 0;
    for (size_t i = 0; i < excess; ++i) {
      // Rename first (atomic) so a crash mid-delete leaves a temporary dir, never a
      // half-deleted "committed" checkpoint.
      const std::string doomed = dirs[i] + ".tmp-" + std::to_string(::getpid()) + ".del";
      if (::rename(dirs[i].c_str(), doomed.c_str()) != 0) fail_io("cannot rename for deletion", dirs[i], errno);
      remove_tree(doomed);
    }
    if (excess > 0) fsync_dir(parent);
  }
  // Temporary dirs nobody holds the lock on were abandoned by crashed or failed writers.
  std::error_code ec;
  fs::directory_iterator it(parent, ec);
  if (ec) return;
  std::vector<std::string> stale;  // collected first: no deleting while iterating
  for (const fs::directory_entry& e : it) {
    const std::string name = e.path().filename().string();
    if (!is_temporary_dir_name(name) || !e.is_directory(ec)) continue;
    const std::string path = parent + "/" + name;
    stale.push_back(path);
  }
  for (const std::string& path : stale) {
    if (!fs::exists(path, ec)) continue;
    int fd = try_lock_dir(path);
    if (fd < 0) continue;  // a live writer
    try {
      remove_tree(path);  // while holding the lock
    } catch (...) {
      ::close(fd);
      throw;
    }
    ::close(fd);
  }
}

}  // namespace competelm
