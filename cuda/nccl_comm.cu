// NcclComm: the Comm interface over NCCL for buffers in the CUDA backend's device memory
// (src/dist/nccl_comm.hpp). Buffer collectives are enqueued on the backend's stream, so they are
// ordered with the kernels before and after them without any host synchronisation. Scalars,
// barrier, split and abort go through the bootstrap (host, MPI) communicator.
//
// start_reduce_scatter_sum runs on a communication stream of its own, fenced by events on both
// sides: it starts after the work queued on the backend's stream so far (which wrote its send
// buffer), and the request's wait() makes the backend's stream wait for it, so that the kernels
// queued between start and wait (the rest of the backward pass) overlap it.
//
// tests/cuda_emu (competelm-nccl-emu) compiles this file with the host compiler against a shim
// nccl.h that emulates NCCL with MPI on host memory, and checks every collective against MpiComm
// on 1, 2 and 4 ranks; tests/gpu/test_cuda_nccl.cpp runs it on one real GPU.
#include <nccl.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <memory>
#include <thread>
#include <utility>
#include <vector>

#include "core/error.hpp"
#include "cuda_backend.cuh"
#include "cuda_common.cuh"
#include "dist/nccl_comm.hpp"

namespace competelm {
namespace cuda {
namespace {

// Every NCCL call goes through NCCL_CHECK: an error names the call, NCCL's reason and, where a
// communicator exists, its last error message.
void check_nccl(ncclResult_t r, ncclComm_t comm, const char* call, const char* file, int line) {
  if (r == ncclSuccess) return;
  const char* last = comm ? ncclGetLastError(comm) : nullptr;
  fail_hint("rerun with NCCL_DEBUG=WARN (or INFO) for NCCL's own diagnosis; dist.gpu_comm: mpi avoids NCCL",
            "NCCL error {} ({}) in {} at {}:{}{}{}", static_cast<int>(r), ncclGetErrorString(r), call, file, line,
            last && *last ? ": " : "", last ? last : "");
}
#define NCCL_CHECK(call) check_nccl((call), comm_, #call, __FILE__, __LINE__)

// An event that only orders streams (no timing: cheaper to record and to wait on). Destroying
// it right after a cudaStreamWaitEvent on it is legal: the wait keeps what it needs.
class Event {
 public:
  Event() { CUDA_CHECK(cudaEventCreateWithFlags(&e_, cudaEventDisableTiming)); }
  ~Event() {
    if (e_) cudaEventDestroy(e_);
  }
  Event(Event&& o) noexcept : e_(std::exchange(o.e_, nullptr)) {}
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
  Event& operator=(Event&&) = delete;
  cudaEvent_t get() const { return e_; }

 private:
  cudaEvent_t e_ = nullptr;
};

// A started start_reduce_scatter_sum: `done_` was recorded on the communication stream after the
// collective. wait() makes the compute stream wait for it (no host wait); until then nothing on
// the compute stream is ordered after the collective. Independent of the communicator (the
// compute stream belongs to the backend, which outlives it; the event is its own object).
class NcclRequest final : public CommRequest {
 public:
  NcclRequest(cudaStream_t compute, Event done) : compute_(compute), done_(std::move(done)) {}
  ~NcclRequest() override {
    // Unwinding: the job is failing, nothing more is enqueued that could use the buffers. A
    // destructor must not throw: a failed wait here is CUDA's sticky error, which the next
    // checked CUDA call reports.
    if (!waited_ && std::uncaught_exceptions() == 0) cudaStreamWaitEvent(compute_, done_.get(), 0);
  }
  NcclRequest(const NcclRequest&) = delete;
  NcclRequest& operator=(const NcclRequest&) = delete;

  void wait() override {
    if (waited_) return;
    waited_ = true;
    CUDA_CHECK(cudaStreamWaitEvent(compute_, done_.get(), 0));
  }

