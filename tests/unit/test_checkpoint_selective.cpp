// Selective loading and split verification (the I/O of a multi-rank resume): tensor-file
// directories read alone (Checkpoint::read_index, exact-coverage checks from the index),
// byte ranges of the wanted elements only (read_ranges, equal to read_assembled), opening
// without verification and verifying shares of the files, and the collective resume helpers
// of train/run_state.hpp on a single-process communicator.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>

#include "checkpoint/checkpoint.hpp"
#include "checkpoint/file_io.hpp"
#include "checkpoint/tensor_file.hpp"
#include "core/error.hpp"
#include "core/fs_util.hpp"
#include "dist/comm.hpp"
#include "error_of.hpp"
#include "train/run_state.hpp"
#include "shard_fixture.hpp"
#include "train_fixture.hpp"

using namespace competelm;
using testing::error_of;
using testing::reseal;
using testing::save_sharded;
namespace fs = std::filesystem;

namespace {

// w cut unevenly over three shards, b whole in shard 1.
std::string save_three(const std::string& run_dir, int64_t step, const testing::ShardModel& m) {
  return save_sharded(run_dir, step, {{m.slice("w", 0, 1234)}, {m.slice("b", 0, 7), m.slice("w", 1234, 3000)},
                                      {m.slice("w", 3000, 4000)}});
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
}

}  // namespace

TEST_CASE("checkpoint selective: ranges read from the index equal read_assembled, and only their bytes", "[checkpoint]") {
  testing::TempDir run("ckpt-sel");
  const testing::ShardModel m(40, 100, 11);  // w (40, 100) = 4000 elements, b (7)
  const std::string dir = save_three(run.str(), 3, m);
  const Checkpoint ck(dir);
  const auto whole = ck.read_assembled("model");

  const uint64_t before_index = ck.bytes_read();
  const TensorKindIndex index = ck.read_index("model");
  const uint64_t index_bytes = ck.bytes_read() - before_index;
  CHECK(index_bytes > 0);
  CHECK(index_bytes <= 3 * 4096);  // directories only, not the 16 KB of data
  REQUIRE(index.files.size() == 3);
  CHECK(index.files[1].name == "model.shard-00001-of-00003.bin");
  REQUIRE(index.tensors.size() == 2);
  const auto& w = index.tensors.at("w");
  CHECK(w.shape == std::vector<int64_t>{40, 100});
  CHECK(w.numel == 4000);
  REQUIRE(w.pieces.size() == 3);
  CHECK(w.pieces[1].file == 1);
  CHECK(w.pieces[1].begin == 1234);
  CHECK(w.pieces[1].end == 3000);
  CHECK(w.pieces[1].offset % 64 == 0);

  struct Range {
    const char* name;
    uint64_t begin, end;
  };
  // Inside one piece, across a boundary, across all three, a single element at a boundary,
  // the whole of both tensors, and an empty range.
  const std::vector<Range> ranges = {{"w", 10, 20},   {"w", 1200, 1300}, {"w", 5, 3999}, {"w", 2999, 3001},
                                     {"w", 3000, 3001}, {"w", 0, 4000},  {"b", 0, 7},    {"b", 3, 3}};
  for (const Range& r : ranges) {
    INFO(r.name << " [" << r.begin << ", " << r.end << ")");
    std::vector<float> got(r.end - r.begin + 1, 0.0f);
    const float sentinel = -1.5f;
    got.back() = sentinel;  // nothing may be written past the range
    const uint64_t before = ck.bytes_read();
    ck.read_ranges(index, {{r.name, r.begin, r.end, got.data()}});
    CHECK(ck.bytes_read() - before == (r.end - r.begin) * sizeof(float));  // exactly the wanted bytes
    CHECK(std::memcmp(got.data(), whole.at(r.name).data.data() + r.begin, (r.end - r.begin) * sizeof(float)) == 0);
    CHECK(got.back() == sentinel);
  }
  // Several requests at once, into separate buffers.
  std::vector<float> a(50), b(7);
  ck.read_ranges(index, {{"w", 1210, 1260, a.data()}, {"b", 0, 7, b.data()}});
  CHECK(std::memcmp(a.data(), m.w.data() + 1210, 50 * sizeof(float)) == 0);
  CHECK(std::memcmp(b.data(), m.b.data(), 7 * sizeof(float)) == 0);
  // Requests the index cannot serve name the tensor.
  std::vector<float> sink(10);
  CHECK_THAT(error_of([&] { ck.read_ranges(index, {{"nope", 0, 1, sink.data()}}); }), Catch::Contains("'nope'"));
  CHECK_THAT(error_of([&] { ck.read_ranges(index, {{"b", 2, 9, sink.data()}}); }),
             Catch::Contains("'b'") && Catch::Contains("[2, 9)"));
  // A single file (version 1) indexes and reads the same way.
  CheckpointWriter single(run.str(), 9);
  single.write_tensors("model.bin", {{"w", {40, 100}, m.w.data()}, {"b", {7}, m.b.data()}});
  const Checkpoint one(single.commit());
  const TensorKindIndex one_index = one.read_index("model");
  REQUIRE(one_index.files.size() == 1);
  const uint64_t before_empty = one.bytes_read();
  one.read_ranges(one_index, {});  // an empty request list opens and reads nothing
  CHECK(one.bytes_read() == before_empty);
  one.read_ranges(one_index, {{"w", 3990, 4000, sink.data()}});
  CHECK(std::memcmp(sink.data(), m.w.data() + 3990, 10 * sizeof(float)) == 0);
}

