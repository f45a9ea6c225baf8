// Communicator over NCCL for CUDA tensors (CUDA builds only). Bootstrap as in llm.c: each rank selects
// GPU `local_rank` (cudaSetDevice before anything else touches CUDA), rank 0 creates the ncclUniqueId
// and MPI_Bcast-s it, then ncclCommInitRank. Collectives run on the communicator's own stream: an
// event recorded on the caller's current stream orders them after the producer kernels, and wait()
// orders the caller's current stream after the collective (c10d's ProcessGroupNCCL discipline), so
// communication overlaps with compute that does not depend on it.
//
// Timeouts: wait() polls the collective's completion event and ncclCommGetAsyncError against the
// ddp_timeout deadline; on either failure it aborts the NCCL communicator (ncclCommAbort, so NCCL's
// proxy threads stop spinning) and ends the job with the operation and rank in the message.
#pragma once

#ifdef ZLORA_WITH_CUDA

#include "zlora/dist/communicator.h"
#include "zlora/dist/deadline.h"

#include <cuda_runtime.h>
#include <nccl.h>

#include <string>
#include <vector>

namespace zlora::dist {

class MpiRuntime;

// RAII owner of one CUDA event without timing (cheapest kind; only used for ordering and polling).
class CudaEvent {
 public:
  CudaEvent();
  ~CudaEvent();
  CudaEvent(const CudaEvent&) = delete;
  CudaEvent& operator=(const CudaEvent&) = delete;
  cudaEvent_t get() const { return event_; }

 private:
  cudaEvent_t event_ = nullptr;
};

class NcclCommunicator final : public Communicator {
 public:
  // Collective over MPI_COMM_WORLD of `mpi`, which must outlive this object.
  NcclCommunicator(const MpiRuntime& mpi, double timeout_s, const Topology* topology = nullptr);
  ~NcclCommunicator() override;
  NcclCommunicator(const NcclCommunicator&) = delete;
  NcclCommunicator& operator=(const NcclCommunicator&) = delete;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  const char* backend() const override { return "nccl"; }
  int device() const { return device_; }
  cudaStream_t stream() const { return stream_; }
  double timeout_s() const { return timeout_s_; }

  WorkPtr all_reduce(const at::Tensor& tensor, ReduceOp op) override;
  WorkPtr reduce_scatter(const at::Tensor& output, const at::Tensor& input, ReduceOp op) override;
  WorkPtr all_gather(const at::Tensor& output, const at::Tensor& input) override;
  WorkPtr broadcast(const at::Tensor& tensor, int root) override;
  WorkPtr barrier() override;

  // Throws nothing: ends the job (after ncclCommAbort) because `what` failed or timed out on this rank.
  [[noreturn]] void abort(const std::string& what, const std::string& why);
  // Ends the job because `what` outlived ddp_timeout (the message names the ranks that stopped answering).
  [[noreturn]] void abort_timeout(const std::string& what);
  // Non-blocking check of NCCL's asynchronous error state; aborts the job on an error.
  void check_async(const std::string& what);
  // Where this backend's Work waits (deadline.h's wait_with_deadline).
  WaitSite wait_site() const {
    return WaitSite{mpi_, "nccl, GPU " + std::to_string(device_), rank_, size_, timeout_s_, topology_};
  }

 private:
  // Orders the comm stream after the caller's current stream; returns nothing, throws on CUDA errors.
  void enter(const std::string& what);
  WorkPtr finish(std::string what, std::vector<at::Tensor> keep);

  const MpiRuntime* mpi_;
  const Topology* topology_;
  int rank_ = 0;
  int size_ = 1;
  int device_ = 0;
  double timeout_s_;
  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;
  at::Tensor barrier_buf_;  // one float on the device: NCCL has no barrier, an all-reduce is one
};

}  // namespace zlora::dist

#endif  // ZLORA_WITH_CUDA
