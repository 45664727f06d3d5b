// competelm-nccl-emu: cuda/nccl_comm.cu (NcclComm), compiled by the host compiler against the
// emulating shim (shim/nccl.h: NCCL as MPI on host memory; shim/cuda_runtime.h: device memory is
// host memory), checked collective by collective against MpiComm on the same random data. Run
// under mpirun (tests/cuda_emu/nccl_emu.sh: 1 to 4 ranks). Every result must equal MpiComm's
// bit for bit (values are integers, so sums are exact in any order), and so must bytes_sent().
// Exit status 1 on any mismatch on any rank.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "backend/backend.hpp"
#include "core/error.hpp"
#include "cuda_backend.cuh"
#include "dist/data_parallel.hpp"
#include "dist/dist_context.hpp"
#include "dist/nccl_comm.hpp"
#include "nccl.h"

using namespace competelm;

namespace {

struct Checker {
  cuda::CudaBackend& be;
  std::string label;
  int failures = 0;

  void expect(bool ok, const std::string& what) {
    if (ok) return;
    ++failures;
    std::printf("FAIL [%s] %s\n", label.c_str(), what.c_str());
  }
  template <class T>
  T* up(const std::vector<T>& v) {
    auto* p = static_cast<T*>(be.alloc(std::max<size_t>(v.size(), 1) * sizeof(T)));
    be.upload(p, v.data(), v.size() * sizeof(T));
    return p;
  }
  template <class T>
  std::vector<T> down(T* p, size_t n) {
    std::vector<T> v(n);
    be.download(v.data(), p, n * sizeof(T));
    be.dealloc(p);
    return v;
  }
  template <class T>
  void same(const std::vector<T>& got, const std::vector<T>& ref, const std::string& what) {
    expect(got.size() == ref.size() && (ref.empty() || std::memcmp(got.data(), ref.data(), ref.size() * sizeof(T)) == 0),
           what + " differs from MpiComm");
  }
};

// Every collective of `nc` (NcclComm) against `ref` (MpiComm over the same ranks). `seed` is the
// same on every rank of the communicator (sizes and counts), data differ per rank.
int check_collectives(Comm& nc, Comm& ref, cuda::CudaBackend& be, uint64_t seed, const std::string& label) {
  Checker c{be, label + " rank " + std::to_string(nc.rank()) + "/" + std::to_string(nc.size())};
  c.expect(nc.rank() == ref.rank() && nc.size() == ref.size(), "rank/size differ from MpiComm");
  const int P = ref.size(), me = ref.rank();
  const uint64_t bytes0 = nc.bytes_sent(), ref_bytes0 = ref.bytes_sent();
  std::mt19937_64 shared(seed), mine(seed * 7919 + uint64_t(me) + 1);
  auto ints = [&](size_t n, int64_t lo, int64_t hi) {
    std::uniform_int_distribution<int64_t> d(lo, hi);
    std::vector<int64_t> v(n);
    for (auto& x : v) x = d(mine);
    return v;
  };
  auto bytes = [&](size_t n) {
    std::vector<unsigned char> v(n);
    for (auto& x : v) x = static_cast<unsigned char>(mine() & 0xFF);
    return v;
  };

  for (size_t n : {size_t(1), size_t(37), size_t(1000)}) {
    const auto i = ints(n, -1000, 1000);
    std::vector<double> d(i.begin(), i.end()), dref = d;
    double* dev = c.up(d);
    nc.allreduce_sum(dev, n);
    ref.allreduce_sum(dref.data(), n);
    c.same(c.down(dev, n), dref, "allreduce_sum(double) n=" + std::to_string(n));

    auto l = ints(n, -(int64_t(1) << 40), int64_t(1) << 40), lref = l;
    int64_t* ldev = c.up(l);
    nc.allreduce_sum(ldev, n);
    ref.allreduce_sum(lref.data(), n);
    c.same(c.down(ldev, n), lref, "allreduce_sum(int64) n=" + std::to_string(n));
  }
  {
    const int v = int(ints(1, -50, 50)[0]);
    c.expect(nc.allreduce_max(v) == ref.allreduce_max(v), "allreduce_max");
  }
  // reduce_scatter_sum, and start_reduce_scatter_sum with the blocking call's sums and
  // bytes_sent (the reference is MpiComm's blocking reduce_scatter_sum). One request at a time
  // here; below, several in flight at once on the communicator, waited in start order, one of
  // them by its destructor.
  for (const bool started : {false, true}) {
    const std::string what = started ? "start_reduce_scatter_sum" : "reduce_scatter_sum";
    for (size_t n : {size_t(1), size_t(5), size_t(300)}) {
      const auto i = ints(n * static_cast<size_t>(P), -100, 100);
      const std::vector<float> send(i.begin(), i.end());
      std::vector<float> rref(n);
      float* s = c.up(send);
      float* r = c.up(std::vector<float>(n, -7.0f));
      const uint64_t b0 = nc.bytes_sent(), rb0 = ref.bytes_sent();
      if (started) {
        std::unique_ptr<CommRequest> req = nc.start_reduce_scatter_sum(s, r, n);
        req->poll();
        req->wait();
        req->wait();  // a second wait is harmless
      } else {
        nc.reduce_scatter_sum(s, r, n);
      }
      ref.reduce_scatter_sum(send.data(), rref.data(), n);
      c.expect(nc.bytes_sent() - b0 == ref.bytes_sent() - rb0, what + " bytes_sent differs, n=" + std::to_string(n));
      c.same(c.down(r, n), rref, what + " n=" + std::to_string(n));
      c.same(c.down(s, send.size()), send, what + "'s send buffer");
    }
  }
  {
    const std::vector<size_t> ns = {3, 0, 64, 1, 257};
    std::vector<std::vector<float>> sends, rrefs;
    std::vector<float*> ds, dr;
    std::vector<std::unique_ptr<CommRequest>> reqs;
    const uint64_t b0 = nc.bytes_sent(), rb0 = ref.bytes_sent();
    for (size_t n : ns) {
      const auto i = ints(n * static_cast<size_t>(P), -1000, 1000);
      sends.emplace_back(i.begin(), i.end());
      ds.push_back(c.up(sends.back()));
      dr.push_back(c.up(std::vector<float>(n, -7.0f)));
      reqs.push_back(nc.start_reduce_scatter_sum(ds.back(), dr.back(), n));
    }
    for (size_t k = 0; k < ns.size(); ++k) {
      rrefs.emplace_back(ns[k]);
      ref.reduce_scatter_sum(sends[k].data(), rrefs[k].data(), ns[k]);
    }
    for (size_t k = 0; k + 1 < ns.size(); ++k) reqs[k]->wait();
    reqs.clear();  // the last one waits in its destructor
    c.expect(nc.bytes_sent() - b0 == ref.bytes_sent() - rb0, "bytes_sent of requests in flight together");
    for (size_t k = 0; k < ns.size(); ++k) {
      c.same(c.down(dr[k], ns[k]), rrefs[k], "request " + std::to_string(k) + " of several in flight");
      be.dealloc(ds[k]);
    }
  }
  // A blocking collective right after the waits (the rule of src/dist/nccl_comm.hpp).
  {
    const auto i = ints(7 * static_cast<size_t>(P), -100, 100);
    const std::vector<float> send(i.begin(), i.end());
    std::vector<float> rref(7);
    float* s = c.up(send);
    float* r = c.up(std::vector<float>(7, 0.0f));
    nc.start_reduce_scatter_sum(s, r, 7)->wait();
    nc.reduce_scatter_sum(s, r, 7);
    ref.reduce_scatter_sum(send.data(), rref.data(), 7);
    ref.reduce_scatter_sum(send.data(), rref.data(), 7);
    c.same(c.down(r, 7), rref, "blocking reduce_scatter_sum after a waited request");
    be.dealloc(s);
  }
  for (size_t b : {size_t(1), size_t(13), size_t(4096)}) {
    const auto send = bytes(b);
    std::vector<unsigned char> rref(b * static_cast<size_t>(P));
    unsigned char* s = c.up(send);
    unsigned char* r = c.up(bytes(rref.size()));
    nc.allgather(s, r, b);
    ref.allgather(send.data(), rref.data(), b);
    c.same(c.down(r, rref.size()), rref, "allgather bytes=" + std::to_string(b));
    be.dealloc(s);

    const auto send2 = bytes(b * static_cast<size_t>(P));
    s = c.up(send2);
    r = c.up(bytes(rref.size()));
    nc.alltoall(s, r, b);
    ref.alltoall(send2.data(), rref.data(), b);
    c.same(c.down(r, rref.size()), rref, "alltoall bytes=" + std::to_string(b));
    be.dealloc(s);
  }
  // alltoallv: counts[s][r] = bytes rank s sends rank r, drawn from the shared stream (every rank
  // knows the whole matrix); about a third are zero. Round 1: rank 0 sends nobody anything.
  // Round 2: everybody sends only to itself. Round 3: one large uneven exchange.
  for (int round = 0; round < 4; ++round) {
    std::vector<std::vector<int64_t>> cnt(static_cast<size_t>(P), std::vector<int64_t>(static_cast<size_t>(P)));
    std::uniform_int_distribution<int64_t> d(0, round == 3 ? 20000 : 300);
    for (int s = 0; s < P; ++s)
      for (int r = 0; r < P; ++r) {
        const bool zero = shared() % 3 == 0;
        cnt[s][r] = zero ? 0 : d(shared);
        if (round == 1 && s == 0) cnt[s][r] = 0;
        if (round == 2 && s != r) cnt[s][r] = 0;
      }
    std::vector<int64_t> sb(static_cast<size_t>(P)), rb(static_cast<size_t>(P));
    int64_t st = 0, rt = 0;
    for (int r = 0; r < P; ++r) sb[r] = cnt[me][r], rb[r] = cnt[r][me], st += sb[r], rt += rb[r];
    const auto send = bytes(static_cast<size_t>(st));
    std::vector<unsigned char> rref(static_cast<size_t>(rt));
    unsigned char* s = c.up(send);
    unsigned char* r = c.up(bytes(static_cast<size_t>(rt)));
    nc.alltoallv(s, sb, r, rb);
    ref.alltoallv(send.data(), sb, rref.data(), rb);
    c.same(c.down(r, rref.size()), rref, "alltoallv round " + std::to_string(round));
    be.dealloc(s);
  }
  for (int root : {P - 1, P / 2, 0}) {
    for (size_t b : {size_t(1), size_t(5000)}) {
      std::vector<unsigned char> data = bytes(b), dref = data;
      unsigned char* p = c.up(data);
      nc.broadcast(p, b, root);
      ref.broadcast(dref.data(), b, root);
      c.same(c.down(p, b), dref, "broadcast root=" + std::to_string(root) + " bytes=" + std::to_string(b));
    }
  }
  nc.barrier();
  // Zero-sized calls are no-ops (and must not hang).
  nc.allgather(nullptr, nullptr, 0);
  ref.allgather(nullptr, nullptr, 0);
  nc.allreduce_sum(static_cast<double*>(nullptr), 0);
  ref.allreduce_sum(static_cast<double*>(nullptr), 0);
  c.expect(nc.bytes_sent() - bytes0 == ref.bytes_sent() - ref_bytes0,
           "bytes_sent " + std::to_string(nc.bytes_sent() - bytes0) + " vs MpiComm's " +
               std::to_string(ref.bytes_sent() - ref_bytes0));
  c.expect(nc.bytes_sent() - bytes0 > 0 || P == 1, "bytes_sent did not grow");
  return c.failures;
}

// DataParallel over NCCL device communicators (the emulated CudaBackend; reductions started
// bucket by bucket as the ranges are announced, on the communication stream) against
// DataParallel over the MPI communicators on the CPU backend, with the same integer-valued
// gradients: the owned shards after reduce_gradients and the whole buffer after gather must be
// bit-identical. P: expert parallel size (P = W puts the expert-parallel group on the world's
// NCCL communicator, which must then reduce after the backward).
int check_data_parallel(Comm& world, cuda::CudaBackend& be, int P) {
  const std::string label = "data parallel P=" + std::to_string(P);
  Checker c{be, label + " rank " + std::to_string(world.rank()) + "/" + std::to_string(world.size())};
  const size_t expert_begin = 1000, total = 1333;
  // The backward's order: replicated ranges from the top down, experts interleaved, wte last.
  const std::vector<ParamRange> order{{940, 1000}, {1200, 1333}, {700, 940},  {1000, 1200},
                                      {333, 700},  {100, 333},   {0, 100}};
  DistContext host = make_dist_context(std::shared_ptr<Comm>(world.split(0, world.rank())), 0, P);
  DistContext dev = make_dist_context(std::shared_ptr<Comm>(world.split(0, world.rank())), 0, P);
  attach_device_comms(dev, be, "nccl");
  std::unique_ptr<Backend> cpu = make_backend("cpu", 1);
  DataParallel dp_host(host, expert_begin, total, cpu.get(), order, 90);
  DataParallel dp_dev(dev, expert_begin, total, &be, order, 90);

  std::mt19937 rng(7u + 31u * unsigned(world.rank()));
  std::vector<float> grads(total);
  for (float& g : grads) g = float(int(rng() % 17) - 8);
  std::vector<float> g_host = grads;
  float* g_dev = c.up(grads);
  dp_host.begin_backward(g_host.data());
  dp_dev.begin_backward(g_dev);
  for (const ParamRange& r : order) {
    dp_host.grads_ready(r);
    dp_dev.grads_ready(r);
  }
  dp_host.reduce_gradients(g_host.data());
  dp_dev.reduce_gradients(g_dev);
  c.expect(dp_dev.bucket_count() == dp_host.bucket_count() && dp_dev.owned().size() == dp_host.owned().size(),
           "bucket layouts differ");
  if (world.size() > 1)
    c.expect(dp_host.overlapped_buckets() > 0 && dp_dev.overlapped_buckets() ==
                                                     (P < world.size() ? dp_host.overlapped_buckets() : 0),
             "overlap: " + std::to_string(dp_dev.overlapped_buckets()) + " buckets started during the backward on NCCL, " +
                 std::to_string(dp_host.overlapped_buckets()) + " on MPI");
  std::vector<float> got(total);
  be.download(got.data(), g_dev, total * sizeof(float));
  std::vector<float> mine, ref;
  for (const ParamRange& o : dp_host.owned()) {
    mine.insert(mine.end(), got.begin() + ptrdiff_t(o.begin), got.begin() + ptrdiff_t(o.end));
    ref.insert(ref.end(), g_host.begin() + ptrdiff_t(o.begin), g_host.begin() + ptrdiff_t(o.end));
  }
  c.same(mine, ref, "owned gradient shards");
  // gather: every rank's owned shards (rank-dependent values) reach every rank.
  for (const ParamRange& o : dp_host.owned())
    for (size_t i = o.begin; i < o.end; ++i) g_host[i] = float(i % 97) + 1000.0f * float(world.rank());
  be.upload(g_dev, g_host.data(), total * sizeof(float));
  dp_host.gather(g_host.data());
  dp_dev.gather(g_dev);
  c.same(c.down(g_dev, total), g_host, "gathered buffer");
  return c.failures;
}

int run(Comm& world) {
  int failures = 0;
  const long errors0 = emu::g_errors.load();
  cuda::CudaBackend be(0);
  // The reference: a fresh MpiComm over the same ranks (its bytes_sent starts at 0).
  std::unique_ptr<Comm> ref = world.split(0, world.rank());
  {
    std::shared_ptr<Comm> boot = world.split(0, world.rank());
    std::unique_ptr<Comm> nc = make_nccl_comm(boot, be);
    if (emu::g_live_streams != 0) ++failures, std::printf("FAIL a communication stream before any start_* call\n");
    failures += check_collectives(*nc, *ref, be, 1, "world");
    if (emu::g_live_streams != 1)
      ++failures, std::printf("FAIL %ld communication streams after start_* calls, want 1\n", emu::g_live_streams);

    // Two groups (even / odd world ranks), ordered by descending world rank: key ordering, and
    // NCCL communicators initialised concurrently by disjoint groups.
    const int color = world.rank() % 2, key = -world.rank();
    std::unique_ptr<Comm> sub = nc->split(color, key), sub_ref = ref->split(color, key);
    failures += check_collectives(*sub, *sub_ref, be, 100 + uint64_t(color), "split " + std::to_string(color));
    // A split of a split: only the sub-communicator's ranks take part in the NCCL init.
    const int half = sub_ref->rank() < (sub_ref->size() + 1) / 2 ? 0 : 1;
    std::unique_ptr<Comm> sub2 = sub->split(half, sub_ref->rank()), sub2_ref = sub_ref->split(half, sub_ref->rank());
    failures += check_collectives(*sub2, *sub2_ref, be, 200 + uint64_t(color * 2 + half), "split of split");

    // Misuse is refused with competelm::Error on every rank alike (nothing left pending).
    std::vector<int64_t> sb(size_t(nc->size()), 0), rb = sb;
    sb[size_t(nc->rank())] = 4, rb[size_t(nc->rank())] = 8;
    bool threw = false;
    try {
      nc->alltoallv(nullptr, sb, nullptr, rb);
    } catch (const Error&) {
      threw = true;
    }
    if (!threw) ++failures, std::printf("FAIL alltoallv with mismatched self counts was accepted\n");
    std::unique_ptr<Backend> cpu = make_backend("cpu", 1);
    threw = false;
    try {
      make_nccl_comm(boot, *cpu);
    } catch (const Error& e) {
      threw = std::string(e.what()).find("CUDA backend") != std::string::npos;
    }
    if (!threw) ++failures, std::printf("FAIL make_nccl_comm accepted the CPU backend\n");
    nc->barrier();
  }
  failures += check_data_parallel(world, be, 1);
  if (world.size() % 2 == 0) failures += check_data_parallel(world, be, 2);
  if (emu::g_live_streams != 0 || emu::g_live_events != 0)
    ++failures, std::printf("FAIL %ld streams and %ld events not destroyed\n", emu::g_live_streams, emu::g_live_events);
  if (emu::g_errors.load() != errors0)
    ++failures, std::printf("FAIL %ld misuses of the emulated CUDA runtime\n", emu::g_errors.load() - errors0);
  if (nccl_emu::live_comms() != 0)
    ++failures, std::printf("FAIL %d emulated NCCL communicators not destroyed\n", nccl_emu::live_comms());
  if (!nccl_built()) ++failures, std::printf("FAIL nccl_built() is false in the NCCL communicator's build\n");
  return failures;
}

}  // namespace

int main(int argc, char** argv) {
  MpiSession session(&argc, &argv);
  if (!session.active()) {
    std::printf("competelm-nccl-emu: run it under mpirun (tests/cuda_emu/nccl_emu.sh)\n");
    return 2;
  }
  std::shared_ptr<Comm> world = session.world();
  int failures = 0;
  try {
    failures = run(*world);
  } catch (const Error& e) {
    std::printf("rank %d: error: %s\n", world->rank(), e.what());
    world->abort(1);  // the other ranks may be waiting in a collective
  }
  const int worst = world->allreduce_max(failures);
  if (world->rank() == 0)
    std::printf("competelm-nccl-emu on %d ranks: %s\n", world->size(), worst ? "FAILED" : "all collectives match MpiComm");
  return worst ? 1 : 0;
}
