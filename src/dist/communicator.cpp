// MpiCommunicator and the backend selection. NcclCommunicator lives in nccl_communicator.cpp (CUDA
// builds only).
#include "zlora/dist/communicator.h"

#include "zlora/core/error.h"
#include "zlora/dist/deadline.h"
#include "zlora/dist/mpi_communicator.h"
#include "zlora/dist/mpi_runtime.h"

#ifdef ZLORA_WITH_CUDA
#include "zlora/dist/nccl_communicator.h"

#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime.h>
#endif

#include <ATen/ATen.h>

#include <fmt/ranges.h>
#include <climits>

#include <functional>
#include <utility>
#include <vector>

namespace zlora::dist {

const char* to_string(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum:
      return "sum";
    case ReduceOp::kAvg:
      return "avg";
    case ReduceOp::kMax:
      return "max";
  }
  return "?";
}

namespace {

bool is_half(at::ScalarType t) { return t == at::kBFloat16 || t == at::kHalf; }

// The MPI datatype carrying `t`. 16-bit floats travel as raw 16-bit words: fine for moving data
// (gather, broadcast); reductions stage them as fp32 first.
MPI_Datatype mpi_type(at::ScalarType t, const char* op) {
  switch (t) {
    case at::kFloat:
      return MPI_FLOAT;
    case at::kDouble:
      return MPI_DOUBLE;
    case at::kLong:
      return MPI_INT64_T;
    case at::kInt:
      return MPI_INT32_T;
    case at::kByte:
      return MPI_UINT8_T;
    case at::kChar:
      return MPI_INT8_T;
    case at::kBool:
      return MPI_UINT8_T;
    case at::kBFloat16:
    case at::kHalf:
      return MPI_UINT16_T;
    default:
      fail(
          "{}: tensors of dtype {} are not supported by the MPI communicator (use fp32, fp64, int64, int32, "
          "uint8, bf16 or fp16)",
          op, c10::toString(t));
  }
}

MPI_Op mpi_op(ReduceOp op) { return op == ReduceOp::kMax ? MPI_MAX : MPI_SUM; }

void check_tensor(const at::Tensor& t, const char* op, const char* role) {
  ZLORA_REQUIRE(t.defined(), "{}: the {} tensor is undefined", op, role);
  ZLORA_REQUIRE(t.is_contiguous(), "{}: the {} tensor (shape {}) must be contiguous; call .contiguous() first", op,
                role, fmt::join(t.sizes(), "x"));
  ZLORA_REQUIRE(t.is_cpu() || t.is_cuda(), "{}: the {} tensor is on {}; the MPI communicator takes CPU or CUDA tensors",
                op, role, t.device().str());
}

int mpi_count(int64_t n, const char* op) {
  ZLORA_REQUIRE(n <= INT_MAX,
                "{}: {} elements exceed MPI's int count limit ({}); lower reduce_bucket_size / "
                "allgather_bucket_size or use the NCCL backend",
                op, n, INT_MAX);
  return static_cast<int>(n);
}

// A host buffer MPI can read/write for `t`: `t` itself when it is a CPU tensor of the wire dtype,
// else a copy (pinned when `t` is on a GPU, so the copies are DMA transfers).
at::Tensor host_view(const at::Tensor& t, at::ScalarType wire, bool copy_in) {
  if (t.is_cpu() && t.scalar_type() == wire) return t;
  at::Tensor h = at::empty(t.sizes(), t.options().device(at::kCPU).dtype(wire).pinned_memory(t.is_cuda()));
  if (copy_in) h.copy_(t);
  return h;
}

class MpiWork final : public Work {
 public:
  MpiWork(const MpiCommunicator* comm, std::string what, std::vector<at::Tensor> keep, std::function<void()> finish)
      : comm_(comm), what_(std::move(what)), keep_(std::move(keep)), finish_(std::move(finish)) {}
  ~MpiWork() override {
    if (!done_) wait();
  }

  MPI_Request* request() { return &request_; }

  bool is_completed() override {
    if (done_) return true;
    int flag = 0;
    MPI_Test(&request_, &flag, MPI_STATUS_IGNORE);
    if (flag) complete();
    return done_;
  }

  void wait() override {
    if (done_) return;
    // Poll instead of MPI_Wait so that a rank that never joins cannot hang us past the deadline.
    wait_with_deadline(
        comm_->wait_site(), what_,
        [this] {
          int flag = 0;
          MPI_Test(&request_, &flag, MPI_STATUS_IGNORE);
          return flag != 0;
        },
        [this] { comm_->abort_timeout(what_); });
    complete();
  }

 private:
  void complete() {
    done_ = true;
    if (finish_) finish_();
    keep_.clear();
  }

