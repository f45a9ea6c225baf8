// Schedules and step counting against the formulas of transformers.optimization, DeepSpeed's
// WarmupLR/WarmupDecayLR and HF Trainer.set_initial_training_values, evaluated by hand below.
#include "zlora/core/error.h"
#include "zlora/train/schedule.h"

#include <gtest/gtest.h>

#include <cmath>

using namespace zlora::train;

namespace {
constexpr double kPeak = 1e-3;
constexpr double kTol = 1e-15;
}  // namespace

TEST(Schedule, LinearWarmupThenDecayToZero) {
  Schedule s(ScheduleKind::Linear, kPeak, 10, 100);
  EXPECT_NEAR(s.lr(0), 0.0, kTol);  // HF's first update runs at lambda(0) = 0 with warmup
  EXPECT_NEAR(s.lr(5), 5e-4, kTol);
  EXPECT_NEAR(s.lr(10), 1e-3, kTol);
  EXPECT_NEAR(s.lr(55), 1e-3 * 45.0 / 90.0, kTol);
  EXPECT_NEAR(s.lr(100), 0.0, kTol);
  EXPECT_NEAR(s.lr(150), 0.0, kTol);  // clamped at 0 past the end
}

TEST(Schedule, CosineHalfCycle) {
  Schedule s(ScheduleKind::Cosine, kPeak, 10, 110);
  EXPECT_NEAR(s.lr(3), 3e-4, kTol);
  EXPECT_NEAR(s.lr(10), 1e-3, kTol);
  EXPECT_NEAR(s.lr(35), 1e-3 * 0.5 * (1 + std::sqrt(0.5)), 1e-15);  // progress 1/4: cos(pi/4)
  EXPECT_NEAR(s.lr(60), 5e-4, 1e-15);                               // progress 1/2
  EXPECT_NEAR(s.lr(110), 0.0, 1e-18);
}

TEST(Schedule, CosineWithoutWarmupStartsAtPeak) {
  Schedule s(ScheduleKind::Cosine, kPeak, 0, 48);
  EXPECT_DOUBLE_EQ(s.lr(0), kPeak);
  EXPECT_NEAR(s.lr(24), 5e-4, 1e-15);
}

TEST(Schedule, ConstantAndConstantWithWarmup) {
  Schedule c(ScheduleKind::Constant, kPeak, 10, 100);  // constant ignores warmup, as HF's
  EXPECT_DOUBLE_EQ(c.lr(0), kPeak);
  EXPECT_DOUBLE_EQ(c.lr(99), kPeak);
  Schedule w(ScheduleKind::ConstantWithWarmup, kPeak, 4, 100);
  EXPECT_NEAR(w.lr(0), 0.0, kTol);
  EXPECT_NEAR(w.lr(1), 2.5e-4, kTol);
  EXPECT_DOUBLE_EQ(w.lr(4), kPeak);
  EXPECT_DOUBLE_EQ(w.lr(99), kPeak);
}

TEST(Schedule, DeepSpeedWarmupLrLogAndLinear) {
  Schedule log(ScheduleKind::DsWarmupLR, kPeak, 100, 1000, true);
  EXPECT_NEAR(log.lr(0), 0.0, kTol);           // log(1) / log(100): DeepSpeed's iteration 0
  EXPECT_NEAR(log.lr(9), 0.5 * kPeak, 1e-15);  // log(10) / log(100)
  EXPECT_NEAR(log.lr(99), kPeak, 1e-15);       // log(100) / log(100)
  EXPECT_DOUBLE_EQ(log.lr(100), kPeak);
  EXPECT_DOUBLE_EQ(log.lr(999), kPeak);  // WarmupLR stays at the max
  Schedule lin(ScheduleKind::DsWarmupLR, kPeak, 100, 1000, false);
  EXPECT_NEAR(lin.lr(50), 0.5 * kPeak, kTol);
  EXPECT_NEAR(lin.lr(0), 0.0, kTol);
}

TEST(Schedule, DeepSpeedWarmupAtLeastTwoSteps) {
  for (long long n : {0LL, 1LL}) {
    Schedule s(ScheduleKind::DsWarmupLR, kPeak, n, 10, true);
    EXPECT_EQ(s.warmup_steps(), 2);
    EXPECT_NEAR(s.lr(0), 0.0, kTol);
    EXPECT_NEAR(s.lr(1), kPeak, 1e-15);  // log(2) / log(2)
  }
}

TEST(Schedule, DeepSpeedWarmupDecayLr) {
  Schedule s(ScheduleKind::DsWarmupDecayLR, kPeak, 10, 110, true);
  EXPECT_NEAR(s.lr(60), kPeak * 50.0 / 100.0, kTol);
  EXPECT_NEAR(s.lr(10), kPeak, kTol);
  EXPECT_NEAR(s.lr(110), 0.0, kTol);
}

