// RunLogger's files, and the trainer infrastructure composed in a toy loop: schedule, step plan,
// logger, checkpoints and resume. A run interrupted after its last checkpoint and resumed from `latest`
// must end with bit-identical state and the same log as an uninterrupted run.
#include "test_util.h"
#include "zlora/ckpt/checkpoint.h"
#include "zlora/ckpt/payload.h"
#include "zlora/ckpt/run_descriptor.h"
#include "zlora/core/error.h"
#include "zlora/train/run_logger.h"
#include "zlora/train/schedule.h"
#include "zlora/train/step_plan.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cstring>
#include <numeric>
#include <random>

using namespace zlora::train;
using nlohmann::json;
using zlora::test::read_file;
using zlora::test::TempDir;
namespace ckpt = zlora::ckpt;
namespace stdfs = std::filesystem;

namespace {

std::vector<json> jsonl(const stdfs::path& p) {
  std::vector<json> out;
  std::string text = read_file(p);
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    out.push_back(json::parse(text.substr(pos, end - pos)));
    pos = end + 1;
  }
  return out;
}

RunLoggerOptions options(const stdfs::path& out, long long total, long long spe, long long log_every,
                         long long save_every) {
  RunLoggerOptions o;
  o.output_dir = out;
  o.total_steps = total;
  o.steps_per_epoch = spe;
  o.logging_steps = log_every;
  o.save_steps = save_every;
  o.per_device_batch = 2;
  o.num_train_epochs = 2.5;
  o.console = false;
  return o;
}

}  // namespace

TEST(RunLogger, WritesLogStateAndResults) {
  TempDir out;
  RunLogger logger(options(out.path(), 5, 2, 2, 2), 0.0);
  std::vector<double> losses = {3.0, 2.0, 1.5, 1.0, 0.5};
  std::vector<long long> saves;
  for (int i = 0; i < 5; ++i) {
    auto rec = logger.on_step({losses[size_t(i)], 1e-4 * (i + 1), 0.5, 100, 4, 0}, double(i + 1));
    EXPECT_EQ(rec.has_value(), (i + 1) % 2 == 0);
    if (logger.should_save()) saves.push_back(logger.global_step());
  }
  EXPECT_EQ(saves, (std::vector<long long>{2, 4}));
  TrainResults res = logger.finish(5.0);
  auto lines = jsonl(out / "trainer_log.jsonl");
  ASSERT_EQ(lines.size(), 3u);  // steps 2 and 4, then the final line
  EXPECT_EQ(lines[0]["current_steps"], 2);
  EXPECT_DOUBLE_EQ(lines[0]["loss"].get<double>(), 2.5);  // mean of the window (3.0, 2.0)
  EXPECT_DOUBLE_EQ(lines[1]["loss"].get<double>(), 1.25);
  EXPECT_FALSE(lines[2].contains("loss"));
  EXPECT_EQ(lines[2]["current_steps"], 5);
  EXPECT_DOUBLE_EQ(lines[2]["percentage"].get<double>(), 100.0);
  json state = json::parse(read_file(out / "trainer_state.json"));
  EXPECT_EQ(state["global_step"], 5);
  EXPECT_EQ(state["max_steps"], 5);
  EXPECT_EQ(state["num_train_epochs"], 3);  // ceil(2.5)
  EXPECT_EQ(state["train_batch_size"], 2);
  EXPECT_EQ(state["logging_steps"], 2);
  EXPECT_EQ(state["num_input_tokens_seen"], 500);
  ASSERT_EQ(state["log_history"].size(), 3u);
  EXPECT_DOUBLE_EQ(state["log_history"][2]["train_loss"].get<double>(), 8.0 / 5);
  EXPECT_EQ(state["log_history"][2]["step"], 5);
  EXPECT_DOUBLE_EQ(res.train_loss, 8.0 / 5);
  json results = json::parse(read_file(out / "train_results.json"));
  EXPECT_DOUBLE_EQ(results["train_runtime"].get<double>(), 5.0);
  EXPECT_DOUBLE_EQ(results["train_samples_per_second"].get<double>(), 4.0);  // 20 samples / 5 s
  EXPECT_DOUBLE_EQ(results["train_steps_per_second"].get<double>(), 1.0);
  EXPECT_DOUBLE_EQ(results["epoch"].get<double>(), 2.5);
}

