#include "checkpoint/tensor_file.hpp"

#include <algorithm>
#include <bit>
#include <cstring>
#include <set>

#include "core/error.hpp"
#include "core/tensor_table.hpp"

namespace competelm {

namespace {

static_assert(std::endian::native == std::endian::little,
              "the tensor file format is little-endian; add byte swapping for this host");

constexpr char kMagic[8] = {'C', 'L', 'M', 'T', 'E', 'N', 'S', '\0'};
constexpr uint32_t kVersionWhole = 1;   // whole tensors only
constexpr uint32_t kVersionSlices = 2;  // every entry records its element range
constexpr uint32_t kDtypeF32 = 0;
constexpr uint64_t kAlign = 64;
// Caps that keep a corrupted header from asking for absurd allocations.
constexpr uint32_t kMaxNameLength = 4096;
constexpr uint32_t kMaxNdim = 8;
constexpr uint32_t kMaxCount = 1u << 20;
// Smallest possible directory entry: name length, dtype, ndim, offset (empty name, 0-d; v1).
constexpr uint64_t kMinEntryBytes = 4 + 4 + 4 + 8;
constexpr uint64_t kPreambleBytes = sizeof(kMagic) + 4 + 4;

uint64_t align_up(uint64_t x) { return (x + kAlign - 1) / kAlign * kAlign; }

template <typename T>
void append(std::string& out, T v) {
  char b[sizeof(T)];
  std::memcpy(b, &v, sizeof(T));
  out.append(b, sizeof(T));
}

template <typename T, typename In>
T read_pod(In& in) {
  T v;
  in.read(&v, sizeof(T));
  return v;
}

// Element count of a shape; false on a negative dimension or on overflow of the byte size.
bool shape_bytes(const std::vector<int64_t>& shape, uint64_t& bytes) {
  uint64_t numel = 1;
  for (int64_t d : shape) {
    if (d < 0) return false;
    if (__builtin_mul_overflow(numel, uint64_t(d), &numel)) return false;
  }
  return !__builtin_mul_overflow(numel, uint64_t(sizeof(float)), &bytes);
}

}  // namespace

void write_tensor_file(CheckpointFileWriter& out, const std::vector<NamedTensor>& tensors,
                       const std::string& path) {
  if (tensors.size() > kMaxCount) fail("{}: {} tensors exceed the format's cap of {}", path, tensors.size(), kMaxCount);
  std::set<std::string> seen;
  std::vector<uint64_t> bytes(tensors.size()), begin(tensors.size()), end(tensors.size());
  bool slices = false;  // version 1 when every entry is a whole tensor (unchanged files)
  uint64_t header_bytes = kPreambleBytes;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const NamedTensor& t = tensors[i];
    if (t.name.empty() || t.name.size() > kMaxNameLength)
      fail("{}: tensor #{} has a name of {} bytes (must be 1..{})", path, i, t.name.size(), kMaxNameLength);
    if (!seen.insert(t.name).second) fail("{}: duplicate tensor name '{}'", path, t.name);
    if (t.shape.size() > kMaxNdim) fail("{}: tensor '{}' has {} dims (max {})", path, t.name, t.shape.size(), kMaxNdim);
    uint64_t whole = 0;
    if (!shape_bytes(t.shape, whole)) fail("{}: tensor '{}' has an invalid shape {}", path, t.name, shape_str(t.shape));
    const uint64_t numel = whole / sizeof(float);
    begin[i] = t.end < 0 ? 0 : uint64_t(std::max<int64_t>(t.begin, 0));
    end[i] = t.end < 0 ? numel : uint64_t(t.end);
    if (t.begin < 0 || (t.end >= 0 && (t.begin > t.end || end[i] > numel)))
      fail("{}: tensor '{}' {}: slice [{}, {}) is outside its {} elements", path, t.name, shape_str(t.shape),
           t.begin, t.end, numel);
    if (begin[i] != 0 || end[i] != numel) slices = true;
    bytes[i] = (end[i] - begin[i]) * sizeof(float);
    if (bytes[i] > 0 && t.data == nullptr) fail("{}: tensor '{}' has no data", path, t.name);
    header_bytes += 4 + t.name.size() + 4 + 4 + 8 * t.shape.size() + 8;
  }
  if (slices) header_bytes += 16 * tensors.size();