TEST(Schedule, MakeScheduleResolvesWarmupRatio) {
  Schedule s = make_schedule("cosine", 1e-4, 0, 0.1, "log", 48);
  EXPECT_EQ(s.warmup_steps(), 5);  // ceil(48 * 0.1)
  EXPECT_EQ(s.kind(), ScheduleKind::Cosine);
  EXPECT_NEAR(s.lr(1), 1e-4 / 5, 1e-18);
}

TEST(Schedule, BadInputsAreRefused) {
  try {
    parse_schedule_kind("cosin");
    FAIL() << "expected an error";
  } catch (const zlora::Error& e) {
    EXPECT_NE(std::string(e.what()).find("did you mean 'cosine'"), std::string::npos) << e.what();
  }
  EXPECT_THROW(make_schedule("linear", 1e-4, 0, 0, "exp", 10), zlora::Error);
  EXPECT_THROW(Schedule(ScheduleKind::Linear, -1, 0, 10), zlora::Error);
  EXPECT_THROW(Schedule(ScheduleKind::Linear, 1e-4, 0, 0), zlora::Error);
  EXPECT_THROW(Schedule(ScheduleKind::Linear, 1e-4, 0, 10).lr(-1), zlora::Error);
  EXPECT_THROW(hf_warmup_steps(0, 1.5, 10), zlora::Error);
}

TEST(StepCounting, HfWarmupSteps) {
  EXPECT_EQ(hf_warmup_steps(0, 0.1, 48), 5);    // ceil(4.8)
  EXPECT_EQ(hf_warmup_steps(5, 0.5, 48), 5);    // warmup_steps wins over the ratio
  EXPECT_EQ(hf_warmup_steps(0.1, 0.0, 48), 5);  // transformers v5: a float < 1 is a ratio
  EXPECT_EQ(hf_warmup_steps(0, 0, 48), 0);
}

TEST(StepCounting, HfTrainerFormulas) {
  // LLaMA-Factory's example: 1000 samples, bs 1 x GA 8, 3 epochs, one GPU.
  StepCounts a = count_steps(1000, 1, 8, 1, 3.0, -1);
  EXPECT_EQ(a.len_dataloader, 1000);
  EXPECT_EQ(a.steps_per_epoch, 125);
  EXPECT_EQ(a.total_steps, 375);
  EXPECT_EQ(a.global_batch, 8);
  // 256 samples, bs 2 x GA 4 x 2 ranks: ceil(256 / 4) = 64 batches per rank, 16 updates per epoch.
  StepCounts b = count_steps(256, 2, 4, 2, 3.0, -1);
  EXPECT_EQ(b.len_dataloader, 64);
  EXPECT_EQ(b.steps_per_epoch, 16);
  EXPECT_EQ(b.total_steps, 48);
  // Fractional epochs: ceil(2.5 * 16).
  EXPECT_EQ(count_steps(256, 2, 4, 2, 2.5, -1).total_steps, 40);
  // max_steps overrides epochs; epochs become ceil(100 / 16) = 7.
  StepCounts c = count_steps(256, 2, 4, 2, 3.0, 100);
  EXPECT_EQ(c.total_steps, 100);
  EXPECT_DOUBLE_EQ(c.num_train_epochs, 7.0);
  // Fewer batches than GA: max(1 // 8, 1) = 1 update per epoch.
  StepCounts d = count_steps(10, 4, 8, 4, 1.0, -1);
  EXPECT_EQ(d.len_dataloader, 1);
  EXPECT_EQ(d.steps_per_epoch, 1);
  // A tail: ceil(103 / 2) = 52 batches, 52 // 4 = 13 updates.
  EXPECT_EQ(count_steps(103, 2, 4, 1, 1.0, -1).steps_per_epoch, 13);
  EXPECT_THROW(count_steps(0, 1, 1, 1, 1.0, -1), zlora::Error);
  EXPECT_THROW(count_steps(10, 1, 0, 1, 1.0, -1), zlora::Error);
  EXPECT_THROW(count_steps(10, 1, 1, 1, 0.0, -1), zlora::Error);
}

TEST(StepCounting, LoggingAndSaveIntervals) {
  EXPECT_EQ(resolve_interval(10, 48, "logging_steps"), 10);
  EXPECT_EQ(resolve_interval(0.1, 48, "logging_steps"), 5);  // ceil(4.8)
  EXPECT_EQ(resolve_interval(0.01, 48, "save_steps"), 1);    // ceil(0.48)
  EXPECT_EQ(resolve_interval(0.25, 48, "save_steps"), 12);
  try {
    resolve_interval(0, 48, "save_steps");
    FAIL() << "expected an error";
  } catch (const zlora::Error& e) {
    EXPECT_NE(std::string(e.what()).find("save_steps"), std::string::npos);
  }
}
