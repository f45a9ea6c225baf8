// The narrow collective interface every distributed piece of zlora goes through (c10d's ProcessGroup,
// cut down to what ZeRO needs). Collectives are enqueued in the same order on every rank of the
// communicator; each returns a Work handle whose wait() completes it. A collective that has not
// completed `timeout_s` seconds after wait() started ends the whole job with a message naming the
// operation and the rank, instead of hanging every other rank until Slurm's time limit.
//
// Buffers: every tensor must be contiguous and stay alive and untouched until wait() returns (the
// handle also holds a reference, so dropping it early does not free memory MPI/NCCL still writes).
#pragma once

#include "zlora/dist/traffic.h"

#include <ATen/core/Tensor.h>

#include <memory>
#include <string>

namespace zlora::dist {

class MpiRuntime;
class Topology;

enum class ReduceOp { kSum, kAvg, kMax };
const char* to_string(ReduceOp op);

// One in-flight collective. wait() returns once the result is usable by the caller: for CPU tensors
// the data is in place; for NCCL the current CUDA stream is ordered after the collective. A handle
// that is destroyed without wait() waits in its destructor (the buffers may not be reused before).
class Work {
 public:
  virtual ~Work() = default;
  virtual void wait() = 0;
  // Non-blocking probe; true once wait() would return at once.
  virtual bool is_completed() = 0;
};
using WorkPtr = std::unique_ptr<Work>;

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual const char* backend() const = 0;

  // In place on `tensor` (any shape, contiguous).
  virtual WorkPtr all_reduce(const at::Tensor& tensor, ReduceOp op) = 0;
  // `input` holds size() equal contiguous chunks (input.numel() == size() * output.numel()); rank r
  // receives the reduction of every rank's chunk r in `output`. Input and output must not overlap.
  virtual WorkPtr reduce_scatter(const at::Tensor& output, const at::Tensor& input, ReduceOp op) = 0;
  // Flat gather: output.numel() == size() * input.numel(); rank r's input lands in chunk r. `input`
  // may be exactly chunk rank() of `output` (in place), but must not otherwise overlap it.
  virtual WorkPtr all_gather(const at::Tensor& output, const at::Tensor& input) = 0;
  // In place: every rank receives root's `tensor`.
  virtual WorkPtr broadcast(const at::Tensor& tensor, int root) = 0;
  virtual WorkPtr barrier() = 0;

  // Every collective this communicator issued, priced by traffic.h's ring convention (the bytes this
  // rank sends on the wire: fp32 for the MPI backend's staged 16-bit reductions).
  const Traffic& traffic() const { return traffic_; }

 protected:
  void count(CollectiveKind kind, double payload_bytes) { traffic_.add(kind, payload_bytes, size()); }

 private:
  Traffic traffic_;
};

// "all_reduce of 4096 fp32 elements": how a collective is named in errors and timeouts.
std::string describe_collective(const char* op, const at::Tensor& t);

struct CommOptions {
  std::string kind = "auto";  // auto | nccl | mpi
  double timeout_s = 1800;    // ddp_timeout
  // Where every rank runs (may be null): a timeout message then names the ranks that stopped answering.
  // Must outlive the communicator.
  const Topology* topology = nullptr;
};

// The communicator over MPI_COMM_WORLD chosen by `options.kind`: "nccl" needs a CUDA build and a GPU,
// "mpi" always works, "auto" picks NCCL when there is a GPU per rank of the node, MPI otherwise. Errors name the
// choices.
std::unique_ptr<Communicator> make_communicator(const MpiRuntime& mpi, const CommOptions& options);

// Blocks the host until the current stream of `device` has drained (no-op on the CPU): needed before
// the host reads the result of a non_blocking device-to-host copy.
void synchronize_device(const at::Device& device);

}  // namespace zlora::dist
