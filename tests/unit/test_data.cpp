// Token shards (llm.c format) and the data loader: format validation, sampling, shuffling,
// multi-rank slicing, resumable positions and prefetching.
#include <catch2/catch.hpp>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "checkpoint/checkpoint.hpp"
#include "core/error.hpp"
#include "data/loader.hpp"
#include "data/shard.hpp"

namespace fs = std::filesystem;
using namespace competelm;
using Catch::Matchers::Contains;

namespace {

// A fresh directory under the system temp dir, removed at scope exit.
struct TempDir {
  fs::path path;
  TempDir() {
    static std::atomic<int> counter{0};
    path = fs::temp_directory_path() /
           ("competelm-data-test-" + std::to_string(::getpid()) + "-" + std::to_string(counter++));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::string file(const std::string& name) const { return (path / name).string(); }
};

// Raw shard bytes with an arbitrary header, for the malformed-file cases.
void write_raw(const std::string& path, int32_t magic, int32_t version, int32_t count, size_t payload_bytes) {
  std::vector<int32_t> header(kShardHeaderInts, 0);
  header[0] = magic;
  header[1] = version;
  header[2] = count;
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(header.data()), kShardHeaderBytes);
  std::vector<char> payload(payload_bytes, 7);
  f.write(payload.data(), static_cast<std::streamsize>(payload.size()));
}

// The whole file, and writing it back (for in-place corruption).
std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}
void spit(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
}

// Token i of shard k is k*1000 + i: every window says where it came from.
std::vector<uint32_t> labelled_tokens(uint32_t k, size_t n) {
  std::vector<uint32_t> t(n);
  for (size_t i = 0; i < n; ++i) t[i] = k * 1000 + static_cast<uint32_t>(i);
  return t;
}

constexpr int kT = 4;
// Shard sizes: (n-1)/T samples each → 5, 4, 2, 7 (=18); the 3-token shard holds none.
const std::vector<size_t> kShardSizes = {21, 17, 9, 30, 3};
constexpr uint64_t kSamples = 18;

// Writes the labelled corpus (mixing v1 and v2 shards) and returns its glob.
std::string make_corpus(const TempDir& dir) {
  for (size_t k = 0; k < kShardSizes.size(); ++k)
    write_shard(dir.file("train_" + std::to_string(k) + ".bin"), labelled_tokens(static_cast<uint32_t>(k + 1), kShardSizes[k]),
                k % 2 ? kShardVersionU32 : kShardVersionU16);
  return dir.file("train_*.bin");
}

LoaderOptions options(const std::string& pattern, int B, bool shuffle = true, bool prefetch = false,
                      uint64_t seed = 1234, int rank = 0, int world = 1) {
  LoaderOptions o;
  o.pattern = pattern;
  o.config_key = "data.train";
  o.B = B;
  o.T = kT;
  o.rank = rank;
  o.world = world;
  o.seed = seed;
  o.shuffle = shuffle;
  o.prefetch = prefetch;
  return o;
}

// The next n batches, inputs and targets appended (each batch B×T).
struct Stream {
  std::vector<int32_t> inputs, targets;
  bool operator==(const Stream&) const = default;
};

Stream take(DataLoader& loader, int B, int n) {
  Stream s;
  std::vector<int32_t> in(static_cast<size_t>(B) * kT), tg(in.size());
  for (int i = 0; i < n; ++i) {
    loader.next_batch(in.data(), tg.data());
    s.inputs.insert(s.inputs.end(), in.begin(), in.end());
    s.targets.insert(s.targets.end(), tg.begin(), tg.end());
  }
  return s;
}

// A sample's identity: its first token (shard label × 1000 + offset).
std::vector<int32_t> sample_ids(const Stream& s) {
  std::vector<int32_t> ids;
  for (size_t i = 0; i < s.inputs.size(); i += kT) ids.push_back(s.inputs[i]);
  return ids;
}