 private:
  cudaStream_t compute_;
  Event done_;
  bool waited_ = false;
};

// A request with nothing to wait for (a zero-sized collective).
struct CompletedRequest final : CommRequest {
  void wait() override {}
};

// What stopped a host wait on a stream early or made it fail (both success: the stream is idle).
struct Drained {
  cudaError_t cuda = cudaSuccess;
  ncclResult_t nccl = ncclSuccess;  // the communicator's asynchronous error
  ncclResult_t query = ncclSuccess;  // ncclCommGetAsyncError's own result
  bool ok() const { return cuda == cudaSuccess && nccl == ncclSuccess && query == ncclSuccess; }
};

class NcclComm final : public Comm {
 public:
  NcclComm(std::shared_ptr<Comm> bootstrap, CudaBackend& device)
      : bootstrap_(std::move(bootstrap)), device_(device), rank_(bootstrap_->rank()), size_(bootstrap_->size()) {
    // Rank 0 makes the id and sends it with its outcome, so that a failure there fails every
    // rank instead of leaving the others waiting in ncclCommInitRank.
    struct {
      int32_t result = ncclSuccess;
      ncclUniqueId id{};
    } boot;
    if (rank_ == 0) boot.result = ncclGetUniqueId(&boot.id);
    bootstrap_->broadcast(&boot, sizeof boot, 0);
    if (boot.result != ncclSuccess)
      check_nccl(static_cast<ncclResult_t>(boot.result), nullptr, "ncclGetUniqueId (on bootstrap rank 0)", __FILE__,
                 __LINE__);
    CUDA_CHECK(cudaSetDevice(device_.device()));  // ncclCommInitRank binds the current device
    ncclComm_t comm = nullptr;
    NCCL_CHECK(ncclCommInitRank(&comm, size_, boot.id, rank_));
    comm_ = comm;
    try {
      int nccl_rank = -1, nccl_size = -1;
      NCCL_CHECK(ncclCommUserRank(comm_, &nccl_rank));
      NCCL_CHECK(ncclCommCount(comm_, &nccl_size));
      if (nccl_rank != rank_ || nccl_size != size_)
        fail("NCCL communicator is rank {} of {}, its bootstrap rank {} of {}", nccl_rank, nccl_size, rank_, size_);
    } catch (...) {
      ncclCommAbort(comm_);  // the destructor does not run after a constructor throws
      throw;
    }
  }
  ~NcclComm() override {
    if (!comm_) return;
    // Unwinding from an error: another rank may never join a pending collective, and
    // ncclCommDestroy would wait for it; ncclCommAbort does not wait. Otherwise both streams are
    // drained first; if that meets NCCL's asynchronous error (or a CUDA error) the communicator
    // is aborted too, with a line on stderr, since a destructor must not throw.
    bool clean = std::uncaught_exceptions() == 0;
    if (clean) {
      Drained d = drain(device_.stream());
      if (d.ok() && comm_stream_) d = drain(comm_stream_);
      if (!d.ok()) {
        clean = false;
        const char* why = d.cuda != cudaSuccess ? cudaGetErrorString(d.cuda)
                                                : ncclGetErrorString(d.query != ncclSuccess ? d.query : d.nccl);
        std::fprintf(stderr, "competelm: NCCL communicator (rank %d of %d) aborted at destruction: %s\n", rank_, size_,
                     why);
      }
    }
    if (clean)
      ncclCommDestroy(comm_);
    else
      ncclCommAbort(comm_);  // ends its kernels on both streams
    // Pending work (after an abort) does not stop this: the stream's resources go once it drains.
    if (comm_stream_) cudaStreamDestroy(comm_stream_);
  }
  NcclComm(const NcclComm&) = delete;
  NcclComm& operator=(const NcclComm&) = delete;

  int rank() const override { return rank_; }
  int size() const override { return size_; }

