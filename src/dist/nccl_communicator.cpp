// NCCL backend (compiled only when ZLORA_WITH_CUDA is defined, i.e. against a CUDA LibTorch).
#ifdef ZLORA_WITH_CUDA

#include "zlora/dist/nccl_communicator.h"

#include "zlora/core/error.h"
#include "zlora/dist/deadline.h"
#include "zlora/dist/mpi_runtime.h"

#include <ATen/ATen.h>
#include <c10/cuda/CUDAStream.h>

#include <utility>
#include <vector>

namespace zlora::dist {

namespace {

void cuda_check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) fail("CUDA error in {}: {} ({})", what, cudaGetErrorString(e), cudaGetErrorName(e));
}

void nccl_check(ncclResult_t r, ncclComm_t comm, const char* what) {
  if (r == ncclSuccess || r == ncclInProgress) return;
  fail("NCCL error in {}: {}{}{}; rerun with NCCL_DEBUG=INFO for details", what, ncclGetErrorString(r),
       comm ? ": " : "", comm ? ncclGetLastError(comm) : "");
}

ncclDataType_t nccl_type(at::ScalarType t, const char* op) {
  switch (t) {
    case at::kFloat:
      return ncclFloat32;
    case at::kDouble:
      return ncclFloat64;
    case at::kBFloat16:
      return ncclBfloat16;
    case at::kHalf:
      return ncclFloat16;
    case at::kLong:
      return ncclInt64;
    case at::kInt:
      return ncclInt32;
    case at::kByte:
      return ncclUint8;
    case at::kBool:
      return ncclUint8;
    case at::kChar:
      return ncclInt8;
    default:
      fail("{}: tensors of dtype {} are not supported by the NCCL communicator", op, c10::toString(t));
  }
}

ncclRedOp_t nccl_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum:
      return ncclSum;
    case ReduceOp::kAvg:
      return ncclAvg;  // NCCL >= 2.10
    case ReduceOp::kMax:
      return ncclMax;
  }
  return ncclSum;
}

class NcclWork final : public Work {
 public:
  NcclWork(NcclCommunicator* comm, std::string what, std::vector<at::Tensor> keep)
      : comm_(comm), what_(std::move(what)), keep_(std::move(keep)) {}
  ~NcclWork() override {
    if (!done_) wait();
  }

  cudaEvent_t event() const { return done_event_.get(); }

  bool is_completed() override {
    if (done_) return true;
    cudaError_t e = cudaEventQuery(done_event_.get());
    if (e == cudaErrorNotReady) return false;
    cuda_check(e, "cudaEventQuery");
    complete();
    return true;
  }

  void wait() override {
    if (done_) return;
    // The spin phase is longer than the MPI backend's: NCCL kernels of a step finish in microseconds.
    wait_with_deadline(
        comm_->wait_site(), what_,
        [this] {
          cudaError_t e = cudaEventQuery(done_event_.get());
          if (e == cudaSuccess) return true;
          if (e != cudaErrorNotReady) comm_->abort(what_, fmt::format("CUDA error {}", cudaGetErrorString(e)));
          comm_->check_async(what_);
          return false;
        },
        [this] { comm_->abort_timeout(what_); }, PollPolicy{1000, 1000});
    complete();
  }

 private:
  void complete() {
    // The host knows the collective is done; the caller's stream still must not run ahead of it on
    // the device (it may be a different stream than at issue time).
    cuda_check(cudaStreamWaitEvent(c10::cuda::getCurrentCUDAStream(comm_->device()).stream(), done_event_.get(), 0),
               "cudaStreamWaitEvent");
    done_ = true;
    keep_.clear();
  }

  NcclCommunicator* comm_;
  std::string what_;
  std::vector<at::Tensor> keep_;  // the caching allocator must not recycle these before completion
  CudaEvent done_event_;
  bool done_ = false;
};

}  // namespace

CudaEvent::CudaEvent() { cuda_check(cudaEventCreateWithFlags(&event_, cudaEventDisableTiming), "cudaEventCreate"); }
CudaEvent::~CudaEvent() {
  if (event_) cudaEventDestroy(event_);
}