// Every legal sample of the corpus, by identity.
std::set<int32_t> all_sample_ids() {
  std::set<int32_t> ids;
  for (size_t k = 0; k < kShardSizes.size(); ++k)
    for (size_t j = 0; j < (kShardSizes[k] - 1) / kT; ++j) ids.insert(static_cast<int32_t>((k + 1) * 1000 + j * kT));
  return ids;
}

// Checks every window: inputs consecutive tokens of one shard starting at a multiple of T,
// targets the same window shifted by one.
void check_windows(const Stream& s) {
  for (size_t i = 0; i < s.inputs.size(); i += kT) {
    const int32_t start = s.inputs[i];
    const int32_t shard = start / 1000, offset = start % 1000;
    REQUIRE(shard >= 1);
    REQUIRE(shard <= 4);
    REQUIRE(offset % kT == 0);
    REQUIRE(static_cast<size_t>(offset + kT) < kShardSizes[shard - 1]);  // T+1 tokens fit
    for (int t = 0; t < kT; ++t) {
      REQUIRE(s.inputs[i + t] == start + t);
      REQUIRE(s.targets[i + t] == start + t + 1);
    }
  }
}

}  // namespace

TEST_CASE("shard write/read round trip for uint16 and uint32 shards", "[data]") {
  TempDir dir;
  const std::vector<uint32_t> small = {0, 1, 50256, 65535, 42, 7};
  write_shard(dir.file("v1.bin"), small, kShardVersionU16);
  ShardInfo v1 = read_shard_header(dir.file("v1.bin"));
  CHECK(v1.version == kShardVersionU16);
  CHECK(v1.num_tokens == small.size());
  CHECK(v1.token_bytes() == 2);
  CHECK(fs::file_size(dir.file("v1.bin")) == kShardHeaderBytes + 2 * small.size());
  std::vector<uint32_t> back(small.size());
  read_shard_tokens(v1, 0, small.size(), back.data());
  CHECK(back == small);
  std::vector<uint32_t> mid(3);
  read_shard_tokens(v1, 2, 3, mid.data());
  CHECK(mid == std::vector<uint32_t>{50256, 65535, 42});

  const std::vector<uint32_t> big = {70000, 0, 100000, 4000000000u, 65536};
  write_shard(dir.file("v2.bin"), big, kShardVersionU32);
  ShardInfo v2 = read_shard_header(dir.file("v2.bin"));
  CHECK(v2.version == kShardVersionU32);
  CHECK(v2.num_tokens == big.size());
  CHECK(fs::file_size(dir.file("v2.bin")) == kShardHeaderBytes + 4 * big.size());
  std::vector<uint32_t> back2(big.size());
  read_shard_tokens(v2, 0, big.size(), back2.data());
  CHECK(back2 == big);

  write_shard(dir.file("empty.bin"), std::span<const uint32_t>{}, kShardVersionU16);
  CHECK(read_shard_header(dir.file("empty.bin")).num_tokens == 0);

  // Only the target files remain: the temporary files were renamed into place.
  size_t files = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator(dir.path)) ++files;
  CHECK(files == 3);

  // Reads past the end are refused, naming the file.
  CHECK_THROWS_WITH(read_shard_tokens(v1, 4, 3, back.data()), Contains("v1.bin") && Contains("past the end"));
}

