#include "zlora/train/schedule.h"

#include "zlora/core/error.h"
#include "zlora/core/text.h"

#include <algorithm>
#include <cmath>

namespace zlora::train {

namespace {
constexpr double kPi = 3.14159265358979323846;

const std::vector<std::string>& schedule_names() {
  static const std::vector<std::string> names = {
      "linear", "cosine", "constant", "constant_with_warmup", "ds_warmup_lr", "ds_warmup_decay_lr"};
  return names;
}
}  // namespace

ScheduleKind parse_schedule_kind(const std::string& name) {
  if (name == "linear") return ScheduleKind::Linear;
  if (name == "cosine") return ScheduleKind::Cosine;
  if (name == "constant") return ScheduleKind::Constant;
  if (name == "constant_with_warmup") return ScheduleKind::ConstantWithWarmup;
  if (name == "ds_warmup_lr") return ScheduleKind::DsWarmupLR;
  if (name == "ds_warmup_decay_lr") return ScheduleKind::DsWarmupDecayLR;
  fail("unknown lr_scheduler_type '{}'{}; choose one of {}", name, text::did_you_mean(name, schedule_names()),
       text::join(schedule_names(), ", "));
}

Schedule::Schedule(ScheduleKind kind, double peak_lr, long long warmup_steps, long long total_steps, bool log_warmup)
    : kind_(kind), peak_(peak_lr), warmup_(warmup_steps), total_(total_steps), log_warmup_(log_warmup) {
  ZLORA_REQUIRE(std::isfinite(peak_lr) && peak_lr >= 0, "learning_rate must be a finite number >= 0, got {}", peak_lr);
  ZLORA_REQUIRE(warmup_steps >= 0, "warmup steps must be >= 0, got {}", warmup_steps);
  ZLORA_REQUIRE(total_steps >= 1, "the run must have at least one optimizer step, got total_steps {}", total_steps);
  // DeepSpeed: warmup_num_steps = max(2, warmup_num_steps), so log(warmup_num_steps) is never 0.
  if (kind_ == ScheduleKind::DsWarmupLR || kind_ == ScheduleKind::DsWarmupDecayLR) warmup_ = std::max(2LL, warmup_);
}

double Schedule::factor(long long step) const {
  ZLORA_REQUIRE(step >= 0, "lr schedule asked for negative step {}", step);
  const double s = double(step), w = double(warmup_), t = double(total_);
  switch (kind_) {
    case ScheduleKind::Constant:
      return 1.0;
    case ScheduleKind::ConstantWithWarmup:
      return step < warmup_ ? s / std::max(1.0, w) : 1.0;
    case ScheduleKind::Linear:
      if (step < warmup_) return s / std::max(1.0, w);
      return std::max(0.0, (t - s) / std::max(1.0, t - w));
    case ScheduleKind::Cosine: {
      if (step < warmup_) return s / std::max(1.0, w);
      // HF get_cosine_schedule_with_warmup, num_cycles 0.5: half a cosine from 1 down to 0.
      double progress = (s - w) / std::max(1.0, t - w);
      return std::max(0.0, 0.5 * (1.0 + std::cos(kPi * 0.5 * 2.0 * progress)));
    }
    case ScheduleKind::DsWarmupLR:
    case ScheduleKind::DsWarmupDecayLR: {
      if (step < warmup_) {
        // WarmupLR._get_gamma: log(iteration + 1) / log(warmup_num_steps), or iteration / warmup_num_steps.
        return log_warmup_ ? std::log(s + 1.0) / std::log(w) : s / w;
      }
      if (kind_ == ScheduleKind::DsWarmupLR) return 1.0;
      return std::max(0.0, (t - s) / std::max(1.0, t - w));
    }
  }
  return 1.0;
}

double Schedule::lr(long long step) const { return peak_ * factor(step); }

Schedule make_schedule(const std::string& lr_scheduler_type, double learning_rate, double warmup_steps,
                       double warmup_ratio, const std::string& warmup_type, long long total_steps) {
  ScheduleKind kind = parse_schedule_kind(lr_scheduler_type);
  ZLORA_REQUIRE(warmup_type == "log" || warmup_type == "linear", "warmup_type must be 'log' or 'linear', got '{}'",
                warmup_type);
  long long warmup = hf_warmup_steps(warmup_steps, warmup_ratio, total_steps);
  return Schedule(kind, learning_rate, warmup, total_steps, warmup_type == "log");
}

long long hf_warmup_steps(double warmup_steps, double warmup_ratio, long long total_steps) {
  ZLORA_REQUIRE(std::isfinite(warmup_steps) && warmup_steps >= 0,
                "warmup_steps must be >= 0 (a step count, or a ratio in (0, 1)), got {}", warmup_steps);
  ZLORA_REQUIRE(std::isfinite(warmup_ratio) && warmup_ratio >= 0 && warmup_ratio <= 1,
                "warmup_ratio must be in [0, 1], got {}", warmup_ratio);
  if (warmup_steps >= 1) return (long long)warmup_steps;
  if (warmup_steps > 0) return (long long)std::ceil(double(total_steps) * warmup_steps);
  return (long long)std::ceil(double(total_steps) * warmup_ratio);
}

StepCounts count_steps(long long num_samples, long long per_device_batch, long long grad_accum, long long world_size,
                       double num_train_epochs, long long max_steps) {
  ZLORA_REQUIRE(num_samples > 0, "the training set is empty: no samples to train on");
  ZLORA_REQUIRE(per_device_batch >= 1, "per_device_train_batch_size must be >= 1, got {}", per_device_batch);
  ZLORA_REQUIRE(grad_accum >= 1, "gradient_accumulation_steps must be >= 1, got {}", grad_accum);
  ZLORA_REQUIRE(world_size >= 1, "world size must be >= 1, got {}", world_size);
  StepCounts c;
  c.global_batch = per_device_batch * grad_accum * world_size;
  long long per_loader_batch = per_device_batch * world_size;
  c.len_dataloader = (num_samples + per_loader_batch - 1) / per_loader_batch;
  c.steps_per_epoch = std::max(c.len_dataloader / grad_accum, 1LL);
  if (max_steps > 0) {
    c.total_steps = max_steps;
    c.num_train_epochs = double(max_steps / c.steps_per_epoch + (max_steps % c.steps_per_epoch > 0 ? 1 : 0));
  } else {
    ZLORA_REQUIRE(std::isfinite(num_train_epochs) && num_train_epochs > 0,
                  "num_train_epochs must be > 0 when max_steps is not set, got {}", num_train_epochs);
    c.total_steps = (long long)std::ceil(num_train_epochs * double(c.steps_per_epoch));
    c.num_train_epochs = num_train_epochs;
  }
  return c;
}

long long resolve_interval(double steps_or_ratio, long long total_steps, const char* name) {
  ZLORA_REQUIRE(std::isfinite(steps_or_ratio) && steps_or_ratio > 0,
                "{} must be > 0 (a step count, or a ratio of the total steps in (0, 1)), got {}", name, steps_or_ratio);
  if (steps_or_ratio < 1) return std::max(1LL, (long long)std::ceil(steps_or_ratio * double(total_steps)));
  return (long long)steps_or_ratio;
}

}  // namespace zlora::train
