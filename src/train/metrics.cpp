#include "zlora/train/metrics.h"

#include "zlora/core/error.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <vector>

namespace zlora::train {

double FlopsModel::sample_flops(long long n) const {
  const double t = double(n);
  // Per token: frozen linear 2N forward + 2N input gradient; LoRA 2N + 2N + 2N weight gradient.
  double linear = t * (4.0 * double(frozen_linear_params) + 6.0 * double(lora_params));
  // Per layer, causal: QK^T and PV each cost 2*d per (query, key) pair, n^2/2 pairs -> 2*n^2*d forward;
  // backward (dQ, dK from dS; dP, dV from dO) is twice that -> 6*n^2*d forward + backward.
  double attention = 6.0 * double(num_layers) * double(attn_width) * t * t;
  return linear + attention;
}

std::optional<double> peak_flops(const std::string& device_name, bool half_precision) {
  // Dense (no 2:4 sparsity) bf16 tensor-core peaks from the vendors' datasheets, the SXM/OAM parts
  // unless named. Order matters: the first substring found wins, so specific names come first.
  struct Entry {
    const char* key;
    double tflops;
  };
  static const std::vector<Entry> table = {
      {"GH200", 989}, {"H200", 989}, {"H100 NVL", 835}, {"H100 PCIe", 756}, {"H100", 989},
      {"H800", 989},  {"H20", 148},  {"B200", 2250},    {"B100", 1750},     {"A100", 312},
      {"A800", 312},  {"L40S", 362}, {"L40", 181},      {"A10G", 70},       {"A10", 125},
      {"L4", 121},    {"A40", 150},  {"MI300X", 1307},  {"MI250X", 383},
  };
  for (const Entry& e : table)
    if (device_name.find(e.key) != std::string::npos) return e.tflops * 1e12 * (half_precision ? 1.0 : 0.5);
  return std::nullopt;
}

std::string format_duration(double seconds) {
  long long s = seconds > 0 && std::isfinite(seconds) ? (long long)seconds : 0;
  long long days = s / 86400;
  s %= 86400;
  std::string hms = fmt::format("{}:{:02d}:{:02d}", s / 3600, (s / 60) % 60, s % 60);
  if (days == 0) return hms;
  return fmt::format("{} day{}, {}", days, days == 1 ? "" : "s", hms);
}

MetricsTracker::MetricsTracker(long long total_steps, long long steps_per_epoch, int world_size,
                               std::optional<double> peak, double start_time, long long start_step,
                               long long tokens_seen)
    : total_steps_(total_steps),
      steps_per_epoch_(steps_per_epoch),
      world_size_(world_size),
      peak_(peak),
      start_time_(start_time),
      start_step_(start_step),
      step_(start_step),
      tokens_seen_(tokens_seen),
      window_start_(start_time) {
  ZLORA_REQUIRE(total_steps >= 1 && steps_per_epoch >= 1 && world_size >= 1,
                "metrics: total_steps ({}), steps_per_epoch ({}) and world size ({}) must be >= 1", total_steps,
                steps_per_epoch, world_size);
}

void MetricsTracker::add_step(const StepStats& s, double now) {
  ++step_;
  ++run_steps_;
  ++window_steps_;
  ++window_loss_steps_;
  run_loss_sum_ += s.loss;
  window_loss_ += s.loss;
  window_tokens_ += s.tokens;
  window_samples_ += s.samples;
  window_flops_ += s.flops;
  window_comm_bytes_ += s.comm_bytes;
  run_comm_bytes_ += s.comm_bytes;
  run_tokens_ += s.tokens;
  tokens_seen_ += s.tokens;
  total_flos_ += s.flops;
  last_lr_ = s.lr;
  last_grad_norm_ = s.grad_norm;
}

LogRecord MetricsTracker::take_record(double now) {
  LogRecord r;
  r.current_steps = step_;
  r.total_steps = total_steps_;
  r.loss = window_loss_steps_ ? window_loss_ / double(window_loss_steps_) : 0.0;
  r.lr = last_lr_;
  r.grad_norm = last_grad_norm_;
  r.epoch = double(step_) / double(steps_per_epoch_);
  r.percentage = std::round(double(step_) / double(total_steps_) * 10000.0) / 100.0;
  r.elapsed_s = now - start_time_;
  // LLaMA-Factory: remaining = elapsed / steps done * steps left (this process's steps only).
  long long done = step_ - start_step_;
  r.remaining_s = done > 0 ? r.elapsed_s / double(done) * double(std::max(0LL, total_steps_ - step_)) : 0.0;
  r.throughput = r.elapsed_s > 0 ? double(run_tokens_) / r.elapsed_s : 0.0;
  double window_s = now - window_start_;
  if (window_s > 0) {
    r.tokens_per_s = double(window_tokens_) / window_s;
    r.samples_per_s = double(window_samples_) / window_s;
    if (peak_) r.mfu = window_flops_ / window_s / (*peak_ * double(world_size_));
  }
  r.total_tokens = tokens_seen_;
  r.comm_bytes_per_step = window_steps_ ? window_comm_bytes_ / double(window_steps_) : 0.0;
  window_start_ = now;
  window_loss_ = window_flops_ = window_comm_bytes_ = 0;
  window_steps_ = window_tokens_ = window_samples_ = window_loss_steps_ = 0;
  return r;
}

void MetricsTracker::restore_loss_window(double loss_sum, long long steps) {
  ZLORA_REQUIRE(steps >= 0 && std::isfinite(loss_sum), "bad saved loss window ({} over {} steps)", loss_sum, steps);
  window_loss_ = loss_sum;
  window_loss_steps_ = steps;
}

}  // namespace zlora::train