TEST_CASE("malformed shards are refused with the file and field named", "[data]") {
  TempDir dir;
  const std::string bad_magic = dir.file("bad_magic.bin");
  write_raw(bad_magic, 123, 1, 4, 8);
  CHECK_THROWS_WITH(read_shard_header(bad_magic),
                    Contains(bad_magic) && Contains("bad magic 123") && Contains("20240520"));

  const std::string bad_version = dir.file("bad_version.bin");
  write_raw(bad_version, kShardMagic, 3, 4, 8);
  CHECK_THROWS_WITH(read_shard_header(bad_version), Contains(bad_version) && Contains("version 3"));

  const std::string truncated = dir.file("truncated.bin");
  write_raw(truncated, kShardMagic, 1, 1000, 1500);
  CHECK_THROWS_WITH(read_shard_header(truncated),
                    Contains(truncated) && Contains("1000 tokens") && Contains("2000 bytes of uint16") &&
                        Contains("1500 bytes") && Contains("truncated"));

  const std::string extra = dir.file("extra.bin");
  write_raw(extra, kShardMagic, 2, 10, 41);
  CHECK_THROWS_WITH(read_shard_header(extra),
                    Contains(extra) && Contains("40 bytes of uint32") && Contains("41 bytes") && Contains("extra"));

  const std::string negative = dir.file("negative.bin");
  write_raw(negative, kShardMagic, 1, -5, 0);
  CHECK_THROWS_WITH(read_shard_header(negative), Contains(negative) && Contains("-5 tokens"));

  const std::string tiny = dir.file("tiny.bin");
  std::ofstream(tiny, std::ios::binary) << "hello";
  CHECK_THROWS_WITH(read_shard_header(tiny), Contains(tiny) && Contains("5 bytes"));

  CHECK_THROWS_WITH(read_shard_header(dir.file("missing.bin")), Contains("missing.bin"));

  // A well-formed file passes, so the checks above are not refusing everything.
  const std::string good = dir.file("good.bin");
  write_raw(good, kShardMagic, 1, 4, 8);
  CHECK(read_shard_header(good).num_tokens == 4);
}

TEST_CASE("a uint16 shard refuses a token above 65535, naming it and its position", "[data]") {
  TempDir dir;
  const std::string path = dir.file("v1.bin");
  const std::vector<uint32_t> tokens = {1, 2, 70000, 3};
  CHECK_THROWS_WITH(write_shard(path, tokens, kShardVersionU16),
                    Contains(path) && Contains("70000") && Contains("position 2"));
  CHECK_FALSE(fs::exists(path));
  CHECK(fs::is_empty(dir.path));  // no temporary left behind either
  write_shard(path, tokens, kShardVersionU32);  // the same tokens are fine as uint32
  CHECK(read_shard_header(path).version == kShardVersionU32);
}

TEST_CASE("expand_glob sorts its matches and names the key when nothing matches", "[data]") {
  TempDir dir;
  for (const char* name : {"b_2.bin", "b_10.bin", "b_1.bin", "other.txt"})
    write_shard(dir.file(name), std::vector<uint32_t>{1, 2});
  const auto files = expand_glob(dir.file("b_*.bin"), "data.train");
  CHECK(files == std::vector<std::string>{dir.file("b_1.bin"), dir.file("b_10.bin"), dir.file("b_2.bin")});

  const std::string pattern = dir.file("brown_train_*.bin");
  try {
    expand_glob(pattern, "data.train");
    FAIL("expected an error for a pattern matching nothing");
  } catch (const Error& e) {
    CHECK_THAT(e.what(), Contains("data.train") && Contains(pattern) && Contains("matches no file"));
    CHECK_THAT(e.hint(), Contains("prepare_data.sh"));
  }
}

TEST_CASE("loader windows: inputs are T tokens, targets the same window shifted by one", "[data]") {
  TempDir dir;
  const std::string pattern = make_corpus(dir);
  DataLoader loader(options(pattern, 3, /*shuffle=*/false));
  CHECK(loader.shards().size() == 5);
  CHECK(loader.samples_per_epoch() == kSamples);
  CHECK(loader.total_tokens() == 21 + 17 + 9 + 30 + 3);

  // Without shuffling the stream is file order, sample order: shard 1 offsets 0,4,8 first.
  Stream first = take(loader, 3, 1);
  CHECK(sample_ids(first) == std::vector<int32_t>{1000, 1004, 1008});
  CHECK(first.targets == std::vector<int32_t>{1001, 1002, 1003, 1004, 1005, 1006, 1007, 1008, 1009, 1010, 1011, 1012});

  Stream rest = take(loader, 3, 5);  // 18 samples = 6 batches of 3: the rest of the epoch
  check_windows(rest);
  std::vector<int32_t> ids = sample_ids(first);
  for (int32_t id : sample_ids(rest)) ids.push_back(id);
  CHECK(std::vector<int32_t>(ids.begin() + 3, ids.begin() + 11) ==
        std::vector<int32_t>{1012, 1016, 2000, 2004, 2008, 2012, 3000, 3004});
  CHECK(ids.back() == 4024);
  CHECK(loader.state().epoch == 1);
  CHECK(loader.state().shard_pos == 0);
  CHECK(loader.state().sample_pos == 0);
}

