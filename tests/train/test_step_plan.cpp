// The step plan: same samples per step at any world size with the same global batch, every sample once
// per epoch, deterministic, balanced across ranks, equal micro-batch counts, the global loss divisor.
#include "zlora/core/error.h"
#include "zlora/train/step_plan.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <numeric>
#include <random>

using namespace zlora::train;

namespace {

struct Data {
  std::vector<int64_t> lengths, loss_tokens;
};

Data make_data(int n, unsigned seed, int max_len = 512) {
  std::mt19937 rng(seed);
  Data d;
  for (int i = 0; i < n; ++i) {
    int64_t len = 1 + int64_t(rng() % max_len);
    d.lengths.push_back(len);
    d.loss_tokens.push_back(int64_t(rng() % len));  // labels masked on the prompt: fewer targets than tokens
  }
  return d;
}

// A fixed shuffled order per epoch (the real one comes from at::randperm; any permutation will do here).
EpochOrder shuffled(int n) {
  return [n](long long epoch) {
    std::vector<int64_t> v(n);
    std::iota(v.begin(), v.end(), 0);
    std::mt19937 rng(1234 + unsigned(epoch));
    std::shuffle(v.begin(), v.end(), rng);
    return v;
  };
}

StepPlanner planner(const Data& d, long long pd, long long ga, long long world, long long rank, long long budget) {
  PlanOptions o;
  o.per_device_batch = pd;
  o.grad_accum = ga;
  o.world_size = world;
  o.rank = rank;
  o.micro_batch_tokens = budget;
  return StepPlanner(d.lengths, d.loss_tokens, o, shuffled(int(d.lengths.size())));
}

std::vector<int64_t> sorted(std::vector<int64_t> v) {
  std::sort(v.begin(), v.end());
  return v;
}

}  // namespace

TEST(StepPlan, SameSamplesPerStepForWorldSizes123WithEqualGlobalBatch) {
  // G = 12 in all three: 1 x (2 x 6), 2 x (2 x 3), 3 x (2 x 2); 100 samples -> 8 steps per epoch in each.
  Data d = make_data(100, 7);
  struct Shape {
    long long world, pd, ga;
  };
  std::vector<Shape> shapes = {{1, 2, 6}, {2, 2, 3}, {3, 2, 2}};
  std::vector<std::vector<int64_t>> reference;  // per step, world 1's samples
  for (const Shape& sh : shapes) {
    for (long long epoch = 0; epoch < 2; ++epoch) {
      std::vector<StepPlanner> ranks;
      for (long long r = 0; r < sh.world; ++r) ranks.push_back(planner(d, sh.pd, sh.ga, sh.world, r, 1024));
      ASSERT_EQ(ranks[0].global_batch(), 12);
      ASSERT_EQ(ranks[0].steps_per_epoch(), 8);
      for (long long s = 0; s < 8; ++s) {
        std::vector<int64_t> union_of_ranks;
        for (auto& p : ranks) {
          StepPlan plan = p.plan({epoch, s});
          for (const auto& mb : plan.micro_batches)
            union_of_ranks.insert(union_of_ranks.end(), mb.samples.begin(), mb.samples.end());
          if (sh.world == 1 && &p == &ranks[0]) reference.push_back(plan.step_samples);
          EXPECT_EQ(plan.step_samples, reference[size_t(epoch * 8 + s)]) << "world " << sh.world << " step " << s;
        }
        // The ranks' micro-batches together hold exactly the step's samples, each once.
        EXPECT_EQ(sorted(union_of_ranks), sorted(reference[size_t(epoch * 8 + s)]));
      }
    }
  }
}

TEST(StepPlan, EverySampleOncePerEpochIncludingTheTail) {
  Data d = make_data(103, 11);
  // HF counting: ceil(103 / 2) = 52 batches // 4 = 13 steps of G = 8; the last has the 7 left over.
  // ceil(103 / 1) = 103 // 8 = 12 steps of G = 8; the last also takes the 7-sample tail (15).
  struct Case {
    long long pd, ga, steps, last_size;
  };
  for (Case c : {Case{2, 4, 13, 7}, Case{1, 8, 12, 15}}) {
    StepPlanner p = planner(d, c.pd, c.ga, 1, 0, 1024);
    ASSERT_EQ(p.steps_per_epoch(), c.steps);
    for (long long epoch = 0; epoch < 2; ++epoch) {
      std::vector<int64_t> seen;
      for (long long s = 0; s < p.steps_per_epoch(); ++s) {
        StepPlan plan = p.plan({epoch, s});
        EXPECT_EQ((long long)plan.step_samples.size(), s + 1 == c.steps ? c.last_size : 8);
        seen.insert(seen.end(), plan.step_samples.begin(), plan.step_samples.end());
      }
      std::vector<int64_t> all(103);
      std::iota(all.begin(), all.end(), 0);
      EXPECT_EQ(sorted(seen), all) << "epoch " << epoch;
    }
  }
}

