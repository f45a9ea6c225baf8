// Preemption end to end through the zlora binary: `zlora train` under `mpiexec -n 2` (ZeRO-2, the tiny
// random Qwen2-shaped model of test_fault_injection, 6 steps, no periodic checkpoints), one rank sent
// SIGUSR1 (Slurm's --signal=USR1@T) or SIGTERM mid-run. Checks that both ranks agree on the step, one
// checkpoint is written at the next step boundary, mpiexec exits with 75 (ckpt::kExitPreempted), `latest`
// names it, and `--resume_from_checkpoint latest` ends with the uninterrupted run's adapter, bit for bit.
// Then jobs/mpirun_example.sh: its decision logic (jobs/resume_args.sh) in the shell, and the script
// itself relaunching a preempted run on its own, and starting over when restarted without a checkpoint.
#include "train_e2e_util.h"
#include "zlora/ckpt/checkpoint.h"
#include "zlora/ckpt/preempt.h"

#include <signal.h>

#include <cstring>
#include <fstream>
#include <map>
#include <string>
#include <vector>

namespace {

namespace stdfs = std::filesystem;
using zlora::test::Clock;
using zlora::test::contains;
using zlora::test::count_occurrences;
using zlora::test::Job;
using zlora::test::last_logged_step;
using zlora::test::rank_pids;
using zlora::test::read_adapter_bytes;
using zlora::test::seconds_since;

constexpr int kMaxSteps = 6;
const std::string kStage2 = "--zero_stage 2";
constexpr double kJobLimitS = 60;
// One thread per rank: the same reductions in every run, on a 2-core machine.
const std::vector<std::string> kOneThread = {"OMP_NUM_THREADS=1"};

// A job's exit code, or -1 after killing a job that did not end within kJobLimitS.
int wait_exit_code(Job& job) { return job.wait(kJobLimitS).exit_code; }

bool wait_for(Job& job, const std::function<bool()>& cond) {
  return zlora::test::wait_for(job, kJobLimitS, cond, 0.005);
}

class Preemption : public ::testing::Test {
 public:
  static void SetUpTestSuite() {
    dir_ = new zlora::test::TempDir();
    ASSERT_NO_FATAL_FAILURE(zlora::test::prepare_tiny_model_and_tokens(dir_->path(), 32, 40));
    const stdfs::path ref = *dir_ / "ref";
    Job job(train_cmd(ref, ""), *dir_ / "ref.log", kOneThread);
    const auto t0 = Clock::now();
    ASSERT_EQ(wait_exit_code(job), 0) << job.output();
    ref_adapter_ = new std::string(read_adapter_bytes(ref));
    ASSERT_GT(ref_adapter_->size(), 1000u);
    std::printf("[preempt] uninterrupted run: %.1f s\n", seconds_since(t0));
  }
  static void TearDownTestSuite() {
    delete ref_adapter_;
    delete dir_;
  }

  // The flags of every run here except the output_dir (the jobs/ script test passes them itself).
  static std::string train_flags(const std::string& stage = kStage2) {
    return zlora::test::tiny_train_flags(dir_->path(), 1, 1, 1) + " " + stage +
           " --ddp_timeout 30 --save_steps 1000 --max_steps " + std::to_string(kMaxSteps);
  }
  static std::string train_cmd(const stdfs::path& out, const std::string& extra, const std::string& stage = kStage2) {
    return "exec " + zlora::test::mpiexec_zlora(2) + " train " + train_flags(stage) + " --output_dir " + out.string() +
           " " + extra;
  }
  // The uninterrupted run's adapter for `flags` (a full `train` command line after `mpiexec -n 2 zlora
  // train`, less the output_dir), run once and kept for the other cases.
  static const std::string& reference(const std::string& flags) {
    static std::map<std::string, std::string> refs;
    auto it = refs.find(flags);
    if (it != refs.end()) return it->second;
    const stdfs::path out = *dir_ / ("ref" + std::to_string(refs.size() + 1));
    Job job("exec " + zlora::test::mpiexec_zlora(2) + " train " + flags + " --output_dir " + out.string(),
            out.string() + ".log", kOneThread);
    EXPECT_EQ(wait_exit_code(job), 0) << job.output();
    return refs[flags] = read_adapter_bytes(out);
  }

