// profile_steps: where a step's time goes. Wall time between device synchronisations, summed over the
// profiled steps and written to output_dir/profile.json (benchmarks/ reads it). The optimizer reports
// its own split (communication vs update) because its collectives interleave with its arithmetic.
#pragma once

#include "zlora/dist/phase_timer.h"
#include "zlora/zero/zero_optimizer.h"

#include <cstddef>
#include <filesystem>

namespace zlora::train {

// kGraph: forward and backward of a micro-batch as one CUDA graph replay (cuda_graphs), not separable.
enum class Phase { kData, kForward, kBackward, kGraph, kComm, kUpdate, kOther, kCount };

class PhaseProfile {
 public:
  explicit PhaseProfile(at::Device device) : device_(device) {}
  void begin_step(bool on);
  void lap(Phase p) { sums_[static_cast<size_t>(p)] += timer_.lap(); }
  // The optimizer's step ran between the last lap and now: credit its own split, restart the clock.
  void add_optimizer(const zero::StepTimes& t);
  void end_step();
  long long steps() const { return steps_; }
  // Prints the per-step breakdown and writes it as JSON.
  void report(const std::filesystem::path& json_path) const;

 private:
  at::Device device_;
  dist::PhaseTimer timer_{device_, false};
  long long steps_ = 0;
  double sums_[static_cast<size_t>(Phase::kCount)] = {};
};

}  // namespace zlora::train
