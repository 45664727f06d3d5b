// NcclComm (cuda/nccl_comm.cu) on one real GPU: NCCL initialisation, every buffer collective on
// device memory and its ordering with the kernels on the backend's stream. One rank only (NCCL
// refuses two ranks on one GPU); the multi-rank logic is checked against MpiComm by
// competelm-nccl-emu (tests/cuda_emu, emulated NCCL). Values are integers: results are exact.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdint>
#include <cstddef>
#include <cstring>
#include <memory>
#include <vector>

#include "backend/backend.hpp"
#include "core/error.hpp"
#include "dist/comm.hpp"
#include "dist/nccl_comm.hpp"

using namespace competelm;

namespace {

template <typename T>
T* upload(Backend& be, const std::vector<T>& v) {
  auto* p = static_cast<T*>(be.alloc(std::max<size_t>(v.size(), 1) * sizeof(T)));
  be.upload(p, v.data(), v.size() * sizeof(T));
  return p;
}
template <typename T>
std::vector<T> download(Backend& be, const T* p, size_t n) {
  std::vector<T> v(n);
  be.download(v.data(), p, n * sizeof(T));
  return v;
}

}  // namespace

TEST_CASE("NcclComm on one GPU: collectives on device buffers, stream-ordered", "[cuda][nccl]") {
  std::unique_ptr<Backend> be = make_backend("cuda", 0);
  if (!nccl_built()) {
    // This build has no NCCL: the stub must refuse with a message that says so.
    REQUIRE_THROWS_AS(make_nccl_comm(make_self_comm(), *be), Error);
    WARN("built without NCCL: only the refusal was checked");
    return;
  }
  std::unique_ptr<Comm> nc = make_nccl_comm(make_self_comm(), *be);
  REQUIRE(nc->rank() == 0);
  REQUIRE(nc->size() == 1);

  // Stream order: a kernel writes the input, the collective reads it, a kernel reads its output,
  // with no synchronisation in between. reduce_scatter on one rank is a copy: recv = 2·x, then ·3.
  const size_t n = 100003;  // not a multiple of any block size
  std::vector<float> x(n);
  for (size_t i = 0; i < n; ++i) x[i] = float(int(i % 2001) - 1000);
  float* send = upload(*be, x);
  float* recv = upload(*be, std::vector<float>(n, -1.0f));
  be->scale(send, 2.0f, n);
  nc->reduce_scatter_sum(send, recv, n);
  be->scale(recv, 3.0f, n);
  const std::vector<float> got = download(*be, recv, n);
  size_t bad = 0;
  for (size_t i = 0; i < n; ++i) bad += got[i] != 6.0f * x[i];
  CHECK(bad == 0);

  std::vector<double> d(1000);
  for (size_t i = 0; i < d.size(); ++i) d[i] = double(i) - 500.0;
  double* dd = upload(*be, d);
  nc->allreduce_sum(dd, d.size());  // one rank: unchanged
  CHECK(download(*be, dd, d.size()) == d);

  std::vector<int64_t> l(777);
  for (size_t i = 0; i < l.size(); ++i) l[i] = (int64_t(1) << 40) + int64_t(i);
  int64_t* ld = upload(*be, l);
  nc->allreduce_sum(ld, l.size());
  CHECK(download(*be, ld, l.size()) == l);
  CHECK(nc->allreduce_max(17) == 17);

  std::vector<unsigned char> bytes(4099);
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<unsigned char>(i * 7 + 3);
  unsigned char* bs = upload(*be, bytes);
  unsigned char* br = upload(*be, std::vector<unsigned char>(bytes.size(), 0));
  nc->allgather(bs, br, bytes.size());
  CHECK(download(*be, br, bytes.size()) == bytes);
  be->zero(br, bytes.size());
  nc->alltoall(bs, br, bytes.size());
  CHECK(download(*be, br, bytes.size()) == bytes);
  be->zero(br, bytes.size());
  nc->alltoallv(bs, {int64_t(bytes.size())}, br, {int64_t(bytes.size())});
  CHECK(download(*be, br, bytes.size()) == bytes);
  nc->alltoallv(bs, {0}, br, {0});  // nothing to move
  nc->broadcast(bs, bytes.size(), 0);
  CHECK(download(*be, bs, bytes.size()) == bytes);
  nc->barrier();
  // One rank sends nothing to others (MpiComm's formulas with size 1).
  CHECK(nc->bytes_sent() == 0);

  // A sub-communicator gets its own NCCL communicator; it works and is destroyed cleanly.
  std::unique_ptr<Comm> sub = nc->split(0, 0);
  REQUIRE(sub->size() == 1);
  be->zero(br, bytes.size());
  sub->allgather(bs, br, bytes.size());
  CHECK(download(*be, br, bytes.size()) == bytes);
  sub.reset();

  // Misuse is refused before anything is enqueued; the CPU backend is refused.
  CHECK_THROWS_AS(nc->alltoallv(bs, {4}, br, {8}), Error);
  std::unique_ptr<Backend> cpu = make_backend("cpu", 1);
  CHECK_THROWS_AS(make_nccl_comm(make_self_comm(), *cpu), Error);

  for (void* p : {static_cast<void*>(send), static_cast<void*>(recv), static_cast<void*>(dd),
                  static_cast<void*>(ld), static_cast<void*>(bs), static_cast<void*>(br)})
    be->dealloc(p);
  nc.reset();  // ncclCommDestroy before the backend's stream goes
}

