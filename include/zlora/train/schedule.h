// Learning-rate schedules and HF Trainer step counting. Pure arithmetic, no LibTorch: every formula here
// is transformers.optimization's / DeepSpeed's, so a zlora run's lr curve matches the one it replaces.
#pragma once

#include <string>

namespace zlora::train {

enum class ScheduleKind { Linear, Cosine, Constant, ConstantWithWarmup, DsWarmupLR, DsWarmupDecayLR };

// "linear", "cosine", "constant", "constant_with_warmup", "ds_warmup_lr", "ds_warmup_decay_lr".
ScheduleKind parse_schedule_kind(const std::string& name);

// lr(step) for optimizer step `step` (0-based: the first update uses lr(0)). HF's LambdaLR starts at
// lambda(0) and advances after each update; DeepSpeed's schedulers also run their first update at
// iteration 0. So with warmup the first update has lr 0 in both.
class Schedule {
 public:
  // warmup_steps: from hf_warmup_steps() (HF schedules) or the DeepSpeed warmup_num_steps (ds_*, where
  // values below 2 become 2 as in DeepSpeed). total_steps: the run's optimizer steps (DeepSpeed's
  // total_num_steps). log_warmup: DeepSpeed's warmup_type "log" (true) or "linear".
  Schedule(ScheduleKind kind, double peak_lr, long long warmup_steps, long long total_steps, bool log_warmup = true);
  double lr(long long step) const;
  double factor(long long step) const;  // lr(step) / peak_lr
  ScheduleKind kind() const { return kind_; }
  long long warmup_steps() const { return warmup_; }
  long long total_steps() const { return total_; }

 private:
  ScheduleKind kind_;
  double peak_;
  long long warmup_;
  long long total_;
  bool log_warmup_;
};

// Builds the schedule the config asks for: lr_scheduler_type, learning_rate, warmup_steps/warmup_ratio,
// warmup_type ("log" | "linear").
Schedule make_schedule(const std::string& lr_scheduler_type, double learning_rate, double warmup_steps,
                       double warmup_ratio, const std::string& warmup_type, long long total_steps);

// HF TrainingArguments.get_warmup_steps: warmup_steps if >= 1; in (0, 1) a ratio of the total
// (transformers v5); else ceil(total * warmup_ratio).
long long hf_warmup_steps(double warmup_steps, double warmup_ratio, long long total_steps);

// HF Trainer's step counting (Trainer.set_initial_training_values).
struct StepCounts {
  long long len_dataloader = 0;   // ceil(num_samples / (per_device * world)): micro-batches per rank per epoch
  long long steps_per_epoch = 0;  // max(len_dataloader / accum, 1): num_update_steps_per_epoch
  long long total_steps = 0;      // max_steps if > 0, else ceil(num_train_epochs * steps_per_epoch)
  double num_train_epochs = 0;    // ceil(max_steps / steps_per_epoch) with max_steps, else as given
  long long global_batch = 0;     // per_device * accum * world: samples per optimizer step
};
StepCounts count_steps(long long num_samples, long long per_device_batch, long long grad_accum, long long world_size,
                       double num_train_epochs, long long max_steps);

// logging_steps / save_steps: >= 1 is a step count (truncated like HF's int cast of a whole float);
// in (0, 1) a ratio of the total steps, ceil(ratio * total) as HF does. `name` is used in errors.
long long resolve_interval(double steps_or_ratio, long long total_steps, const char* name);

}  // namespace zlora::train
