// The device-memory communicators on one process: StagingComm's copies around the host
// collective (over SelfComm, on a CPU backend that pretends its memory is a device's), and
// which communicators attach_device_comms picks for dist.gpu_comm. The multi-rank staged path
// runs in tests/mpi/staged_comm.sh.
#include <catch2/catch.hpp>

#include <numeric>

#include "backend/backend.hpp"
#include "backend/profiling_backend.hpp"
#include "core/error.hpp"
#include "dist/data_parallel.hpp"
#include "dist/dist_context.hpp"
#include "dist/nccl_comm.hpp"
#include "dist/staging_comm.hpp"

using namespace competelm;

namespace {
// The CPU backend under the name of a device backend: memory_is_host() is false, and the
// copies between "device" and host are counted.
class PretendDevice final : public ProfilingBackend {
 public:
  explicit PretendDevice(Backend& cpu) : ProfilingBackend(cpu) {}
  bool memory_is_host() const override { return false; }
  std::string name() const override { return "pretend-device"; }
  void upload(void* d, const void* s, size_t b) override {
    ++uploads, up += b;
    ProfilingBackend::upload(d, s, b);
  }
  void download(void* d, const void* s, size_t b) override {
    ++downloads, down += b;
    ProfilingBackend::download(d, s, b);
  }
  int uploads = 0, downloads = 0;
  size_t up = 0, down = 0;
};
}  // namespace

TEST_CASE("StagingComm copies every buffer down, runs the host collective, copies the result up", "[dist][staging]") {
  auto cpu = make_backend("cpu", 1);
  PretendDevice dev(*cpu);
  StagingComm comm(make_self_comm(), dev);
  CHECK(comm.rank() == 0);
  CHECK(comm.size() == 1);

  std::vector<float> send = {1.5f, -2.0f, 3.25f}, recv(3, 0.0f);
  comm.reduce_scatter_sum(send.data(), recv.data(), 3);
  CHECK(recv == send);
  CHECK(dev.downloads == 1);
  CHECK(dev.uploads == 1);
  CHECK(dev.down == 3 * sizeof(float));
  CHECK(dev.up == 3 * sizeof(float));

  std::vector<float> out(3, 0.0f);
  comm.allgather(send.data(), out.data(), sizeof(float) * 3);
  CHECK(out == send);
  std::fill(out.begin(), out.end(), 0.0f);
  comm.alltoall(send.data(), out.data(), sizeof(float) * 3);
  CHECK(out == send);
  std::fill(out.begin(), out.end(), 0.0f);
  comm.alltoallv(send.data(), {8}, out.data(), {8});  // the first two floats
  CHECK(out == std::vector<float>{1.5f, -2.0f, 0.0f});
  CHECK(dev.down == 3 * sizeof(float) * 3 + 8);
  CHECK(dev.up == dev.down);

  std::vector<double> d = {0.25, 4.0};
  comm.allreduce_sum(d.data(), d.size());
  CHECK(d == std::vector<double>{0.25, 4.0});
  std::vector<int64_t> c = {7, -3};
  comm.allreduce_sum(c.data(), c.size());
  CHECK(c == std::vector<int64_t>{7, -3});
  // The root's buffer is read (down), nobody else's written: a single rank copies down only.
  const int up_before = dev.uploads, down_before = dev.downloads;
  comm.broadcast(d.data(), sizeof(double) * 2, 0);
  CHECK(dev.downloads == down_before + 1);
  CHECK(dev.uploads == up_before);
  // Scalars never touch the device.
  CHECK(comm.allreduce_max(42) == 42);
  CHECK(dev.downloads == down_before + 1);
  CHECK(comm.bytes_down() == dev.down);
  CHECK(comm.bytes_up() == dev.up);
  CHECK(comm.bytes_sent() == 0);  // the host communicator counts the traffic

  auto sub = comm.split(0, 0);
  REQUIRE(dynamic_cast<StagingComm*>(sub.get()) != nullptr);
  std::vector<float> r2(3);
  sub->reduce_scatter_sum(send.data(), r2.data(), 3);
  CHECK(r2 == send);
}

TEST_CASE("attach_device_comms: host comms on the CPU, staged MPI for a device unless nccl is asked", "[dist][staging]") {
  auto cpu = make_backend("cpu", 1);
  {
    DistContext d = single_process_context();
    CHECK(d.dworld == d.world);  // before any backend is known: host memory
    const std::string what = attach_device_comms(d, *cpu, "auto");
    CHECK(d.dworld == d.world);
    CHECK(d.dep == d.ep);
    CHECK(d.dedp == d.edp);
    CHECK_THAT(what, Catch::Contains("host memory"));
    CHECK_NOTHROW(attach_device_comms(d, *cpu, "nccl"));  // nothing to do on the CPU
    CHECK(d.dworld == d.world);
  }
  {
    DistContext d = single_process_context();  // the test hook: staged on the CPU
    CHECK_THAT(attach_device_comms(d, *cpu, "auto", /*force_staging=*/true), Catch::Contains("COMPETELM_TEST_STAGED_COMM"));
    CHECK(dynamic_cast<StagingComm*>(d.dworld.get()) != nullptr);
    CHECK(d.dep == d.dworld);  // one rank: one group, one communicator
  }
  PretendDevice dev(*cpu);
  for (const char* choice : {"auto", "mpi"}) {
    CAPTURE(choice);
    DistContext d = single_process_context();
    const std::string what = attach_device_comms(d, dev, choice);
    CHECK_THAT(what, Catch::StartsWith("mpi"));
    if (std::string(choice) == "auto") {
      STATIC_REQUIRE_FALSE(kNcclVerified);  // auto turns to NCCL only once it ran on GPUs
      CHECK_THAT(what, Catch::Contains("not yet verified"));
    }
    CHECK(dynamic_cast<StagingComm*>(d.dworld.get()) != nullptr);
    CHECK(dynamic_cast<StagingComm*>(d.dedp.get()) != nullptr);
    CHECK(d.world->size() == 1);
  }
  if (!nccl_built()) {
    DistContext d = single_process_context();
    REQUIRE_THROWS_WITH(attach_device_comms(d, dev, "nccl"), Catch::Contains("built without NCCL"));
  }
  DistContext d = single_process_context();
  REQUIRE_THROWS_WITH(attach_device_comms(d, dev, "gloo"), Catch::Contains("dist.gpu_comm") && Catch::Contains("gloo"));
}

TEST_CASE("DataParallel on one rank over staged device comms moves nothing", "[dist][staging]") {
  // Several ranks need mpirun (tests/mpi/staged_comm.sh); one rank's calls are no-ops.
  auto cpu = make_backend("cpu", 1);
  PretendDevice dev(*cpu);
  DistContext d = single_process_context();
  attach_device_comms(d, dev, "mpi");
  DataParallel dp(d, 10, 16, &dev);
  std::vector<float> g(16, 2.0f);
  dp.reduce_gradients(g.data());  // one rank: the gradient is already the global mean
  dp.gather(g.data());
  CHECK(g == std::vector<float>(16, 2.0f));
  CHECK(dev.downloads == 0);
  REQUIRE(dp.owned().size() == 2);
  CHECK(dp.owned()[1].begin == 10);
}
