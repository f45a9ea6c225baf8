#include "phase_profile.h"

#include "zlora/core/fs.h"
#include "zlora/core/log.h"

#include <nlohmann/json.hpp>

#include <string>

namespace zlora::train {

namespace {
constexpr const char* kPhaseNames[] = {"data",          "forward",   "backward", "forward+backward (graph)",
                                       "communication", "optimizer", "other"};
static_assert(sizeof(kPhaseNames) / sizeof(kPhaseNames[0]) == static_cast<size_t>(Phase::kCount));
}  // namespace

void PhaseProfile::begin_step(bool on) {
  timer_ = dist::PhaseTimer(device_, on);
  timer_.restart();
}

void PhaseProfile::add_optimizer(const zero::StepTimes& t) {
  if (!timer_.on()) return;
  sums_[static_cast<size_t>(Phase::kComm)] += t.comm_s;
  sums_[static_cast<size_t>(Phase::kUpdate)] += t.update_s;
  timer_.restart();
}

void PhaseProfile::end_step() {
  if (timer_.on()) ++steps_;
}

void PhaseProfile::report(const std::filesystem::path& json_path) const {
  double total = 0;
  for (double v : sums_) total += v;
  nlohmann::json j;
  j["steps"] = steps_;
  j["step_ms"] = 1e3 * total / double(steps_);
  std::string line;
  for (size_t i = 0; i < static_cast<size_t>(Phase::kCount); ++i) {
    const double ms = 1e3 * sums_[i] / double(steps_);
    j["phases_ms"][kPhaseNames[i]] = ms;
    line += fmt::format("  {} {:.1f} ms ({:.0f}%)", kPhaseNames[i], ms, total > 0 ? 100 * sums_[i] / total : 0.0);
  }
  log::info("profile over {} steps: {:.1f} ms/step:{}", steps_, 1e3 * total / double(steps_), line);
  fs::write_file_atomic(json_path, j.dump(1) + "\n");
}

}  // namespace zlora::train
