#include "export/safetensors.hpp"

#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <set>

#include "core/error.hpp"
#include "core/fs_util.hpp"
#include "core/json.hpp"
#include "core/tensor_table.hpp"

namespace competelm {
namespace {

constexpr uint64_t kMaxHeaderBytes = 100u << 20;  // the reference implementation's limit

size_t dtype_size(const std::string& dtype) {
  if (dtype == "F32") return 4;
  if (dtype == "F16" || dtype == "BF16") return 2;
  return 0;
}

}  // namespace

float f16_to_f32(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000) << 16;
  const uint32_t exp = (h >> 10) & 0x1F, mant = h & 0x3FF;
  uint32_t bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal: normalise
      int e = -1;
      uint32_t m = mant;
      do {
        e++;
        m <<= 1;
      } while ((m & 0x400) == 0);
      bits = sign | (uint32_t(127 - 15 - e) << 23) | ((m & 0x3FF) << 13);
    }
  } else if (exp == 0x1F) {
    bits = sign | 0x7F800000u | (mant << 13);  // inf / nan
  } else {
    bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

float bf16_to_f32(uint16_t h) {
  const uint32_t bits = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

void write_safetensors(const std::string& path, const std::vector<NamedTensor>& tensors,
                       const std::vector<std::pair<std::string, std::string>>& metadata) {
  std::set<std::string> seen;
  JsonObject meta;
  for (const auto& [k, v] : metadata) meta.add(k, v);
  JsonObject header;
  if (!metadata.empty()) header.add("__metadata__", meta);
  uint64_t offset = 0;
  for (const NamedTensor& t : tensors) {
    if (t.name == "__metadata__" || !seen.insert(t.name).second)
      fail("{}: tensor name '{}' is reserved or repeated", path, t.name);
    uint64_t numel = 1;
    std::string shape = "[";
    for (size_t i = 0; i < t.shape.size(); i++) {
      if (t.shape[i] < 0) fail("{}: tensor '{}' has a negative dimension", path, t.name);
      numel *= uint64_t(t.shape[i]);
      if (i) shape += ',';
      shape += std::to_string(t.shape[i]);
    }
    shape += "]";
    const uint64_t end = offset + numel * 4;
    header.add(t.name, JsonObject().add("dtype", "F32").add_raw("shape", shape).add_raw(
                           "data_offsets", fmt::format("[{},{}]", offset, end)));
    offset = end;
  }
  std::string text = header.str();
  text.append((8 - text.size() % 8) % 8, ' ');  // data starts 8-byte aligned
  const std::string tmp = path + ".tmp-" + std::to_string(::getpid());
  {
    OutputFile out(tmp);
    uint8_t len[8];
    for (int i = 0; i < 8; i++) len[i] = uint8_t(uint64_t(text.size()) >> (8 * i));
    out.write(len, 8);
    out.write(text.data(), text.size());
    static_assert(std::endian::native == std::endian::little, "safetensors data is little-endian");
    for (const NamedTensor& t : tensors) {
      size_t numel = 1;
      for (int64_t d : t.shape) numel *= size_t(d);
      if (numel) out.write(t.data, numel * sizeof(float));
    }
    out.sync_and_close();
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) {
    std::filesystem::remove(tmp);
    fail("cannot rename {} to {}: {}", tmp, path, ec.message());
  }
  fsync_dir(parent_dir(path));
}

SafetensorsFile read_safetensors(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("{}: cannot open: {}", path, errno_text(errno));
  in.seekg(0, std::ios::end);
  const uint64_t size = uint64_t(in.tellg());
  in.seekg(0);
  if (size < 8) fail("{}: not a safetensors file ({} bytes; the 8-byte header length is missing)", path, size);
  uint8_t len[8];
  in.read(reinterpret_cast<char*>(len), 8);
  uint64_t n = 0;
  for (int i = 0; i < 8; i++) n |= uint64_t(len[i]) << (8 * i);
  if (n > kMaxHeaderBytes || n > size - 8)
    fail("{}: header length {} is impossible (file size {} bytes, limit {})", path, n, size, kMaxHeaderBytes);
  std::string text(n, '\0');
  in.read(text.data(), std::streamsize(n));
  if (!in) fail("{}: truncated in the header", path);
  const JsonValue root = parse_json(text, path + ": header");
  if (!root.is_object()) fail("{}: the header is not a JSON object", path);

  SafetensorsFile out;
  out.header_bytes = n;
  const uint64_t data_size = size - 8 - n;
  struct Entry {
    std::string name, dtype;
    std::vector<int64_t> shape;
    uint64_t begin, end;
  };
  std::vector<Entry> entries;
  for (const auto& [name, v] : root.as_object()) {
    if (name == "__metadata__") {
      if (!v.is_object()) fail("{}: __metadata__ is not an object", path);
      for (const auto& [k, s] : v.as_object()) {
        if (!s.is_string()) fail("{}: __metadata__ value of '{}' is not a string", path, k);
        out.metadata[k] = s.as_string();
      }
      continue;
    }
    const std::string what = path + ": tensor '" + name + "'";
    if (!v.is_object()) fail("{}: not an object", what);
    for (const auto& [k, ignored] : v.as_object())
      if (k != "dtype" && k != "shape" && k != "data_offsets") fail("{}: unexpected key '{}'", what, k);
    Entry e;
    e.name = name;
    e.dtype = v.at("dtype", what).as_string(what + " dtype");
    const size_t es = dtype_size(e.dtype);
    if (es == 0)
      fail_hint("export the model in float32, float16 or bfloat16", "{}: dtype {} is not supported (F32, F16, BF16 are)",
                what, e.dtype);
    uint64_t numel = 1;
    for (const JsonValue& d : v.at("shape", what).as_array(what + " shape")) {
      const int64_t dim = d.as_int64(what + " shape");
      if (dim < 0) fail("{}: negative dimension {}", what, dim);
      if (dim > 0 && numel > std::numeric_limits<uint64_t>::max() / 8 / uint64_t(dim)) fail("{}: shape overflows", what);
      numel *= uint64_t(dim);
      e.shape.push_back(dim);
    }
    const auto& offs = v.at("data_offsets", what).as_array(what + " data_offsets");
    if (offs.size() != 2) fail("{}: data_offsets must be [begin, end]", what);
    e.begin = offs[0].as_uint64(what + " data_offsets");
    e.end = offs[1].as_uint64(what + " data_offsets");
    if (e.begin > e.end || e.end > data_size)
      fail("{}: data_offsets [{}, {}] are outside the data buffer of {} bytes (file truncated or header corrupt)",
           what, e.begin, e.end, data_size);
    if (e.end - e.begin != numel * es)
      fail("{}: data_offsets span {} bytes but shape {} of {} needs {}", what, e.end - e.begin, shape_str(e.shape),
           e.dtype, numel * es);
    entries.push_back(std::move(e));
  }
  // The tensors tile the data buffer: no overlap, no hole (as the format requires).
  std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  uint64_t at = 0;
  for (const Entry& e : entries) {
    if (e.begin != at)
      fail("{}: tensor '{}' starts at byte {} of the data but the previous tensor ends at {} ({})", path, e.name,
           e.begin, at, e.begin < at ? "overlap" : "hole");
    at = e.end;
  }
  if (at != data_size) fail("{}: {} bytes of data follow the last tensor (corrupt or not safetensors)", path, data_size - at);

  std::vector<char> raw;
  for (const Entry& e : entries) {
    raw.resize(e.end - e.begin);
    in.seekg(std::streamoff(8 + n + e.begin));
    in.read(raw.data(), std::streamsize(raw.size()));
    if (!in) fail("{}: tensor '{}': read failed (file truncated?)", path, e.name);
    LoadedTensor t;
    t.shape = e.shape;
    const size_t es = dtype_size(e.dtype), numel = raw.size() / es;
    t.data.resize(numel);
    if (e.dtype == "F32") {
      if (!raw.empty()) std::memcpy(t.data.data(), raw.data(), raw.size());  // empty tensor: null pointers
    } else {
      const bool bf = e.dtype == "BF16";
      for (size_t i = 0; i < numel; i++) {
        uint16_t h;
        std::memcpy(&h, raw.data() + 2 * i, 2);
        t.data[i] = bf ? bf16_to_f32(h) : f16_to_f32(h);
      }
    }
    out.tensors.emplace(e.name, std::move(t));
    out.dtypes[e.name] = e.dtype;
    out.order.push_back(e.name);
  }
  return out;
}

}  // namespace competelm