  void allreduce_sum(double* data, size_t n) override {
    count_allreduce(n * sizeof(double));
    if (n > 0) NCCL_CHECK(ncclAllReduce(data, data, n, ncclFloat64, ncclSum, comm_, stream()));
  }
  void allreduce_sum(int64_t* data, size_t n) override {
    count_allreduce(n * sizeof(int64_t));
    if (n > 0) NCCL_CHECK(ncclAllReduce(data, data, n, ncclInt64, ncclSum, comm_, stream()));
  }
  // A host value: through the bootstrap, counted here as MpiComm counts it.
  int allreduce_max(int value) override {
    count_allreduce(sizeof(int));
    return bootstrap_->allreduce_max(value);
  }
  void reduce_scatter_sum(const float* send, float* recv, size_t n) override {
    bytes_sent_ += uint64_t(size_ - 1) * n * sizeof(float);
    if (n > 0) NCCL_CHECK(ncclReduceScatter(send, recv, n, ncclFloat32, ncclSum, comm_, stream()));
  }
  // On the communication stream, between two events: `ready` (recorded on the compute stream
  // now: the kernels that wrote `send` are queued before it) and `done` (the request's).
  std::unique_ptr<CommRequest> start_reduce_scatter_sum(const float* send, float* recv, size_t n) override {
    bytes_sent_ += uint64_t(size_ - 1) * n * sizeof(float);
    if (n == 0) return std::make_unique<CompletedRequest>();
    const cudaStream_t cs = comm_stream();
    {
      Event ready;
      CUDA_CHECK(cudaEventRecord(ready.get(), stream()));
      CUDA_CHECK(cudaStreamWaitEvent(cs, ready.get(), 0));
    }
    NCCL_CHECK(ncclReduceScatter(send, recv, n, ncclFloat32, ncclSum, comm_, cs));
    Event done;
    CUDA_CHECK(cudaEventRecord(done.get(), cs));
    return std::make_unique<NcclRequest>(stream(), std::move(done));
  }
  void allgather(const void* send, void* recv, size_t bytes) override {
    bytes_sent_ += uint64_t(size_ - 1) * bytes;
    if (bytes > 0) NCCL_CHECK(ncclAllGather(send, recv, bytes, ncclUint8, comm_, stream()));
  }
  void alltoall(const void* send, void* recv, size_t bytes) override {
    bytes_sent_ += uint64_t(size_ - 1) * bytes;
    const std::vector<int64_t> counts(static_cast<size_t>(size_), static_cast<int64_t>(bytes));
    exchange(send, counts, recv, counts);
  }
  void alltoallv(const void* send, const std::vector<int64_t>& send_bytes, void* recv,
                 const std::vector<int64_t>& recv_bytes) override {
    CLM_ASSERT(send_bytes.size() == size_t(size_) && recv_bytes.size() == size_t(size_));
    for (int r = 0; r < size_; ++r) {
      if (send_bytes[r] < 0 || recv_bytes[r] < 0) fail("NCCL alltoallv: negative byte count for rank {}", r);
      if (r != rank_) bytes_sent_ += uint64_t(send_bytes[r]);
    }
    exchange(send, send_bytes, recv, recv_bytes);
  }
  void broadcast(void* data, size_t bytes, int root) override {
    if (rank_ == root && size_ > 1) bytes_sent_ += bytes;  // a lone rank sends nothing
    if (bytes > 0) NCCL_CHECK(ncclBroadcast(data, data, bytes, ncclUint8, root, comm_, stream()));
  }
  // The device work queued so far (both streams) is done on every rank when barrier() returns.
  void barrier() override {
    synchronize(stream());
    if (comm_stream_) synchronize(comm_stream_);
    bootstrap_->barrier();
  }
  std::unique_ptr<Comm> split(int color, int key) override {
    std::shared_ptr<Comm> sub = bootstrap_->split(color, key);
    return std::make_unique<NcclComm>(std::move(sub), device_);
  }
  [[noreturn]] void abort(int code) override {
    ncclCommAbort(comm_);  // best effort: the bootstrap's abort ends every rank anyway
    comm_ = nullptr;
    bootstrap_->abort(code);
    std::_Exit(code);  // not reached: the bootstrap's abort does not return
  }

 private:
  cudaStream_t stream() const { return device_.stream(); }
  // Made on the first start_* call: a run without overlap never has one.
  cudaStream_t comm_stream() {
    if (!comm_stream_) {
      CUDA_CHECK(cudaSetDevice(device_.device()));  // a stream belongs to the current device
      CUDA_CHECK(cudaStreamCreateWithFlags(&comm_stream_, cudaStreamNonBlocking));
    }
    return comm_stream_;
  }

