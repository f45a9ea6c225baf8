#include "zlora/train/trainer_log.h"

#include "zlora/core/error.h"
#include "zlora/core/fs.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>

namespace zlora::train {

using nlohmann::json;

namespace {
double round_to(double x, int digits) {
  double scale = std::pow(10.0, digits);
  return std::round(x * scale) / scale;
}
}  // namespace

json log_line(const LogRecord& r) {
  json j;
  j["current_steps"] = r.current_steps;
  j["total_steps"] = r.total_steps;
  j["loss"] = round_to(r.loss, 4);
  j["lr"] = r.lr;
  j["epoch"] = round_to(r.epoch, 2);
  j["percentage"] = round_to(r.percentage, 2);
  j["elapsed_time"] = format_duration(r.elapsed_s);
  j["remaining_time"] = format_duration(r.remaining_s);
  j["throughput"] = round_to(r.throughput, 2);
  j["total_tokens"] = r.total_tokens;
  j["grad_norm"] = r.grad_norm;
  j["tokens_per_second"] = round_to(r.tokens_per_s, 2);
  j["samples_per_second"] = round_to(r.samples_per_s, 3);
  if (r.mfu) j["mfu"] = round_to(*r.mfu, 4);
  j["comm_bytes_per_step"] = std::round(r.comm_bytes_per_step);
  if (r.vram_allocated_gib) j["vram_allocated"] = round_to(*r.vram_allocated_gib, 2);
  if (r.vram_reserved_gib) j["vram_reserved"] = round_to(*r.vram_reserved_gib, 2);
  return j;
}

json log_history_entry(const LogRecord& r) {
  return json{{"epoch", r.epoch},        {"grad_norm", r.grad_norm},
              {"learning_rate", r.lr},   {"loss", round_to(r.loss, 4)},
              {"step", r.current_steps}, {"num_input_tokens_seen", r.total_tokens}};
}

TrainerLogFile::TrainerLogFile(const std::filesystem::path& output_dir, bool fresh)
    : path_(output_dir / "trainer_log.jsonl") {
  // fopen would follow a symlink planted at the log's name and truncate or append to its target; open
  // it ourselves with O_NOFOLLOW (ELOOP when the name is a symlink), then wrap the descriptor.
  const int flags = O_WRONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC | (fresh ? O_TRUNC : O_APPEND);
  const int fd = ::open(path_.c_str(), flags, 0644);
  if (fd < 0) {
    const int err = errno;
    if (err == ELOOP)
      fail("cannot open '{}' for the training log: it is a symbolic link, which zlora does not follow; remove it",
           path_.string());
    fail("cannot open '{}' for the training log: {}", path_.string(), fs::errno_message(err));
  }
  file_ = ::fdopen(fd, fresh ? "w" : "a");
  if (!file_) {
    const int err = errno;
    ::close(fd);
    fail("cannot open '{}' for the training log: {}", path_.string(), fs::errno_message(err));
  }
}

TrainerLogFile::~TrainerLogFile() {
  if (file_) std::fclose(file_);
}

void TrainerLogFile::append(const json& line) {
  // One write per line, then flush: a reader (LLaMA-Board, tail -f, `zlora plot`) never sees half a line
  // from a live run, and a killed run loses at most the line being written.
  std::string text = line.dump() + "\n";
  if (std::fwrite(text.data(), 1, text.size(), file_) != text.size() || std::fflush(file_) != 0)
    fail("cannot write '{}': {}", path_.string(), std::strerror(errno));
}

json TrainerState::to_json() const {
  json j;
  j["best_global_step"] = nullptr;
  j["best_metric"] = nullptr;
  j["best_model_checkpoint"] = nullptr;
  j["epoch"] = epoch;
  j["eval_steps"] = eval_steps;
  j["global_step"] = global_step;
  j["is_hyper_param_search"] = false;
  j["is_local_process_zero"] = true;
  j["is_world_process_zero"] = true;
  j["log_history"] = log_history;
  j["logging_steps"] = logging_steps;
  j["max_steps"] = max_steps;
  j["num_input_tokens_seen"] = num_input_tokens_seen;
  j["num_train_epochs"] = num_train_epochs;
  j["save_steps"] = save_steps;
  j["stateful_callbacks"] =
      json{{"TrainerControl", json{{"args", json{{"should_epoch_stop", false},
                                                 {"should_evaluate", false},
                                                 {"should_log", false},
                                                 {"should_save", true},
                                                 {"should_training_stop", global_step >= max_steps}}},
                                   {"attributes", json::object()}}}};
  j["total_flos"] = total_flos;
  j["train_batch_size"] = train_batch_size;
  j["trial_name"] = nullptr;
  j["trial_params"] = nullptr;
  return j;
}

std::string TrainerState::dump() const { return to_json().dump(2) + "\n"; }

TrainerState TrainerState::from_json(const json& j) {
  TrainerState s;
  try {
    s.log_history = j.at("log_history");
    s.global_step = j.at("global_step").get<long long>();
    s.max_steps = j.at("max_steps").get<long long>();
    s.epoch = j.value("epoch", 0.0);
    s.num_train_epochs = j.value("num_train_epochs", 0LL);
    s.logging_steps = j.value("logging_steps", 500LL);
    s.save_steps = j.value("save_steps", 500LL);
    s.eval_steps = j.value("eval_steps", 500LL);
    s.train_batch_size = j.value("train_batch_size", 0LL);
    s.total_flos = j.value("total_flos", 0.0);
    s.num_input_tokens_seen = j.value("num_input_tokens_seen", 0LL);
  } catch (const json::exception& e) {
    fail("trainer state is not HF TrainerState JSON: {}", e.what());
  }
  ZLORA_REQUIRE(s.log_history.is_array(), "trainer state: log_history is not a list");
  return s;
}

void TrainerState::write(const std::filesystem::path& path) const { fs::write_file_atomic(path, dump()); }

TrainerState TrainerState::read(const std::filesystem::path& path) {
  std::string text = fs::read_file(path);
  json j = json::parse(text, nullptr, false);
  ZLORA_REQUIRE(!j.is_discarded(), "'{}' is not valid JSON", path.string());
  try {
    return from_json(j);
  } catch (const Error& e) {
    fail("'{}': {}", path.string(), e.what());
  }
}

json TrainResults::to_json() const {
  double runtime = round_to(train_runtime, 4);
  json j;
  j["epoch"] = epoch;
  j["total_flos"] = total_flos;
  j["train_loss"] = train_loss;
  j["train_runtime"] = runtime;
  j["train_samples_per_second"] = runtime > 0 ? round_to(double(num_samples) / runtime, 3) : 0.0;
  j["train_steps_per_second"] = runtime > 0 ? round_to(double(num_steps) / runtime, 3) : 0.0;
  if (!run_facts.is_null()) j.update(run_facts);
  return j;
}

json EvalResults::to_json() const {
  json j;
  j["epoch"] = epoch;
  j["eval_loss"] = eval_loss;
  j["eval_runtime"] = round_to(eval_runtime, 4);
  j["eval_samples_per_second"] = eval_runtime > 0 ? round_to(double(num_samples) / eval_runtime, 3) : 0.0;
  j["eval_steps_per_second"] = eval_runtime > 0 ? round_to(double(num_steps) / eval_runtime, 3) : 0.0;
  return j;
}

json eval_history_entry(const EvalResults& e) {
  json j = e.to_json();
  j["step"] = e.step;
  return j;
}

json eval_log_line(const EvalResults& e, long long total_steps, double elapsed_s, double remaining_s) {
  json j;
  j["current_steps"] = e.step;
  j["total_steps"] = total_steps;
  j["eval_loss"] = round_to(e.eval_loss, 4);
  j["epoch"] = round_to(e.epoch, 2);
  j["percentage"] = total_steps > 0 ? round_to(100.0 * double(e.step) / double(total_steps), 2) : 100.0;
  j["elapsed_time"] = format_duration(elapsed_s);
  j["remaining_time"] = format_duration(remaining_s);
  return j;
}

namespace {
// HF's save_metrics(combined=True): all_results.json accumulates every split's metrics.
void merge_all_results(const std::filesystem::path& output_dir, const json& metrics) {
  json all = json::object();
  auto all_path = output_dir / "all_results.json";
  if (std::filesystem::exists(all_path)) {
    json old = json::parse(fs::read_file(all_path), nullptr, false);
    if (old.is_object()) all = old;
  }
  all.update(metrics);
  fs::write_file_atomic(all_path, all.dump(4) + "\n");
}
}  // namespace

void write_eval_results(const std::filesystem::path& output_dir, const EvalResults& results) {
  const json metrics = results.to_json();
  fs::write_file_atomic(output_dir / "eval_results.json", metrics.dump(4) + "\n");
  merge_all_results(output_dir, metrics);
}

void write_train_results(const std::filesystem::path& output_dir, const TrainResults& results) {
  json metrics = results.to_json();
  fs::write_file_atomic(output_dir / "train_results.json", metrics.dump(4) + "\n");
  merge_all_results(output_dir, metrics);
}

std::string format_log_line(const LogRecord& r) {
  std::string s = fmt::format("step {}/{} ({:.2f}%) | loss {:.4f} | lr {:.3e} | grad_norm {:.4f} | epoch {:.2f}",
                              r.current_steps, r.total_steps, r.percentage, r.loss, r.lr, r.grad_norm, r.epoch);
  s += fmt::format(" | {:.0f} tok/s | {:.2f} samples/s", r.tokens_per_s, r.samples_per_s);
  if (r.mfu) s += fmt::format(" | MFU {:.1f}%", *r.mfu * 100.0);
  if (r.vram_allocated_gib) s += fmt::format(" | mem {:.1f} GiB", *r.vram_allocated_gib);
  s += fmt::format(" | elapsed {} | ETA {}", format_duration(r.elapsed_s), format_duration(r.remaining_s));
  return s;
}

ProgressLine::ProgressLine() : enabled_(::isatty(STDOUT_FILENO) == 1) {}

ProgressLine::~ProgressLine() { finish(); }

void ProgressLine::update(long long step, long long total, double loss, double elapsed_s, double remaining_s) {
  if (!enabled_) return;
  const int width = 30;
  int filled = total > 0 ? int(double(width) * double(step) / double(total)) : 0;
  filled = std::max(0, std::min(width, filled));
  std::string bar(size_t(filled), '#');
  bar.append(size_t(width - filled), '.');
  std::string line = fmt::format("\r[{}] {}/{} loss {:.4f} [{}<{}]\x1b[K", bar, step, total, loss,
                                 format_duration(elapsed_s), format_duration(remaining_s));
  std::fwrite(line.data(), 1, line.size(), stdout);
  std::fflush(stdout);
  dirty_ = true;
}

void ProgressLine::clear() {
  if (!enabled_ || !dirty_) return;
  std::fputs("\r\x1b[K", stdout);
  std::fflush(stdout);
  dirty_ = false;
}

void ProgressLine::finish() {
  if (!enabled_ || !dirty_) return;
  std::fputc('\n', stdout);
  std::fflush(stdout);
  dirty_ = false;
}

}  // namespace zlora::train