TEST(StepPlan, FileOrderIsKeptWithoutShuffling) {
  Data d = make_data(20, 3);
  PlanOptions o;
  o.per_device_batch = 2;
  o.grad_accum = 2;
  o.micro_batch_tokens = 1024;
  StepPlanner p(d.lengths, d.loss_tokens, o, [](long long) {
    std::vector<int64_t> v(20);
    std::iota(v.begin(), v.end(), 0);
    return v;
  });
  EXPECT_EQ(p.plan({0, 1}).step_samples, (std::vector<int64_t>{4, 5, 6, 7}));
  EXPECT_EQ(p.plan({3, 4}).step_samples, (std::vector<int64_t>{16, 17, 18, 19}));
}

TEST(StepPlan, DeterministicAcrossPlannerInstances) {
  Data d = make_data(64, 5);
  for (long long r = 0; r < 3; ++r) {
    StepPlanner a = planner(d, 2, 2, 3, r, 700), b = planner(d, 2, 2, 3, r, 700);
    for (long long s = 0; s < a.steps_per_epoch(); ++s) {
      StepPlan x = a.plan({1, s}), y = b.plan({1, s});
      ASSERT_EQ(x.micro_batches.size(), y.micro_batches.size());
      for (size_t m = 0; m < x.micro_batches.size(); ++m)
        EXPECT_EQ(x.micro_batches[m].samples, y.micro_batches[m].samples);
    }
  }
}

TEST(StepPlan, BalancedEqualMicroBatchCountsAndGlobalDivisor) {
  Data d = make_data(500, 9, 900);
  const long long world = 3, budget = 1000;
  std::vector<StepPlanner> ranks;
  for (long long r = 0; r < world; ++r) ranks.push_back(planner(d, 4, 2, world, r, budget));
  for (long long s = 0; s < ranks[0].steps_per_epoch(); ++s) {
    std::vector<StepPlan> plans;
    for (auto& p : ranks) plans.push_back(p.plan({0, s}));
    long long expect_loss = 0, expect_tokens = 0, longest = 0;
    for (int64_t i : plans[0].step_samples) {
      expect_loss += d.loss_tokens[size_t(i)];
      expect_tokens += d.lengths[size_t(i)];
      longest = std::max<long long>(longest, d.lengths[size_t(i)]);
    }
    for (long long r = 0; r < world; ++r) {
      const StepPlan& p = plans[size_t(r)];
      // The divisor is the whole step's unmasked targets, identical on every rank.
      EXPECT_EQ(p.global_loss_tokens, expect_loss);
      EXPECT_EQ(p.global_tokens, expect_tokens);
      // Same number of micro-batches everywhere; empty padding only after the real ones.
      EXPECT_EQ(p.micro_batches.size(), plans[0].micro_batches.size());
      long long rank_tokens = 0;
      for (size_t m = 0; m < p.micro_batches.size(); ++m) {
        const MicroBatch& mb = p.micro_batches[m];
        EXPECT_EQ(mb.empty(), (long long)m >= p.num_real_micro_batches);
        EXPECT_LE(mb.tokens, budget);
        long long t = 0, l = 0;
        for (int64_t i : mb.samples) t += d.lengths[size_t(i)], l += d.loss_tokens[size_t(i)];
        EXPECT_EQ(mb.tokens, t);
        EXPECT_EQ(mb.loss_tokens, l);
        rank_tokens += t;
      }
      EXPECT_EQ(rank_tokens, p.rank_tokens[size_t(r)]);
    }
    // Longest-first to the least-loaded rank: ranks differ by at most one sample's length.
    auto [mn, mx] = std::minmax_element(plans[0].rank_tokens.begin(), plans[0].rank_tokens.end());
    EXPECT_LE(*mx - *mn, longest) << "step " << s;
  }
}

TEST(StepPlan, RanksWithoutSamplesGetEmptyMicroBatches) {
  // 2 samples, 3 ranks, G = 3 (the epoch has one step): one rank has nothing, yet joins with one empty
  // micro-batch so that its collectives match.
  Data d{{100, 50}, {10, 5}};
  std::vector<size_t> counts;
  long long empty_ranks = 0;
  for (long long r = 0; r < 3; ++r) {
    StepPlanner p = planner(d, 1, 1, 3, r, 200);
    StepPlan plan = p.plan({0, 0});
    counts.push_back(plan.micro_batches.size());
    if (plan.num_real_micro_batches == 0) {
      ++empty_ranks;
      EXPECT_TRUE(plan.micro_batches[0].empty());
    }
    EXPECT_EQ(plan.global_loss_tokens, 15);
  }
  EXPECT_EQ(counts, (std::vector<size_t>{1, 1, 1}));
  EXPECT_EQ(empty_ranks, 1);
}