  // Waits on the host until `s` is idle, polling NCCL's asynchronous error meanwhile: after a
  // peer fails, NCCL's kernels may spin forever, so a plain cudaStreamSynchronize would never
  // return, and the asynchronous error is what says so (NCCL's documented pattern). Only where
  // the host blocks anyway (barrier, destruction): never in a hot path.
  Drained drain(cudaStream_t s) const noexcept {
    Drained d;
    for (;;) {
      const cudaError_t q = cudaStreamQuery(s);
      if (q != cudaSuccess && q != cudaErrorNotReady) {
        d.cuda = q;
        return d;
      }
      if (q == cudaErrorNotReady) (void)cudaGetLastError();  // not an error: keep it out of the next check
      d.query = ncclCommGetAsyncError(comm_, &d.nccl);
      if (d.query != ncclSuccess) return d;
      if (d.nccl != ncclSuccess && d.nccl != ncclInProgress) return d;
      d.nccl = ncclSuccess;  // in progress: a nonblocking communicator's call still running
      if (q == cudaSuccess) return d;
      std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
  }
  void synchronize(cudaStream_t s) {
    const Drained d = drain(s);
    check_cuda(d.cuda, "cudaStreamQuery (a host wait on an NCCL communicator's streams)", __FILE__, __LINE__);
    check_nccl(d.query, comm_, "ncclCommGetAsyncError", __FILE__, __LINE__);
    check_nccl(d.nccl, comm_, "an earlier collective (ncclCommGetAsyncError)", __FILE__, __LINE__);
  }
  void count_allreduce(size_t bytes) { bytes_sent_ += 2 * uint64_t(size_ - 1) * bytes / uint64_t(size_); }

  // Blocks of send_bytes[r] bytes (contiguous, in rank order) to rank r; recv_bytes[s] bytes from
  // rank s into recv (contiguous, in rank order). Peers with zero bytes are skipped (both sides
  // agree: my send_bytes[r] is r's recv_bytes[me]); this rank's own block is a device copy.
  void exchange(const void* send, const std::vector<int64_t>& send_bytes, void* recv,
                const std::vector<int64_t>& recv_bytes) {
    const auto* s = static_cast<const unsigned char*>(send);
    auto* d = static_cast<unsigned char*>(recv);
    std::vector<size_t> send_off(size_t(size_) + 1, 0), recv_off(size_t(size_) + 1, 0);
    for (int r = 0; r < size_; ++r) {
      send_off[r + 1] = send_off[r] + size_t(send_bytes[r]);
      recv_off[r + 1] = recv_off[r] + size_t(recv_bytes[r]);
    }
    if (send_bytes[rank_] != recv_bytes[rank_])
      fail("NCCL alltoallv: rank {} sends itself {} bytes but expects {}", rank_, send_bytes[rank_], recv_bytes[rank_]);
    if (send_bytes[rank_] > 0)
      CUDA_CHECK(cudaMemcpyAsync(d + recv_off[rank_], s + send_off[rank_], size_t(send_bytes[rank_]),
                                 cudaMemcpyDeviceToDevice, stream()));
    NCCL_CHECK(ncclGroupStart());
    try {
      for (int r = 0; r < size_; ++r) {
        if (r == rank_) continue;
        if (send_bytes[r] > 0)
          NCCL_CHECK(ncclSend(s + send_off[r], size_t(send_bytes[r]), ncclUint8, r, comm_, stream()));
        if (recv_bytes[r] > 0)
          NCCL_CHECK(ncclRecv(d + recv_off[r], size_t(recv_bytes[r]), ncclUint8, r, comm_, stream()));
      }
    } catch (...) {
      ncclGroupEnd();  // close the group before the error leaves; its own result adds nothing
      throw;
    }
    NCCL_CHECK(ncclGroupEnd());
  }

  std::shared_ptr<Comm> bootstrap_;
  CudaBackend& device_;
  int rank_, size_;
  ncclComm_t comm_ = nullptr;
  cudaStream_t comm_stream_ = nullptr;  // start_* collectives only (comm_stream())
};

}  // namespace
}  // namespace cuda

bool nccl_built() { return true; }

std::unique_ptr<Comm> make_nccl_comm(std::shared_ptr<Comm> bootstrap, Backend& device) {
  auto* cuda_device = dynamic_cast<cuda::CudaBackend*>(&device);
  if (!cuda_device)
    fail_hint("set run.device: cuda, or dist.gpu_comm: mpi on the CPU backend",
              "dist.gpu_comm: nccl needs the CUDA backend, this run uses the '{}' backend", device.name());
  if (!bootstrap) fail("make_nccl_comm: no bootstrap communicator");
  return std::make_unique<cuda::NcclComm>(std::move(bootstrap), *cuda_device);
}

}  // namespace competelm
