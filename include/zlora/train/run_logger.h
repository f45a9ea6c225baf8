// Rank 0's bookkeeping for one training run, in one object the loop calls once per optimizer step:
// the metrics window, trainer_log.jsonl, HF's log_history / trainer_state.json, the console line and
// the terminal progress bar, and at the end train_results.json, all_results.json and the loss plot.
// Other ranks do not construct it. No LibTorch.
#pragma once

#include "zlora/train/metrics.h"
#include "zlora/train/tensorboard.h"
#include "zlora/train/trainer_log.h"

#include <filesystem>
#include <memory>
#include <optional>
#include <string>

namespace zlora::train {

struct RunLoggerOptions {
  std::filesystem::path output_dir;
  long long total_steps = 0;
  long long steps_per_epoch = 0;
  long long logging_steps = 500;  // resolved (resolve_interval)
  long long save_steps = 500;     // resolved; 0 = save_strategy "no"
  long long per_device_batch = 1;
  double num_train_epochs = 0;
  int world_size = 1;
  std::optional<double> peak_flops;  // per GPU (peak_flops()); nullopt: no MFU
  bool plot_loss = false;
  bool console = true;  // print a line per log point through the logger
  // report_to tensorboard: event files in this directory (train/loss, train/learning_rate, eval/loss, ...).
  std::optional<std::filesystem::path> tensorboard_dir;
};

// HF's default logging_dir: <output_dir>/runs/<Mon DD_HH-MM-SS>_<hostname> (local time now).
std::filesystem::path default_logging_dir(const std::filesystem::path& output_dir);

class RunLogger {
 public:
  // `resumed`: the checkpoint's trainer_state.json when resuming (log_history continues, the step,
  // tokens and FLOPs carry on, trainer_log.jsonl keeps its lines up to that step and is appended to);
  // nullptr for a fresh run (the log starts over). `resumed_logger_state`: logger_state() as saved in
  // the checkpoint (rank 0's payload), "" if none. `now`: seconds on a monotonic clock.
  RunLogger(RunLoggerOptions options, double now, const TrainerState* resumed = nullptr,
            const std::string& resumed_logger_state = "");

  // After optimizer step `global_step()` + 1 finished. Returns the record when this step was a log point
  // (global_step % logging_steps == 0, as HF's steps strategy).
  std::optional<LogRecord> on_step(const StepStats& stats, double now, std::optional<double> vram_allocated_gib = {},
                                   std::optional<double> vram_reserved_gib = {});
  // After an evaluation of step global_step(): the log_history entry, the jsonl line, the console line.
  void on_eval(const EvalResults& e, double now);
  // The final evaluation (do_eval): eval_results.json, all_results.json and trainer_state.json.
  void write_eval_results(const EvalResults& e);
  bool should_save() const;  // the step just logged is a save step
  long long global_step() const { return metrics_.global_step(); }
  const TrainerState& state() const { return state_; }
  std::string trainer_state_json() const { return state_.dump(); }  // for the checkpoint
  // What HF's trainer_state.json cannot hold (its loader rejects unknown keys): the open logging
  // window. Store it in rank 0's checkpoint payload and pass it back on resume.
  std::string logger_state() const;

  // The end of training (before the final evaluation, as LLaMA-Factory orders them): the final log_history entry and
  // jsonl line, train_results.json, all_results.json, trainer_state.json, and the plot with plot_loss. Returns the
  // results written. run_facts: merged into train_results.json / all_results.json (TrainResults::run_facts).
  TrainResults finish(double now, const nlohmann::json& run_facts = {});

 private:
  RunLoggerOptions opt_;
  MetricsTracker metrics_;
  TrainerState state_;
  TrainerLogFile log_file_;
  ProgressLine progress_;
  std::unique_ptr<TensorBoardWriter> tensorboard_;
  long long run_samples_ = 0;
};

}  // namespace zlora::train
