#include "zlora/train/run_logger.h"

#include "zlora/core/error.h"
#include "zlora/core/fs.h"
#include "zlora/core/log.h"
#include "zlora/train/plot.h"

#include <nlohmann/json.hpp>

#include <unistd.h>
#include <algorithm>

#include <chrono>
#include <cmath>
#include <ctime>

namespace zlora::train {

namespace {

// A resumed run continues the log of the checkpoint it resumes from: lines written after that step by
// the interrupted run (work that is redone now) are dropped, so the log and the plot show each step
// once. Returns whether the log starts fresh.
bool prepare_log(const std::filesystem::path& output_dir, const TrainerState* resumed) {
  if (!resumed) return true;
  auto path = output_dir / "trainer_log.jsonl";
  if (!std::filesystem::exists(path)) return false;
  std::string text = fs::read_file(path), kept;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string::npos) break;  // an unterminated line from a killed writer
    std::string line = text.substr(pos, end - pos);
    pos = end + 1;
    auto j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_object() && j.contains("current_steps") && j["current_steps"].is_number() &&
        j["current_steps"].get<long long>() <= resumed->global_step)
      kept += line + "\n";
  }
  if (kept != text) fs::write_file_atomic(path, kept);
  return false;
}

double wall_time() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

}  // namespace

std::filesystem::path default_logging_dir(const std::filesystem::path& output_dir) {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  localtime_r(&t, &tm);
  char stamp[64];
  std::strftime(stamp, sizeof(stamp), "%b%d_%H-%M-%S", &tm);  // HF: datetime.now().strftime("%b%d_%H-%M-%S")
  char host[256] = "localhost";
  ::gethostname(host, sizeof(host) - 1);
  return output_dir / "runs" / (std::string(stamp) + "_" + host);
}

RunLogger::RunLogger(RunLoggerOptions options, double now, const TrainerState* resumed,
                     const std::string& resumed_logger_state)
    : opt_(std::move(options)),
      metrics_(opt_.total_steps, opt_.steps_per_epoch, opt_.world_size, opt_.peak_flops, now,
               resumed ? resumed->global_step : 0, resumed ? resumed->num_input_tokens_seen : 0),
      log_file_(opt_.output_dir, prepare_log(opt_.output_dir, resumed)) {
  ZLORA_REQUIRE(opt_.logging_steps >= 1, "logging_steps must be >= 1 once resolved, got {}", opt_.logging_steps);
  ZLORA_REQUIRE(opt_.save_steps >= 0, "save_steps must be >= 0 once resolved, got {}", opt_.save_steps);
  if (resumed) {
    ZLORA_REQUIRE(resumed->global_step <= opt_.total_steps,
                  "the checkpoint is at step {} but this run has only {} steps; raise max_steps or "
                  "num_train_epochs to continue it",
                  resumed->global_step, opt_.total_steps);
    state_ = *resumed;
    if (!resumed_logger_state.empty()) {
      auto j = nlohmann::json::parse(resumed_logger_state, nullptr, false);
      ZLORA_REQUIRE(j.is_object() && j.contains("window_loss_sum") && j.contains("window_loss_steps"),
                    "checkpoint logger state is malformed: '{}'", resumed_logger_state.substr(0, 80));
      metrics_.restore_loss_window(j["window_loss_sum"].get<double>(), j["window_loss_steps"].get<long long>());
    }
  }
  state_.max_steps = opt_.total_steps;
  state_.num_train_epochs = (long long)std::ceil(opt_.num_train_epochs);
  state_.logging_steps = opt_.logging_steps;
  state_.save_steps = opt_.save_steps;
  state_.train_batch_size = opt_.per_device_batch;
  state_.global_step = metrics_.global_step();
  state_.epoch = double(state_.global_step) / double(opt_.steps_per_epoch);
  if (opt_.tensorboard_dir) {
    tensorboard_ = std::make_unique<TensorBoardWriter>(*opt_.tensorboard_dir, wall_time());
    log::info("TensorBoard: {}", tensorboard_->path().string());
  }
}

