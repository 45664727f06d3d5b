#pragma once
// Where this process sits among the job's ranks. Single-process runs are rank 0 of 1; the
// MPI launcher fills this from the communicator (multi-rank support lands with the MPI work).
namespace competelm {

struct DistInfo {
  int rank = 0;
  int world = 1;
  int local_rank = 0;
  bool is_main() const { return rank == 0; }
};

}  // namespace competelm