NcclCommunicator::NcclCommunicator(const MpiRuntime& mpi, double timeout_s, const Topology* topology)
    : mpi_(&mpi), topology_(topology), rank_(mpi.rank()), size_(mpi.size()), timeout_s_(timeout_s) {
  ZLORA_REQUIRE(timeout_s > 0, "ddp_timeout must be positive (seconds), got {}", timeout_s);
  int devices = 0;
  cuda_check(cudaGetDeviceCount(&devices), "cudaGetDeviceCount");
  // NCCL refuses two ranks of one communicator on one GPU ("Duplicate GPU detected").
  ZLORA_REQUIRE(mpi.local_rank() < devices,
                "rank {} is local rank {} of {} on its node, which has only {} GPU(s); NCCL needs one GPU per rank: "
                "launch at most {} ranks per node, or use --comm mpi to share GPUs",
                rank_, mpi.local_rank(), mpi.local_size(), devices, devices);
  device_ = mpi.local_rank();
  cuda_check(cudaSetDevice(device_), "cudaSetDevice");

  ncclUniqueId id;
  if (rank_ == 0) nccl_check(ncclGetUniqueId(&id), nullptr, "ncclGetUniqueId");
  MPI_Bcast(&id, sizeof id, MPI_BYTE, 0, mpi.world());
  nccl_check(ncclCommInitRank(&comm_, size_, id, rank_), nullptr, "ncclCommInitRank");
  cuda_check(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreate");
  barrier_buf_ = at::zeros({1}, at::TensorOptions().dtype(at::kFloat).device(at::kCUDA, device_));
}

NcclCommunicator::~NcclCommunicator() {
  if (comm_) ncclCommDestroy(comm_);
  if (stream_) cudaStreamDestroy(stream_);
}

void NcclCommunicator::abort(const std::string& what, const std::string& why) {
  if (comm_) {
    ncclCommAbort(comm_);
    comm_ = nullptr;
  }
  mpi_->fail_job(
      fmt::format("collective {} (nccl backend, rank {} of {}, GPU {}) {}", what, rank_, size_, device_, why), 3);
}

void NcclCommunicator::abort_timeout(const std::string& what) {
  // The diagnosis probes the peers first: NCCL's proxy threads are still running until the abort.
  const std::string message = timeout_message(wait_site(), what);
  if (comm_) {
    ncclCommAbort(comm_);
    comm_ = nullptr;
  }
  mpi_->fail_job(message, 3);
}

void NcclCommunicator::check_async(const std::string& what) {
  ncclResult_t async = ncclSuccess;
  if (!comm_) return;
  ncclCommGetAsyncError(comm_, &async);
  if (async != ncclSuccess && async != ncclInProgress)
    abort(what, fmt::format("failed: NCCL {} ({})", ncclGetErrorString(async), ncclGetLastError(comm_)));
}

void NcclCommunicator::enter(const std::string& what) {
  ZLORA_REQUIRE(comm_ != nullptr, "{}: the NCCL communicator was aborted", what);
  // The collective reads what the compute stream produced: make our stream wait for it.
  CudaEvent ready;
  cuda_check(cudaEventRecord(ready.get(), c10::cuda::getCurrentCUDAStream(device_).stream()), "cudaEventRecord");
  cuda_check(cudaStreamWaitEvent(stream_, ready.get(), 0), "cudaStreamWaitEvent");
  // Destroying `ready` now is fine: CUDA keeps a recorded event's work alive until it completes.
}

WorkPtr NcclCommunicator::finish(std::string what, std::vector<at::Tensor> keep) {
  auto work = std::make_unique<NcclWork>(this, std::move(what), std::move(keep));
  cuda_check(cudaEventRecord(work->event(), stream_), "cudaEventRecord");
  return work;
}

namespace {
void check_cuda_tensor(const at::Tensor& t, int device, const char* op, const char* role) {
  ZLORA_REQUIRE(t.defined(), "{}: the {} tensor is undefined", op, role);
  ZLORA_REQUIRE(t.is_contiguous(), "{}: the {} tensor must be contiguous", op, role);
  ZLORA_REQUIRE(t.is_cuda() && t.device().index() == device,
                "{}: the {} tensor is on {}; the NCCL communicator of this rank works on cuda:{} (use --comm mpi for "
                "CPU tensors)",
                op, role, t.device().str(), device);
}
}  // namespace

WorkPtr NcclCommunicator::all_reduce(const at::Tensor& tensor, ReduceOp op) {
  check_cuda_tensor(tensor, device_, "all_reduce", "input");
  std::string what = describe_collective("all_reduce", tensor);
  enter(what);
  nccl_check(ncclAllReduce(tensor.data_ptr(), tensor.data_ptr(), tensor.numel(),
                           nccl_type(tensor.scalar_type(), "all_reduce"), nccl_op(op), comm_, stream_),
             comm_, "ncclAllReduce");
  count(CollectiveKind::kAllReduce, double(tensor.nbytes()));
  return finish(std::move(what), {tensor});
}

WorkPtr NcclCommunicator::reduce_scatter(const at::Tensor& output, const at::Tensor& input, ReduceOp op) {
  check_cuda_tensor(output, device_, "reduce_scatter", "output");
  check_cuda_tensor(input, device_, "reduce_scatter", "input");
  ZLORA_REQUIRE(input.scalar_type() == output.scalar_type() && input.numel() == output.numel() * size_,
                "reduce_scatter: input ({} {}) must hold size ({}) x output ({} {}) elements of one dtype",
                input.numel(), c10::toString(input.scalar_type()), size_, output.numel(),
                c10::toString(output.scalar_type()));
  std::string what = describe_collective("reduce_scatter", input);
  enter(what);
  nccl_check(ncclReduceScatter(input.data_ptr(), output.data_ptr(), output.numel(),
                               nccl_type(input.scalar_type(), "reduce_scatter"), nccl_op(op), comm_, stream_),
             comm_, "ncclReduceScatter");
  count(CollectiveKind::kReduceScatter, double(input.nbytes()));
  return finish(std::move(what), {input, output});
}

WorkPtr NcclCommunicator::all_gather(const at::Tensor& output, const at::Tensor& input) {
  check_cuda_tensor(output, device_, "all_gather", "output");
  check_cuda_tensor(input, device_, "all_gather", "input");
  ZLORA_REQUIRE(input.scalar_type() == output.scalar_type() && output.numel() == input.numel() * size_,
                "all_gather: output ({} {}) must hold size ({}) x input ({} {}) elements of one dtype", output.numel(),
                c10::toString(output.scalar_type()), size_, input.numel(), c10::toString(input.scalar_type()));
  std::string what = describe_collective("all_gather", input);
  enter(what);
  // In place (input == chunk rank of output) is supported by NCCL as is.
  nccl_check(ncclAllGather(input.data_ptr(), output.data_ptr(), input.numel(),
                           nccl_type(input.scalar_type(), "all_gather"), comm_, stream_),
             comm_, "ncclAllGather");
  count(CollectiveKind::kAllGather, double(output.nbytes()));
  return finish(std::move(what), {input, output});
}

WorkPtr NcclCommunicator::broadcast(const at::Tensor& tensor, int root) {
  check_cuda_tensor(tensor, device_, "broadcast", "input");
  ZLORA_REQUIRE(root >= 0 && root < size_, "broadcast: root {} is not a rank (0..{})", root, size_ - 1);
  std::string what = describe_collective("broadcast", tensor);
  enter(what);
  nccl_check(ncclBroadcast(tensor.data_ptr(), tensor.data_ptr(), tensor.numel(),
                           nccl_type(tensor.scalar_type(), "broadcast"), root, comm_, stream_),
             comm_, "ncclBroadcast");
  count(CollectiveKind::kBroadcast, double(tensor.nbytes()));
  return finish(std::move(what), {tensor});
}

WorkPtr NcclCommunicator::barrier() {
  enter("barrier");
  nccl_check(ncclAllReduce(barrier_buf_.data_ptr(), barrier_buf_.data_ptr(), 1, ncclFloat32, ncclSum, comm_, stream_),
             comm_, "ncclAllReduce (barrier)");
  count(CollectiveKind::kBarrier, 0);
  return finish("barrier", {barrier_buf_});
}

}  // namespace zlora::dist

#endif  // ZLORA_WITH_CUDA
