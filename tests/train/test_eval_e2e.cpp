// Evaluation end to end through the zlora binary under mpiexec (CPU, tiny random Qwen2, real Qwen
// tokenizer): val_size holds out LLaMA-Factory's samples, eval_strategy steps logs eval_loss in
// trainer_log.jsonl / trainer_state.json, do_eval writes eval_results.json, the plot of eval_loss; the
// token-weighted eval_loss is the same at every world size and ZeRO stage; a preemption during an
// evaluation is redone by the resumed run, so every evaluation is logged exactly once.
#include "train_e2e_util.h"

#include "zlora/ckpt/checkpoint.h"
#include "zlora/ckpt/preempt.h"

#include <nlohmann/json.hpp>

#include <csignal>

namespace {

namespace stdfs = std::filesystem;
using nlohmann::json;
using zlora::test::contains;
using zlora::test::Job;
using zlora::test::read_file;

const std::vector<std::string> kOneThread = {"OMP_NUM_THREADS=1"};

// (step, eval_loss) of every evaluation line of output_dir/trainer_log.jsonl, in file order.
std::vector<std::pair<long long, double>> eval_lines(const stdfs::path& out) {
  std::vector<std::pair<long long, double>> v;
  std::istringstream in(read_file(out / "trainer_log.jsonl"));
  std::string line;
  while (std::getline(in, line)) {
    json j = json::parse(line);
    if (j.contains("eval_loss")) v.emplace_back(j["current_steps"].get<long long>(), j["eval_loss"].get<double>());
  }
  return v;
}

// The exact eval_loss values of trainer_state.json's log_history, by step.
std::vector<std::pair<long long, double>> eval_history(const stdfs::path& out) {
  std::vector<std::pair<long long, double>> v;
  const json state = json::parse(read_file(out / "trainer_state.json"));  // kept: the loop reads into it
  for (const auto& e : state["log_history"])
    if (e.contains("eval_loss")) v.emplace_back(e["step"].get<long long>(), e["eval_loss"].get<double>());
  return v;
}

class EvalE2E : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new zlora::test::TempDir();
    ASSERT_NO_FATAL_FAILURE(zlora::test::prepare_tiny_model_and_tokens(dir_->path(), 128, 96));
  }
  static void TearDownTestSuite() { delete dir_; }

  // np ranks, global batch 12 (per_device 2 x accum x np), evaluation every 2 steps over val_size 20.
  static std::string train_cmd(int np, const stdfs::path& out, const std::string& extra) {
    return "exec " + zlora::test::mpiexec_zlora(np) + " train " +
           zlora::test::tiny_train_flags(dir_->path(), 2, 6 / np, 2) + " --gradient_accumulation_steps " +
           std::to_string(6 / np) +
           " --val_size 20 --eval_strategy steps --eval_steps 2 --per_device_eval_batch_size 3 --max_steps 4"
           " --save_steps 2 --output_dir " +
           out.string() + " " + extra;
  }
  static zlora::test::JobEnd train(int np, const std::string& name, const std::string& extra) {
    Job job(train_cmd(np, *dir_ / name, extra), *dir_ / (name + ".log"), kOneThread);
    return job.wait(600, (*dir_ / name).string());
  }
  static zlora::test::TempDir* dir_;
};
zlora::test::TempDir* EvalE2E::dir_ = nullptr;