TEST_CASE("checkpoint selective: gaps, overlaps and shape conflicts are refused from the index alone", "[checkpoint]") {
  testing::TempDir run("ckpt-sel");
  const testing::ShardModel m(40, 100, 11);  // w (40, 100) = 4000 elements, b (7)
  struct Case {
    const char* what;
    std::vector<std::vector<NamedTensor>> parts;
    std::vector<const char*> expect;
  };
  const std::vector<Case> cases = {
      {"gap", {{m.slice("w", 0, 2000)}, {m.slice("w", 2010, 4000)}}, {"'w'", "[2000, 2010)", "in no model file"}},
      {"tail missing", {{m.slice("w", 0, 2000)}, {m.slice("w", 2000, 3999)}}, {"'w'", "[3999, 4000)", "in no model file"}},
      {"overlap",
       {{m.slice("w", 0, 2010)}, {m.slice("w", 2000, 4000)}},
       {"'w'", "[2000, 2010)", "stored twice", "model.shard-00000-of-00002.bin", "model.shard-00001-of-00002.bin"}},
      {"shape conflict",
       {{m.slice("w", 0, 2000)}, {{"w", {4000}, m.w.data() + 2000, 2000, 4000}}},
       {"'w'", "(4000)", "(40, 100)", "model.shard-00001-of-00002.bin"}},
  };
  int64_t step = 1;
  for (const Case& c : cases) {
    INFO(c.what);
    const Checkpoint ck(save_sharded(run.str(), step++, c.parts), Checkpoint::Verify::none);
    const std::string err = error_of([&] { ck.read_index("model"); });
    for (const char* e : c.expect) CHECK_THAT(err, Catch::Contains(e));
    CHECK(ck.bytes_read() <= 2 * 4096);  // found without reading the 16 KB of data
  }
}

