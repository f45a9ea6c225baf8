// RAII ownership of the MPI library for one process: MPI_Init_thread on construction, MPI_Finalize on
// destruction. World rank/size come from MPI (mpirun, or Slurm `srun --mpi=pmix`); the node-local rank
// from MPI_Comm_split_type(MPI_COMM_TYPE_SHARED), which selects this rank's GPU.
#pragma once

#include <mpi.h>

#include <functional>
#include <memory>
#include <string>

namespace zlora::dist {

class Watchdog;

class MpiRuntime {
 public:
  MpiRuntime(int* argc, char*** argv);
  ~MpiRuntime();
  MpiRuntime(const MpiRuntime&) = delete;
  MpiRuntime& operator=(const MpiRuntime&) = delete;

  int rank() const { return rank_; }
  int size() const { return size_; }
  int local_rank() const { return local_rank_; }
  int local_size() const { return local_size_; }
  MPI_Comm world() const { return MPI_COMM_WORLD; }

  // Ends the whole job after a failure on this rank, printing `message` once: rank 0 prints and aborts
  // at once; another rank waits a moment first, so that when every rank fails alike rank 0's abort
  // wins, and when it fails alone its own message (with its rank) is the one printed.
  [[noreturn]] void fail_job(const std::string& message, int code) const;

  // The process's watchdog thread (watchdog.h), which every collective wait arms.
  Watchdog& watchdog() const { return *watchdog_; }

 private:
  int rank_ = 0;
  int size_ = 1;
  int local_rank_ = 0;
  int local_size_ = 1;
  MPI_Comm local_ = MPI_COMM_NULL;
  std::unique_ptr<Watchdog> watchdog_;
};

// Runs `decide` on rank 0 of `comm` only and gives every rank its answer: the string it returned, or,
// when it threw zlora::Error, that error, then thrown on every rank (so the job ends with rank 0's
// message). For what must be decided once and agreed by all ranks: a file compared or hashed, a store
// reused or rebuilt. Collective: every rank of `comm` must call it.
std::string decide_on_root(MPI_Comm comm, const std::function<std::string()>& decide);

// The launcher's rank for this process before MPI is initialised (OpenMPI, PMIx, PMI, Slurm), 0 when
// not launched by one: lets errors found before MPI_Init be printed by rank 0 only.
int launcher_rank();

}  // namespace zlora::dist