std::optional<LogRecord> RunLogger::on_step(const StepStats& stats, double now, std::optional<double> vram_allocated,
                                            std::optional<double> vram_reserved) {
  metrics_.add_step(stats, now);
  run_samples_ += stats.samples;
  state_.global_step = metrics_.global_step();
  state_.epoch = double(state_.global_step) / double(opt_.steps_per_epoch);
  state_.total_flos = metrics_.total_flos();
  state_.num_input_tokens_seen = metrics_.tokens_seen();
  if (state_.global_step % opt_.logging_steps != 0) {
    progress_.update(
        state_.global_step, opt_.total_steps, stats.loss, metrics_.elapsed(now),
        metrics_.elapsed(now) / double(metrics_.run_steps()) * double(opt_.total_steps - state_.global_step));
    return std::nullopt;
  }
  LogRecord r = metrics_.take_record(now);
  r.vram_allocated_gib = vram_allocated;
  r.vram_reserved_gib = vram_reserved;
  log_file_.append(log_line(r));
  state_.log_history.push_back(log_history_entry(r));
  if (tensorboard_) {
    // HF's TensorBoardCallback tags (rewrite_logs: "train/" + key), plus zlora's throughput.
    const double wt = wall_time();
    tensorboard_->scalar("train/loss", r.loss, r.current_steps, wt);
    tensorboard_->scalar("train/learning_rate", r.lr, r.current_steps, wt);
    tensorboard_->scalar("train/grad_norm", r.grad_norm, r.current_steps, wt);
    tensorboard_->scalar("train/epoch", r.epoch, r.current_steps, wt);
    tensorboard_->scalar("train/tokens_per_second", r.tokens_per_s, r.current_steps, wt);
    if (r.mfu) tensorboard_->scalar("train/mfu", *r.mfu, r.current_steps, wt);
    tensorboard_->flush();
  }
  progress_.clear();
  if (opt_.console) log::info("{}", format_log_line(r));
  progress_.update(r.current_steps, r.total_steps, r.loss, r.elapsed_s, r.remaining_s);
  return r;
}

void RunLogger::on_eval(const EvalResults& e, double now) {
  const double elapsed = metrics_.elapsed(now);
  const long long run_steps = std::max<long long>(metrics_.run_steps(), 1);
  const double remaining = elapsed / double(run_steps) * double(opt_.total_steps - state_.global_step);
  log_file_.append(eval_log_line(e, opt_.total_steps, elapsed, remaining));
  state_.log_history.push_back(eval_history_entry(e));
  if (tensorboard_) {
    const double wt = wall_time();  // HF: eval_loss -> eval/loss, eval_runtime -> eval/runtime, ...
    tensorboard_->scalar("eval/loss", e.eval_loss, e.step, wt);
    tensorboard_->scalar("eval/runtime", e.eval_runtime, e.step, wt);
    tensorboard_->flush();
  }
  progress_.clear();
  if (opt_.console)
    log::info("eval at step {}: eval_loss {:.4f} over {} samples ({} loss tokens) in {:.2f} s", e.step, e.eval_loss,
              e.num_samples, e.loss_tokens, e.eval_runtime);
}

void RunLogger::write_eval_results(const EvalResults& e) {
  train::write_eval_results(opt_.output_dir, e);
  state_.write(opt_.output_dir / "trainer_state.json");
}

std::string RunLogger::logger_state() const {
  return nlohmann::json{{"window_loss_sum", metrics_.window_loss_sum()},
                        {"window_loss_steps", metrics_.window_loss_steps()}}
      .dump();
}

bool RunLogger::should_save() const {
  return opt_.save_steps > 0 && state_.global_step > 0 && state_.global_step % opt_.save_steps == 0;
}

TrainResults RunLogger::finish(double now, const nlohmann::json& run_facts) {
  progress_.finish();
  TrainResults res;
  res.train_runtime = metrics_.elapsed(now);
  res.num_samples = run_samples_;
  res.num_steps = metrics_.run_steps();
  res.train_loss = metrics_.mean_loss();
  res.total_flos = metrics_.total_flos();
  res.epoch = state_.epoch;
  res.run_facts = run_facts;
  if (res.train_runtime > 0)
    res.run_facts["train_tokens_per_second"] =
        std::round(double(metrics_.run_tokens()) / res.train_runtime * 100) / 100;
  if (res.num_steps > 0)
    res.run_facts["comm_bytes_per_step"] = std::round(metrics_.run_comm_bytes() / double(res.num_steps));
  nlohmann::json summary = res.to_json();
  summary["step"] = state_.global_step;
  state_.log_history.push_back(summary);
  // LLaMA-Factory's LogCallback writes a line for the final on_log too; it has no "loss".
  LogRecord last = metrics_.take_record(now);
  nlohmann::json line = log_line(last);
  line.erase("loss");
  line.erase("grad_norm");
  line.erase("tokens_per_second");
  line.erase("samples_per_second");
  line.erase("mfu");
  line.erase("comm_bytes_per_step");
  log_file_.append(line);
  write_train_results(opt_.output_dir, res);
  state_.write(opt_.output_dir / "trainer_state.json");
  if (opt_.plot_loss) {
    // LLaMA-Factory plots keys ["loss", "eval_loss"], one figure each (training_<key>.png).
    for (const char* key : {"loss", "eval_loss"}) {
      try {
        PlotFiles files = plot_loss(opt_.output_dir, "", key);
        log::info("Figure saved at: {}", files.svg.string());
        if (!files.png.empty()) log::info("Figure saved at: {}", files.png.string());
      } catch (const Error& e) {
        // As LLaMA-Factory's "No metric loss to plot.": a run too short to log is not an error, and a run
        // without evaluation has no eval_loss.
        if (std::string(key) == "loss") log::warn("loss plot skipped: {}", e.what());
      }
    }
  }
  return res;
}

}  // namespace zlora::train