  // Starts a run, sends `sig` to rank `victim` once step 2 is logged, and checks what it leaves.
  static void preempt_and_resume(const std::string& tag, int sig, int victim, const std::string& stage = kStage2,
                                 const std::string& resume_flags = "--resume_from_checkpoint latest") {
    const std::string& ref_adapter = stage == kStage2 ? *ref_adapter_ : reference(train_flags(stage));
    const stdfs::path out = *dir_ / tag;
    Job job(train_cmd(out, "", stage), *dir_ / (tag + ".log"), kOneThread);
    ASSERT_TRUE(wait_for(job, [&] { return last_logged_step(job.output()) >= 2; })) << job.output();
    const int logged_at_signal = last_logged_step(job.output());
    const auto pids = rank_pids(out.string());
    ASSERT_EQ(pids.count(victim), 1u) << job.output();
    ASSERT_EQ(kill(pids.at(victim), sig), 0) << std::strerror(errno);
    const auto t_signal = Clock::now();
    const int rc = wait_exit_code(job);
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
    EXPECT_EQ(count_occurrences(log, said), 2u) << log;
    EXPECT_TRUE(contains(log, "preempted (signal " + std::to_string(sig) + ")")) << log;
    EXPECT_TRUE(contains(log, "preempted (another rank was signalled)")) << log;
    EXPECT_EQ(last_logged_step(log), step) << log;
    EXPECT_FALSE(stdfs::exists(out / "adapter_model.safetensors")) << "a preempted run wrote the final adapter";
    EXPECT_FALSE(stdfs::exists(out / "zlora.lock")) << "a preempted run kept its output_dir locked";

    Job resumed(train_cmd(out, resume_flags, stage), *dir_ / (tag + ".resume.log"), kOneThread);
    ASSERT_EQ(wait_exit_code(resumed), 0) << resumed.output();
    EXPECT_TRUE(contains(resumed.output(), "resumed from " + dirs[0].string())) << resumed.output();
    EXPECT_TRUE(read_adapter_bytes(out) == ref_adapter)
        << tag << ": the resumed adapter differs from the uninterrupted run's";
    EXPECT_FALSE(stdfs::exists(out / "zlora.lock"));
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

TEST_F(Preemption, EveryStageAndOffloadCheckpointsOnASignalAndResumesBitIdentical) {
  // Stage 0 is the default (its 2-rank resume once failed); signals and victims alternate. The stage-1
  // case resumes with --overwrite_output_dir true as well (configs/demo.yaml sets it, a requeue adds the
  // resume): the checkpoints are kept and the run says the overwrite is ignored.
  struct Case {
    const char* tag;
    const char* stage;
    int sig, victim;
  };
  const std::vector<Case> cases = {{"p-s0", "--zero_stage 0", SIGTERM, 1},
                                   {"p-s1", "--zero_stage 1", SIGUSR1, 0},
                                   {"p-s1off", "--zero_stage 1 --offload_optimizer cpu", SIGTERM, 0},
                                   {"p-s2off", "--zero_stage 2 --offload_optimizer cpu", SIGUSR1, 1},
                                   {"p-s3", "--zero_stage 3", SIGTERM, 1},
                                   {"p-s3off", "--zero_stage 3 --offload_optimizer cpu", SIGUSR1, 0}};
  for (const Case& c : cases) {
    SCOPED_TRACE(c.tag);
    const bool with_overwrite = std::string(c.tag) == "p-s1";
    preempt_and_resume(c.tag, c.sig, c.victim, c.stage,
                       with_overwrite ? "--overwrite_output_dir true --resume_from_checkpoint latest"
                                      : "--resume_from_checkpoint latest");
    if (with_overwrite)
      EXPECT_TRUE(contains(zlora::test::read_file(*dir_ / "p-s1.resume.log"),
                           "--overwrite_output_dir is ignored: --resume_from_checkpoint is set"));
  }
}

// A step long enough to be signalled in the middle: a global batch of 40 samples (20 micro-batches per
// rank) per optimizer step, 3 steps.
std::string long_step_flags(const std::filesystem::path& dir, const std::string& stage) {
  return zlora::test::tiny_train_flags(dir, 1, 20, 1) + " " + stage +
         " --ddp_timeout 30 --save_steps 1000 --max_steps 3";
}

TEST_F(Preemption, ASignalMidStepEndsTheRunPromptlyAndResumesBitIdentical) {
  // Here a rank's 20 samples pack into one micro-batch, so a step is one long forward and backward.
  // Signalled in it, eager ZeRO 0-2 leave it at the next interruption point (between layers, between
  // loss chunks): the step is abandoned and the last finished one saved. ZeRO-3's per-layer collectives
  // must line up on every rank, so it runs the micro-batch to its end, then finishes the step (the
  // update is cheap) and saves that one. Slurm and mpirun signal every rank, as here.
  struct Case {
    const char* tag;
    const char* stage;
    bool abandons;
  };
  for (const Case& c : {Case{"mid-s0", "--zero_stage 0", true}, Case{"mid-s3", "--zero_stage 3", false}}) {
    SCOPED_TRACE(c.tag);
    const std::string flags = long_step_flags(dir_->path(), c.stage);
    const std::string& ref_adapter = reference(flags);
    const stdfs::path out = *dir_ / c.tag;
    Job job("exec " + zlora::test::mpiexec_zlora(2) + " train " + flags + " --output_dir " + out.string(),
            *dir_ / (std::string(c.tag) + ".log"), kOneThread);
    ASSERT_TRUE(wait_for(job, [&] { return last_logged_step(job.output()) >= 1; })) << job.output();
    zlora::test::sleep_s(0.5);  // well inside step 2 (a step takes several seconds here)
    const auto pids = rank_pids(out.string());
    ASSERT_EQ(pids.size(), 2u);
    for (const auto& [rank, pid] : pids) ASSERT_EQ(kill(pid, SIGTERM), 0);
    const auto t_signal = Clock::now();
    const int rc = wait_exit_code(job);
    const double took = seconds_since(t_signal);
    const std::string log = job.output();
    ASSERT_EQ(rc, zlora::ckpt::kExitPreempted) << log;
    // The forward is interruptible, the backward (about two thirds of the step) is not: a signal that
    // lands in the backward lets the step finish and saves it. Either way the checkpoint, the log and
    // the resumed adapter must agree; ZeRO-3 always finishes the step.
    const bool abandoned = contains(log, "during step 2, which was abandoned");
    if (!c.abandons) EXPECT_FALSE(abandoned) << log;
    const long long expect_step = abandoned ? 1 : 2;
    const auto latest = zlora::ckpt::find_latest_checkpoint(out);
    ASSERT_TRUE(latest) << log;
    EXPECT_EQ(latest->step(), expect_step) << log;
    EXPECT_EQ(last_logged_step(log), expect_step) << log;
    EXPECT_LT(took, 15.0) << "the run did not end within a step of the signal";
    Job resumed("exec " + zlora::test::mpiexec_zlora(2) + " train " + flags + " --output_dir " + out.string() +
                    " --resume_from_checkpoint latest",
                *dir_ / (std::string(c.tag) + ".resume.log"), kOneThread);
    ASSERT_EQ(wait_exit_code(resumed), 0) << resumed.output();
    EXPECT_TRUE(read_adapter_bytes(out) == ref_adapter) << c.tag << ": the resumed adapter differs";
    std::printf("[preempt] %s: SIGTERM to both ranks 0.5 s into step 2: checkpoint-%lld, exit 75 %.2f s after\n", c.tag,
                expect_step, took);
  }
}

TEST_F(Preemption, SigtermToMpirunCheckpointsWhenTheGraceCoversAStepPart) {
  // What `timeout`, PBS, Kubernetes and `kill` do: SIGTERM to mpirun itself. OpenMPI 4.1 passes it to the
  // ranks after odls_base_sigkill_timeout seconds and SIGKILLs them the same time later; with a grace
  // longer than zlora's reaction (an interruption point, a checkpoint) the checkpoint is written. mpirun
  // then exits 1 whatever the ranks returned (an OpenMPI fact; jobs/ scripts report 75 themselves).
  const std::string flags = long_step_flags(dir_->path(), "--zero_stage 2");
  const std::string& ref_adapter = reference(flags);
  const stdfs::path out = *dir_ / "term-mpirun";
  Job job("exec mpiexec -n 2 --oversubscribe --mca odls_base_sigkill_timeout 4 " + zlora::test::zlora_bin().string() +
              " train " + flags + " --output_dir " + out.string(),
          *dir_ / "term-mpirun.log", kOneThread);
  ASSERT_TRUE(wait_for(job, [&] { return last_logged_step(job.output()) >= 1; })) << job.output();
  ASSERT_EQ(kill(job.pid(), SIGTERM), 0);
  const int rc = wait_exit_code(job);
  const std::string log = job.output();
  EXPECT_EQ(rc, 1) << "OpenMPI 4.1's mpirun exits 1 after forwarding SIGTERM\n" << log;
  EXPECT_EQ(zlora::test::count_occurrences(log, "exiting with code 75"), 2u) << log;
  const auto latest = zlora::ckpt::find_latest_checkpoint(out);
  ASSERT_TRUE(latest) << log;
  EXPECT_GE(latest->step(), 1);
  Job resumed("exec " + zlora::test::mpiexec_zlora(2) + " train " + flags + " --output_dir " + out.string() +
                  " --resume_from_checkpoint latest",
              *dir_ / "term-mpirun.resume.log", kOneThread);
  ASSERT_EQ(wait_exit_code(resumed), 0) << resumed.output();
  EXPECT_TRUE(read_adapter_bytes(out) == ref_adapter) << "the resumed adapter differs";
}

TEST_F(Preemption, ASecondRunInTheSameOutputDirIsRefusedWhateverItsFlags) {
  // The first run has long steps (about 20 s in all here), so that it is still running when each
  // second run, started after it, has got as far as the lock.
  const std::string flags = long_step_flags(dir_->path(), "--zero_stage 2");
  const std::string& ref_adapter = reference(flags);
  const stdfs::path out = *dir_ / "locked";
  auto cmd = [&](const std::string& extra) {
    return "exec " + zlora::test::mpiexec_zlora(2) + " train " + flags + " --output_dir " + out.string() + " " + extra;
  };
  Job first(cmd(""), *dir_ / "locked.log", kOneThread);
  ASSERT_TRUE(wait_for(first, [&] { return last_logged_step(first.output()) >= 1; })) << first.output();
  for (const std::string extra : {"", "--overwrite_output_dir true", "--resume_from_checkpoint latest",
                                  "--overwrite_output_dir true --resume_from_checkpoint latest"}) {
    SCOPED_TRACE(extra);
    Job second(cmd(extra), *dir_ / "locked.second.log", kOneThread);
    const int rc = wait_exit_code(second);
    EXPECT_NE(rc, 0) << second.output();
    EXPECT_TRUE(contains(second.output(), "is in use by another zlora run: pid ")) << second.output();
    EXPECT_TRUE(first.running()) << "the second run disturbed the first";
  }
  ASSERT_EQ(wait_exit_code(first), 0) << first.output();
  EXPECT_TRUE(read_adapter_bytes(out) == ref_adapter) << "the first run's adapter was changed";
  EXPECT_FALSE(stdfs::exists(out / "zlora.lock")) << "the lock outlived its run";
  // Released on an error too: a run refused for its flags leaves the directory free.
  Job bad(cmd("--resume_from_checkpoint " + (out / "checkpoint-99").string()), *dir_ / "locked.bad.log", kOneThread);
  EXPECT_NE(wait_exit_code(bad), 0);
  EXPECT_TRUE(contains(bad.output(), "checkpoint-99")) << bad.output();
  EXPECT_FALSE(stdfs::exists(out / "zlora.lock")) << "a failed run kept the lock";
}

TEST_F(Preemption, ADamagedNewestCheckpointIsMovedAsideAndThePreviousOneResumed) {
  // Checkpoints 2 and 4 of a run killed after step 4; checkpoint-4's rank-1 file then damaged (a disk, a
  // bad copy): `latest` reports it, moves it aside as evidence, and resumes from checkpoint-2.
  const stdfs::path full = *dir_ / "dmg-full", out = *dir_ / "dmg";
  Job job(train_cmd(full, "--save_steps 2"), *dir_ / "dmg-full.log", kOneThread);
  ASSERT_EQ(wait_exit_code(job), 0) << job.output();
  stdfs::create_directories(out);
  for (const char* c : {"checkpoint-2", "checkpoint-4"}) stdfs::copy(full / c, out / c, stdfs::copy_options::recursive);
  {
    std::fstream f(out / "checkpoint-4/rank-00001.bin", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(100);
    f.put('\x5a');
  }
  Job resumed(train_cmd(out, "--save_steps 2 --resume_from_checkpoint latest"), *dir_ / "dmg.resume.log", kOneThread);
  ASSERT_EQ(wait_exit_code(resumed), 0) << resumed.output();
  const std::string log = resumed.output();
  EXPECT_TRUE(contains(log, "checkpoint checkpoint-4 is damaged and was moved aside to checkpoint-4.damaged: '" +
                                (out / "checkpoint-4/rank-00001.bin").string() + "' is damaged: sha256 "))
      << log;
  EXPECT_TRUE(contains(log, "resumed from " + (out / "checkpoint-2").string())) << log;
  EXPECT_TRUE(stdfs::is_directory(out / "checkpoint-4.damaged"));
  EXPECT_TRUE(read_adapter_bytes(out) == read_adapter_bytes(full)) << "resuming from checkpoint-2 changed the result";
}

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
  // ZLORA_KILL_GRACE=1: mpirun waits twice the kill grace after a rank exits non-zero (75 too).
  const std::string script =
      "ZLORA_KILL_GRACE=1 NP=2 MPIRUN_ARGS=--oversubscribe ZLORA=" + zlora::test::zlora_bin().string() + " bash " +
      (zlora::test::source_dir() / "jobs/mpirun_example.sh").string() + " " + yaml.string() + " " + train_flags();
  // SIGUSR1 to a rank mid-run: zlora exits 75 and the script relaunches from `latest` by itself.
  {
    Job job(script, *dir_ / "job.log", kOneThread);
    ASSERT_TRUE(wait_for(job, [&] { return last_logged_step(job.output()) >= 2; })) << job.output();
    const auto pids = rank_pids(yaml.string());
    ASSERT_EQ(pids.count(1), 1u) << job.output();
    ASSERT_EQ(kill(pids.at(1), SIGUSR1), 0);
    ASSERT_EQ(wait_exit_code(job), 0) << job.output();
    const std::string log = job.output();
    EXPECT_EQ(count_occurrences(log, "relaunching from the latest checkpoint"), 1u) << log;
    EXPECT_TRUE(contains(log, "resumed from " + out.string() + "/checkpoint-")) << log;
    EXPECT_TRUE(read_adapter_bytes(out) == *ref_adapter_) << log;
  }
  // A job killed before its first checkpoint, then restarted (RESUME=1, as Slurm's requeue after a
  // node failure): no checkpoint to resume, so the script starts over instead of failing forever.
  // The ranks' command lines name the YAML, not the output_dir: find them by the YAML's path.
  const stdfs::path yaml2 = *dir_ / "job2.yaml", out2 = *dir_ / "job2";
  zlora::test::write_file(yaml2, "output_dir: " + out2.string() + "\n");
  const std::string script2 = script.substr(0, script.find(yaml.string())) + yaml2.string() + " " + train_flags();
  {
    Job job(script2, *dir_ / "job2.log", kOneThread);
    ASSERT_TRUE(wait_for(job, [&] { return last_logged_step(job.output()) >= 1; })) << job.output();
    const auto pids = rank_pids(yaml2.string());
    ASSERT_EQ(pids.size(), 2u) << job.output();
    for (const auto& [r, pid] : pids) kill(pid, SIGKILL);
    EXPECT_NE(wait_exit_code(job), 0) << "a killed job must fail, not be relaunched";
    EXPECT_FALSE(contains(job.output(), "relaunching")) << job.output();
  }
  ASSERT_TRUE(zlora::ckpt::list_checkpoint_dirs(out2).empty());
  ASSERT_TRUE(stdfs::exists(out2 / "trainer_log.jsonl"));
  {
    Job job("RESUME=1 " + script2, *dir_ / "job2.restart.log", kOneThread);
    ASSERT_EQ(wait_exit_code(job), 0) << job.output();
    EXPECT_TRUE(contains(job.output(), "holds no complete checkpoint yet: starting over")) << job.output();
    EXPECT_TRUE(read_adapter_bytes(out2) == *ref_adapter_) << job.output();
  }
}

}  // namespace