TEST_CASE("checkpoint selective: truncated files and bad directories name the file and offset", "[checkpoint]") {
  testing::TempDir run("ckpt-sel");
  const testing::ShardModel m(40, 100, 11);  // w (40, 100) = 4000 elements, b (7)
  const std::string dir = save_three(run.str(), 2, m);
  const std::string file = "model.shard-00002-of-00003.bin";
  const std::string path = dir + "/" + file;
  const std::string original = read_file(path);

  // Cut short and re-listed with its new size: the directory points past the end.
  write_bytes(path, original.substr(0, original.size() - 100));
  reseal(dir, file);
  {
    const Checkpoint ck(dir, Checkpoint::Verify::none);
    CHECK_THAT(error_of([&] { ck.read_index("model"); }),
               Catch::Contains(file) && Catch::Contains("past the end") && Catch::Contains("'w'"));
  }
  // Cut inside the directory itself (its one entry's data offset is at 61..69).
  write_bytes(path, original.substr(0, 64));
  reseal(dir, file);
  CHECK_THAT(error_of([&] { Checkpoint(dir, Checkpoint::Verify::none).read_index("model"); }),
             Catch::Contains(file) && Catch::Contains("truncated") && Catch::Contains("at offset 61"));
  // An impossible tensor count at offset 12.
  std::string bad = original;
  const uint32_t count = 1u << 19;
  std::memcpy(bad.data() + 12, &count, 4);
  write_bytes(path, bad);
  reseal(dir, file);
  CHECK_THAT(error_of([&] { Checkpoint(dir, Checkpoint::Verify::none).read_index("model"); }),
             Catch::Contains(file) && Catch::Contains("offset 12"));
  // Truncated behind meta.json's back: refused on opening, with or without verification.
  write_bytes(path, original);
  reseal(dir, file);
  const Checkpoint ck(dir, Checkpoint::Verify::none);
  const TensorKindIndex index = ck.read_index("model");
  write_bytes(path, original.substr(0, original.size() - 4));
  CHECK_THAT(error_of([&] { Checkpoint(dir, Checkpoint::Verify::none); }),
             Catch::Contains(file) && Catch::Contains("size mismatch"));
  std::vector<float> sink(4000);
  CHECK_THAT(error_of([&] { ck.read_ranges(index, {{"w", 3990, 4000, sink.data()}}); }),
             Catch::Contains(file) && Catch::Contains("size mismatch"));
  // A file that shrinks under an open reader: read_at names the offset.
  write_bytes(path, original);
  const auto record = std::find_if(ck.files().begin(), ck.files().end(),
                                   [&](const CheckpointFile& f) { return f.name == file; });
  REQUIRE(record != ck.files().end());
  CheckpointFileReader in(dir, *record);
  fs::resize_file(path, 1000);
  char buf[64];
  CHECK_THAT(error_of([&] { in.read_at(1024, buf, 64); }),
             Catch::Contains(file) && Catch::Contains("end of file at offset 1024"));
  CHECK_THAT(error_of([&] { in.read_at(in.size() - 10, buf, 64); }),
             Catch::Contains(file) && Catch::Contains("truncated") &&
                 Catch::Contains(fmt::format("at offset {}", in.size() - 10)));
}

