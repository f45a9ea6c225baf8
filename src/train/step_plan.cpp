#include "zlora/train/step_plan.h"

#include "zlora/core/error.h"
#include "zlora/train/schedule.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <numeric>

namespace zlora::train {

long long resolve_micro_batch_tokens(long long micro_batch_tokens, long long per_device_batch, long long cutoff_len) {
  ZLORA_REQUIRE(micro_batch_tokens >= 0,
                "micro_batch_tokens must be >= 0 (0 = per_device_train_batch_size x "
                "cutoff_len), got {}",
                micro_batch_tokens);
  if (micro_batch_tokens > 0) return micro_batch_tokens;
  ZLORA_REQUIRE(per_device_batch >= 1 && cutoff_len >= 1,
                "per_device_train_batch_size ({}) and cutoff_len ({}) must be >= 1", per_device_batch, cutoff_len);
  return per_device_batch * cutoff_len;
}

StepPlanner::StepPlanner(std::vector<int64_t> lengths, std::vector<int64_t> loss_tokens, PlanOptions options,
                         EpochOrder order)
    : lengths_(std::move(lengths)), loss_tokens_(std::move(loss_tokens)), opt_(options), order_fn_(std::move(order)) {
  ZLORA_REQUIRE(!lengths_.empty(), "the training set is empty: no samples to plan steps for");
  ZLORA_REQUIRE(lengths_.size() == loss_tokens_.size(), "step planner: {} sample lengths but {} loss-token counts",
                lengths_.size(), loss_tokens_.size());
  ZLORA_REQUIRE(opt_.world_size >= 1 && opt_.rank >= 0 && opt_.rank < opt_.world_size,
                "step planner: rank {} is outside world size {}", opt_.rank, opt_.world_size);
  ZLORA_REQUIRE(opt_.micro_batch_tokens >= 1, "micro_batch_tokens must be >= 1, got {}", opt_.micro_batch_tokens);
  ZLORA_REQUIRE(bool(order_fn_), "step planner: no epoch order given");
  StepCounts counts = count_steps(num_samples(), opt_.per_device_batch, opt_.grad_accum, opt_.world_size, 1.0, -1);
  global_batch_ = counts.global_batch;
  steps_per_epoch_ = opt_.steps_per_epoch > 0 ? opt_.steps_per_epoch : counts.steps_per_epoch;
  for (size_t i = 0; i < lengths_.size(); ++i) {
    ZLORA_REQUIRE(lengths_[i] >= 1, "sample {} has {} tokens; every sample needs at least one", i, lengths_[i]);
    ZLORA_REQUIRE(loss_tokens_[i] >= 0 && loss_tokens_[i] <= lengths_[i], "sample {}: {} loss tokens for {} tokens", i,
                  loss_tokens_[i], lengths_[i]);
    // A sample is never split across micro-batches, so the budget must hold the longest one.
    ZLORA_REQUIRE(lengths_[i] <= opt_.micro_batch_tokens,
                  "sample {} has {} tokens, more than micro_batch_tokens {}; raise micro_batch_tokens (0 = "
                  "per_device_train_batch_size x cutoff_len) or lower cutoff_len and re-tokenize",
                  i, lengths_[i], opt_.micro_batch_tokens);
  }
}

SamplerPosition StepPlanner::position_of(long long global_step) const {
  ZLORA_REQUIRE(global_step >= 0, "negative global step {}", global_step);
  return {global_step / steps_per_epoch_, global_step % steps_per_epoch_};
}

SamplerPosition StepPlanner::next(SamplerPosition pos) const {
  if (pos.step_in_epoch + 1 < steps_per_epoch_) return {pos.epoch, pos.step_in_epoch + 1};
  return {pos.epoch + 1, 0};
}

const std::vector<int64_t>& StepPlanner::order_for(long long epoch) const {
  if (cached_epoch_ != epoch) {
    std::vector<int64_t> order = order_fn_(epoch);
    ZLORA_REQUIRE((long long)order.size() == num_samples(), "epoch {} order has {} entries for {} samples", epoch,
                  order.size(), num_samples());
    std::vector<char> seen(order.size(), 0);
    for (int64_t i : order) {
      ZLORA_REQUIRE(i >= 0 && i < num_samples() && !seen[i], "epoch {} order is not a permutation of 0..{}", epoch,
                    num_samples() - 1);
      seen[i] = 1;
    }
    cached_order_ = std::move(order);
    cached_epoch_ = epoch;
  }
  return cached_order_;
}

StepPlan StepPlanner::plan(SamplerPosition pos) const {
  ZLORA_REQUIRE(pos.epoch >= 0 && pos.step_in_epoch >= 0 && pos.step_in_epoch < steps_per_epoch_,
                "sampler position (epoch {}, step {}) is outside 0..{} steps per epoch; was the checkpoint written "
                "with another dataset or batch size?",
                pos.epoch, pos.step_in_epoch, steps_per_epoch_ - 1);
  const std::vector<int64_t>& order = order_for(pos.epoch);
  const long long n = num_samples();
  long long begin = std::min(n, pos.step_in_epoch * global_batch_);
  long long end = pos.step_in_epoch + 1 == steps_per_epoch_ ? n : std::min(n, begin + global_batch_);

  StepPlan p;
  p.position = pos;
  p.global_step = pos.epoch * steps_per_epoch_ + pos.step_in_epoch;
  p.step_samples.assign(order.begin() + begin, order.begin() + end);

  // Longest first (ties by index, so every rank computes the same split), each to the least-loaded rank:
  // the classic LPT bound keeps any two ranks within one sample length of each other.
  std::vector<int64_t> by_len = p.step_samples;
  std::sort(by_len.begin(), by_len.end(),
            [&](int64_t a, int64_t b) { return lengths_[a] != lengths_[b] ? lengths_[a] > lengths_[b] : a < b; });
  const long long W = opt_.world_size;
  p.rank_tokens.assign(W, 0);
  std::vector<std::vector<MicroBatch>> per_rank(W);
  for (int64_t s : by_len) {
    long long r = std::min_element(p.rank_tokens.begin(), p.rank_tokens.end()) - p.rank_tokens.begin();
    p.rank_tokens[r] += lengths_[s];
    p.global_tokens += lengths_[s];
    p.global_loss_tokens += loss_tokens_[s];
    // First fit into this rank's micro-batches (samples arrive longest first: first-fit decreasing).
    auto& mbs = per_rank[r];
    auto fit = std::find_if(mbs.begin(), mbs.end(),
                            [&](const MicroBatch& m) { return m.tokens + lengths_[s] <= opt_.micro_batch_tokens; });
    if (fit == mbs.end()) fit = mbs.insert(mbs.end(), MicroBatch{});
    fit->samples.push_back(s);
    fit->tokens += lengths_[s];
    fit->loss_tokens += loss_tokens_[s];
  }
  size_t count = 1;  // at least one micro-batch, so a rank with no sample still joins the step's collectives
  for (const auto& mbs : per_rank) count = std::max(count, mbs.size());
  p.micro_batches = std::move(per_rank[opt_.rank]);
  p.num_real_micro_batches = (long long)p.micro_batches.size();
  p.micro_batches.resize(count);
  return p;
}

std::string StepPlanner::encode(SamplerPosition pos, long long seed, bool shuffle) const {
  return nlohmann::json{{"epoch", pos.epoch},
                        {"step_in_epoch", pos.step_in_epoch},
                        {"num_samples", num_samples()},
                        {"global_batch", global_batch_},
                        {"steps_per_epoch", steps_per_epoch_},
                        {"seed", seed},
                        {"shuffle", shuffle}}
      .dump();
}

SamplerPosition StepPlanner::decode(const std::string& text, long long seed, bool shuffle) const {
  auto j = nlohmann::json::parse(text, nullptr, false);
  ZLORA_REQUIRE(j.is_object(), "checkpoint sampler state is not JSON: '{}'", text.substr(0, 80));
  SamplerPosition pos;
  long long n = 0, g = 0, saved_seed = 0;
  bool saved_shuffle = true;
  try {
    pos.epoch = j.at("epoch").get<long long>();
    pos.step_in_epoch = j.at("step_in_epoch").get<long long>();
    n = j.at("num_samples").get<long long>();
    g = j.at("global_batch").get<long long>();
    saved_seed = j.at("seed").get<long long>();
    saved_shuffle = j.at("shuffle").get<bool>();
  } catch (const nlohmann::json::exception& e) {
    fail("checkpoint sampler state is incomplete: {}", e.what());
  }
  ZLORA_REQUIRE(n == num_samples(),
                "the checkpoint was trained on {} samples, this run has {}: resume with the same token store", n,
                num_samples());
  ZLORA_REQUIRE(saved_seed == seed && saved_shuffle == shuffle,
                "the checkpoint's sample order used seed {} (shuffling {}), this run seed {} (shuffling {}): "
                "resume with the same --seed and --disable_shuffling",
                saved_seed, saved_shuffle ? "on" : "off", seed, shuffle ? "on" : "off");
  if (g != global_batch_) {
    long long consumed = pos.step_in_epoch * g;
    ZLORA_REQUIRE(consumed % global_batch_ == 0 && consumed / global_batch_ < steps_per_epoch_,
                  "the checkpoint's global batch was {} samples, this run's is {} (per_device_train_batch_size x "
                  "gradient_accumulation_steps x world size), and its position ({} samples into epoch {}) is not a "
                  "whole number of this run's steps; resume with a global batch of {}",
                  g, global_batch_, consumed, pos.epoch, g);
    pos.step_in_epoch = consumed / global_batch_;
  }
  ZLORA_REQUIRE(pos.epoch >= 0 && pos.step_in_epoch >= 0 && pos.step_in_epoch < steps_per_epoch_,
                "checkpoint sampler position (epoch {}, step {}) is outside this run's {} steps per epoch", pos.epoch,
                pos.step_in_epoch, steps_per_epoch_);
  return pos;
}

}  // namespace zlora::train