TEST_CASE("loader visits every sample exactly once per epoch, reshuffled each epoch", "[data]") {
  TempDir dir;
  const std::string pattern = make_corpus(dir);
  for (bool prefetch : {false, true}) {
    DataLoader loader(options(pattern, 1, true, prefetch));
    Stream e0 = take(loader, 1, static_cast<int>(kSamples));
    CHECK(loader.state().epoch == 1);
    Stream e1 = take(loader, 1, static_cast<int>(kSamples));
    check_windows(e0);
    check_windows(e1);
    const auto ids0 = sample_ids(e0), ids1 = sample_ids(e1);
    CHECK(std::set<int32_t>(ids0.begin(), ids0.end()) == all_sample_ids());
    CHECK(std::set<int32_t>(ids1.begin(), ids1.end()) == all_sample_ids());
    CHECK(ids0.size() == kSamples);
    CHECK(ids0 != ids1);  // a new order each epoch

    // Shuffled, but a shard's samples are still read together (shard order, then sample order).
    std::vector<int32_t> shard_runs;
    for (int32_t id : ids0)
      if (shard_runs.empty() || shard_runs.back() != id / 1000) shard_runs.push_back(id / 1000);
    CHECK(shard_runs.size() == 4);
  }
}

TEST_CASE("loader order depends on the seed and only on the seed", "[data]") {
  TempDir dir;
  const std::string pattern = make_corpus(dir);
  DataLoader a(options(pattern, 2, true, false, 7)), b(options(pattern, 2, true, true, 7)),
      c(options(pattern, 2, true, false, 8));
  const Stream sa = take(a, 2, 20), sb = take(b, 2, 20), sc = take(c, 2, 20);
  CHECK(sa == sb);
  CHECK(sa != sc);
  check_windows(sc);
}

TEST_CASE("two ranks together read exactly the one-rank global batch", "[data]") {
  TempDir dir;
  const std::string pattern = make_corpus(dir);
  const int B = 2, world = 2, steps = 25;  // 4 samples a step, 18 a epoch: crosses epochs mid-batch
  DataLoader whole(options(pattern, world * B, true, false, 99, 0, 1));
  DataLoader r0(options(pattern, B, true, true, 99, 0, world));
  DataLoader r1(options(pattern, B, true, false, 99, 1, world));
  std::vector<int32_t> in(world * B * kT), tg(in.size());
  std::vector<int32_t> in0(B * kT), tg0(in0.size()), in1(B * kT), tg1(in1.size());
  for (int step = 0; step < steps; ++step) {
    whole.next_batch(in.data(), tg.data());
    r0.next_batch(in0.data(), tg0.data());
    r1.next_batch(in1.data(), tg1.data());
    std::vector<int32_t> cat_in(in0), cat_tg(tg0);
    cat_in.insert(cat_in.end(), in1.begin(), in1.end());
    cat_tg.insert(cat_tg.end(), tg1.begin(), tg1.end());
    REQUIRE(cat_in == in);
    REQUIRE(cat_tg == tg);
    REQUIRE(r0.state().epoch == whole.state().epoch);
    REQUIRE(r1.state().sample_pos == whole.state().sample_pos);
  }
  CHECK(whole.state().epoch == (steps * world * B) / kSamples);
  CHECK(in0 != in1);
}