TEST_CASE("checkpoint: split verification finds a corrupted file whichever share holds it", "[checkpoint]") {
  testing::TempDir run("ckpt-sel");
  const testing::ShardModel m(40, 100, 11);  // w (40, 100) = 4000 elements, b (7)
  const std::string dir = save_three(run.str(), 4, m);
  const Checkpoint opened(dir, Checkpoint::Verify::none);
  const size_t n = opened.files().size();
  REQUIRE(n == 5);  // 3 shards, config.yaml, state.txt
  CHECK(opened.bytes_read() == 0);  // nothing read but meta.json
  const int parts = 3;
  // The shares partition the files, balanced by bytes: each of the three shards (the big files)
  // in a share of its own.
  std::vector<int> seen(n, 0), owner(n, -1);
  for (int p = 0; p < parts; ++p) {
    int shards = 0;
    for (size_t i : opened.verification_share(p, parts)) {
      ++seen[i];
      owner[i] = p;
      shards += opened.files()[i].name.rfind("model.shard", 0) == 0;
    }
    CHECK(shards == 1);
  }
  CHECK(seen == std::vector<int>(n, 1));
  CHECK(opened.verification_share(0, 1).size() == n);

  for (size_t k = 0; k < n; ++k) {
    const std::string name = opened.files()[k].name;
    INFO(name);
    const std::string path = dir + "/" + name;
    const std::string original = read_file(path);
    std::string bad = original;
    bad[bad.size() / 2] ^= 0x10;  // same size: only a checksum can tell
    write_bytes(path, bad);
    const Checkpoint ck(dir, Checkpoint::Verify::none);  // opening does not read contents
    int failed = 0;
    for (int p = 0; p < parts; ++p) {
      const std::string err = error_of([&] { ck.verify_files(ck.verification_share(p, parts)); });
      if (!err.empty()) {
        ++failed;
        CHECK(p == owner[k]);
        CHECK_THAT(err, Catch::Contains(name) && Catch::Contains("checksum mismatch"));
      }
    }
    CHECK(failed == 1);
    // A single-process communicator verifies every file.
    auto self = make_self_comm();
    const std::string err = error_of([&] { open_verified_checkpoint(dir, *self); });
    CHECK_THAT(err, Catch::Contains(name) && Catch::Contains("checksum mismatch"));
    CHECK_THAT(err, !Catch::StartsWith("rank "));
    try {  // the failing file's hint survives the agreement
      open_verified_checkpoint(dir, *self);
    } catch (const Error& e) {
      CHECK_THAT(e.hint(), Catch::Contains("earlier checkpoint"));
    }
    write_bytes(path, original);
  }
  auto self = make_self_comm();
  const Checkpoint good = open_verified_checkpoint(dir, *self);
  uint64_t total = 0;
  for (const CheckpointFile& f : good.files()) total += f.bytes;
  CHECK(good.bytes_read() == total);  // one rank: every byte once
  // A listed file that is gone or resized is refused on opening, even without verification.
  fs::rename(dir + "/state.txt", dir + "/state.moved");
  CHECK_THAT(error_of([&] { Checkpoint(dir, Checkpoint::Verify::none); }), Catch::Contains("state.txt"));
  fs::rename(dir + "/state.moved", dir + "/state.txt");
}

TEST_CASE("checkpoint: the collective resume search keeps its fallback rules on one rank", "[checkpoint]") {
  testing::TempDir run("ckpt-sel");
  const testing::ShardModel m(40, 100, 11);  // w (40, 100) = 4000 elements, b (7)
  auto self = make_self_comm();
  CHECK_FALSE(find_resume_checkpoint(run.str(), false, *self).has_value());  // no checkpoint yet
  const std::string older = save_three(run.str(), 2, m);
  const std::string newer = save_three(run.str(), 4, m);
  auto found = find_resume_checkpoint(run.str(), false, *self);
  REQUIRE(found.has_value());
  CHECK(found->dir() == newer);
  // Corrupt the newest: refused with the hint, or the older one with fallback.
  const std::string path = newer + "/model.shard-00001-of-00003.bin";
  std::string bad = read_file(path);
  bad[bad.size() - 3] ^= 0x01;
  write_bytes(path, bad);
  // The message and the hint, as the single-process search gives them.
  auto error_and_hint = [](auto&& fn) -> std::pair<std::string, std::string> {
    try {
      fn();
    } catch (const Error& e) {
      return {e.what(), e.hint()};
    }
    return {};
  };
  const auto [err, hint] = error_and_hint([&] { find_resume_checkpoint(run.str(), false, *self); });
  CHECK_THAT(err, Catch::Contains("newest checkpoint") && Catch::Contains("unusable") &&
                      Catch::Contains("model.shard-00001-of-00003.bin"));
  CHECK_THAT(hint, Catch::Contains("checkpoint.fallback"));
  CHECK(error_and_hint([&] { find_resume_checkpoint(run.str(), false); }) == std::make_pair(err, hint));
  found = find_resume_checkpoint(run.str(), true, *self);
  REQUIRE(found.has_value());
  CHECK(found->dir() == older);
}