TEST_F(EvalE2E, EvalLossIsLoggedAndTheSameAtEveryWorldSizeAndStage) {
  const auto ref = train(1, "ref", "--zero_stage 0 --plot_loss true");
  ASSERT_EQ(ref.exit_code, 0) << ref.output;
  const stdfs::path out = *dir_ / "ref";
  // LLaMA-Factory's split of the 96 samples: 20 held out, 76 trained on.
  EXPECT_TRUE(contains(ref.output, "val_size 20: 20 samples held out for evaluation, 76 to train on")) << ref.output;
  const auto lines = eval_lines(out);
  ASSERT_EQ(lines.size(), 2u) << read_file(out / "trainer_log.jsonl");
  EXPECT_EQ(lines[0].first, 2);
  EXPECT_EQ(lines[1].first, 4);
  EXPECT_LT(lines[1].second, lines[0].second) << "training at lr 5e-3 should lower the held-out loss";
  const auto hist = eval_history(out);
  ASSERT_EQ(hist.size(), 2u);
  // eval_strategy steps sets do_eval (HF): the final evaluation is the step-4 one, reused.
  const json results = json::parse(read_file(out / "eval_results.json"));
  EXPECT_DOUBLE_EQ(results["eval_loss"].get<double>(), hist[1].second);
  for (const char* key : {"eval_runtime", "eval_samples_per_second", "eval_steps_per_second", "epoch"})
    EXPECT_TRUE(results.contains(key)) << key;
  const json all = json::parse(read_file(out / "all_results.json"));
  EXPECT_TRUE(all.contains("eval_loss") && all.contains("train_loss")) << all.dump();
  EXPECT_TRUE(stdfs::exists(out / "training_eval_loss.svg"));
  EXPECT_TRUE(stdfs::exists(out / "training_loss.svg"));
  // The checkpoint of an evaluated step holds the evaluation in its trainer_state.json.
  const json ck = json::parse(read_file(out / "checkpoint-2" / "trainer_state.json"));
  bool found = false;
  for (const auto& e : ck["log_history"]) found = found || (e.contains("eval_loss") && e["step"] == 2);
  EXPECT_TRUE(found) << ck.dump();

  struct Case {
    int np;
    const char* args;
  };
  // np 3 x 3 samples per rank: the last of the 3 rounds has work for rank 0 only, so ZeRO-3's ranks
  // without samples run the dummy batch and their gathers must stay in step.
  for (Case c : {Case{2, "--zero_stage 3"}, Case{3, "--zero_stage 3 --offload_optimizer cpu"},
                 Case{3, "--zero_stage 2"}, Case{2, "--zero_stage 1 --offload_optimizer cpu"}}) {
    const std::string name =
        "np" + std::to_string(c.np) + "_" + std::to_string(std::hash<std::string>{}(c.args) % 1000);
    const auto r = train(c.np, name, c.args);
    ASSERT_EQ(r.exit_code, 0) << c.args << "\n" << r.output;
    const auto h = eval_history(*dir_ / name);
    ASSERT_EQ(h.size(), hist.size()) << c.args;
    for (size_t i = 0; i < h.size(); ++i) {
      EXPECT_EQ(h[i].first, hist[i].first);
      EXPECT_NEAR(h[i].second, hist[i].second, 1e-5 * hist[i].second) << c.args << " at step " << h[i].first;
    }
    std::printf("[eval] np %d %s: eval_loss %.7f %.7f (1 process: %.7f %.7f)\n", c.np, c.args, h[0].second, h[1].second,
                hist[0].second, hist[1].second);
  }
}

