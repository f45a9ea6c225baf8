// A micro-batch's forward and backward run on buffers of fixed sizes, and on a CUDA device captured once
// per size as a CUDA graph and replayed (the `cuda_graphs` argument).
//
// Why: at the seed's step size (~1,200 tokens) the GPU finishes each of the ~3,000 small kernels of a
// step faster than the CPU can issue it through ATen and autograd; a graph replay issues them all in one
// call. A graph fixes every shape, so a micro-batch is padded into a bucket:
//   tokens  T -> T_b = roundup(T + 1, token_granularity); the padding tokens form one extra sample
//           (its own attention segment, positions from 0), so real tokens never attend to them;
//   rows    R -> R_b = roundup(R, row_granularity) loss rows; padding rows weigh 0 in the loss;
//           coarser than tokens: fewer buckets (captures), and a padding row costs only the LM head;
//   samples S is part of the key (cu_seqlens has S + 2 entries).
// The loss and gradients are those of the unpadded batch (padding rows weigh 0, padding tokens are
// isolated), up to the rounding of reductions over a different length.
//
// What the body touches outside the graph's memory pool is allocated before capture and never moves:
// the input buffers of each bucket, the loss weight, the loss output, and the parameters' .grad (views
// of ZeroOptimizer's flat buffer, accumulated in place by autograd). Nothing allocated inside a capture
// outlives it, so every bucket's graph shares one memory pool.
//
// Dropout draws from the run's generator, registered with every graph: a replay draws what the same
// work run eagerly would (PyTorch's philox offsets), so a run is reproducible and resumes exactly, but
// its masks differ from cuda_graphs=false's (the padded shapes draw more numbers).
//
// The first call runs eagerly (it warms up cuBLAS and the autograd engine's thread on this stream); each
// new bucket afterwards is captured and replayed; at most `max_graphs` are kept (least recently used
// dropped). On the CPU nothing is captured: the padded body runs eagerly (what the tests compare).
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <memory>
#include <optional>

#include "zlora/model/decoder.h"

namespace zlora::train {

struct StepGraphOptions {
  int64_t token_granularity = 64;
  int64_t row_granularity = 256;
  int64_t max_seqlen = 0;  // the longest sample the run can see (the attention grid); >= each batch's
  size_t max_graphs = 32;
  bool capture = true;  // false: run the padded body eagerly even on CUDA (tests)
};

struct StepGraphStats {
  long long eager = 0, captures = 0, replays = 0, evictions = 0;
};

class StepGraphs {
 public:
  // `decoder`, its weights and LoRA must outlive this object. options.generator, when set, is the
  // dropout generator (registered with each graph).
  StepGraphs(const model::Decoder& decoder, model::ForwardOptions forward, at::Device device, StepGraphOptions o);
  ~StepGraphs();
  StepGraphs(const StepGraphs&) = delete;
  StepGraphs& operator=(const StepGraphs&) = delete;

  // Forward and backward of `batch` (host tensors, as read from the store): adds weight x d(loss sum)/dθ
  // to every LoRA parameter's .grad and the unweighted loss sum (fp32 -> double) to `loss_acc`.
  void run(const model::PackedBatch& batch, double weight, at::Tensor& loss_acc);

  const StepGraphStats& stats() const { return stats_; }
  // Why graphs cannot be captured with these options, or nullopt when they can.
  static std::optional<std::string> unsupported(const model::ForwardOptions& forward, const at::Device& device,
                                                bool flash, int zero_stage);

 private:
  struct Bucket;
  struct Impl;
  std::unique_ptr<Impl> impl_;
  StepGraphStats stats_;
};

}  // namespace zlora::train
