// Which samples each optimizer step trains on, and how each rank packs its share into micro-batches.
//
// Step s of an epoch takes a fixed slice of that epoch's order: samples [s*G, (s+1)*G) with
// G = per_device_train_batch_size x gradient_accumulation_steps x world size (the last step of the epoch
// also takes the tail, so every sample is used once per epoch). The slice depends only on the order (seed,
// epoch) and G, so runs at 1, 2 or 3 ranks with the same G train on the same samples at every step.
// The slice is divided among ranks by token count (longest first, each to the least-loaded rank), and each
// rank packs its share into micro-batches of at most `micro_batch_tokens` tokens without splitting a
// sample. Every rank gets the same number of micro-batches, padding with empty ones, because ZeRO-3
// gathers each layer once per micro-batch on every rank: a rank that stopped early would hang the others.
// No LibTorch here: the epoch order comes in as a callback (sampler.h provides at::randperm's).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace zlora::train {

// Where the sampler stands: the next step to run is `step_in_epoch` of `epoch`. Saved in checkpoints.
struct SamplerPosition {
  long long epoch = 0;
  long long step_in_epoch = 0;
  bool operator==(const SamplerPosition& o) const { return epoch == o.epoch && step_in_epoch == o.step_in_epoch; }
};

struct MicroBatch {
  std::vector<int64_t> samples;                   // sample indices into the token store, in packing order
  long long tokens = 0;                           // sum of their lengths (<= micro_batch_tokens)
  long long loss_tokens = 0;                      // sum of their loss-token counts
  bool empty() const { return samples.empty(); }  // padding: run no forward, contribute zero gradient
};

struct StepPlan {
  SamplerPosition position;
  long long global_step = 0;              // epoch * steps_per_epoch + step_in_epoch
  std::vector<int64_t> step_samples;      // the whole step's samples, in epoch order (identical on all ranks)
  std::vector<MicroBatch> micro_batches;  // this rank's; the same count on every rank
  long long num_real_micro_batches = 0;   // this rank's non-empty ones (a prefix of micro_batches)
  long long global_tokens = 0;            // all ranks
  long long global_loss_tokens = 0;       // the loss divisor: unmasked targets of the whole step
  std::vector<long long> rank_tokens;     // tokens per rank (balance diagnostics)
};

struct PlanOptions {
  long long per_device_batch = 1;
  long long grad_accum = 1;
  long long world_size = 1;
  long long rank = 0;
  long long micro_batch_tokens = 0;  // token budget per micro-batch (> 0; see resolve_micro_batch_tokens)
  long long steps_per_epoch = 0;     // from count_steps(); 0 = compute it here the same way
};

// The epoch's order of sample indices (a permutation of 0..n-1).
using EpochOrder = std::function<std::vector<int64_t>(long long epoch)>;

// micro_batch_tokens, or per_device_train_batch_size x cutoff_len when it is 0.
long long resolve_micro_batch_tokens(long long micro_batch_tokens, long long per_device_batch, long long cutoff_len);

class StepPlanner {
 public:
  // lengths[i]: tokens of sample i; loss_tokens[i]: its targets that count in the loss (labels != -100
  // after the causal shift, i.e. over labels[1:]). Throws zlora::Error when a sample is longer than the
  // micro-batch budget or the inputs disagree.
  StepPlanner(std::vector<int64_t> lengths, std::vector<int64_t> loss_tokens, PlanOptions options, EpochOrder order);

  long long num_samples() const { return (long long)lengths_.size(); }
  long long global_batch() const { return global_batch_; }
  long long steps_per_epoch() const { return steps_per_epoch_; }
  SamplerPosition position_of(long long global_step) const;
  SamplerPosition next(SamplerPosition pos) const;

  StepPlan plan(SamplerPosition pos) const;

  // The sampler section of a checkpoint payload: the position plus what fixes the order (sample count,
  // global batch, seed, shuffle), as JSON text.
  std::string encode(SamplerPosition pos, long long seed, bool shuffle) const;
  // Reads encode()'s text for this planner. Throws zlora::Error when the order would differ (another
  // dataset, seed or shuffling); a different global batch is mapped by samples consumed when that is a
  // whole number of this run's steps, and refused otherwise.
  SamplerPosition decode(const std::string& text, long long seed, bool shuffle) const;

 private:
  const std::vector<int64_t>& order_for(long long epoch) const;

  std::vector<int64_t> lengths_;
  std::vector<int64_t> loss_tokens_;
  PlanOptions opt_;
  EpochOrder order_fn_;
  long long global_batch_ = 0;
  long long steps_per_epoch_ = 0;
  // One epoch's order is kept: plan() is called once per step, in epoch order.
  mutable long long cached_epoch_ = -1;
  mutable std::vector<int64_t> cached_order_;
};

}  // namespace zlora::train
