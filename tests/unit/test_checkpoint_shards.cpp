// Sharded checkpoints (several writers, one committed directory): CLMTENS v2 slice entries,
// Checkpoint::read_assembled (any layout, exact coverage), the helper-writer protocol and its
// failure path. The multi-process protocol itself is tested by tests/mpi/*.sh.
#include <catch2/catch.hpp>

#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>

#include "checkpoint/checkpoint.hpp"
#include "checkpoint/fault_injection.hpp"
#include "core/error.hpp"
#include "error_of.hpp"
#include "core/fs_util.hpp"
#include "shard_fixture.hpp"
#include "train_fixture.hpp"

using namespace competelm;
namespace fs = std::filesystem;

namespace {

struct FaultGuard {
  explicit FaultGuard(long bytes) { set_checkpoint_write_fault_after(bytes); }
  ~FaultGuard() { set_checkpoint_write_fault_after(-1); }
};

using testing::error_of;
using testing::reseal;
using testing::save_sharded;

uint32_t version_of(const std::string& path) {
  const std::string bytes = read_file(path);
  uint32_t v = 0;
  std::memcpy(&v, bytes.data() + 8, 4);
  return v;
}

}  // namespace

TEST_CASE("checkpoint shards: slices from three writers assemble bit-exactly", "[checkpoint]") {
  testing::TempDir run("ckpt-shards");
  const testing::ShardModel m(6, 10, 1);  // w (6, 10) = 60 elements, b (7)
  // w cut unevenly over writers 0 and 2, b whole in writer 1, an empty tensor in writer 2.
  const std::string dir = save_sharded(run.str(), 4,
                                       {{m.slice("w", 0, 25)},
                                        {m.slice("b", 0, 7)},
                                        {m.slice("w", 25, 60), {"e", {0}, nullptr, 0, 0}}});
  CHECK(version_of(dir + "/model.shard-00000-of-00003.bin") == 2);
  CHECK(version_of(dir + "/model.shard-00001-of-00003.bin") == 1);  // whole tensors only: v1
  const Checkpoint ck(dir);
  CHECK(ck.files().size() == 5);  // 3 shards, config.yaml, state.txt
  const auto t = ck.read_assembled("model");
  REQUIRE(t.size() == 3);
  CHECK(t.at("w").shape == std::vector<int64_t>{6, 10});
  REQUIRE(t.at("w").data.size() == 60);
  CHECK(std::memcmp(t.at("w").data.data(), m.w.data(), 60 * sizeof(float)) == 0);
  CHECK(std::memcmp(t.at("b").data.data(), m.b.data(), 7 * sizeof(float)) == 0);
  CHECK(t.at("e").data.empty());
  // A slice file read as whole tensors is refused, pointing at read_assembled.
  CHECK_THAT(error_of([&] { ck.read_tensors("model.shard-00000-of-00003.bin"); }),
             Catch::Contains("model.shard-00000-of-00003.bin") && Catch::Contains("'w'") &&
                 Catch::Contains("[0, 25)") && Catch::Contains("read_assembled"));
  CHECK_THAT(error_of([&] { ck.read_assembled("optim"); }), Catch::Contains("neither optim.bin"));
}

TEST_CASE("checkpoint shards: version 1 single files still read, assembled too", "[checkpoint]") {
  testing::TempDir run("ckpt-shards");
  const testing::ShardModel m(6, 10, 1);  // w (6, 10) = 60 elements, b (7)
  CheckpointWriter w(run.str(), 1);
  w.write_tensors("model.bin", {{"w", {6, 10}, m.w.data()}, {"b", {7}, m.b.data()}});
  const std::string dir = w.commit();
  CHECK(version_of(dir + "/model.bin") == 1);  // single-process files are unchanged
  const Checkpoint ck(dir);
  const auto whole = ck.read_tensors("model.bin");
  const auto assembled = ck.read_assembled("model");
  REQUIRE(assembled.size() == 2);
  CHECK(assembled.at("w").data == whole.at("w").data);
  CHECK(std::memcmp(assembled.at("b").data.data(), m.b.data(), 7 * sizeof(float)) == 0);
}

TEST_CASE("checkpoint shards: gaps, overlaps, missing shards and shape conflicts are refused", "[checkpoint]") {
  testing::TempDir run("ckpt-shards");
  const testing::ShardModel m(6, 10, 1);  // w (6, 10) = 60 elements, b (7)
  struct Case {
    const char* what;
    std::vector<std::vector<NamedTensor>> parts;
    std::vector<const char*> expect;
  };
  const std::vector<Case> cases = {
      {"gap in the middle", {{m.slice("w", 0, 20)}, {m.slice("w", 30, 60)}}, {"'w'", "[20, 30)", "in no model file"}},
      {"tail missing", {{m.slice("w", 0, 20)}, {m.slice("w", 20, 59)}}, {"'w'", "[59, 60)", "in no model file"}},
      {"overlap",
       {{m.slice("w", 0, 32)}, {m.slice("w", 30, 60)}},
       {"'w'", "[30, 32)", "stored twice", "model.shard-00000-of-00002.bin", "model.shard-00001-of-00002.bin"}},
      {"shape conflict",
       {{m.slice("w", 0, 30)}, {{"w", {60}, m.w.data() + 30, 30, 60}}},
       {"'w'", "(60)", "(6, 10)", "model.shard-00001-of-00002.bin"}},
  };
  int64_t step = 1;
  for (const Case& c : cases) {
    INFO(c.what);
    const Checkpoint ck(save_sharded(run.str(), step++, c.parts));
    const std::string err = error_of([&] { ck.read_assembled("model"); });
    for (const char* e : c.expect) CHECK_THAT(err, Catch::Contains(e));
  }
  // A rank's file missing from a committed checkpoint (meta.json lists 1 of 2).
  {
    CheckpointWriter owner(run.str(), step++);
    owner.write_tensors(shard_file_name("model", 1, 2), {m.slice("w", 0, 60)});
    const Checkpoint ck(owner.commit());
    CHECK_THAT(error_of([&] { ck.read_assembled("model"); }),
               Catch::Contains("model.shard-00000-of-00002.bin is missing"));
  }
}

