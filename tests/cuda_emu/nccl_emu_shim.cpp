// The emulated NCCL of shim/nccl.h: MPI on host buffers. Errors the real NCCL would report
// (bad ranks, unsupported types, mismatched send/recv sizes) return an error code with a message
// for ncclGetLastError, so cuda/nccl_comm.cu's error path is the one a GPU run would take.
#include "nccl.h"

#include <mpi.h>

#include <climits>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

struct ncclComm {
  MPI_Comm mpi = MPI_COMM_NULL;
  int rank = 0, nranks = 1;
};

namespace {

constexpr uint32_t kIdMagic = 0x4e43454d;  // "NCEM"
constexpr int kInitTagBase = 7000;         // point-to-point tags on MPI_COMM_WORLD for ncclCommInitRank
constexpr int kInitTags = 20000;

// What an emulated unique id holds (the rest of its 128 bytes stay zero).
struct IdFields {
  uint32_t magic;
  int32_t creator;  // world rank of the process that called ncclGetUniqueId
  int32_t serial;   // that process's count of ids made so far
};

std::string g_last_error;
int g_live_comms = 0;
int g_ids_made = 0;

// Queued ncclSend/ncclRecv of the open group (ncclGroupStart depth > 0).
struct P2p {
  bool send;
  void* buf;
  int bytes;
  int peer;
  ncclComm_t comm;
};
int g_group_depth = 0;
std::vector<P2p> g_group;
ncclResult_t g_group_error = ncclSuccess;

ncclResult_t error(ncclResult_t r, const std::string& what) {
  g_last_error = "nccl emulator: " + what;
  return r;
}

bool mpi_type(ncclDataType_t t, MPI_Datatype* out, int* size) {
  switch (t) {
    case ncclInt8: *out = MPI_INT8_T, *size = 1; return true;
    case ncclUint8: *out = MPI_UINT8_T, *size = 1; return true;
    case ncclInt32: *out = MPI_INT32_T, *size = 4; return true;
    case ncclUint32: *out = MPI_UINT32_T, *size = 4; return true;
    case ncclInt64: *out = MPI_INT64_T, *size = 8; return true;
    case ncclUint64: *out = MPI_UINT64_T, *size = 8; return true;
    case ncclFloat32: *out = MPI_FLOAT, *size = 4; return true;
    case ncclFloat64: *out = MPI_DOUBLE, *size = 8; return true;
    default: return false;
  }
}

bool mpi_op(ncclRedOp_t op, MPI_Op* out) {
  switch (op) {
    case ncclSum: *out = MPI_SUM; return true;
    case ncclProd: *out = MPI_PROD; return true;
    case ncclMax: *out = MPI_MAX; return true;
    case ncclMin: *out = MPI_MIN; return true;
    default: return false;
  }
}

// Common argument checks of a collective; fills the MPI type, element size and int count.
ncclResult_t check_args(const char* call, ncclComm_t comm, size_t count, ncclDataType_t t, MPI_Datatype* mt,
                        int* esize, int* n) {
  if (!comm) return error(ncclInvalidArgument, std::string(call) + ": null communicator");
  if (g_group_depth > 0) return error(ncclInvalidUsage, std::string(call) + ": collectives inside a group are not emulated");
  if (!mpi_type(t, mt, esize)) return error(ncclInvalidArgument, std::string(call) + ": data type not emulated");
  if (count > size_t(INT_MAX)) return error(ncclInvalidArgument, std::string(call) + ": count exceeds the emulator's int limit");
  *n = int(count);
  return ncclSuccess;
}

bool overlaps(const void* a, size_t abytes, const void* b, size_t bbytes) {
  const auto pa = reinterpret_cast<uintptr_t>(a), pb = reinterpret_cast<uintptr_t>(b);
  return pa < pb + bbytes && pb < pa + abytes;
}

ncclResult_t run_p2p(const std::vector<P2p>& ops) {
  std::vector<MPI_Request> reqs(ops.size());
  for (size_t i = 0; i < ops.size(); ++i) {
    const P2p& o = ops[i];
    if (o.send)
      MPI_Isend(o.buf, o.bytes, MPI_BYTE, o.peer, 0, o.comm->mpi, &reqs[i]);
    else
      MPI_Irecv(o.buf, o.bytes, MPI_BYTE, o.peer, 0, o.comm->mpi, &reqs[i]);
  }
  std::vector<MPI_Status> st(ops.size());
  MPI_Waitall(int(reqs.size()), reqs.data(), st.data());
  for (size_t i = 0; i < ops.size(); ++i) {
    if (ops[i].send) continue;
    int got = -1;
    MPI_Get_count(&st[i], MPI_BYTE, &got);
    if (got != ops[i].bytes)
      return error(ncclInvalidUsage, "ncclRecv of " + std::to_string(ops[i].bytes) + " bytes from rank " +
                                         std::to_string(ops[i].peer) + " matched a send of " + std::to_string(got));
  }
  return ncclSuccess;
}

ncclResult_t p2p(bool send, const void* buf, size_t count, ncclDataType_t t, int peer, ncclComm_t comm) {
  const char* call = send ? "ncclSend" : "ncclRecv";
  MPI_Datatype mt;
  int esize = 0;
  if (!comm) return error(ncclInvalidArgument, std::string(call) + ": null communicator");
  if (!mpi_type(t, &mt, &esize)) return error(ncclInvalidArgument, std::string(call) + ": data type not emulated");
  if (peer < 0 || peer >= comm->nranks) return error(ncclInvalidArgument, std::string(call) + ": peer out of range");
  if (count * size_t(esize) > size_t(INT_MAX)) return error(ncclInvalidArgument, std::string(call) + ": too many bytes");
  const P2p op{send, const_cast<void*>(buf), int(count * size_t(esize)), peer, comm};
  if (g_group_depth == 0) return run_p2p({op});
  g_group.push_back(op);
  return ncclSuccess;
}

}  // namespace