TEST(StepPlan, PositionsAndResume) {
  Data d = make_data(100, 7);
  StepPlanner p = planner(d, 2, 6, 1, 0, 1024);  // 8 steps per epoch
  EXPECT_EQ(p.position_of(0), (SamplerPosition{0, 0}));
  EXPECT_EQ(p.position_of(19), (SamplerPosition{2, 3}));
  EXPECT_EQ(p.next({0, 7}), (SamplerPosition{1, 0}));
  EXPECT_EQ(p.next({1, 2}), (SamplerPosition{1, 3}));
  // A resumed planner (fresh instance, as after a restart) plans the same step as the running one.
  StepPlanner q = planner(d, 2, 6, 1, 0, 1024);
  EXPECT_EQ(p.plan(p.position_of(19)).step_samples, q.plan({2, 3}).step_samples);
  EXPECT_EQ(q.plan({2, 3}).global_step, 19);
}

TEST(StepPlan, BadInputsAreRefused) {
  Data d = make_data(10, 1, 100);
  d.lengths[3] = 5000;
  try {
    planner(d, 1, 1, 1, 0, 4096);
    FAIL() << "expected an error";
  } catch (const zlora::Error& e) {
    EXPECT_NE(std::string(e.what()).find("sample 3 has 5000 tokens, more than micro_batch_tokens 4096"),
              std::string::npos)
        << e.what();
  }
  Data ok = make_data(10, 1, 100);
  StepPlanner p = planner(ok, 1, 1, 1, 0, 4096);
  EXPECT_THROW(p.plan({0, 10}), zlora::Error);  // 10 steps per epoch: 0..9
  PlanOptions o;
  o.micro_batch_tokens = 4096;
  StepPlanner dup(ok.lengths, ok.loss_tokens, o, [](long long) { return std::vector<int64_t>(10, 0); });
  EXPECT_THROW(dup.plan({0, 0}), zlora::Error);  // not a permutation
  EXPECT_THROW(StepPlanner({1, 2}, {1}, o, shuffled(2)), zlora::Error);
  o.rank = 1;
  EXPECT_THROW(StepPlanner(ok.lengths, ok.loss_tokens, o, shuffled(10)), zlora::Error);
  EXPECT_EQ(resolve_micro_batch_tokens(0, 2, 1024), 2048);
  EXPECT_EQ(resolve_micro_batch_tokens(3000, 2, 1024), 3000);
  EXPECT_THROW(resolve_micro_batch_tokens(-1, 2, 1024), zlora::Error);
}

TEST(StepPlan, SamplerStateRoundTripsAndRefusesAnotherOrder) {
  Data d = make_data(96, 7);
  StepPlanner p = planner(d, 2, 6, 1, 0, 1024);  // G 12, 8 steps per epoch
  std::string text = p.encode({1, 6}, 42, true);
  auto j = nlohmann::json::parse(text);
  EXPECT_EQ(j["global_batch"], 12);
  EXPECT_EQ(j["num_samples"], 96);
  // Same G at another world size: the same position.
  StepPlanner w3 = planner(d, 2, 2, 3, 1, 1024);
  EXPECT_EQ(w3.decode(text, 42, true), (SamplerPosition{1, 6}));
  // Another G: mapped by samples consumed (6 x 12 = 72 = 3 x 24), or refused when not whole.
  StepPlanner g24 = planner(d, 4, 3, 2, 0, 1024);
  EXPECT_EQ(g24.decode(text, 42, true), (SamplerPosition{1, 3}));
  StepPlanner g16 = planner(d, 2, 4, 2, 0, 1024);
  EXPECT_THROW(g16.decode(p.encode({1, 1}, 42, true), 42, true), zlora::Error);  // 12 samples: not 16k
  EXPECT_THROW(p.decode(text, 43, true), zlora::Error);
  EXPECT_THROW(p.decode(text, 42, false), zlora::Error);
  StepPlanner other = planner(make_data(97, 7), 2, 6, 1, 0, 1024);
  EXPECT_THROW(other.decode(text, 42, true), zlora::Error);
  EXPECT_THROW(p.decode("{}", 42, true), zlora::Error);
  EXPECT_THROW(p.decode("garbage", 42, true), zlora::Error);
}
