#include "zlora/zero/loss_scaler.h"

#include "zlora/core/error.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

namespace zlora::zero {

namespace {
// Scales are powers of two in practice; print them as integers when they are (DeepSpeed: int(scale)).
std::string scale_text(double s) {
  return s == std::floor(s) && s < 1e18 ? fmt::format("{:.0f}", s) : fmt::format("{:g}", s);
}
}  // namespace

std::string LossScaleUpdate::describe() const {
  if (new_scale != old_scale) return fmt::format("loss scale {} -> {}", scale_text(old_scale), scale_text(new_scale));
  if (hysteresis_left < 0) return fmt::format("loss scale stays {} (static)", scale_text(new_scale));
  if (overflow && hysteresis_left == 0)
    return fmt::format("loss scale stays {} (hysteresis: the next overflow halves it)", scale_text(new_scale));
  if (overflow)
    return fmt::format("loss scale stays {} (hysteresis: {} more overflows tolerated)", scale_text(new_scale),
                       hysteresis_left);
  return fmt::format("loss scale stays {}", scale_text(new_scale));
}

LossScaler::LossScaler(const LossScalerOptions& options) : options_(options) {
  if (options_.static_scale > 0) {
    ZLORA_REQUIRE(std::isfinite(options_.static_scale), "loss_scale must be finite, got {}", options_.static_scale);
    state_.scale = options_.static_scale;
    state_.hysteresis = 1;
    return;
  }
  ZLORA_REQUIRE(options_.static_scale == 0, "loss_scale must be 0 (dynamic) or positive (static), got {}",
                options_.static_scale);
  ZLORA_REQUIRE(options_.initial_scale_power >= 0 && options_.initial_scale_power <= 64,
                "initial_scale_power must be in 0..64 (the first loss scale is 2^N), got {}",
                options_.initial_scale_power);
  ZLORA_REQUIRE(options_.scale_window >= 1, "loss_scale_window must be at least 1 step, got {}", options_.scale_window);
  ZLORA_REQUIRE(options_.hysteresis >= 1, "hysteresis must be at least 1 (1 = halve at the first overflow), got {}",
                options_.hysteresis);
  ZLORA_REQUIRE(options_.min_scale > 0 && std::isfinite(options_.min_scale), "min_loss_scale must be positive, got {}",
                options_.min_scale);
  state_.scale = std::ldexp(1.0, static_cast<int>(options_.initial_scale_power));
  ZLORA_REQUIRE(state_.scale >= options_.min_scale,
                "the initial loss scale 2^{} = {} is below min_loss_scale {}; raise initial_scale_power",
                options_.initial_scale_power, state_.scale, options_.min_scale);
  state_.hysteresis = options_.hysteresis;
}

LossScaleUpdate LossScaler::update(bool overflow) {
  LossScaleUpdate u;
  u.overflow = overflow;
  u.old_scale = state_.scale;
  if (!dynamic()) {
    ++state_.iter;
    u.new_scale = state_.scale;
    u.hysteresis_left = -1;  // not applicable
    return u;
  }
  // DeepSpeed's DynamicLossScaler.update_scale, branch for branch.
  if (overflow) {
    if (options_.hysteresis == 1 || state_.hysteresis == 1) {
      if (state_.scale == options_.min_scale)
        fail(
            "fp16: the gradients overflowed (inf/NaN) with the loss scale already at min_loss_scale {} and no "
            "hysteresis left, after {} steps; the run cannot make progress. Use bf16 (Ampere or newer GPUs), "
            "lower learning_rate, or check the data",
            options_.min_scale, state_.iter);
      state_.scale = std::max(state_.scale / 2, options_.min_scale);
    } else {
      --state_.hysteresis;
    }
    state_.last_overflow_iter = state_.iter;
  } else {
    if (options_.consecutive_hysteresis) state_.hysteresis = options_.hysteresis;
    if ((state_.iter - state_.last_overflow_iter) % options_.scale_window == 0) {
      if (!options_.consecutive_hysteresis) state_.hysteresis = options_.hysteresis;
      state_.scale *= 2;
    }
  }
  ++state_.iter;
  u.new_scale = state_.scale;
  u.hysteresis_left = state_.hysteresis - 1;
  return u;
}

void LossScaler::set_state(const LossScalerState& s) {
  ZLORA_REQUIRE(s.scale > 0 && std::isfinite(s.scale), "loss scaler state: the scale {} is not positive", s.scale);
  ZLORA_REQUIRE(s.iter >= 0 && s.last_overflow_iter >= -1 && s.last_overflow_iter < s.iter,
                "loss scaler state: iteration {} and last overflow {} are inconsistent", s.iter, s.last_overflow_iter);
  ZLORA_REQUIRE(s.hysteresis >= 1, "loss scaler state: hysteresis {} is below 1", s.hysteresis);
  if (!dynamic()) {
    // A static scale comes from the options, not from the checkpoint (it may have been changed on
    // purpose for the resumed run); only the step count carries over.
    state_.iter = s.iter;
    state_.last_overflow_iter = s.last_overflow_iter;
    return;
  }
  state_ = s;
  // The options may have changed between the runs: keep the restored state within them.
  state_.hysteresis = std::min(state_.hysteresis, options_.hysteresis);
  state_.scale = std::max(state_.scale, options_.min_scale);
}

}  // namespace zlora::zero