  std::string header;
  header.reserve(header_bytes);
  header.append(kMagic, sizeof(kMagic));
  append<uint32_t>(header, slices ? kVersionSlices : kVersionWhole);
  append<uint32_t>(header, uint32_t(tensors.size()));
  std::vector<uint64_t> offsets(tensors.size());
  uint64_t cursor = header_bytes;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const NamedTensor& t = tensors[i];
    offsets[i] = align_up(cursor);
    cursor = offsets[i] + bytes[i];
    append<uint32_t>(header, uint32_t(t.name.size()));
    header += t.name;
    append<uint32_t>(header, kDtypeF32);
    append<uint32_t>(header, uint32_t(t.shape.size()));
    for (int64_t d : t.shape) append<int64_t>(header, d);
    if (slices) {
      append<uint64_t>(header, begin[i]);
      append<uint64_t>(header, end[i]);
    }
    append<uint64_t>(header, offsets[i]);
  }
  CLM_ASSERT(header.size() == header_bytes);
  out.write(header.data(), header.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    out.write_zeros(offsets[i] - out.bytes_written());
    out.write(tensors[i].data, bytes[i]);
  }
}

namespace {

// Sequential reads of the directory through read_at, a chunk at a time (the streaming reader
// would fill its 64 KiB buffer, i.e. read data blocks too, and hash them for nothing).
class IndexCursor {
 public:
  explicit IndexCursor(CheckpointFileReader& file) : file_(file) {}
  const std::string& path() const { return file_.path(); }
  uint64_t size() const { return file_.size(); }
  uint64_t pos() const { return pos_; }
  void read(void* dst, size_t bytes) {
    if (bytes > size() - pos_)
      fail("{}: truncated: needs {} bytes at offset {} but the file has {}", path(), bytes, pos_, size());
    if (bytes == 0) return;
    if (pos_ < buf_start_ || pos_ + bytes > buf_start_ + buf_.size()) {
      buf_start_ = pos_;
      buf_.resize(size_t(std::min<uint64_t>(std::max<uint64_t>(kChunk, bytes), size() - pos_)));
      file_.read_at(buf_start_, buf_.data(), buf_.size());
    }
    std::memcpy(dst, buf_.data() + (pos_ - buf_start_), bytes);
    pos_ += bytes;
  }

