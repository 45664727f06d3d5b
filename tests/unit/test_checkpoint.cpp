// Checkpoint storage: round trip, corruption and truncation detection, hostile tensor
// headers, listing, pruning, abandoned writers, simulated disk-full, checksum64.
#include <catch2/catch.hpp>

#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <tuple>

#include "checkpoint/checkpoint.hpp"
#include "checkpoint/fault_injection.hpp"
#include "core/error.hpp"
#include "error_of.hpp"
#include "core/fs_util.hpp"
#include "core/json.hpp"

using namespace competelm;
namespace fs = std::filesystem;

namespace {

// A fresh run directory, removed at the end of the test.
struct TempRunDir {
  std::string path;
  TempRunDir() {
    static int counter = 0;
    path = (fs::temp_directory_path() /
            ("competelm-test-ckpt-" + std::to_string(::getpid()) + "-" + std::to_string(counter++)))
               .string();
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempRunDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::string ckpts() const { return path + "/checkpoints"; }
};

// Disarms the test-only fault hook however the test exits.
struct FaultGuard {
  explicit FaultGuard(long bytes) { set_checkpoint_write_fault_after(bytes); }
  ~FaultGuard() { set_checkpoint_write_fault_after(-1); }
};

std::vector<std::string> dir_entries(const std::string& dir) {
  std::vector<std::string> names;
  if (!fs::exists(dir)) return names;
  for (const auto& e : fs::directory_iterator(dir)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

std::vector<float> random_floats(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<float> v(n);
  for (auto& x : v) {
    uint32_t bits = uint32_t(rng());
    std::memcpy(&x, &bits, sizeof(x));  // any bit pattern, NaNs included: must come back exactly
  }
  return v;
}

std::string read_bytes(const std::string& path) { return read_file(path); }

void write_bytes(const std::string& path, const std::string& data) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(data.data(), std::streamsize(data.size()));
}

// Makes meta.json agree with a deliberately modified file again (size, checksum and the
// meta_checksum seal), so the tensor-format validation itself is exercised.
void reseal(const std::string& dir, const std::string& file_name) {
  std::string meta = read_bytes(dir + "/meta.json");
  const std::string data = read_bytes(dir + "/" + file_name);
  const std::string key = "\"" + file_name + "\": {\"bytes\": ";
  size_t at = meta.find(key);
  REQUIRE(at != std::string::npos);
  size_t bytes_pos = at + key.size();
  size_t bytes_end = meta.find(',', bytes_pos);
  meta.replace(bytes_pos, bytes_end - bytes_pos, std::to_string(data.size()));
  const std::string ck = "\"checksum\": \"";
  size_t ck_pos = meta.find(ck, bytes_pos) + ck.size();
  meta.replace(ck_pos, 16, fmt::format("{:016x}", checksum64(data.data(), data.size())));
  const std::string seal = "\"meta_checksum\": \"";
  size_t seal_pos = meta.rfind(seal) + seal.size();
  meta.replace(seal_pos, 16, std::string(16, '0'));
  meta.replace(seal_pos, 16, fmt::format("{:016x}", checksum64(meta.data(), meta.size())));
  write_bytes(dir + "/meta.json", meta);
}

struct Sample {
  std::vector<float> a = random_floats(2 * 3 * 4, 1);
  std::vector<float> b = random_floats(1000, 2);
  std::vector<float> scalar = {3.25f};
  std::vector<NamedTensor> tensors() const {
    return {{"blocks.0.attn.weight", {2, 3, 4}, a.data()},
            {"wte", {10, 100}, b.data()},
            {"scalar", {}, scalar.data()},
            {"empty", {0, 5}, nullptr}};
  }
};

std::string save_sample(const std::string& run_dir, int64_t step, const Sample& s,
                        const std::string& text = "model: gpt2\n") {
  CheckpointWriter w(run_dir, step);
  w.write_tensors("model.bin", s.tensors());
  w.write_text("config.yaml", text);
  return w.commit("\"loss\": 3.5, \"tokens\": 123456789012");
}

using testing::error_of;

}  // namespace

TEST_CASE("checksum64 is XXH64: reference vectors, streaming", "[checkpoint]") {
  auto h = [](std::string_view s, uint64_t seed = 0) { return checksum64(s.data(), s.size(), seed); };
  CHECK(h("") == 0xef46db3751d8e999ULL);
  CHECK(h("a") == 0xd24ec4f1a98c6e5bULL);
  CHECK(h("abc") == 0x44bc2cf5ad770999ULL);
  CHECK(h("Nobody inspects the spammish repetition") == 0xfbcea83c8a378bf1ULL);
  // Every tail path (0..31 leftover bytes) and the stripe loop, with and without a seed;
  // reference values from libxxhash 0.8.1.
  std::string data(1000, '\0');
  for (size_t i = 0; i < data.size(); ++i) data[i] = char((i * 31 + 7) % 256);
  const std::vector<std::tuple<size_t, uint64_t, uint64_t>> ref = {
      {1, 0xa96c7f0ce858bbb7ULL, 0x496fc29a1e753bd7ULL},  {3, 0x56e6957632a487f9ULL, 0x94ff877cd86385beULL},
      {4, 0xc60d15b1e3ff8f04ULL, 0x1034b01f61e3b2e6ULL},  {7, 0xafbefc3d6c6f9a8eULL, 0xd06aa9dbe7add6d1ULL},
      {8, 0x3da5c7aa269683e0ULL, 0x23befc2f0d90da1aULL},  {31, 0x4a74f3a1a39ad4a1ULL, 0xbff21e6871cdf167ULL},
      {32, 0x8d57d6a4671cc43dULL, 0x7bdfe9fbcc771266ULL}, {33, 0x62c9fd21ed857664ULL, 0x5a23927b0946b212ULL},
      {63, 0x5c320a0d2707057fULL, 0x60148113d74960d3ULL}, {64, 0x7bbabbc45729d17eULL, 0xeeff42e996f0f7d5ULL},
      {100, 0xefa0ad2d3e70c151ULL, 0x4f2e446ab943e539ULL}, {1000, 0x99594f4828043d35ULL, 0xcbd42ae414e71a03ULL}};
  for (auto [n, want0, want_seeded] : ref) {
    INFO("length " << n);
    CHECK(h(std::string_view(data).substr(0, n)) == want0);
    CHECK(h(std::string_view(data).substr(0, n), 12345) == want_seeded);
  }
  CHECK(h(std::string_view(data).substr(0, 0), 12345) == 0x95584af7701f808dULL);
}

TEST_CASE("checkpoint: tensors and text round-trip bit-exactly with meta.json", "[checkpoint]") {
  TempRunDir run;
  Sample s;
  const std::string text = std::string("binary\0text\xff\n", 13);
  const std::string dir = save_sample(run.path, 42, s, text);
  CHECK(dir == run.ckpts() + "/step_00000042");
  CHECK(dir_entries(run.ckpts()) == std::vector<std::string>{"step_00000042"});
  CHECK(dir_entries(dir) == std::vector<std::string>{"config.yaml", "meta.json", "model.bin"});

  Checkpoint c(dir);
  CHECK(c.step() == 42);
  CHECK(c.has_file("model.bin"));
  CHECK(c.has_file("config.yaml"));
  CHECK_FALSE(c.has_file("optim.bin"));
  CHECK_THROWS_WITH(c.read_tensors("optim.bin"), Catch::Contains("optim.bin"));
  CHECK(c.read_text("config.yaml") == text);

  auto t = c.read_tensors("model.bin");
  REQUIRE(t.size() == 4);
  for (const NamedTensor& want : s.tensors()) {
    INFO(want.name);
    const LoadedTensor& got = t.at(want.name);
    CHECK(got.shape == want.shape);
    size_t numel = 1;
    for (int64_t d : want.shape) numel *= size_t(d);
    REQUIRE(got.data.size() == numel);
    if (numel > 0) CHECK(std::memcmp(got.data.data(), want.data, numel * sizeof(float)) == 0);
  }

  // meta.json: documented fields, caller's extra fields, per-file sizes and checksums.
  const JsonValue meta = parse_json(read_bytes(dir + "/meta.json"));
  CHECK(meta.at("format").as_string() == "competelm-checkpoint");
  CHECK(meta.at("version").as_int64() == 1);
  CHECK(meta.at("step").as_int64() == 42);
  CHECK(meta.at("time_utc").as_string().size() == 20);
  CHECK(meta.at("loss").as_double() == 3.5);
  CHECK(meta.at("tokens").as_int64() == 123456789012);
  const std::string model = read_bytes(dir + "/model.bin");
  const JsonValue& m = meta.at("files").at("model.bin");
  CHECK(m.at("bytes").as_uint64() == model.size());
  CHECK(m.at("checksum").as_string() == fmt::format("{:016x}", checksum64(model.data(), model.size())));
  CHECK(model.compare(0, 8, std::string("CLMTENS\0", 8)) == 0);
  REQUIRE(c.files().size() == 2);
  CHECK(c.files()[0].name == "model.bin");
}

TEST_CASE("checkpoint: a flipped byte in any file is detected", "[checkpoint]") {
  TempRunDir run;
  Sample s;
  const std::string dir = save_sample(run.path, 1, s);
  REQUIRE_NOTHROW(Checkpoint(dir));
  const size_t model_size = fs::file_size(dir + "/model.bin");
  const size_t meta_size = fs::file_size(dir + "/meta.json");
  struct Flip {
    std::string file;
    size_t offset;
  };
  const std::vector<Flip> flips = {
      {"model.bin", 0},               // magic
      {"model.bin", 20},              // directory entry (name)
      {"model.bin", model_size - 1},  // last data byte
      {"model.bin", model_size / 2},  // data body
      {"config.yaml", 3},
      {"meta.json", 1},               // structure
      {"meta.json", meta_size / 2},   // somewhere in the file list
      {"meta.json", meta_size - 5},   // its own seal
  };
  for (const Flip& f : flips) {
    INFO(f.file << " @ " << f.offset);
    const std::string path = dir + "/" + f.file;
    const std::string original = read_bytes(path);
    std::string bad = original;
    bad[f.offset] = char(bad[f.offset] ^ 0x10);
    write_bytes(path, bad);
    const std::string err = error_of([&] { Checkpoint c(dir); });
    CHECK_THAT(err, Catch::Contains(f.file));
    if (f.file != "meta.json") CHECK_THAT(err, Catch::Contains("checksum mismatch (file corrupted?)"));
    write_bytes(path, original);
    REQUIRE_NOTHROW(Checkpoint(dir));
  }
  // The time stamp carries no per-file checksum: only the seal can catch this one.
  const std::string meta = read_bytes(dir + "/meta.json");
  std::string bad = meta;
  bad[bad.find("\"time_utc\": \"") + 14] ^= 1;
  write_bytes(dir + "/meta.json", bad);
  CHECK_THROWS_WITH(Checkpoint(dir), Catch::Contains("meta.json") && Catch::Contains("checksum mismatch"));
}

TEST_CASE("checkpoint: truncated files and missing meta.json are detected", "[checkpoint]") {
  TempRunDir run;
  Sample s;
  const std::string dir = save_sample(run.path, 1, s);
  for (const std::string file : {"model.bin", "config.yaml"}) {
    const std::string original = read_bytes(dir + "/" + file);
    write_bytes(dir + "/" + file, original.substr(0, original.size() - 1));
    CHECK_THROWS_WITH(Checkpoint(dir), Catch::Contains(file) && Catch::Contains("size mismatch"));
    write_bytes(dir + "/" + file, original);
  }
  fs::remove(dir + "/config.yaml");
  CHECK_THROWS_WITH(Checkpoint(dir), Catch::Contains("config.yaml"));
  fs::remove(dir + "/meta.json");
  CHECK_THROWS_WITH(Checkpoint(dir), Catch::Contains("meta.json"));
  CHECK_THROWS_AS(Checkpoint(run.path + "/nope"), Error);
}

TEST_CASE("checkpoint: corrupted tensor headers throw, never crash or over-allocate", "[checkpoint]") {
  TempRunDir run;
  Sample s;
  const std::string dir = save_sample(run.path, 1, s);
  const std::string path = dir + "/model.bin";
  const std::string original = read_bytes(path);
  // First entry: name length @16, name "blocks.0.attn.weight" (20 bytes) @20, dtype @40,
  // ndim @44, dims @48..72, offset @72.
  REQUIRE(original.substr(20, 20) == "blocks.0.attn.weight");
  auto put_u32 = [](std::string& b, size_t at, uint32_t v) { std::memcpy(b.data() + at, &v, 4); };
  auto put_u64 = [](std::string& b, size_t at, uint64_t v) { std::memcpy(b.data() + at, &v, 8); };
  struct Case {
    const char* what;
    std::function<void(std::string&)> corrupt;
    const char* expect;
  };
  const std::vector<Case> cases = {
      {"bad magic", [&](std::string& b) { b[3] = 'X'; }, "bad magic"},
      {"future version", [&](std::string& b) { put_u32(b, 8, 3); }, "version 3"},
      {"huge count", [&](std::string& b) { put_u32(b, 12, 0xFFFFFFFFu); }, "count"},
      {"huge name length", [&](std::string& b) { put_u32(b, 16, 0xFFFFFFF0u); }, "name length"},
      {"zero name length", [&](std::string& b) { put_u32(b, 16, 0); }, "name length"},
      {"unknown dtype", [&](std::string& b) { put_u32(b, 40, 7); }, "dtype 7"},
      {"huge ndim", [&](std::string& b) { put_u32(b, 44, 1000000); }, "ndim"},
      {"negative dim", [&](std::string& b) { put_u64(b, 48, uint64_t(-2)); }, "invalid shape"},
      {"overflowing dims",
       [&](std::string& b) {
         put_u64(b, 48, uint64_t(1) << 40);
         put_u64(b, 56, uint64_t(1) << 40);
       },
       "invalid shape"},
      {"dims larger than the file", [&](std::string& b) { put_u64(b, 48, uint64_t(1) << 40); }, "past the end"},
      {"offset past end", [&](std::string& b) { put_u64(b, 72, uint64_t(1) << 40); }, "past the end"},
      {"offset wrapping around", [&](std::string& b) { put_u64(b, 72, ~uint64_t(63)); }, "past the end"},
      {"misaligned offset", [&](std::string& b) { put_u64(b, 72, 65); }, "misaligned"},
      {"offset inside the header", [&](std::string& b) { put_u64(b, 72, 64); }, "overlaps"},
      {"truncated data", [&](std::string& b) { b.resize(b.size() - 4); }, "past the end"},
      {"truncated directory", [&](std::string& b) { b.resize(100); }, "past the end"},
      {"truncated entry",
       [&](std::string& b) {
         put_u32(b, 12, 1);
         b.resize(50);
       },
       "truncated"},
      {"trailing bytes", [&](std::string& b) { b += "junk"; }, "data ends at offset"},
      {"tiny file", [&](std::string& b) { b.resize(5); }, "too small"},
  };
  for (const Case& c : cases) {
    INFO(c.what);
    std::string bad = original;
    c.corrupt(bad);
    write_bytes(path, bad);
    reseal(dir, "model.bin");
    Checkpoint ckpt(dir);  // checksums agree again: only the format checks can object
    const std::string err = error_of([&] { ckpt.read_tensors("model.bin"); });
    CHECK_THAT(err, Catch::Contains("model.bin") && Catch::Contains(c.expect));
  }
  // Random byte damage anywhere in the directory: an Error or a clean read, never a crash.
  std::mt19937 rng(11);
  const size_t header_end = 200;
  for (int i = 0; i < 150; ++i) {
    std::string bad = original;
    for (int k = 0; k < 3; ++k) bad[rng() % header_end] = char(rng());
    write_bytes(path, bad);
    reseal(dir, "model.bin");
    Checkpoint ckpt(dir);
    try {
      ckpt.read_tensors("model.bin");
    } catch (const Error&) {
    }
  }
  write_bytes(path, original);
  reseal(dir, "model.bin");
  CHECK(Checkpoint(dir).read_tensors("model.bin").size() == 4);
}

TEST_CASE("checkpoint: list ignores temporary and incomplete directories", "[checkpoint]") {
  TempRunDir run;
  CHECK(list_checkpoints(run.path).empty());  // no checkpoints/ yet
  Sample s;
  for (int64_t step : {300, 1, 20}) save_sample(run.path, step, s);
  fs::create_directories(run.ckpts() + "/step_00000004.tmp-999");
  write_bytes(run.ckpts() + "/step_00000004.tmp-999/meta.json", "{}");
  fs::create_directories(run.ckpts() + "/step_00000005");  // crashed before meta.json
  write_bytes(run.ckpts() + "/step_00000006", "a file, not a dir");
  fs::create_directories(run.ckpts() + "/step_7");
  write_bytes(run.ckpts() + "/step_7/meta.json", "{}");
  fs::create_directories(run.ckpts() + "/latest");
  const std::vector<std::string> want = {run.ckpts() + "/step_00000001", run.ckpts() + "/step_00000020",
                                         run.ckpts() + "/step_00000300"};
  CHECK(list_checkpoints(run.path) == want);
}

TEST_CASE("checkpoint: prune keeps the newest K and removes stale temporary dirs", "[checkpoint]") {
  TempRunDir run;
  Sample s;
  for (int64_t step = 1; step <= 5; ++step) save_sample(run.path, step, s);
  fs::create_directories(run.ckpts() + "/step_00000009.tmp-123456");   // crashed process
  fs::create_directories(run.ckpts() + "/step_00000002.tmp-" + std::to_string(::getpid()));
  CheckpointWriter live(run.path, 6);  // a writer still in progress must survive pruning
  live.write_text("x.txt", "x");

  prune_checkpoints(run.path, 0);  // keep <= 0: keeps every committed checkpoint
  CHECK(list_checkpoints(run.path).size() == 5);
  prune_checkpoints(run.path, 2);
  const std::string live_tmp = "step_00000006.tmp-" + std::to_string(::getpid());
  CHECK(dir_entries(run.ckpts()) == std::vector<std::string>{"step_00000004", "step_00000005", live_tmp});
  REQUIRE_NOTHROW(Checkpoint(run.ckpts() + "/step_00000005"));
  CHECK(live.commit() == run.ckpts() + "/step_00000006");
  prune_checkpoints(run.path, 2);
  CHECK(dir_entries(run.ckpts()) == std::vector<std::string>{"step_00000005", "step_00000006"});
  prune_checkpoints(run.path, 10);
  CHECK(list_checkpoints(run.path).size() == 2);
}

TEST_CASE("checkpoint: an uncommitted writer leaves nothing behind", "[checkpoint]") {
  TempRunDir run;
  Sample s;
  {
    CheckpointWriter w(run.path, 8);
    w.write_tensors("model.bin", s.tensors());
    CHECK(dir_entries(run.ckpts()).size() == 1);  // the temporary dir exists meanwhile
  }
  CHECK(dir_entries(run.ckpts()).empty());
  CHECK(list_checkpoints(run.path).empty());
}

TEST_CASE("checkpoint: invalid writer calls throw and abandon the checkpoint", "[checkpoint]") {
  TempRunDir run;
  Sample s;
  auto dead_after = [&](auto&& bad_call) {
    CheckpointWriter w(run.path, 3);
    w.write_text("a.txt", "a");
    CHECK_THROWS_AS(bad_call(w), Error);
    CHECK(dir_entries(run.ckpts()).empty());  // temporary dir removed at once
    CHECK_THROWS_AS(w.commit(), Error);       // and the writer refuses to continue
  };
  dead_after([](CheckpointWriter& w) { w.write_text("a.txt", "again"); });
  dead_after([](CheckpointWriter& w) { w.write_text("meta.json", "{}"); });
  dead_after([](CheckpointWriter& w) { w.write_text("../escape.txt", "x"); });
  dead_after([&](CheckpointWriter& w) {
    std::vector<NamedTensor> t = s.tensors();
    t[1].name = t[0].name;
    w.write_tensors("model.bin", t);
  });
  dead_after([&](CheckpointWriter& w) { w.write_tensors("model.bin", {{"x", {-1, 2}, s.a.data()}}); });
  dead_after([](CheckpointWriter& w) { w.commit("\"loss\": "); });          // not JSON
  dead_after([](CheckpointWriter& w) { w.commit("\"step\": 9"); });         // collides
  CHECK_THROWS_AS(CheckpointWriter(run.path, -1), Error);

  CheckpointWriter w(run.path, 3);
  w.commit();
  CHECK_THROWS_AS(w.write_text("late.txt", "x"), Error);
  CHECK_THROWS_AS(w.commit(), Error);
  CHECK(Checkpoint(run.ckpts() + "/step_00000003").files().empty());
}

TEST_CASE("checkpoint: a full disk fails the commit and keeps the previous checkpoint", "[checkpoint]") {
  TempRunDir run;
  Sample s;
  const std::string good = save_sample(run.path, 10, s);
  const size_t model_bytes = fs::file_size(good + "/model.bin");
  const size_t config_bytes = fs::file_size(good + "/config.yaml");

  // Disk fills up while writing tensor data, then while writing meta.json.
  for (long budget : {long(500), long(model_bytes + config_bytes + 20)}) {
    INFO("fault after " << budget << " bytes");
    std::string err;
    {
      CheckpointWriter w(run.path, 20);
      FaultGuard fault(budget);
      err = error_of([&] {
        w.write_tensors("model.bin", s.tensors());
        w.write_text("config.yaml", "model: gpt2\n");
        w.commit("\"loss\": 3.5, \"tokens\": 123456789012");
      });
      CHECK(dir_entries(run.ckpts()) == std::vector<std::string>{"step_00000010"});  // tmp gone at once
    }
    CHECK_THAT(err, Catch::Contains("No space left on device"));
    CHECK_THAT(err, Catch::Contains(budget == 500 ? "model.bin" : "meta.json"));
    CHECK(list_checkpoints(run.path) == std::vector<std::string>{good});
    Checkpoint c(good);
    const LoadedTensor wte = c.read_tensors("model.bin").at("wte");
    REQUIRE(wte.data.size() == s.b.size());
    CHECK(std::memcmp(wte.data.data(), s.b.data(), s.b.size() * sizeof(float)) == 0);
  }
  // Disarmed again: saving works.
  CHECK_NOTHROW(save_sample(run.path, 20, s));
}

TEST_CASE("checkpoint: re-saving a step replaces it atomically", "[checkpoint]") {
  TempRunDir run;
  Sample s;
  save_sample(run.path, 7, s, "first\n");
  save_sample(run.path, 7, s, "second\n");
  CHECK(dir_entries(run.ckpts()) == std::vector<std::string>{"step_00000007"});
  Checkpoint c(run.ckpts() + "/step_00000007");
  CHECK(c.read_text("config.yaml") == "second\n");
  // A directory name that disagrees with meta.json's step is refused.
  fs::rename(run.ckpts() + "/step_00000007", run.ckpts() + "/step_00000008");
  CHECK_THROWS_WITH(Checkpoint(run.ckpts() + "/step_00000008"), Catch::Contains("does not match"));
}

TEST_CASE("fs_util: atomic small-file replacement and I/O errors name the file", "[checkpoint]") {
  TempRunDir run;
  const std::string path = run.path + "/state.txt";
  write_file_atomic(path, "one");
  write_file_atomic(path, "two");
  CHECK(read_file(path) == "two");
  CHECK(dir_entries(run.path) == std::vector<std::string>{"state.txt"});
  CHECK_THROWS_WITH(write_file_atomic(run.path + "/no/such/dir/f", "x"), Catch::Contains("/no/such/dir/f"));
  CHECK_THROWS_WITH(read_file(run.path + "/missing"), Catch::Contains("missing") && Catch::Contains("No such file"));
  CHECK(errno_text(ENOSPC) == "No space left on device");
  CHECK(parent_dir("a/b/c") == "a/b");
  CHECK(parent_dir("c") == ".");
  CHECK(parent_dir("/c") == "/");
}