TEST_CASE("state()/restore() reproduce the following batches bit for bit", "[data]") {
  TempDir dir;
  const std::string pattern = make_corpus(dir);
  const int B = 5;  // 18 samples: batch 4 (samples 15..19) straddles the epoch boundary
  for (bool prefetch : {false, true}) {
    DataLoader ref(options(pattern, B, true, prefetch));
    CHECK(ref.state().epoch == 0);
    take(ref, B, 2);
    const LoaderState mid = ref.state();  // mid-epoch
    CHECK(mid.epoch == 0);
    const Stream after_mid = take(ref, B, 6);
    const LoaderState later = ref.state();
    CHECK(later.epoch == 2);  // 40 samples consumed
    const Stream after_later = take(ref, B, 4);

    // A fresh loader (as after a restart) resumes exactly.
    DataLoader resumed(options(pattern, B, true, !prefetch));
    resumed.restore(mid);
    CHECK(resumed.state().sample_pos == mid.sample_pos);
    CHECK(take(resumed, B, 6) == after_mid);
    CHECK(take(resumed, B, 4) == after_later);

    // Rewinding the same loader, with a prefetch possibly in flight, also resumes exactly.
    ref.restore(later);
    CHECK(take(ref, B, 4) == after_later);
    ref.restore(mid);
    ref.restore(later);  // two restores back to back: only the last counts
    CHECK(take(ref, B, 4) == after_later);

    // Restores racing a prefetch in flight (it starts right after each next_batch):
    // the stale batch must never be delivered.
    for (int i = 0; i < 300; ++i) {
      take(ref, B, 1);
      ref.restore(later);
      REQUIRE(take(ref, B, 1).inputs == std::vector<int32_t>(after_later.inputs.begin(),
                                                              after_later.inputs.begin() + B * kT));
    }

    // reset() starts over.
    DataLoader fresh(options(pattern, B, true, prefetch));
    const Stream start = take(fresh, B, 3);
    ref.reset();
    CHECK(take(ref, B, 3) == start);

    // A position outside the data (other files, other T) is refused, naming the key.
    CHECK_THROWS_WITH(ref.restore(LoaderState{0, 9, 0}), Contains("data.train") && Contains("shard 9"));
    CHECK_THROWS_WITH(ref.restore(LoaderState{0, 0, 100}), Contains("sample 100"));
  }
}

TEST_CASE("restore() cancels a prefetch that is being read", "[data]") {
  TempDir dir;
  const std::string pattern = make_corpus(dir);
  const int B = 256;  // a slow fill (256 reads), so a restore lands while it is under way
  DataLoader loader(options(pattern, B, true, true));
  const LoaderState start = loader.state();
  const Stream first = take(loader, B, 1);
  int stale = 0;
  for (int i = 0; i < 40; ++i) {
    loader.restore(start);
    take(loader, B, 1);  // the thread now refills in the background...
    std::this_thread::sleep_for(std::chrono::microseconds(20 * (i % 8)));
    loader.restore(start);  // ...and this restore must discard whatever it produced
    if (take(loader, B, 1) != first) ++stale;
  }
  CHECK(stale == 0);
}

TEST_CASE("prefetch on and off give identical streams", "[data]") {
  TempDir dir;
  const std::string pattern = make_corpus(dir);
  DataLoader on(options(pattern, 3, true, true, 5, 1, 3)), off(options(pattern, 3, true, false, 5, 1, 3));
  const Stream a = take(on, 3, 15), b = take(off, 3, 15);
  CHECK(a == b);
  check_windows(a);
  CHECK(on.state().epoch == off.state().epoch);
  CHECK(on.state().shard_pos == off.state().shard_pos);
  CHECK(on.state().sample_pos == off.state().sample_pos);
}