 private:
  static constexpr uint64_t kChunk = 4096;
  CheckpointFileReader& file_;
  uint64_t pos_ = 0, buf_start_ = 0;
  std::string buf_;
};

// The directory of a tensor file from `in` (a CheckpointFileReader or an IndexCursor), left
// positioned at the end of the directory. Validates everything before anything is allocated
// for data; the data blocks are checked to lie inside the file, in order, ending at its end.
template <typename In>
std::vector<TensorFileEntry> parse_directory(In& in) {
  const std::string& path = in.path();
  const uint64_t size = in.size();
  if (size < kPreambleBytes) fail("{}: too small ({} bytes) to be a tensor file", path, size);
  char magic[sizeof(kMagic)];
  in.read(magic, sizeof(magic));
  if (std::memcmp(magic, kMagic, sizeof(kMagic)) != 0)
    fail("{}: bad magic at offset 0: not a competelm tensor file", path);
  const uint32_t version = read_pod<uint32_t>(in);
  if (version != kVersionWhole && version != kVersionSlices)
    fail_hint("use a competelm build that reads this format version",
              "{}: unsupported tensor file version {} at offset 8 (this build reads {} and {})", path, version,
              kVersionWhole, kVersionSlices);
  const bool slices = version == kVersionSlices;
  const uint32_t count = read_pod<uint32_t>(in);
  const uint64_t min_entry = kMinEntryBytes + (slices ? 16 : 0);
  if (count > kMaxCount || uint64_t(count) * min_entry > size - kPreambleBytes)
    fail("{}: tensor count {} at offset 12 is impossible for a file of {} bytes", path, count, size);

  std::vector<TensorFileEntry> entries(count);
  std::set<std::string> seen;
  for (uint32_t i = 0; i < count; ++i) {
    TensorFileEntry& e = entries[i];
    const uint64_t entry_pos = in.pos();
    const uint32_t name_len = read_pod<uint32_t>(in);
    if (name_len == 0 || name_len > kMaxNameLength || name_len > size - in.pos())
      fail("{}: tensor #{} at offset {}: invalid name length {}", path, i, entry_pos, name_len);
    e.name.resize(name_len);
    in.read(e.name.data(), name_len);
    if (!seen.insert(e.name).second) fail("{}: tensor #{} at offset {}: duplicate name '{}'", path, i, entry_pos, e.name);
    const uint32_t dtype = read_pod<uint32_t>(in);
    if (dtype != kDtypeF32) fail("{}: tensor '{}' at offset {}: unsupported dtype {} (only 0 = f32)", path, e.name, entry_pos, dtype);
    const uint32_t ndim = read_pod<uint32_t>(in);
    if (ndim > kMaxNdim) fail("{}: tensor '{}' at offset {}: ndim {} exceeds {}", path, e.name, entry_pos, ndim, kMaxNdim);
    e.shape.resize(ndim);
    for (uint32_t d = 0; d < ndim; ++d) e.shape[d] = read_pod<int64_t>(in);
    uint64_t whole = 0;
    if (!shape_bytes(e.shape, whole))
      fail("{}: tensor '{}' at offset {}: invalid shape {}", path, e.name, entry_pos, shape_str(e.shape));
    const uint64_t numel = whole / sizeof(float);
    e.end = numel;
    if (slices) {
      e.begin = read_pod<uint64_t>(in);
      e.end = read_pod<uint64_t>(in);
      if (e.begin > e.end || e.end > numel)
        fail("{}: tensor '{}' {} at offset {}: element range [{}, {}) is outside its {} elements", path, e.name,
             shape_str(e.shape), entry_pos, e.begin, e.end, numel);
    }
    const uint64_t bytes = (e.end - e.begin) * sizeof(float);
    e.offset = read_pod<uint64_t>(in);
    if (e.offset % kAlign != 0 || e.offset > size || bytes > size - e.offset)
      fail("{}: tensor '{}' {}: data offset {} (+{} bytes) is misaligned or past the end of "
           "the {}-byte file", path, e.name, shape_str(e.shape), e.offset, bytes, size);
  }

  // Data blocks follow the header in directory order, without overlap, up to the file end.
  uint64_t end = in.pos();
  for (const TensorFileEntry& e : entries) {
    if (e.offset < end)
      fail("{}: tensor '{}': data offset {} overlaps the header or the previous tensor (ends at {})",
           path, e.name, e.offset, end);
    end = e.offset + (e.end - e.begin) * sizeof(float);
  }
  if (end != size) fail("{}: data ends at offset {} but the file has {} bytes", path, end, size);
  return entries;
}

}  // namespace

std::vector<TensorFileEntry> read_tensor_index(CheckpointFileReader& in) {
  IndexCursor cursor(in);
  return parse_directory(cursor);
}

std::map<std::string, LoadedSlice> read_tensor_slices(CheckpointFileReader& in) {
  std::vector<TensorFileEntry> entries = parse_directory(in);

  // Every size is now bounded by the file size, so these allocations are safe.
  std::map<std::string, LoadedSlice> out;
  for (TensorFileEntry& e : entries) {
    in.skip(size_t(e.offset - in.pos()));
    LoadedSlice t;
    t.shape = std::move(e.shape);
    t.begin = e.begin;
    t.end = e.end;
    t.data.resize(size_t(e.end - e.begin));
    in.read(t.data.data(), t.data.size() * sizeof(float));
    out.emplace(std::move(e.name), std::move(t));
  }
  in.finish();
  return out;
}

std::map<std::string, LoadedTensor> read_tensor_file(CheckpointFileReader& in) {
  std::map<std::string, LoadedSlice> slices = read_tensor_slices(in);
  std::map<std::string, LoadedTensor> out;
  for (auto& [name, t] : slices) {
    if (t.begin != 0 || t.end != t.numel())
      fail("{}: tensor '{}' {} holds only elements [{}, {}): a shard of a multi-rank checkpoint (read "
           "those with Checkpoint::read_assembled, which joins the shard files)", in.path(), name,
           shape_str(t.shape), t.begin, t.end);
    out.emplace(name, LoadedTensor{std::move(t.shape), std::move(t.data)});
  }
  return out;
}

}  // namespace competelm