TEST_CASE("checkpoint shards: a corrupted element range is refused", "[checkpoint]") {
  testing::TempDir run("ckpt-shards");
  const testing::ShardModel m(6, 10, 1);  // w (6, 10) = 60 elements, b (7)
  const std::string dir = save_sharded(run.str(), 1, {{m.slice("w", 0, 30)}, {m.slice("w", 30, 60)}});
  const std::string file = "model.shard-00001-of-00002.bin";
  const std::string path = dir + "/" + file;
  const std::string original = read_file(path);
  // Entry: name length @16, "w" @20, dtype @21, ndim @25, dims @29..45, begin @45, end @53, offset @61.
  REQUIRE(version_of(path) == 2);
  auto put_u64 = [](std::string& b, size_t at, uint64_t v) { std::memcpy(b.data() + at, &v, 8); };
  struct Case {
    const char* what;
    uint64_t begin, end;
    const char* expect;
  };
  for (const Case& c : std::vector<Case>{{"end past the shape", 30, 61, "outside its 60 elements"},
                                         {"begin after end", 40, 30, "outside its 60 elements"},
                                         {"huge end", 30, ~uint64_t(0), "outside its 60 elements"},
                                         {"range larger than the data", 0, 60, "past the end"},
                                         {"shifted range (overlap)", 29, 59, "stored twice"}}) {
    INFO(c.what);
    std::string bad = original;
    put_u64(bad, 45, c.begin);
    put_u64(bad, 53, c.end);
    std::ofstream(path, std::ios::binary | std::ios::trunc) << bad;
    reseal(dir, file);
    const Checkpoint ck(dir);  // checksums agree: only the range checks can object
    CHECK_THAT(error_of([&] { ck.read_assembled("model"); }), Catch::Contains(c.expect) && Catch::Contains("'w'"));
  }
  std::ofstream(path, std::ios::binary | std::ios::trunc) << original;
  reseal(dir, file);
  // A global shape far larger than the files hold is refused before allocating it.
  const std::string file0 = "model.shard-00000-of-00002.bin";
  std::string bad = read_file(dir + "/" + file0);
  put_u64(bad, 29, uint64_t(1) << 40);  // (2^40, 10): a 40 TiB tensor, its [0, 30) stored
  std::ofstream(dir + "/" + file0, std::ios::binary | std::ios::trunc) << bad;
  reseal(dir, file0);
  CHECK_THAT(error_of([&] { Checkpoint(dir).read_assembled("model"); }),
             Catch::Contains("more elements") && Catch::Contains(file0) && Catch::Contains("'w'"));
}

TEST_CASE("checkpoint shards: a helper's failed write leaves no checkpoint and the previous intact", "[checkpoint]") {
  testing::TempDir run("ckpt-shards");
  const testing::ShardModel m(6, 10, 1);  // w (6, 10) = 60 elements, b (7)
  const std::string good = save_sharded(run.str(), 2, {{m.slice("w", 0, 30)}, {m.slice("w", 30, 60), m.slice("b", 0, 7)}});
  std::string err;
  {
    CheckpointWriter owner(run.str(), 4);
    owner.write_tensors(shard_file_name("model", 0, 2), {m.slice("w", 0, 30)});
    CheckpointWriter helper(owner.temporary_dir(), 4, true);
    {
      FaultGuard full(100);  // the "disk" fills during the helper's file
      err = error_of([&] { helper.write_tensors(shard_file_name("model", 1, 2), {m.slice("w", 30, 60)}); });
    }
    CHECK(fs::exists(owner.temporary_dir()));  // a helper never removes the owner's directory
    // A helper's record that disagrees with the disk is refused and abandons the checkpoint.
    CHECK_THAT(error_of([&] { owner.add_files({{"model.shard-00001-of-00002.bin", 12345, 0}}); }),
               Catch::Contains("model.shard-00001-of-00002.bin") && Catch::Contains("12345"));
    CHECK_THAT(error_of([&] { helper.commit(); }), Catch::Contains("helper"));
  }
  CHECK_THAT(err, Catch::Contains("No space left on device") && Catch::Contains("model.shard-00001-of-00002.bin"));
  CHECK(list_checkpoints(run.str()) == std::vector<std::string>{good});
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(run.str() + "/checkpoints")) names.push_back(e.path().filename().string());
  CHECK(names == std::vector<std::string>{"step_00000002"});  // the temporary dir is gone
  const auto t = Checkpoint(good).read_assembled("model");
  CHECK(std::memcmp(t.at("w").data.data(), m.w.data(), 60 * sizeof(float)) == 0);
  // A helper cannot be pointed at an arbitrary directory.
  CHECK_THAT(error_of([&] { CheckpointWriter(good, 5, true); }), Catch::Contains("temporary directory"));
}
