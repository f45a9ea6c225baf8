// The communication model: the bytes each rank sends per optimizer step, from the shapes alone (the
// LoRA buffer, the ZeRO-3 units, the stage, the world size), priced by dist/traffic.h's ring convention.
// Printed at the start of a run, compared with what the communicator counted at its end, and used in
// docs/benchmarks.md to project larger jobs. Per step:
//   LoRA gradients   stage 0-1: all-reduce of the fp32 flat buffer; stage 2-3: reduce-scatter of it
//   gradient norm    stage >= 1 at world > 1: all-reduce of one fp64 (each rank holds a partition)
//   LoRA weights     stage >= 1: all-gather of the fp32 flat buffer (each rank updated its partition)
//   loss             all-reduce of one fp64
//   ZeRO-3 weights   per micro-batch, an all-gather of each base-weight unit in forward and of each
//                    unit the backward needs again (the pin of zero3_weights.h saves the last one's);
//                    once per run, the last backward's prefetch of the embeddings for a forward that
//                    never comes (each earlier one is the next micro-batch's first gather)
//   offload          device <-> host copies of this rank's partition (gradients down, weights up): PCIe
//                    traffic, not network, so reported apart and not in the total
// No LibTorch.
#pragma once

#include "zlora/dist/traffic.h"

#include <cstdint>
#include <string>
#include <vector>

namespace zlora::zero {

struct CommModelInput {
  int world = 1;
  int stage = 0;
  bool offload = false;
  int64_t lora_padded_numel = 0;       // ZeroOptimizer::padded_numel()
  int64_t micro_batches_per_step = 1;  // every rank runs the same number (ZeRO-3 runs empty ones too)
  // ZeRO-3: each unit's gathered length (shard x world) in order (embeddings, layers, norm + head), and
  // the element size of the base weights.
  std::vector<int64_t> zero3_unit_numel;
  int64_t zero3_elem_bytes = 2;
  int64_t zero3_prefetch = 0;  // stage3_prefetch_layers
};

struct CommModelLine {
  std::string what;
  dist::CollectiveKind kind = dist::CollectiveKind::kAllReduce;
  double payload_bytes = 0;  // of one call
  double calls_per_step = 0;
  double bytes_per_step = 0;  // ring_bytes_sent x calls
};

struct CommModel {
  std::vector<CommModelLine> lines;
  double offload_bytes_per_step = 0;  // device <-> host, not in bytes_per_step()
  double bytes_once_per_run = 0;      // sent once in a run of any length (not in bytes_per_step())
  double bytes_per_step() const;
  // The mean per step over a run of `steps` steps: what a run's counters measure.
  double mean_bytes_per_step(int64_t steps) const;
  // One line per item and the total, for the log.
  std::string describe() const;
};

// ZeRO-3 all-gathers of base-weight units in one micro-batch of `units` units: every unit in forward,
// then every unit but the first (embeddings: their backward needs no weight) and the last (still pinned
// from the forward) in backward.
int64_t zero3_gathers_per_micro_batch(int64_t units);

CommModel model_step_traffic(const CommModelInput& in);

}  // namespace zlora::zero