TEST_CASE("loader skips too-small shards and refuses data with no sample at all", "[data]") {
  TempDir dir;
  write_shard(dir.file("s_0.bin"), labelled_tokens(1, 4));  // T+1 = 5 needed
  write_shard(dir.file("s_1.bin"), labelled_tokens(2, 0));
  CHECK_THROWS_WITH(DataLoader(options(dir.file("s_*.bin"), 1)), Contains("data.train") && Contains("T+1 = 5"));
  write_shard(dir.file("s_2.bin"), labelled_tokens(3, 5));  // exactly one sample
  DataLoader loader(options(dir.file("s_*.bin"), 2, true, true));
  CHECK(loader.samples_per_epoch() == 1);
  const Stream s = take(loader, 2, 1);
  CHECK(s.inputs == std::vector<int32_t>{3000, 3001, 3002, 3003, 3000, 3001, 3002, 3003});
  CHECK(loader.state().epoch == 2);

  CHECK_THROWS_WITH(DataLoader(options(dir.file("nothing_*.bin"), 1)), Contains("data.train"));
  LoaderOptions bad_rank = options(dir.file("s_*.bin"), 1, true, false, 0, 2, 2);
  CHECK_THROWS_WITH(DataLoader(bad_rank), Contains("rank 2"));
}

TEST_CASE("bad shards surface as errors, also from the prefetch thread", "[data]") {
  TempDir dir;
  const std::string pattern = make_corpus(dir);
  const std::string bad = dir.file("train_9.bin");
  write_raw(bad, 999, 1, 4, 8);
  CHECK_THROWS_WITH(DataLoader(options(pattern, 2)), Contains(bad) && Contains("bad magic"));
  fs::remove(bad);

  for (bool prefetch : {false, true}) {
    DataLoader loader(options(pattern, 2, false, prefetch));
    const LoaderState start = loader.state();
    const Stream expected = take(loader, 2, 3);
    loader.restore(start);
    // Shard 1 shrinks after validation: reading it must fail with an Error, not crash.
    const std::string victim = dir.file("train_0.bin");
    std::string saved;  // the shard's bytes, to repair it in place (the loader holds it open)
    {
      std::ifstream f(victim, std::ios::binary);
      saved.assign(std::istreambuf_iterator<char>(f), {});
    }
    fs::resize_file(victim, kShardHeaderBytes + 4);
    std::vector<int32_t> in(2 * kT), tg(in.size());
    int delivered = 0;  // a batch prefetched before the damage may still arrive
    bool threw = false;
    for (int i = 0; i < 3 && !threw; ++i) {
      try {
        loader.next_batch(in.data(), tg.data());
        ++delivered;
      } catch (const Error& e) {
        CHECK_THAT(e.what(), Contains(victim));
        threw = true;
      }
    }
    CHECK(threw);
    CHECK(delivered <= 1);
    const LoaderState stuck = loader.state();
    CHECK_THROWS_AS(loader.next_batch(in.data(), tg.data()), Error);  // still failing
    CHECK(loader.state().sample_pos == stuck.sample_pos);              // position not advanced

    // Repair the shard; restore() clears the error and the stream is as before.
    std::ofstream(victim, std::ios::binary | std::ios::trunc) << saved;
    loader.restore(start);
    CHECK(take(loader, 2, 3) == expected);
  }
}

