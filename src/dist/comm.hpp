#pragma once
// A communicator between the ranks of a job: the few collectives the trainer and the MoE
// layer need. One interface with two implementations: SelfComm (a single process, no MPI:
// collectives are copies) and MpiComm (MPI, src/dist/mpi_comm.cpp). Buffers are host memory
// (the CPU backend's memory is host memory; a GPU backend brings NCCL with its own comm).
// Every call is collective: all ranks of the communicator make it, in the same order.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace competelm {

// A collective started by a Comm::start_* call and not yet complete. Its buffers must stay
// untouched (send unwritten, recv unread) until wait() returns; on a device communicator, work
// the backend enqueues after wait() is ordered after the collective (no host wait needed).
// Destroying a request that was not waited for waits for it, unless an exception is unwinding
// (the job is failing: another rank may never join, and the error aborts every rank anyway).
class CommRequest {
 public:
  virtual ~CommRequest() = default;
  virtual void wait() = 0;
  // Lets the collective advance without blocking: MPI progresses a nonblocking collective only
  // inside MPI calls, so callers poll between pieces of other work.
  virtual void poll() {}
};

class Comm {
 public:
  virtual ~Comm() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;

  // In place: data[i] = Σ over ranks of data[i].
  virtual void allreduce_sum(double* data, size_t n) = 0;
  virtual void allreduce_sum(int64_t* data, size_t n) = 0;
  virtual int allreduce_max(int value) = 0;
  // recv (n) on rank r = Σ over ranks of send[r·n, (r+1)·n) (send holds size()·n floats).
  virtual void reduce_scatter_sum(const float* send, float* recv, size_t n) = 0;
  // reduce_scatter_sum, started now and completed by the request's wait(), so that it overlaps
  // whatever the caller does meanwhile (the backward pass of earlier layers). Every rank starts
  // the same nonblocking collectives on a communicator in the same order. The default runs the
  // blocking call now and returns a completed request (no overlap, same result).
  virtual std::unique_ptr<CommRequest> start_reduce_scatter_sum(const float* send, float* recv, size_t n);
  // recv (size()·bytes) = every rank's `bytes` bytes, in rank order.
  virtual void allgather(const void* send, void* recv, size_t bytes) = 0;
  // Block r of send (bytes each) goes to rank r; block s of recv comes from rank s.
  virtual void alltoall(const void* send, void* recv, size_t bytes) = 0;
  // Variable blocks: send_bytes[r] bytes (contiguous, in rank order) go to rank r; recv_bytes[s]
  // bytes arrive from rank s, stored contiguously in rank order.
  virtual void alltoallv(const void* send, const std::vector<int64_t>& send_bytes, void* recv,
                         const std::vector<int64_t>& recv_bytes) = 0;
  virtual void broadcast(void* data, size_t bytes, int root) = 0;
  virtual void barrier() = 0;
  // Sub-communicator of the ranks passing the same color, ordered by key.
  virtual std::unique_ptr<Comm> split(int color, int key) = 0;
  // Ends the whole job (every rank) with this exit code. Never returns.
  [[noreturn]] virtual void abort(int code) = 0;

  // Convenience: a string from root to every rank.
  std::string broadcast_string(const std::string& s, int root);

  // Payload bytes this rank has handed to the collectives for other ranks so far (ring
  // algorithms' traffic: allgather (n-1)·b, reduce-scatter (n-1)·shard, allreduce 2(n-1)/n·b,
  // all-to-all what goes to the others): the benchmark's "bytes sent per rank".
  uint64_t bytes_sent() const { return bytes_sent_; }

 protected:
  uint64_t bytes_sent_ = 0;
};

// The single-process communicator (rank 0 of 1).
std::unique_ptr<Comm> make_self_comm();

}  // namespace competelm
