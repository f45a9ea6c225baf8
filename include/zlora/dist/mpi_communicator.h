// Communicator over MPI's nonblocking collectives (MPI_Iallreduce, MPI_Ireduce_scatter_block, ...).
// CPU tensors are used in place. bf16/fp16 reductions go through an fp32 copy (MPI has no 16-bit float
// arithmetic). CUDA tensors are staged through pinned host memory, which is slow but lets several
// ranks share one GPU in tests and gives a fallback where NCCL is unusable.
//
// Progress: the runtime is MPI_THREAD_FUNNELED, so a collective advances only while this thread is
// inside MPI; wait() polls MPI_Test until completion or the deadline (deadline.h's poll_until).
#pragma once

#include "zlora/dist/communicator.h"
#include "zlora/dist/deadline.h"

#include <mpi.h>

#include <memory>

namespace zlora::dist {

class MpiCommunicator final : public Communicator {
 public:
  // Duplicates `comm` (so zlora's collectives never match a caller's own MPI traffic) and frees the
  // duplicate on destruction. `mpi` must outlive this object; it ends the job on a timeout.
  MpiCommunicator(const MpiRuntime& mpi, MPI_Comm comm, double timeout_s, const Topology* topology = nullptr);
  ~MpiCommunicator() override;
  MpiCommunicator(const MpiCommunicator&) = delete;
  MpiCommunicator& operator=(const MpiCommunicator&) = delete;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  const char* backend() const override { return "mpi"; }
  double timeout_s() const { return timeout_s_; }
  MPI_Comm comm() const { return comm_; }

  // Collective over this communicator: the ranks passing the same `color` form a new communicator
  // (ranked as here); a rank passing color < 0 gets nullptr. Used where a stage needs sub-groups.
  std::unique_ptr<MpiCommunicator> split(int color) const;

  WorkPtr all_reduce(const at::Tensor& tensor, ReduceOp op) override;
  WorkPtr reduce_scatter(const at::Tensor& output, const at::Tensor& input, ReduceOp op) override;
  WorkPtr all_gather(const at::Tensor& output, const at::Tensor& input) override;
  WorkPtr broadcast(const at::Tensor& tensor, int root) override;
  WorkPtr barrier() override;

  // Ends the job because `what` on this rank outlived the timeout (called by this backend's Work).
  [[noreturn]] void abort_timeout(const std::string& what) const;
  // Where this backend's Work waits (deadline.h's wait_with_deadline).
  WaitSite wait_site() const { return WaitSite{mpi_, "mpi", rank_, size_, timeout_s_, topology_}; }

 private:
  const MpiRuntime* mpi_;
  const Topology* topology_;
  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0;
  int size_ = 1;
  double timeout_s_;
};

}  // namespace zlora::dist