TEST_CASE("shards we write carry a body checksum in header slots llm.c ignores", "[data]") {
  TempDir dir;
  for (int32_t version : {kShardVersionU16, kShardVersionU32}) {
    const std::string path = dir.file("c" + std::to_string(version) + ".bin");
    const std::vector<uint32_t> tokens = labelled_tokens(7, 3000);
    write_shard(path, tokens, version);
    const std::string bytes = slurp(path);
    std::vector<int32_t> header(kShardHeaderInts);
    std::memcpy(header.data(), bytes.data(), kShardHeaderBytes);
    // llm.c's three ints are unchanged, so llm.c reads the file as before.
    CHECK(header[0] == kShardMagic);
    CHECK(header[1] == version);
    CHECK(header[2] == 3000);
    CHECK(header[3] == kShardChecksumTag);
    CHECK(std::memcmp(bytes.data() + 12, "XH64", 4) == 0);
    const uint64_t want = checksum64(bytes.data() + kShardHeaderBytes, bytes.size() - kShardHeaderBytes);
    CHECK(static_cast<uint32_t>(header[4]) == static_cast<uint32_t>(want));
    CHECK(static_cast<uint32_t>(header[5]) == static_cast<uint32_t>(want >> 32));
    for (size_t i = 6; i < kShardHeaderInts; ++i) REQUIRE(header[i] == 0);
    const ShardInfo info = read_shard_header(path);
    CHECK(info.has_checksum);
    CHECK(info.body_checksum == want);
    verify_shard_body(info);
    std::vector<uint32_t> back(tokens.size());
    read_shard_tokens(info, 0, tokens.size(), back.data());
    CHECK(back == tokens);
  }

  // A shard as llm.c writes it (header[3..] zero, no checksum) loads as before, unchecked.
  const std::string llmc = dir.file("llmc.bin");
  write_raw(llmc, kShardMagic, 1, 4, 8);
  const ShardInfo info = read_shard_header(llmc);
  CHECK_FALSE(info.has_checksum);
  verify_shard_body(info);
  std::vector<uint32_t> back(4);
  read_shard_tokens(info, 0, 4, back.data());
  CHECK(back == std::vector<uint32_t>(4, 0x0707));
  // An empty shard has a checksum too (of zero bytes).
  write_shard(dir.file("empty.bin"), std::span<const uint32_t>{});
  CHECK(read_shard_header(dir.file("empty.bin")).body_checksum == checksum64(nullptr, 0));
  ShardReader empty(read_shard_header(dir.file("empty.bin")));
}

TEST_CASE("a flipped byte anywhere in a checksummed shard is refused, naming the file and field", "[data]") {
  TempDir dir;
  const std::string path = dir.file("train_000.bin");
  write_shard(path, labelled_tokens(3, 40), kShardVersionU16);  // 80 body bytes
  const std::string good = slurp(path);
  // Opening the shard as the loader does: header, then a reader (which checks the body).
  auto open_shard = [&] { ShardReader r(read_shard_header(path)); };
  open_shard();
  int refused = 0;
  for (size_t at = 0; at < good.size(); ++at) {
    std::string bad = good;
    bad[at] = static_cast<char>(bad[at] ^ 0x10);
    spit(path, bad);
    std::string what;
    try {
      open_shard();
    } catch (const Error& e) {
      what = e.what();
    }
    INFO("flipped byte " << at << ": " << what);
    REQUIRE(what.find(path) != std::string::npos);
    ++refused;
    if (at < 4) CHECK_THAT(what, Contains("bad magic"));
    else if (at < 8) CHECK_THAT(what, Contains("version") || Contains("bytes after the header"));
    else if (at < 12) CHECK_THAT(what, Contains("tokens"));
    else if (at < 16) CHECK_THAT(what, Contains("header int 3 (byte offset 12)"));
    else if (at < kShardHeaderBytes && at >= 24)
      CHECK_THAT(what, Contains("header int " + std::to_string(at / 4) + " (byte offset " + std::to_string(at / 4 * 4) + ")"));
    else CHECK_THAT(what, Contains("body checksum does not match"));
  }
  CHECK(refused == static_cast<int>(good.size()));

  // The messages say what to do, and the loader refuses such a shard before the first batch.
  std::string bad = good;
  bad[kShardHeaderBytes + 41] ^= 1;
  spit(path, bad);
  try {
    open_shard();
    FAIL("a flipped body byte was not detected");
  } catch (const Error& e) {
    CHECK_THAT(e.hint(), Contains("competelm-tokenize"));
  }
  write_shard(dir.file("train_001.bin"), labelled_tokens(4, 40));
  for (bool prefetch : {false, true})
    CHECK_THROWS_WITH(DataLoader(options(dir.file("train_*.bin"), 2, true, prefetch)),
                      Contains(path) && Contains("body checksum does not match"));

  // Truncation, by one byte or to less than a header, names the file and the sizes.
  spit(path, good.substr(0, good.size() - 1));
  CHECK_THROWS_WITH(read_shard_header(path), Contains(path) && Contains("79 bytes after the header") && Contains("truncated"));
  spit(path, good.substr(0, 1000));
  CHECK_THROWS_WITH(read_shard_header(path), Contains(path) && Contains("1000 bytes") && Contains("header"));

  // Repaired, it loads.
  spit(path, good);
  DataLoader ok(options(dir.file("train_*.bin"), 2));
  CHECK(ok.samples_per_epoch() == 2 * 9);
}