namespace {

// A toy model: one scalar w pulled towards per-sample targets; its gradient uses the step plan's
// samples and the global loss-token divisor, so any mistake in order, position or state shows up in w.
struct Toy {
  std::vector<int64_t> lengths, loss_tokens;
  std::vector<double> target;
  Toy() {
    std::mt19937 rng(3);
    for (int i = 0; i < 40; ++i) {
      lengths.push_back(1 + int64_t(rng() % 300));
      loss_tokens.push_back(int64_t(rng() % uint32_t(lengths.back())));
      target.push_back(double(rng() % 1000) / 100.0);
    }
  }
};

ckpt::RunDescriptor toy_descriptor() {
  ckpt::RunDescriptor d;
  d.model_path = "toy";
  d.model_config_sha256 = "00";
  d.lora_rank = 1;
  d.lora_alpha = 2;
  d.lora_target = {"w"};
  d.data_hash = "toy-data";
  d.template_name = "none";
  return d;
}

// Runs (or resumes) the toy training in `out`; stops without finishing after `crash_after` steps.
double toy_train(const stdfs::path& out, long long crash_after, bool resume) {
  Toy toy;
  const long long seed = 42;
  StepCounts counts = count_steps(40, 2, 2, 1, 3.0, -1);  // 20 batches // 2 = 10 steps/epoch, 30 total
  Schedule sched = make_schedule("cosine", 0.1, 0, 0.1, "log", counts.total_steps);
  PlanOptions po;
  po.per_device_batch = 2;
  po.grad_accum = 2;
  po.micro_batch_tokens = 600;
  StepPlanner planner(toy.lengths, toy.loss_tokens, po, [](long long epoch) {
    std::vector<int64_t> v(40);
    std::iota(v.begin(), v.end(), 0);
    std::mt19937 rng(uint32_t(seed + epoch));
    std::shuffle(v.begin(), v.end(), rng);
    return v;
  });
  ckpt::clean_stale(out);
  ckpt::prepare_output_dir(out, toy_descriptor(), false, resume);
  auto opts = options(out, counts.total_steps, counts.steps_per_epoch, 5, resolve_interval(0.25, 30, "save_steps"));
  opts.num_train_epochs = 3;
  double w = 0;
  SamplerPosition pos;
  double now = 0;
  std::optional<TrainerState> resumed;
  std::string logger_state;
  if (resume) {
    ckpt::CheckpointInfo info = ckpt::resolve_resume(out, "latest");
    ckpt::Payload p = ckpt::Payload::parse(ckpt::read_payloads(info, 0, 1).payloads[0]);
    std::memcpy(&w, p.get("w").data(), sizeof w);
    pos = planner.decode(p.get("sampler"), seed, true);
    resumed = TrainerState::read(info.dir / "trainer_state.json");
    logger_state = p.get("logger");
  }
  RunLogger logger(opts, now, resumed ? &*resumed : nullptr, logger_state);
  while (logger.global_step() < counts.total_steps) {
    StepPlan plan = planner.plan(pos);
    EXPECT_EQ(plan.global_step, logger.global_step());
    double loss = 0, grad = 0;
    for (const MicroBatch& mb : plan.micro_batches)
      for (int64_t i : mb.samples) {
        double k = double(toy.loss_tokens[size_t(i)]) / double(plan.global_loss_tokens);
        loss += k * (w - toy.target[size_t(i)]) * (w - toy.target[size_t(i)]);
        grad += k * 2 * (w - toy.target[size_t(i)]);
      }
    double lr = sched.lr(plan.global_step);
    w -= lr * grad;
    now += 1;
    logger.on_step({loss, lr, std::abs(grad), plan.global_tokens, (long long)plan.step_samples.size(), 0}, now);
    pos = planner.next(pos);
    if (logger.should_save()) {
      ckpt::Payload p;
      p.set("w", std::string(reinterpret_cast<const char*>(&w), sizeof w));
      p.set("sampler", planner.encode(pos, seed, true));
      p.set("logger", logger.logger_state());
      std::string bytes = p.serialize();
      ckpt::SaveRequest req;
      req.step = logger.global_step();
      req.payload = bytes;
      req.trainer_state_json = logger.trainer_state_json();
      req.save_total_limit = 2;
      ckpt::save_checkpoint(out, req, nullptr);
    }
    if (logger.global_step() == crash_after) return w;
  }
  logger.finish(now);
  return w;
}

std::vector<std::tuple<long long, double, double>> loss_lines(const stdfs::path& out) {
  std::vector<std::tuple<long long, double, double>> v;
  for (const json& j : jsonl(out / "trainer_log.jsonl"))
    if (j.contains("loss")) v.emplace_back(j["current_steps"], j["loss"], j["lr"]);
  return v;
}

}  // namespace

TEST(ToyLoop, InterruptedAndResumedRunMatchesUninterrupted) {
  TempDir a, b;
  double wa = toy_train(a.path(), -1, false);
  // Checkpoints every ceil(0.25 x 30) = 8 steps: 8, 16, 24. Interrupt at 21: steps 17..21 are lost
  // (and logged at 20), resume from checkpoint-16.
  double partial = toy_train(b.path(), 21, false);
  EXPECT_NE(partial, wa);
  EXPECT_EQ(ckpt::find_latest_checkpoint(b.path())->step(), 16);
  // Without resume, the directory is refused (pitfall 3, the same run).
  EXPECT_THROW(toy_train(b.path(), -1, false), zlora::Error);
  double wb = toy_train(b.path(), -1, true);
  EXPECT_EQ(std::memcmp(&wa, &wb, sizeof wa), 0) << wa << " vs " << wb;  // bit-identical
  auto la = loss_lines(a.path()), lb = loss_lines(b.path());
  EXPECT_EQ(la.size(), 6u);  // steps 5, 10, ..., 30
  EXPECT_EQ(la, lb);         // the interrupted run's step-20 line was dropped on resume, then rewritten
  json sa = json::parse(read_file(a / "trainer_state.json")), sb = json::parse(read_file(b / "trainer_state.json"));
  ASSERT_EQ(sa["log_history"].size(), sb["log_history"].size());
  for (size_t i = 0; i + 1 < sa["log_history"].size(); ++i)
    EXPECT_EQ(sa["log_history"][i]["loss"], sb["log_history"][i]["loss"]) << i;
  EXPECT_EQ(sa["global_step"], 30);
  EXPECT_EQ(sb["global_step"], 30);
  // save_total_limit 2 kept the newest two complete checkpoints.
  std::vector<std::string> names;
  for (const auto& d : ckpt::list_checkpoint_dirs(a.path())) names.push_back(d.filename().string());
  EXPECT_EQ(names, (std::vector<std::string>{"checkpoint-16", "checkpoint-24"}));
}
