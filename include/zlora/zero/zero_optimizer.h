// ZeRO stages 0-3 for the trainable (LoRA) parameters, with AdamW, in one object.
//
// Layout (llm.c's zero.cuh, simplified the way distributed.md §7 suggests): the named fp32 parameters
// are copied into ONE flat buffer, padded to a multiple of world x alignment elements, and each
// parameter is re-pointed (set_data) to a view of it; likewise each parameter's .grad is a view of ONE
// flat gradient buffer, so autograd accumulates micro-batches in place and the reduction needs no
// copies. The flat buffer is split into `world` equal contiguous partitions; rank r owns partition r.
// A parameter may straddle partitions: nothing below is per-parameter.
//
//   stage 0: all-reduce the gradients; every rank steps the whole buffer (full AdamW state per rank).
//   stage 1: all-reduce; each rank steps only its partition (AdamW state for it only); all-gather.
//   stage 2: reduce-scatter, so each rank receives only its partition's gradient; step; all-gather.
//   stage 3: as 2 for the trainable parameters (the frozen weights: PartitionedWeightStore).
//
// Gradients are summed, not averaged: the trainer divides the loss by the global batch's target count,
// so the sum over ranks is the global gradient. Nothing is communicated until step(), i.e. after the
// last micro-batch's backward. Offload (stage >= 1): the fp32 master partition and both moments live in
// host memory (pinned when the parameters are on a GPU), the gradient partition is copied to the host,
// an OpenMP AdamW updates it there, and the result is copied back before the all-gather.
#pragma once

#include "zlora/zero/partition.h"

#include "zlora/dist/communicator.h"
#include "zlora/zero/host_adam.h"

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace zlora::zero {

using NamedTensors = std::vector<std::pair<std::string, at::Tensor>>;

struct ZeroOptions {
  int stage = 0;                              // 0..3
  bool offload = false;                       // optimizer state on the host (offload_optimizer: cpu); stage >= 1
  int64_t reduce_bucket_size = 500000000;     // elements per gradient reduction (DeepSpeed's default)
  int64_t allgather_bucket_size = 500000000;  // elements per weight all-gather
  int64_t alignment = kPartitionAlignment;    // partition sizes are multiples of this (256-byte starts)
  double max_grad_norm = 1.0;                 // global-norm clipping; <= 0 disables
  AdamWOptions adam;
};

// One contiguous piece of a parameter's optimizer state: elements [offset, offset + master.numel())
// of the row-major flattened parameter `name` of full shape `shape`. Independent of world size and
// stage: any set of slices that covers every parameter once can be loaded at any world size.
struct StateSlice {
  std::string name;
  std::vector<int64_t> shape;
  int64_t offset = 0;
  at::Tensor master;      // fp32 weights, 1-D, CPU
  at::Tensor exp_avg;     // AdamW m
  at::Tensor exp_avg_sq;  // AdamW v
};

// Where the last step() spent its time, when profiling is on (the device is synchronised around each
// phase, so the figures are exact and the step slower).
struct StepTimes {
  double comm_s = 0;    // gradient reduction + weight all-gather (+ the norm's all-reduce)
  double update_s = 0;  // norm, clipping and AdamW (host AdamW and its copies when offloaded)
};

struct OptimizerState {
  int64_t step = 0;  // AdamW steps taken (bias correction)
  std::vector<StateSlice> slices;
};

// Bytes this rank holds for the trainable parameters (for the memory plan and the tests).
struct ZeroFootprint {
  int64_t weights = 0;       // the flat fp32 parameter buffer (full on every rank)
  int64_t grads = 0;         // flat gradient buffer + reduced partition
  int64_t device_state = 0;  // AdamW moments (+ master) on the parameters' device
  int64_t host_state = 0;    // offload: master, moments and gradient staging on the host
};

class ZeroOptimizer {
 public:
  // `params`: fp32 leaf tensors with requires_grad, all on one device, unique names. Their storage is
  // replaced by views of the flat buffer (values kept). `comm` must outlive the optimizer. Collective:
  // every rank constructs it with the same parameters (counts and sizes are checked across ranks).
  ZeroOptimizer(NamedTensors params, dist::Communicator& comm, ZeroOptions options);
  ZeroOptimizer(const ZeroOptimizer&) = delete;
  ZeroOptimizer& operator=(const ZeroOptimizer&) = delete;

  // Zeroes the gradient buffer in place (the .grad views stay valid). Call before each optimizer
  // step's first micro-batch.
  void zero_grad();

  // Reduces the accumulated gradients, clips them to max_grad_norm by their global norm, takes one
  // AdamW step with learning rate `lr` and leaves the updated weights in every rank's parameters.
  // Returns the global gradient norm before clipping. A non-finite norm is an error. Collective.
  double step(double lr);

  // fp16 with loss scaling (LossScaler): the gradients came from loss x `loss_scale`. They are divided
  // by it (together with the clipping coefficient, in one multiply, as DeepSpeed does) before AdamW, and
  // the returned norm is the unscaled one. When any rank's gradients hold inf/NaN — every rank learns
  // it from the norm, which is all-reduced (or computed from all-reduced gradients) — nothing is
  // updated: no AdamW step (step_count() unchanged), weights and moments untouched, no all-gather.
  // Collective over `comm`.
  struct StepResult {
    double grad_norm = 0;   // unscaled global norm before clipping; non-finite when overflowed
    bool overflow = false;  // the step was skipped
  };
  StepResult step_scaled(double lr, double loss_scale);

  // Optimizer state of this rank's partition (stage 0: also just that range, so that the union over
  // ranks covers every element once). CPU copies.
  OptimizerState export_state() const;
  // Loads state saved at any world size/stage: `state.slices` must cover every element this rank
  // needs (stage 0: all; else its partition) of every parameter; the weights are set from the saved
  // masters. Collective over `comm`.
  void import_state(const OptimizerState& state);

  const NamedTensors& params() const { return params_; }
  int stage() const { return options_.stage; }
  int64_t step_count() const { return step_; }
  int64_t numel() const { return numel_; }                // trainable elements
  int64_t padded_numel() const { return padded_; }        // flat buffer length
  int64_t partition_numel() const { return partition_; }  // padded / world
  ZeroFootprint footprint() const;

  // Phase timing of step() (profile_steps): off by default because it synchronises the device.
  void set_profiling(bool on) { profiling_ = on; }
  const StepTimes& last_step_times() const { return times_; }

 private:
  StepResult step_impl(double lr, double loss_scale, bool skip_overflow);
  void reduce_gradients();
  void gather_weights();
  at::Tensor my_grads() const;  // the reduced gradient this rank steps
  void check_grad_views() const;
  std::pair<int64_t, int64_t> owned_range() const;  // [begin, end) this rank steps

  dist::Communicator& comm_;
  ZeroOptions options_;
  NamedTensors params_;
  std::vector<int64_t> offsets_;  // element offset of each parameter in the flat buffer
  int64_t numel_ = 0, padded_ = 0, partition_ = 0;
  int64_t step_ = 0;

  at::Tensor flat_weights_;    // [padded], params are views
  at::Tensor flat_grads_;      // [padded], params' .grad are views
  at::Tensor grad_partition_;  // stage 2/3: [partition], the reduce-scatter's output
  // AdamW state for owned_range(): on the device (views of flat_weights_ are the master: fp32 params)
  // or, offloaded, on the host together with a gradient staging buffer.
  at::Tensor exp_avg_, exp_avg_sq_;
  at::Tensor host_master_, host_grad_;
  bool profiling_ = false;
  StepTimes times_;
};

}  // namespace zlora::zero
