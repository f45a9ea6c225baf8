// The files a run leaves in output_dir, in the shapes LLaMA-Factory and the HF Trainer write them, so
// tools that read those (LLaMA-Board, plot scripts, HF's TrainerState.load_from_json) read zlora's too:
//   trainer_log.jsonl    one line per log point, appended and flushed as it happens (rank 0)
//   trainer_state.json   HF TrainerState (log_history, global_step, ...), also copied into checkpoints
//   train_results.json   the final train_* metrics; all_results.json merges them with earlier results
// JSON files are replaced atomically (core/fs.h); the jsonl is append-only, one complete line per write.
#pragma once

#include "zlora/train/metrics.h"

#include <nlohmann/json.hpp>

#include <cstdio>
#include <filesystem>
#include <string>

namespace zlora::train {

// LLaMA-Factory's trainer_log.jsonl line: current_steps, total_steps, loss, lr, epoch, percentage,
// elapsed_time, remaining_time, throughput, total_tokens; plus zlora's grad_norm, tokens_per_second,
// samples_per_second, mfu (when known) and vram_allocated / vram_reserved (GiB, when measured).
nlohmann::json log_line(const LogRecord& r);

// HF's log_history entry: {"epoch", "grad_norm", "learning_rate", "loss", "step", "num_input_tokens_seen"}.
nlohmann::json log_history_entry(const LogRecord& r);

// Appends lines to output_dir/trainer_log.jsonl. fresh = true truncates an old file (a new run);
// false appends (a resumed run continues its log).
class TrainerLogFile {
 public:
  TrainerLogFile(const std::filesystem::path& output_dir, bool fresh);
  ~TrainerLogFile();
  TrainerLogFile(const TrainerLogFile&) = delete;
  TrainerLogFile& operator=(const TrainerLogFile&) = delete;
  void append(const nlohmann::json& line);  // one line, flushed
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
  std::FILE* file_ = nullptr;
};

// HF TrainerState, the fields zlora fills; to_json() gives HF's file (sorted keys, indent 2).
struct TrainerState {
  nlohmann::json log_history = nlohmann::json::array();
  long long global_step = 0;
  long long max_steps = 0;
  double epoch = 0;
  long long num_train_epochs = 0;  // HF stores ceil(num_train_epochs)
  long long logging_steps = 500;
  long long save_steps = 500;
  long long eval_steps = 500;
  long long train_batch_size = 0;  // per device, as HF
  double total_flos = 0;
  long long num_input_tokens_seen = 0;

  nlohmann::json to_json() const;
  std::string dump() const;                                // the file's text
  static TrainerState from_json(const nlohmann::json& j);  // a resumed run's state; throws zlora::Error
  void write(const std::filesystem::path& path) const;     // atomic
  static TrainerState read(const std::filesystem::path& path);
};

// HF's final metrics (Trainer.train's speed_metrics + train_loss + total_flos + epoch).
struct TrainResults {
  double train_runtime = 0;   // seconds
  long long num_samples = 0;  // samples processed by this run (HF: steps * global batch)
  long long num_steps = 0;    // optimizer steps of this run
  double train_loss = 0;
  double total_flos = 0;
  double epoch = 0;
  // zlora's additions, merged in as they are (train_tokens_per_second, comm_bytes_per_step and its
  // model, peak memory, world size, nodes): what a scaling table reads.
  nlohmann::json run_facts;
  nlohmann::json to_json() const;  // with HF's rounding (runtime 4 digits, rates 3)
};

// One evaluation: HF's evaluate() metrics. zlora's eval_loss is token-weighted over every rank (the sum of
// the targets' cross-entropies over their count), not HF's mean of per-batch means.
struct EvalResults {
  double eval_loss = 0;
  double eval_runtime = 0;    // seconds
  long long num_samples = 0;  // evaluated samples, all ranks
  long long num_steps = 0;    // forward passes per rank (HF's eval steps)
  long long loss_tokens = 0;  // targets counted in eval_loss
  double epoch = 0;
  long long step = 0;  // the optimizer step it evaluated
  nlohmann::json to_json()
      const;  // {"epoch","eval_loss","eval_runtime","eval_samples_per_second","eval_steps_per_second"}
};

// HF's log_history entry of an evaluation (to_json() + "step"), and LLaMA-Factory's trainer_log.jsonl
// line for it (current_steps, total_steps, eval_loss, epoch, percentage, elapsed_time, remaining_time).
nlohmann::json eval_history_entry(const EvalResults& e);
nlohmann::json eval_log_line(const EvalResults& e, long long total_steps, double elapsed_s, double remaining_s);

// Writes eval_results.json and merges it into all_results.json (HF's save_metrics("eval", combined)).
void write_eval_results(const std::filesystem::path& output_dir, const EvalResults& results);

// Writes train_results.json and merges into all_results.json (both atomic, indent 4, sorted keys as HF).
void write_train_results(const std::filesystem::path& output_dir, const TrainResults& results);

// The console line for a log point (rank 0 prints it through the logger).
std::string format_log_line(const LogRecord& r);

// A one-line progress display, redrawn in place with '\r', only when stdout is a terminal; otherwise
// every call is a no-op (logs under Slurm stay clean).
class ProgressLine {
 public:
  ProgressLine();
  ~ProgressLine();
  ProgressLine(const ProgressLine&) = delete;
  ProgressLine& operator=(const ProgressLine&) = delete;
  bool enabled() const { return enabled_; }
  void update(long long step, long long total, double loss, double elapsed_s, double remaining_s);
  void finish();  // ends the line
  void clear();   // erases the bar so that a log line can be printed in its place

 private:
  bool enabled_ = false;
  bool dirty_ = false;
};

}  // namespace zlora::train