TEST_F(EvalE2E, APreemptionDuringAnEvaluationIsRedoneOnResume) {
  // One-sample evaluation rounds over 40 held-out samples: the evaluation lasts long enough to be
  // signalled in for sure once it says it started. The run stops at step 2 without its evaluation, the
  // resumed run evaluates step 2 before step 3, and the logs and adapter equal an uninterrupted run's.
  const std::string extra = "--zero_stage 3 --per_device_eval_batch_size 1 --val_size 40 --ddp_timeout 60";
  const auto ref = train(2, "ref_slow", extra);
  ASSERT_EQ(ref.exit_code, 0) << ref.output;
  const stdfs::path out = *dir_ / "preempted";
  Job job(train_cmd(2, out, extra), *dir_ / "preempted.log", kOneThread);
  ASSERT_TRUE(zlora::test::wait_for(job, 300, [&] { return contains(job.output(), "eval at step 2: evaluating"); }))
      << job.output();
  const auto pids = zlora::test::rank_pids(out.string());
  ASSERT_EQ(pids.count(1), 1u) << job.output();
  ASSERT_EQ(kill(pids.at(1), SIGUSR1), 0);
  const auto end = job.wait(300, out.string());
  ASSERT_EQ(end.exit_code, zlora::ckpt::kExitPreempted) << end.output;
  EXPECT_TRUE(contains(end.output, "evaluation at step 2 stopped by a preemption signal")) << end.output;
  EXPECT_FALSE(contains(end.output, "eval at step 2: eval_loss")) << end.output;
  EXPECT_TRUE(contains(end.output, "checkpoint-2 written; exiting with code 75")) << end.output;
  Job resumed(train_cmd(2, out, extra + " --resume_from_checkpoint latest"), *dir_ / "preempted.resume.log",
              kOneThread);
  const auto r = resumed.wait(300, out.string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const size_t eval_at = r.output.find("eval at step 2: eval_loss"), step3 = r.output.find("info: step 3/");
  ASSERT_NE(eval_at, std::string::npos) << r.output;
  EXPECT_TRUE(step3 == std::string::npos || eval_at < step3) << r.output;
  const auto got = eval_lines(out), want = eval_lines(*dir_ / "ref_slow");
  ASSERT_EQ(got.size(), 2u) << zlora::test::read_file(out / "trainer_log.jsonl");
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(got[i].first, want[i].first);
    EXPECT_DOUBLE_EQ(got[i].second, want[i].second);
  }
  EXPECT_EQ(eval_history(out), eval_history(*dir_ / "ref_slow"));
  EXPECT_EQ(zlora::test::read_adapter_bytes(out), zlora::test::read_adapter_bytes(*dir_ / "ref_slow"));
}

TEST_F(EvalE2E, EvalDatasetIsPreparedBesideTheTrainingStore) {
  const stdfs::path out = *dir_ / "evalds";
  const std::string cmd = "exec " + zlora::test::mpiexec_zlora(2) + " train --model_name_or_path " +
                          (*dir_ / "model").string() + " --dataset gen --eval_dataset gen --dataset_dir " +
                          (*dir_ / "data").string() +
                          " --max_samples 24 --cutoff_len 128 --template qwen --per_device_train_batch_size 2"
                          " --max_steps 2 --do_eval true --learning_rate 1e-3 --lora_rank 4 --device cpu --comm mpi"
                          " --report_to tensorboard --logging_steps 1"
                          " --output_dir " +
                          out.string();
  Job job(cmd, *dir_ / "evalds.log", kOneThread);
  const auto end = job.wait(300, out.string());
  ASSERT_EQ(end.exit_code, 0) << end.output;
  EXPECT_TRUE(stdfs::exists(out / "tokenized.h5"));
  EXPECT_TRUE(stdfs::exists(out / "tokenized_eval.h5"));
  EXPECT_TRUE(contains(end.output, "eval_dataset: 24 samples in " + (out / "tokenized_eval.h5").string()))
      << end.output;
  const json results = json::parse(read_file(out / "eval_results.json"));
  EXPECT_GT(results["eval_loss"].get<double>(), 0);
  // do_eval without eval_strategy: one evaluation, at the end.
  EXPECT_EQ(eval_lines(out).size(), 1u);
  // report_to tensorboard: one event file under HF's default logging_dir, runs/<time>_<host>/, holding
  // the training scalars and the evaluation (the format itself: tests/train/test_tensorboard.cpp).
  std::vector<stdfs::path> events;
  for (const auto& e : stdfs::recursive_directory_iterator(out / "runs"))
    if (e.path().filename().string().rfind("events.out.tfevents.", 0) == 0) events.push_back(e.path());
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].parent_path().parent_path(), out / "runs");
  const std::string tb = read_file(events[0]);
  for (const char* tag : {"brain.Event:2", "train/loss", "train/learning_rate", "train/grad_norm", "eval/loss"})
    EXPECT_NE(tb.find(tag), std::string::npos) << tag;
  EXPECT_TRUE(contains(end.output, "TensorBoard: " + events[0].string())) << end.output;
}

}  // namespace
