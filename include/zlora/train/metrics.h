// Training metrics: model FLOPs, peak-FLOPs table, throughput, ETA, and the per-window averages that
// become one log record. No LibTorch: the trainer feeds plain numbers.
//
// FLOPs convention (docs/training.md derives it): a sample of n tokens costs
//   n * (4 * frozen_linear_params + 6 * lora_params) + 6 * layers * attn_width * n^2
// 4N for frozen linear weights (forward GEMM + input-gradient GEMM; no weight gradient), 6N for LoRA
// (forward, input gradient, weight gradient), and causal attention (QK^T and PV, forward + backward, half
// the positions masked). Recomputation by gradient checkpointing is not counted (model FLOPs, not hardware).
#pragma once

#include <optional>
#include <string>

namespace zlora::train {

struct FlopsModel {
  long long frozen_linear_params = 0;  // every frozen GEMM weight, lm_head included; embeddings excluded
  long long lora_params = 0;           // trainable LoRA A and B elements
  long long num_layers = 0;
  long long attn_width = 0;  // num_attention_heads * head_dim (the width of Q, not of the GQA K/V)
  // Forward + backward model FLOPs of one sample of n tokens.
  double sample_flops(long long n) const;
};

// Dense bf16/fp16 tensor-core peak of one GPU in FLOP/s from its name (as CUDA reports it, e.g.
// "NVIDIA H100 80GB HBM3"); fp32 training is measured against TF32 (half the bf16 peak on these parts).
// nullopt for an unknown GPU or the CPU: MFU is then not reported rather than guessed.
std::optional<double> peak_flops(const std::string& device_name, bool half_precision);

// Python's str(timedelta(seconds=int(s))): "0:01:05", "1 day, 2:03:04" (LLaMA-Factory's time fields).
std::string format_duration(double seconds);

// One optimizer step, as the trainer measured it (global values: summed over ranks).
struct StepStats {
  double loss = 0;       // the step's mean loss over its global loss tokens
  double lr = 0;         // lr logged for this step (HF logs the scheduler's lr after its step())
  double grad_norm = 0;  // global, before clipping
  long long tokens = 0;  // global tokens of the step
  long long samples = 0;
  double flops = 0;       // global model FLOPs of the step (FlopsModel::sample_flops summed)
  double comm_bytes = 0;  // bytes this rank's communicator sent in the step (dist/traffic.h's convention)
};

// What a log point reports; the fields of trainer_log.jsonl / log_history / the console line.
struct LogRecord {
  long long current_steps = 0;
  long long total_steps = 0;
  double loss = 0;  // mean of the window's step losses (HF: tr_loss / steps since the last log)
  double lr = 0;
  double grad_norm = 0;  // the last step's
  double epoch = 0;      // global_step / steps_per_epoch
  double percentage = 0;
  double elapsed_s = 0;
  double remaining_s = 0;
  double throughput = 0;           // tokens/s over this process's run (LLaMA-Factory: input tokens seen / elapsed)
  double samples_per_s = 0;        // over the window
  double tokens_per_s = 0;         // over the window
  std::optional<double> mfu;       // over the window, 0..1; unset on unknown GPUs and the CPU
  long long total_tokens = 0;      // tokens seen since step 0 (resumes included)
  double comm_bytes_per_step = 0;  // mean over the window of StepStats::comm_bytes
  std::optional<double> vram_allocated_gib;
  std::optional<double> vram_reserved_gib;
};

// Accumulates steps between log points. Times are seconds on any monotonic clock.
class MetricsTracker {
 public:
  // start_step / tokens_seen: where a resumed run starts; peak: per-GPU FLOP/s (peak_flops), world_size
  // GPUs share the work.
  MetricsTracker(long long total_steps, long long steps_per_epoch, int world_size, std::optional<double> peak,
                 double start_time, long long start_step = 0, long long tokens_seen = 0);

  void add_step(const StepStats& s, double now);
  long long global_step() const { return step_; }
  long long tokens_seen() const { return tokens_seen_; }
  double total_flos() const { return total_flos_; }
  bool window_empty() const { return window_steps_ == 0; }
  // The record for the steps since the last call, then starts a new window.
  LogRecord take_record(double now);
  // Mean loss over all steps of this process's run (HF's train_loss).
  double mean_loss() const { return run_steps_ ? run_loss_sum_ / double(run_steps_) : 0.0; }
  long long run_steps() const { return run_steps_; }
  long long run_tokens() const { return run_tokens_; }
  double run_comm_bytes() const { return run_comm_bytes_; }  // StepStats::comm_bytes summed over the run
  double elapsed(double now) const { return now - start_time_; }
  // The loss part of the open window (sum of step losses, steps), so that a checkpoint taken between log
  // points resumes with the same logged mean as an uninterrupted run.
  double window_loss_sum() const { return window_loss_; }
  long long window_loss_steps() const { return window_loss_steps_; }
  void restore_loss_window(double loss_sum, long long steps);

 private:
  long long total_steps_, steps_per_epoch_;
  int world_size_;
  std::optional<double> peak_;
  double start_time_;
  long long start_step_, step_;
  long long tokens_seen_, run_tokens_ = 0;
  double total_flos_ = 0;
  double run_loss_sum_ = 0;
  long long run_steps_ = 0;
  // window since the last record
  double window_start_, window_loss_ = 0, window_flops_ = 0, window_comm_bytes_ = 0, run_comm_bytes_ = 0;
  long long window_steps_ = 0, window_tokens_ = 0, window_samples_ = 0, window_loss_steps_ = 0;
  double last_lr_ = 0, last_grad_norm_ = 0;
};

}  // namespace zlora::train