namespace nccl_emu {
int live_comms() { return g_live_comms; }
}  // namespace nccl_emu

const char* ncclGetErrorString(ncclResult_t r) {
  switch (r) {
    case ncclSuccess: return "no error";
    case ncclUnhandledCudaError: return "unhandled cuda error";
    case ncclSystemError: return "unhandled system error";
    case ncclInternalError: return "internal error";
    case ncclInvalidArgument: return "invalid argument";
    case ncclInvalidUsage: return "invalid usage";
    case ncclRemoteError: return "remote process exited or there was a network error";
    case ncclInProgress: return "NCCL operation in progress";
    default: return "unknown result code";
  }
}

const char* ncclGetLastError(ncclComm_t) { return g_last_error.c_str(); }

ncclResult_t ncclGetUniqueId(ncclUniqueId* id) {
  if (!id) return error(ncclInvalidArgument, "ncclGetUniqueId: null id");
  int world = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &world);
  std::memset(id, 0, sizeof *id);
  const IdFields f{kIdMagic, world, g_ids_made++};
  std::memcpy(id->internal, &f, sizeof f);
  return ncclSuccess;
}

ncclResult_t ncclCommInitRank(ncclComm_t* out, int nranks, ncclUniqueId id, int rank) {
  IdFields f;
  std::memcpy(&f, id.internal, sizeof f);
  if (!out) return error(ncclInvalidArgument, "ncclCommInitRank: null comm pointer");
  if (f.magic != kIdMagic) return error(ncclInvalidArgument, "ncclCommInitRank: not an id from ncclGetUniqueId");
  if (nranks < 1 || rank < 0 || rank >= nranks) return error(ncclInvalidArgument, "ncclCommInitRank: bad rank/nranks");
  if (g_group_depth > 0) return error(ncclInvalidUsage, "ncclCommInitRank inside a group is not emulated");
  int world = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &world);
  const int tag = kInitTagBase + f.serial % kInitTags;
  // members[r] = world rank of communicator rank r, gathered by the id's creator and sent back.
  std::vector<int> members(size_t(nranks), -1);
  if (world == f.creator) {
    members[size_t(rank)] = world;
    for (int i = 1; i < nranks; ++i) {
      int msg[2];  // (communicator rank, world rank)
      MPI_Recv(msg, 2, MPI_INT, MPI_ANY_SOURCE, tag, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
      if (msg[0] < 0 || msg[0] >= nranks || members[size_t(msg[0])] != -1)
        return error(ncclInvalidUsage, "ncclCommInitRank: rank " + std::to_string(msg[0]) + " claimed twice or out of range");
      members[size_t(msg[0])] = msg[1];
    }
    for (int r = 0; r < nranks; ++r)
      if (r != rank) MPI_Send(members.data(), nranks, MPI_INT, members[size_t(r)], tag, MPI_COMM_WORLD);
  } else {
    const int msg[2] = {rank, world};
    MPI_Send(msg, 2, MPI_INT, f.creator, tag, MPI_COMM_WORLD);
    MPI_Recv(members.data(), nranks, MPI_INT, f.creator, tag, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
  }
  MPI_Group world_group, group;
  MPI_Comm_group(MPI_COMM_WORLD, &world_group);
  MPI_Group_incl(world_group, nranks, members.data(), &group);
  auto* c = new ncclComm;
  MPI_Comm_create_group(MPI_COMM_WORLD, group, tag, &c->mpi);
  MPI_Group_free(&group);
  MPI_Group_free(&world_group);
  MPI_Comm_rank(c->mpi, &c->rank);
  MPI_Comm_size(c->mpi, &c->nranks);
  if (c->rank != rank || c->nranks != nranks) {
    delete c;
    return error(ncclInternalError, "ncclCommInitRank: emulated communicator has the wrong rank");
  }
  ++g_live_comms;
  *out = c;
  return ncclSuccess;
}

ncclResult_t ncclCommDestroy(ncclComm_t comm) {
  if (!comm) return error(ncclInvalidArgument, "ncclCommDestroy: null communicator");
  MPI_Comm_free(&comm->mpi);
  delete comm;
  --g_live_comms;
  return ncclSuccess;
}

// Without freeing the MPI communicator: MPI_Comm_free is collective, an abort must not wait.
ncclResult_t ncclCommAbort(ncclComm_t comm) {
  if (!comm) return ncclSuccess;
  delete comm;
  --g_live_comms;
  return ncclSuccess;
}

ncclResult_t ncclCommGetAsyncError(ncclComm_t comm, ncclResult_t* async_error) {
  if (!comm || !async_error) return error(ncclInvalidArgument, "ncclCommGetAsyncError: null argument");
  *async_error = ncclSuccess;
  return ncclSuccess;
}

ncclResult_t ncclCommCount(const ncclComm_t comm, int* count) {
  if (!comm || !count) return error(ncclInvalidArgument, "ncclCommCount: null argument");
  *count = comm->nranks;
  return ncclSuccess;
}

ncclResult_t ncclCommUserRank(const ncclComm_t comm, int* rank) {
  if (!comm || !rank) return error(ncclInvalidArgument, "ncclCommUserRank: null argument");
  *rank = comm->rank;
  return ncclSuccess;
}

ncclResult_t ncclAllReduce(const void* send, void* recv, size_t count, ncclDataType_t t, ncclRedOp_t op,
                           ncclComm_t comm, cudaStream_t) {
  MPI_Datatype mt;
  MPI_Op mop;
  int esize = 0, n = 0;
  if (ncclResult_t r = check_args("ncclAllReduce", comm, count, t, &mt, &esize, &n)) return r;
  if (!mpi_op(op, &mop)) return error(ncclInvalidArgument, "ncclAllReduce: reduction not emulated");
  if (send != recv && overlaps(send, count * esize, recv, count * esize))
    return error(ncclInvalidArgument, "ncclAllReduce: partially overlapping buffers");
  MPI_Allreduce(send == recv ? MPI_IN_PLACE : send, recv, n, mt, mop, comm->mpi);
  return ncclSuccess;
}

ncclResult_t ncclReduceScatter(const void* send, void* recv, size_t recvcount, ncclDataType_t t, ncclRedOp_t op,
                               ncclComm_t comm, cudaStream_t) {
  MPI_Datatype mt;
  MPI_Op mop;
  int esize = 0, n = 0;
  if (ncclResult_t r = check_args("ncclReduceScatter", comm, recvcount, t, &mt, &esize, &n)) return r;
  if (!mpi_op(op, &mop)) return error(ncclInvalidArgument, "ncclReduceScatter: reduction not emulated");
  const size_t bytes = recvcount * size_t(esize);
  // NCCL's in-place form is recv == send + rank·recvcount; any overlap goes through a copy here.
  std::vector<unsigned char> copy;
  if (overlaps(send, bytes * size_t(comm->nranks), recv, bytes)) {
    copy.assign(static_cast<const unsigned char*>(send), static_cast<const unsigned char*>(send) + bytes * size_t(comm->nranks));
    send = copy.data();
  }
  MPI_Reduce_scatter_block(send, recv, n, mt, mop, comm->mpi);
  return ncclSuccess;
}

ncclResult_t ncclAllGather(const void* send, void* recv, size_t sendcount, ncclDataType_t t, ncclComm_t comm,
                           cudaStream_t) {
  MPI_Datatype mt;
  int esize = 0, n = 0;
  if (ncclResult_t r = check_args("ncclAllGather", comm, sendcount, t, &mt, &esize, &n)) return r;
  const size_t bytes = sendcount * size_t(esize);
  std::vector<unsigned char> copy;
  if (overlaps(send, bytes, recv, bytes * size_t(comm->nranks))) {
    copy.assign(static_cast<const unsigned char*>(send), static_cast<const unsigned char*>(send) + bytes);
    send = copy.data();
  }
  MPI_Allgather(send, n, mt, recv, n, mt, comm->mpi);
  return ncclSuccess;
}

ncclResult_t ncclBroadcast(const void* send, void* recv, size_t count, ncclDataType_t t, int root, ncclComm_t comm,
                           cudaStream_t) {
  MPI_Datatype mt;
  int esize = 0, n = 0;
  if (ncclResult_t r = check_args("ncclBroadcast", comm, count, t, &mt, &esize, &n)) return r;
  if (root < 0 || root >= comm->nranks) return error(ncclInvalidArgument, "ncclBroadcast: root out of range");
  if (comm->rank == root && send != recv) std::memmove(recv, send, count * size_t(esize));
  MPI_Bcast(recv, n, mt, root, comm->mpi);
  return ncclSuccess;
}

ncclResult_t ncclSend(const void* send, size_t count, ncclDataType_t t, int peer, ncclComm_t comm, cudaStream_t) {
  const ncclResult_t r = p2p(true, send, count, t, peer, comm);
  if (r != ncclSuccess && g_group_depth > 0) g_group_error = r;
  return r;
}

ncclResult_t ncclRecv(void* recv, size_t count, ncclDataType_t t, int peer, ncclComm_t comm, cudaStream_t) {
  const ncclResult_t r = p2p(false, recv, count, t, peer, comm);
  if (r != ncclSuccess && g_group_depth > 0) g_group_error = r;
  return r;
}

ncclResult_t ncclGroupStart() {
  ++g_group_depth;
  return ncclSuccess;
}

ncclResult_t ncclGroupEnd() {
  if (g_group_depth == 0) return error(ncclInvalidUsage, "ncclGroupEnd without ncclGroupStart");
  if (--g_group_depth > 0) return ncclSuccess;
  std::vector<P2p> ops;
  ops.swap(g_group);
  const ncclResult_t queued = g_group_error;
  g_group_error = ncclSuccess;
  if (queued != ncclSuccess) return queued;  // like NCCL: a bad call in the group fails the group
  return run_p2p(ops);
}