  const MpiCommunicator* comm_;
  std::string what_;
  std::vector<at::Tensor> keep_;  // buffers MPI reads/writes until completion
  std::function<void()> finish_;  // copy back from staging, divide for avg
  MPI_Request request_ = MPI_REQUEST_NULL;
  bool done_ = false;
};

const char* dtype_name(at::ScalarType t) {
  switch (t) {
    case at::kFloat:
      return "fp32";
    case at::kDouble:
      return "fp64";
    case at::kBFloat16:
      return "bf16";
    case at::kHalf:
      return "fp16";
    case at::kLong:
      return "int64";
    case at::kInt:
      return "int32";
    default:
      return c10::toString(t);
  }
}

}  // namespace

std::string describe_collective(const char* op, const at::Tensor& t) {
  return fmt::format("{} of {} {} elements", op, t.numel(), dtype_name(t.scalar_type()));
}

MpiCommunicator::MpiCommunicator(const MpiRuntime& mpi, MPI_Comm comm, double timeout_s, const Topology* topology)
    : mpi_(&mpi), topology_(topology), timeout_s_(timeout_s) {
  ZLORA_REQUIRE(timeout_s > 0, "ddp_timeout must be positive (seconds), got {}", timeout_s);
  if (MPI_Comm_dup(comm, &comm_) != MPI_SUCCESS) fail("MPI_Comm_dup failed while creating the MPI communicator");
  MPI_Comm_rank(comm_, &rank_);
  MPI_Comm_size(comm_, &size_);
}

MpiCommunicator::~MpiCommunicator() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (comm_ != MPI_COMM_NULL && !finalized) MPI_Comm_free(&comm_);
}

std::unique_ptr<MpiCommunicator> MpiCommunicator::split(int color) const {
  MPI_Comm sub = MPI_COMM_NULL;
  MPI_Comm_split(comm_, color < 0 ? MPI_UNDEFINED : color, rank_, &sub);
  if (sub == MPI_COMM_NULL) return nullptr;
  // The constructor duplicates; free our handle right after so only the RAII copy remains.
  auto out = std::make_unique<MpiCommunicator>(*mpi_, sub, timeout_s_, topology_);
  MPI_Comm_free(&sub);
  return out;
}

void MpiCommunicator::abort_timeout(const std::string& what) const { end_job_on_timeout(wait_site(), what); }

WorkPtr MpiCommunicator::all_reduce(const at::Tensor& tensor, ReduceOp op) {
  check_tensor(tensor, "all_reduce", "input");
  const auto dtype = tensor.scalar_type();
  ZLORA_REQUIRE(op != ReduceOp::kAvg || at::isFloatingType(dtype),
                "all_reduce: avg needs a floating-point tensor, got {}", c10::toString(dtype));
  const at::ScalarType wire = is_half(dtype) ? at::kFloat : dtype;
  at::Tensor buf = host_view(tensor, wire, /*copy_in=*/true);
  const int n = mpi_count(tensor.numel(), "all_reduce");
  const int world = size_;
  const bool staged = !buf.is_same(tensor);
  auto work = std::make_unique<MpiWork>(this, describe_collective("all_reduce", tensor),
                                        std::vector<at::Tensor>{tensor, buf}, [=]() mutable {
                                          if (op == ReduceOp::kAvg) buf.div_(world);
                                          if (staged) tensor.copy_(buf);
                                        });
  MPI_Iallreduce(MPI_IN_PLACE, buf.data_ptr(), n, mpi_type(wire, "all_reduce"), mpi_op(op), comm_, work->request());
  count(CollectiveKind::kAllReduce, double(buf.nbytes()));
  return work;
}

WorkPtr MpiCommunicator::reduce_scatter(const at::Tensor& output, const at::Tensor& input, ReduceOp op) {
  check_tensor(output, "reduce_scatter", "output");
  check_tensor(input, "reduce_scatter", "input");
  ZLORA_REQUIRE(input.scalar_type() == output.scalar_type(), "reduce_scatter: input is {} but output is {}",
                c10::toString(input.scalar_type()), c10::toString(output.scalar_type()));
  ZLORA_REQUIRE(input.numel() == output.numel() * size_,
                "reduce_scatter: input has {} elements; it must hold exactly size ({}) x output ({}) elements",
                input.numel(), size_, output.numel());
  const auto dtype = input.scalar_type();
  ZLORA_REQUIRE(op != ReduceOp::kAvg || at::isFloatingType(dtype),
                "reduce_scatter: avg needs a floating-point tensor, got {}", c10::toString(dtype));
  const at::ScalarType wire = is_half(dtype) ? at::kFloat : dtype;
  at::Tensor in = host_view(input, wire, true);
  at::Tensor out = host_view(output, wire, false);
  const int n = mpi_count(output.numel(), "reduce_scatter");
  const int world = size_;
  const bool staged = !out.is_same(output);
  at::Tensor o = output;
  auto work = std::make_unique<MpiWork>(this, describe_collective("reduce_scatter", input),
                                        std::vector<at::Tensor>{input, in, out, output}, [=]() mutable {
                                          if (op == ReduceOp::kAvg) out.div_(world);
                                          if (staged) o.copy_(out);
                                        });
  MPI_Ireduce_scatter_block(in.data_ptr(), out.data_ptr(), n, mpi_type(wire, "reduce_scatter"), mpi_op(op), comm_,
                            work->request());
  count(CollectiveKind::kReduceScatter, double(in.nbytes()));
  return work;
}

