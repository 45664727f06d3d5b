// MpiComm: the communicator over MPI (OpenMPI here). Built when CMake finds MPI; otherwise
// MpiSession refuses a multi-rank launch with a message saying how to build with MPI.
#include <climits>
#include <cstring>
#include <exception>

#include "core/error.hpp"
#include "dist/dist_context.hpp"

#ifdef COMPETELM_HAVE_MPI
#include <mpi.h>
#endif

namespace competelm {

#ifdef COMPETELM_HAVE_MPI
namespace {

int checked_int(int64_t n, const char* what) {
  if (n < 0 || n > INT_MAX) fail("MPI {}: {} exceeds MPI's int count limit", what, n);
  return static_cast<int>(n);
}

// A nonblocking collective (MPI-3). MPI_Test gives it progress (Open MPI's libnbc advances only
// inside MPI calls); MPI_Wait completes it.
class MpiRequest final : public CommRequest {
 public:
  ~MpiRequest() override {
    if (req_ != MPI_REQUEST_NULL && std::uncaught_exceptions() == 0) wait();
  }
  MPI_Request* handle() { return &req_; }
  void wait() override {
    if (req_ != MPI_REQUEST_NULL) MPI_Wait(&req_, MPI_STATUS_IGNORE);
  }
  void poll() override {
    int done = 0;
    if (req_ != MPI_REQUEST_NULL) MPI_Test(&req_, &done, MPI_STATUS_IGNORE);
  }

 private:
  MPI_Request req_ = MPI_REQUEST_NULL;
};

class MpiComm final : public Comm {
 public:
  explicit MpiComm(MPI_Comm comm, bool owned) : comm_(comm), owned_(owned) {
    MPI_Comm_rank(comm_, &rank_);
    MPI_Comm_size(comm_, &size_);
  }
  ~MpiComm() override {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (owned_ && !finalized) MPI_Comm_free(&comm_);
  }
  int rank() const override { return rank_; }
  int size() const override { return size_; }

  void allreduce_sum(double* data, size_t n) override {
    count_allreduce(n * sizeof(double));
    MPI_Allreduce(MPI_IN_PLACE, data, checked_int(int64_t(n), "allreduce"), MPI_DOUBLE, MPI_SUM, comm_);
  }
  void allreduce_sum(int64_t* data, size_t n) override {
    count_allreduce(n * sizeof(int64_t));
    MPI_Allreduce(MPI_IN_PLACE, data, checked_int(int64_t(n), "allreduce"), MPI_INT64_T, MPI_SUM, comm_);
  }
  int allreduce_max(int value) override {
    int out = 0;
    count_allreduce(sizeof(int));
    MPI_Allreduce(&value, &out, 1, MPI_INT, MPI_MAX, comm_);
    return out;
  }
  void reduce_scatter_sum(const float* send, float* recv, size_t n) override {
    bytes_sent_ += uint64_t(size_ - 1) * n * sizeof(float);
    MPI_Reduce_scatter_block(send, recv, checked_int(int64_t(n), "reduce_scatter"), MPI_FLOAT, MPI_SUM, comm_);
  }
  std::unique_ptr<CommRequest> start_reduce_scatter_sum(const float* send, float* recv, size_t n) override {
    bytes_sent_ += uint64_t(size_ - 1) * n * sizeof(float);
    auto req = std::make_unique<MpiRequest>();
    MPI_Ireduce_scatter_block(send, recv, checked_int(int64_t(n), "reduce_scatter"), MPI_FLOAT, MPI_SUM, comm_,
                              req->handle());
    return req;
  }
  void allgather(const void* send, void* recv, size_t bytes) override {
    const int b = checked_int(int64_t(bytes), "allgather");
    bytes_sent_ += uint64_t(size_ - 1) * bytes;
    MPI_Allgather(send, b, MPI_BYTE, recv, b, MPI_BYTE, comm_);
  }
  void alltoall(const void* send, void* recv, size_t bytes) override {
    const int b = checked_int(int64_t(bytes), "alltoall");
    bytes_sent_ += uint64_t(size_ - 1) * bytes;
    MPI_Alltoall(send, b, MPI_BYTE, recv, b, MPI_BYTE, comm_);
  }
  void alltoallv(const void* send, const std::vector<int64_t>& send_bytes, void* recv,
                 const std::vector<int64_t>& recv_bytes) override {
    std::vector<int> sc(size_), sd(size_), rc(size_), rd(size_);
    int64_t so = 0, ro = 0;
    for (int r = 0; r < size_; ++r) {
      sc[r] = checked_int(send_bytes[r], "alltoallv"), sd[r] = checked_int(so, "alltoallv offset");
      rc[r] = checked_int(recv_bytes[r], "alltoallv"), rd[r] = checked_int(ro, "alltoallv offset");
      so += send_bytes[r], ro += recv_bytes[r];
      if (r != rank_) bytes_sent_ += uint64_t(send_bytes[r]);
    }
    MPI_Alltoallv(send, sc.data(), sd.data(), MPI_BYTE, recv, rc.data(), rd.data(), MPI_BYTE, comm_);
  }
  void broadcast(void* data, size_t bytes, int root) override {
    if (rank_ == root && size_ > 1) bytes_sent_ += bytes;  // a lone rank sends nothing
    MPI_Bcast(data, checked_int(int64_t(bytes), "broadcast"), MPI_BYTE, root, comm_);
  }
  void barrier() override { MPI_Barrier(comm_); }
  std::unique_ptr<Comm> split(int color, int key) override {
    MPI_Comm sub;
    MPI_Comm_split(comm_, color, key, &sub);
    return std::make_unique<MpiComm>(sub, true);
  }
  [[noreturn]] void abort(int code) override {
    MPI_Abort(MPI_COMM_WORLD, code);
    std::_Exit(code);
  }

 private:
  void count_allreduce(size_t bytes) { bytes_sent_ += 2 * uint64_t(size_ - 1) * bytes / uint64_t(size_); }

  MPI_Comm comm_;
  bool owned_;
  int rank_ = 0, size_ = 1;
};

}  // namespace
#endif

MpiSession::MpiSession(int* argc, char*** argv) {
  if (!launched_by_mpi()) {
    world_ = make_self_comm();
    return;
  }
#ifdef COMPETELM_HAVE_MPI
  int provided = 0;
  // The data loader's prefetch thread never calls MPI: the main thread makes every call.
  MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided);
  active_ = true;
  world_ = std::make_shared<MpiComm>(MPI_COMM_WORLD, false);
  // Local rank: the rank within this node's shared-memory communicator (works across nodes).
  MPI_Comm node;
  MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node);
  MPI_Comm_rank(node, &local_rank_);
  MPI_Comm_free(&node);
#else
  (void)argc, (void)argv;
  fail_hint("install OpenMPI (scripts/install_deps.sh) and rebuild (scripts/build.sh)",
            "launched by mpirun, but this build has no MPI support");
#endif
}

MpiSession::~MpiSession() {
#ifdef COMPETELM_HAVE_MPI
  if (active_) {
    world_.reset();
    MPI_Finalize();
  }
#endif
}

}  // namespace competelm