TEST_CASE("NcclComm on one GPU: start_reduce_scatter_sum on its own stream, fenced by events", "[cuda][nccl]") {
  std::unique_ptr<Backend> be = make_backend("cuda", 0);
  if (!nccl_built()) {
    WARN("built without NCCL: nothing to check");
    return;
  }
  std::unique_ptr<Comm> nc = make_nccl_comm(make_self_comm(), *be);

  // Large enough that the compute-stream kernels before start take a while (a missing `ready`
  // event would let the collective read the buffer mid-update) and the copy itself too (a missing
  // wait would let the kernel after wait() read recv before it is written). One rank: recv = send.
  const size_t n = size_t(1) << 24;
  std::vector<float> x(n);
  for (size_t i = 0; i < n; ++i) x[i] = float(int(i % 2001) - 1000);
  float* send = upload(*be, x);
  float* recv = upload(*be, std::vector<float>(n, -1.0f));
  for (int k = 0; k < 20; ++k) be->scale(send, -1.0f, n);  // an even count: send = x again, slowly
  be->scale(send, 2.0f, n);                                  // send = 2x, written right before start
  std::unique_ptr<CommRequest> req = nc->start_reduce_scatter_sum(send, recv, n);
  req->poll();
  req->wait();
  be->scale(recv, 3.0f, n);  // reads recv after wait(): 6x
  std::vector<float> got = download(*be, recv, n);
  size_t bad = 0;
  for (size_t i = 0; i < n; ++i) bad += got[i] != 6.0f * x[i];
  CHECK(bad == 0);
  CHECK(nc->bytes_sent() == 0);

  // Several requests in flight on the communicator, waited in start order (the last by its
  // destructor), each reading a buffer a kernel wrote just before its start; then a blocking
  // collective on the same communicator, as the rule in src/dist/nccl_comm.hpp allows.
  const size_t m = 300007;
  std::vector<float*> sends, recvs;
  std::vector<std::unique_ptr<CommRequest>> reqs;
  for (int k = 0; k < 4; ++k) {
    sends.push_back(upload(*be, std::vector<float>(x.begin(), x.begin() + std::ptrdiff_t(m))));
    recvs.push_back(upload(*be, std::vector<float>(m, -1.0f)));
    be->scale(sends.back(), float(k + 1), m);
    reqs.push_back(nc->start_reduce_scatter_sum(sends.back(), recvs.back(), m));
  }
  CHECK(nc->start_reduce_scatter_sum(nullptr, nullptr, 0) != nullptr);  // nothing to move
  for (int k = 0; k < 3; ++k) reqs[size_t(k)]->wait();
  reqs.clear();
  for (int k = 0; k < 4; ++k) be->scale(recvs[size_t(k)], -1.0f, m);
  nc->reduce_scatter_sum(recvs[0], recvs[0], m);  // in place on one rank: unchanged
  nc->barrier();  // both streams drained, NCCL's asynchronous error checked
  for (int k = 0; k < 4; ++k) {
    got = download(*be, recvs[size_t(k)], m);
    bad = 0;
    for (size_t i = 0; i < m; ++i) bad += got[i] != -float(k + 1) * x[i];
    CHECK(bad == 0);
  }

  for (float* p : sends) be->dealloc(p);
  for (float* p : recvs) be->dealloc(p);
  be->dealloc(send);
  be->dealloc(recv);
  nc.reset();  // drains the communication stream and destroys it
}
