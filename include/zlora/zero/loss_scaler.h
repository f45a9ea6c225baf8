// fp16 loss scaling with DeepSpeed's semantics (deepspeed/runtime/fp16/loss_scaler.py): the backward
// runs on loss x scale so that small gradients survive float16's range; the optimizer divides the fp32
// gradients by the scale again, and a step whose gradients hold inf/NaN on any rank is skipped.
//
// Dynamic (DeepSpeed's DynamicLossScaler, fp16.loss_scale 0):
//   * the scale starts at 2^initial_scale_power;
//   * an overflow with hysteresis left (cur_hysteresis > 1) only decrements cur_hysteresis; otherwise
//     the scale halves, not below min_loss_scale. An overflow at min_loss_scale with no hysteresis left
//     is an error (DeepSpeed's raise_error_at_min_scale): the run cannot make progress;
//   * every loss_scale_window steps without an overflow (counted from the last overflow, or the start)
//     the scale doubles and cur_hysteresis is restored. With DeepSpeed's default
//     consecutive_hysteresis=false the hysteresis is *not* restored by a single good step, so overflows
//     need not be consecutive to use it up.
// Static (loss_scale > 0): the scale never changes; an overflowing step is still skipped.
//
// No LibTorch here: the state machine is pure arithmetic, tested on its own, and checkpointed as
// LossScalerState so that a resumed run continues bit-identically.
#pragma once

#include <cstdint>
#include <string>

namespace zlora::zero {

struct LossScalerOptions {
  double static_scale = 0;  // > 0: a fixed scale (fp16.loss_scale); 0: dynamic
  int64_t initial_scale_power = 16;
  int64_t scale_window = 1000;  // loss_scale_window
  int64_t hysteresis = 2;       // DeepSpeed's delayed_shift
  double min_scale = 1;         // min_loss_scale
  bool consecutive_hysteresis = false;
};

// Everything that changes as the run goes on (DeepSpeed: cur_scale, cur_iter, last_overflow_iter,
// cur_hysteresis).
struct LossScalerState {
  double scale = 1;
  int64_t iter = 0;                 // update() calls so far
  int64_t last_overflow_iter = -1;  // iter of the last overflow, -1: none yet
  int64_t hysteresis = 1;           // overflows still tolerated before the scale halves
};

// What one update() did, for the trainer's log line.
struct LossScaleUpdate {
  bool overflow = false;
  double old_scale = 1, new_scale = 1;
  int64_t hysteresis_left = 0;   // after the update
  std::string describe() const;  // "loss scale 65536 -> 32768", "... stays 65536 (hysteresis 1 left)"
};

class LossScaler {
 public:
  // Throws zlora::Error on options DeepSpeed would misbehave with (window < 1, hysteresis < 1,
  // min_scale <= 0, an initial scale below min_scale, a power outside 0..64).
  explicit LossScaler(const LossScalerOptions& options);

  double scale() const { return state_.scale; }
  bool dynamic() const { return options_.static_scale <= 0; }
  const LossScalerOptions& options() const { return options_; }

  // Records one optimizer step: `overflow` = inf/NaN in some rank's gradients (the caller has agreed
  // it across ranks). Throws zlora::Error when an overflow happens at min_scale with no hysteresis left.
  LossScaleUpdate update(bool overflow);

  const LossScalerState& state() const { return state_; }
  // Restores a checkpointed state; throws zlora::Error on an impossible one (scale <= 0, ...).
  void set_state(const LossScalerState& state);

 private:
  LossScalerOptions options_;
  LossScalerState state_;
};

}  // namespace zlora::zero
