// Wall time between device synchronisations (profile_steps): what a phase of a step cost, with the
// device's queued work drained at each mark so the time lands in the phase that issued it. Off, every
// call is a no-op that returns 0 and never synchronises (the unprofiled steps).
#pragma once

#include <ATen/ATen.h>

#include <chrono>

#include "zlora/dist/communicator.h"

namespace zlora::dist {

class PhaseTimer {
 public:
  PhaseTimer(at::Device device, bool on) : device_(device), on_(on) {}
  bool on() const { return on_; }
  // Drains the device and starts the clock.
  void restart() {
    if (!on_) return;
    synchronize_device(device_);
    mark_ = clock::now();
  }
  // Drains the device; seconds since the last mark; starts the clock again.
  double lap() {
    if (!on_) return 0;
    synchronize_device(device_);
    const auto now = clock::now();
    const double s = std::chrono::duration<double>(now - mark_).count();
    mark_ = now;
    return s;
  }

 private:
  using clock = std::chrono::steady_clock;
  at::Device device_;
  bool on_;
  clock::time_point mark_ = clock::now();
};

}  // namespace zlora::dist