WorkPtr MpiCommunicator::all_gather(const at::Tensor& output, const at::Tensor& input) {
  check_tensor(output, "all_gather", "output");
  check_tensor(input, "all_gather", "input");
  ZLORA_REQUIRE(input.scalar_type() == output.scalar_type(), "all_gather: input is {} but output is {}",
                c10::toString(input.scalar_type()), c10::toString(output.scalar_type()));
  ZLORA_REQUIRE(output.numel() == input.numel() * size_,
                "all_gather: output has {} elements; it must hold exactly size ({}) x input ({}) elements",
                output.numel(), size_, input.numel());
  const auto dtype = input.scalar_type();
  const int n = mpi_count(input.numel(), "all_gather");
  const size_t chunk_bytes = static_cast<size_t>(input.numel()) * input.element_size();
  const bool in_place =
      input.device() == output.device() &&
      static_cast<const char*>(input.data_ptr()) == static_cast<const char*>(output.data_ptr()) + chunk_bytes * rank_;
  // In place the output must carry our chunk in; otherwise it is write-only.
  at::Tensor out = host_view(output, dtype, /*copy_in=*/in_place);
  at::Tensor in = in_place ? at::Tensor() : host_view(input, dtype, true);
  const bool staged = !out.is_same(output);
  at::Tensor o = output;
  auto work = std::make_unique<MpiWork>(this, describe_collective("all_gather", input),
                                        std::vector<at::Tensor>{input, in, out, output}, [=]() mutable {
                                          if (staged) o.copy_(out);
                                        });
  const MPI_Datatype type = mpi_type(dtype, "all_gather");
  MPI_Iallgather(in_place ? MPI_IN_PLACE : in.data_ptr(), n, type, out.data_ptr(), n, type, comm_, work->request());
  count(CollectiveKind::kAllGather, double(out.nbytes()));
  return work;
}

WorkPtr MpiCommunicator::broadcast(const at::Tensor& tensor, int root) {
  check_tensor(tensor, "broadcast", "input");
  ZLORA_REQUIRE(root >= 0 && root < size_, "broadcast: root {} is not a rank of this communicator (0..{})", root,
                size_ - 1);
  at::Tensor buf = host_view(tensor, tensor.scalar_type(), /*copy_in=*/rank_ == root);
  const int n = mpi_count(tensor.numel(), "broadcast");
  const bool staged = !buf.is_same(tensor);
  at::Tensor t = tensor;
  auto work = std::make_unique<MpiWork>(this, describe_collective("broadcast", tensor),
                                        std::vector<at::Tensor>{tensor, buf}, [=]() mutable {
                                          if (staged) t.copy_(buf);
                                        });
  MPI_Ibcast(buf.data_ptr(), n, mpi_type(tensor.scalar_type(), "broadcast"), root, comm_, work->request());
  count(CollectiveKind::kBroadcast, double(buf.nbytes()));
  return work;
}

WorkPtr MpiCommunicator::barrier() {
  auto work = std::make_unique<MpiWork>(this, "barrier", std::vector<at::Tensor>{}, nullptr);
  MPI_Ibarrier(comm_, work->request());
  count(CollectiveKind::kBarrier, 0);
  return work;
}

std::unique_ptr<Communicator> make_communicator(const MpiRuntime& mpi, const CommOptions& options) {
  const std::string& kind = options.kind;
  ZLORA_REQUIRE(kind == "auto" || kind == "nccl" || kind == "mpi", "--comm {} is not one of auto, nccl, mpi", kind);
#ifdef ZLORA_WITH_CUDA
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess) devices = 0;
  // auto: NCCL only when each rank of the node can have a GPU of its own (NCCL refuses to share one);
  // ranks sharing a GPU (tests, debugging) get the MPI backend's host staging instead.
  if (kind == "nccl" || (kind == "auto" && devices > 0 && mpi.local_size() <= devices)) {
    ZLORA_REQUIRE(devices > 0, "--comm nccl needs a CUDA GPU, and none is visible on rank {}; use --comm mpi",
                  mpi.rank());
    return std::make_unique<NcclCommunicator>(mpi, options.timeout_s, options.topology);
  }
#else
  ZLORA_REQUIRE(kind != "nccl",
                "--comm nccl: this zlora was built without CUDA (its LibTorch is a CPU build), so it has no NCCL "
                "backend; use --comm mpi or auto");
#endif
  return std::make_unique<MpiCommunicator>(mpi, mpi.world(), options.timeout_s, options.topology);
}

void synchronize_device(const at::Device& device) {
#ifdef ZLORA_WITH_CUDA
  if (device.is_cuda()) c10::cuda::getCurrentCUDAStream(device.index()).synchronize();
#endif
  (void)device;
}

}  // namespace zlora::dist
