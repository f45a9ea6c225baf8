// What one rank's checkpoint file holds for the SFT recipe, and its encoding as ckpt::Payload sections
// (the file format the checkpoint protocol writes and verifies, ckpt/checkpoint.h):
//   "zero"         JSON: the AdamW step and, per state slice, its parameter name, shape, offset, length
//   "zero_data"    the slices' fp32 master, exp_avg, exp_avg_sq, concatenated little-endian
//   "sampler"      StepPlanner::encode's JSON (position + what fixes the sample order)
//   "rng"          the dropout/NEFTune generator's state at the step boundary
//   "logger"       rank 0 only: RunLogger::logger_state (the open logging window)
//   "loss_scaler"  JSON, fp16 runs (and runs that skipped steps): scale, its counters, skipped steps
#pragma once

#include "zlora/zero/loss_scaler.h"
#include "zlora/zero/zero_optimizer.h"

#include <optional>
#include <string>
#include <string_view>

namespace zlora::train {

// The fp16 loss scaler and the steps it skipped: the scale is a power of two (or the static value) and
// round-trips exactly; the skipped count shifts the LR schedule.
struct ScalerCheckpoint {
  zero::LossScalerState state;
  long long skipped_steps = 0;
  double last_grad_norm = 0;  // logged for a skipped step
};

struct RankCheckpoint {
  zero::OptimizerState optimizer;  // this rank's slices (CPU tensors)
  std::string sampler;
  std::string rng;     // empty: none saved
  std::string logger;  // empty: none saved
  std::optional<ScalerCheckpoint> scaler;
};

std::string encode_rank_checkpoint(const RankCheckpoint& c);
// Throws zlora::Error naming `origin` (the file) for a truncated, forged or foreign payload; nothing
// read from the file sizes an allocation before it is checked against the payload's length.
RankCheckpoint decode_rank_checkpoint(std::string_view bytes, const std::string& origin);

}  // namespace zlora::train