TEST_CASE("a shard truncated after it was opened fails the read, naming the file", "[data]") {
  TempDir dir;
  const std::string path = dir.file("s.bin");
  write_shard(path, labelled_tokens(1, 1000));
  ShardReader r(read_shard_header(path));
  std::vector<uint32_t> out(10);
  r.read(990, 10, out.data());
  fs::resize_file(path, kShardHeaderBytes + 2 * 500);
  CHECK_THROWS_WITH(r.read(990, 10, out.data()), Contains(path) && Contains("returned 0 of 20 bytes"));
  // Re-opening checks the size against the header first.
  CHECK_THROWS_WITH(ShardReader(read_shard_header(path)), Contains(path) && Contains("truncated"));
  // verify_shard_body of the stale header info reports the short read at its byte offset.
  CHECK_THROWS_WITH(verify_shard_body(r.info()), Contains(path) && Contains("byte offset 1024"));
}

TEST_CASE("the loader refuses token ids outside the vocabulary, naming shard and position", "[data]") {
  TempDir dir;
  std::vector<uint32_t> tokens(50, 3);
  tokens[37] = 64;
  write_shard(dir.file("v_0.bin"), tokens);
  for (bool prefetch : {false, true}) {
    LoaderOptions o = options(dir.file("v_*.bin"), 1, false, prefetch);
    o.vocab_size = 65;
    DataLoader fits(o);
    take(fits, 1, 12);  // every window, token 64 included
    o.vocab_size = 64;
    DataLoader loader(o);
    std::vector<int32_t> in(kT), tg(kT);
    for (int i = 0; i < 9; ++i) loader.next_batch(in.data(), tg.data());  // windows 0..8: tokens 0..36
    CHECK_THROWS_WITH(loader.next_batch(in.data(), tg.data()),
                      Contains(dir.file("v_0.bin")) && Contains("token 64 at position 37") &&
                          Contains("vocabulary [0, 64)"));
  }
}

// Not run by default (hidden tag): the cost of the body check, one pass over the file.
// build/bin/competelm-tests "[data-bench]"
TEST_CASE("body checksum throughput", "[.][data-bench]") {
  TempDir dir;
  const std::string path = dir.file("big.bin");
  std::vector<uint32_t> tokens(size_t{64} << 20);  // 64 Mi tokens = 128 MiB of uint16
  for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = static_cast<uint32_t>((i * 2654435761u) >> 16) & 0xFFFF;
  write_shard(path, tokens);
  const ShardInfo info = read_shard_header(path);
  verify_shard_body(info);  // warm the page cache: measure the check, not the disk
  const auto t0 = std::chrono::steady_clock::now();
  constexpr int kReps = 5;
  for (int i = 0; i < kReps; ++i) verify_shard_body(info);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const double mb = kReps * static_cast<double>(fs::file_size(path)) / 1e6;
  WARN("verify_shard_body: " << mb / s << " MB/s (page cache, one thread)");
  CHECK(s > 0);
}
