// ZeRO against a single-process reference on a LoRA-shaped toy (run at np 1, 2, 3): frozen random
// W_l, b_l per layer plus trainable lora_A/lora_B of odd sizes (partitions straddle tensors), a summed
// cross-entropy divided by the global target count, a fixed global batch of which each rank computes
// its share in micro-batches. The reference is libtorch's own torch::optim::AdamW and
// torch::nn::utils::clip_grad_norm_ over the whole batch in one process.
#include "dist/mpi_test_main.h"
#include "zlora/core/error.h"
#include "zlora/dist/mpi_communicator.h"
#include "zlora/zero/memory_plan.h"
#include "zlora/zero/weight_store.h"
#include "zlora/zero/zero_optimizer.h"

#include <torch/torch.h>

#include <cstring>
#include <functional>
#include <map>

using zlora::test::test_mpi;
namespace zero = zlora::zero;

namespace {

constexpr int kSteps = 10;
constexpr int kGlobalBatch = 6;  // samples per optimizer step; divisible by 1, 2, 3 ranks
constexpr int64_t kRank = 3;
constexpr double kLr = 2e-2, kMaxNorm = 0.05, kScaling = 2.0;
const std::vector<int64_t> kDims = {11, 17, 13, 7};  // d_0 -> d_1 -> d_2 -> d_3 (= classes)

zero::AdamWOptions adam() {
  zero::AdamWOptions a;
  a.beta1 = 0.9;
  a.beta2 = 0.99;
  a.eps = 1e-8;
  a.weight_decay = 0.05;
  return a;
}

struct Sample {
  at::Tensor x;        // [t, d_0]
  at::Tensor targets;  // [t], -100 = masked
};

// Everything is generated from a fixed seed, identically on every rank.
struct Problem {
  std::vector<at::Tensor> W, b;              // frozen
  zero::NamedTensors lora_init;              // A_l [r, d_l], B_l [d_{l+1}, r]
  std::vector<std::vector<Sample>> batches;  // [step][sample]
  std::vector<int64_t> targets_per_step;

  Problem() {
    at::manual_seed(1234);
    const size_t L = kDims.size() - 1;
    for (size_t l = 0; l < L; ++l) {
      W.push_back(at::randn({kDims[l + 1], kDims[l]}) / std::sqrt(static_cast<double>(kDims[l])));
      b.push_back(at::randn({kDims[l + 1]}) * 0.1);
      const std::string prefix = "base_model.model.model.layers." + std::to_string(l) + ".mlp.proj.";
      lora_init.emplace_back(prefix + "lora_A.weight", at::randn({kRank, kDims[l]}) * 0.3);
      lora_init.emplace_back(prefix + "lora_B.weight", at::randn({kDims[l + 1], kRank}) * 0.3);
    }
    // Twice as many steps as the longest test trains, for the resume test.
    for (int s = 0; s < 2 * kSteps; ++s) {
      std::vector<Sample> batch;
      int64_t count = 0;
      for (int i = 0; i < kGlobalBatch; ++i) {
        const int64_t t = 3 + (s * 7 + i * 5) % 6;
        Sample smp{at::randn({t, kDims[0]}), at::randint(0, kDims.back(), {t}, at::kLong)};
        smp.targets.masked_fill_(at::rand({t}) < 0.2, -100);
        count += smp.targets.ne(-100).sum().item<int64_t>();
        batch.push_back(smp);
      }
      targets_per_step.push_back(std::max<int64_t>(count, 1));
      batches.push_back(std::move(batch));
    }
  }
};

const Problem& problem() {
  static const Problem p;
  return p;
}

using Frozen = std::function<std::pair<at::Tensor, at::Tensor>(size_t layer)>;

at::Tensor sample_loss(const Sample& s, const Frozen& frozen, const zero::NamedTensors& lora, int64_t step_targets) {
  at::Tensor h = s.x;
  const size_t L = kDims.size() - 1;
  for (size_t l = 0; l < L; ++l) {
    auto [W, b] = frozen(l);
    const at::Tensor& A = lora[2 * l].second;
    const at::Tensor& B = lora[2 * l + 1].second;
    h = at::matmul(h, W.t()) + b + kScaling * at::matmul(at::matmul(h, A.t()), B.t());
    if (l + 1 < L) h = at::tanh(h);
  }
  return at::cross_entropy_loss(h, s.targets, {}, at::Reduction::Sum, -100) / static_cast<double>(step_targets);
}

Frozen resident_frozen() {
  return [](size_t l) { return std::make_pair(problem().W[l], problem().b[l]); };
}

zero::NamedTensors fresh_params() {
  zero::NamedTensors out;
  for (const auto& [name, t] : problem().lora_init) out.emplace_back(name, t.clone().set_requires_grad(true));
  return out;
}

struct Reference {
  std::vector<zero::NamedTensors> weights;  // after each step
  std::vector<double> norms;
};

// Single process: the whole global batch per step, libtorch's AdamW and clip_grad_norm_.
const Reference& reference() {
  static const Reference ref = [] {
    Reference r;
    zero::NamedTensors params = fresh_params();
    std::vector<at::Tensor> list;
    for (auto& [n, p] : params) list.push_back(p);
    const auto a = adam();
    torch::optim::AdamW opt(
        list, torch::optim::AdamWOptions(kLr).betas({a.beta1, a.beta2}).eps(a.eps).weight_decay(a.weight_decay));
    for (int s = 0; s < 2 * kSteps; ++s) {
      opt.zero_grad();
      for (const Sample& smp : problem().batches[s])
        sample_loss(smp, resident_frozen(), params, problem().targets_per_step[s]).backward();
      r.norms.push_back(torch::nn::utils::clip_grad_norm_(list, kMaxNorm));
      opt.step();
      zero::NamedTensors snap;
      for (auto& [n, p] : params) snap.emplace_back(n, p.detach().clone());
      r.weights.push_back(std::move(snap));
    }
    return r;
  }();
  return ref;
}

double max_rel_error(const zero::NamedTensors& got, const zero::NamedTensors& want) {
  double worst = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    const at::Tensor g = got[i].second.detach(), w = want[i].second;
    worst = std::max(worst, (g - w).abs().max().item<double>() / w.abs().max().item<double>());
  }
  return worst;
}

struct Config {
  int stage;
  bool offload;
  int64_t bucket;  // reduce and all-gather bucket size (elements)
  int64_t alignment;
  std::string label() const {
    return "stage " + std::to_string(stage) + (offload ? " offload" : "") + " bucket " + std::to_string(bucket) +
           " align " + std::to_string(alignment);
  }
};

zero::ZeroOptions options_for(const Config& c) {
  zero::ZeroOptions o;
  o.stage = c.stage;
  o.offload = c.offload;
  o.reduce_bucket_size = c.bucket;
  o.allgather_bucket_size = c.bucket;
  o.alignment = c.alignment;
  o.max_grad_norm = kMaxNorm;
  o.adam = adam();
  return o;
}

// One optimizer step's share of rank `rank` of `world`: samples [rank*G/world, (rank+1)*G/world).
void run_steps(zero::ZeroOptimizer& opt, zlora::dist::Communicator& comm, const zero::NamedTensors& params, int first,
               int last, const Frozen& frozen, std::vector<double>* norms) {
  const int share = kGlobalBatch / comm.size();
  for (int s = first; s < last; ++s) {
    opt.zero_grad();
    for (int i = comm.rank() * share; i < (comm.rank() + 1) * share; ++i)
      sample_loss(problem().batches[s][i], frozen, params, problem().targets_per_step[s]).backward();
    const double norm = opt.step(kLr);
    if (norms) norms->push_back(norm);
  }
}

std::unique_ptr<zlora::dist::MpiCommunicator> world_comm() {
  return std::make_unique<zlora::dist::MpiCommunicator>(test_mpi(), test_mpi().world(), 120);
}

// ZeRO-3's frozen weights: unit l = {W_l, b_l}; the loader records what this rank asked for.
struct RecordingLoader {
  std::map<std::string, at::Tensor> full;
  int64_t loaded = 0;
  std::vector<std::string> bad;
  RecordingLoader() {
    for (size_t l = 0; l < problem().W.size(); ++l) {
      full["W" + std::to_string(l)] = problem().W[l];
      full["b" + std::to_string(l)] = problem().b[l];
    }
  }
  zero::SliceLoader loader() {
    return [this](const std::string& name, int64_t offset, int64_t count) {
      auto it = full.find(name);
      if (it == full.end() || offset < 0 || offset + count > it->second.numel()) {
        bad.push_back(name);
        return at::zeros({count});
      }
      loaded += count;
      return it->second.reshape({-1}).narrow(0, offset, count).clone();
    };
  }
};

std::vector<zero::UnitSpec> unit_specs() {
  std::vector<zero::UnitSpec> units;
  for (size_t l = 0; l < problem().W.size(); ++l)
    units.push_back({{"W" + std::to_string(l), problem().W[l].sizes().vec()},
                     {"b" + std::to_string(l), problem().b[l].sizes().vec()}});
  return units;
}

}  // namespace

TEST(ZeroOptimizer, StagesMatchSingleProcessAdamW) {
  auto comm = world_comm();
  const Reference& ref = reference();
  // Clipping must actually be exercised by the reference.
  int clipped = 0;
  for (int s = 0; s < kSteps; ++s) clipped += ref.norms[s] > kMaxNorm;
  ASSERT_GT(clipped, 0);
  const std::vector<Config> configs = {
      {0, false, 500000000, 64},
      {1, false, 500000000, 64},
      {2, false, 500000000, 64},
      {3, false, 500000000, 64},
      {1, true, 500000000, 64},
      {2, true, 500000000, 64},
      // Small buckets and no padding slack: many buckets, parameters straddling partitions.
      {0, false, 40, 1},
      {1, false, 40, 1},
      {2, false, 23, 1},
      {2, true, 23, 1},
      {3, false, 7, 1}};
  for (const Config& c : configs) {
    SCOPED_TRACE(c.label());
    zero::NamedTensors params = fresh_params();
    zero::ZeroOptimizer opt(params, *comm, options_for(c));
    EXPECT_EQ(opt.padded_numel() % (comm->size() * c.alignment), 0);
    EXPECT_EQ(opt.partition_numel() * comm->size(), opt.padded_numel());
    std::vector<double> norms;
    run_steps(opt, *comm, params, 0, kSteps, resident_frozen(), &norms);
    const double err = max_rel_error(params, ref.weights[kSteps - 1]);
    EXPECT_LE(err, 1e-5);
    for (int s = 0; s < kSteps; ++s) EXPECT_NEAR(norms[s], ref.norms[s], 1e-5 * ref.norms[s]) << "step " << s;
    // The weights moved, and the caller's tensors are the optimizer's views.
    EXPECT_GT(max_rel_error(params, problem().lora_init), 1e-3);
    const auto f = opt.footprint();
    const int64_t state = 2 * opt.partition_numel() * 4;
    if (c.offload) {
      EXPECT_EQ(f.device_state, 0);
      EXPECT_EQ(f.host_state, 2 * state);  // master, grad staging, m, v of the partition
    } else {
      EXPECT_EQ(f.device_state, c.stage == 0 ? 2 * opt.padded_numel() * 4 : state);
    }
  }
}

TEST(ZeroOptimizer, Stage3WithPartitionedFrozenWeights) {
  auto comm = world_comm();
  const int world = comm->size(), rank = comm->rank();
  RecordingLoader rec;
  zero::WeightStoreOptions wo;
  wo.dtype = at::kFloat;
  wo.prefetch = 1;
  wo.alignment = 4;
  zero::PartitionedWeightStore store(unit_specs(), rec.loader(), *comm, wo);
  EXPECT_TRUE(rec.bad.empty());

  // Each rank holds (and loaded) only its shard: sizes from the unit sizes, independently computed.
  int64_t expected_local = 0, expected_loaded = 0, total = 0;
  for (int u = 0; u < store.num_units(); ++u) {
    const int64_t n = problem().W[u].numel() + problem().b[u].numel();
    EXPECT_EQ(store.unit_numel(u), n);
    const int64_t shard = (n + world * 4 - 1) / (world * 4) * 4;
    EXPECT_EQ(store.shard_numel(u), shard);
    expected_local += shard;
    expected_loaded += std::max<int64_t>(0, std::min(n, (rank + 1) * shard) - std::min(n, rank * shard));
    total += n;
  }
  EXPECT_EQ(store.local_numel(), expected_local);
  EXPECT_EQ(rec.loaded, expected_loaded);
  int64_t all_loaded = rec.loaded;
  MPI_Allreduce(MPI_IN_PLACE, &all_loaded, 1, MPI_INT64_T, MPI_SUM, test_mpi().world());
  EXPECT_EQ(all_loaded, total);  // every element loaded by exactly one rank
  if (world > 1) {
    EXPECT_LT(store.local_numel(), total);
  }

  // Forward-order acquire gathers exact weights and prefetches the next unit; release frees.
  for (int u = 0; u < store.num_units(); ++u) {
    auto w = store.acquire(u);
    ASSERT_EQ(w.size(), 2u);
    EXPECT_TRUE(at::equal(w[0].second, problem().W[u]));
    EXPECT_TRUE(at::equal(w[1].second, problem().b[u]));
    if (u + 1 < store.num_units()) {
      EXPECT_TRUE(store.is_gathered(u + 1));
    }
    store.release(u);
    EXPECT_FALSE(store.is_gathered(u));
  }
  // Backward order prefetches downwards.
  for (int u = store.num_units() - 1; u >= 0; --u) {
    auto w = store.acquire(u);
    EXPECT_TRUE(at::equal(w[0].second, problem().W[u]));
    if (u > 0 && u < store.num_units() - 1) {
      EXPECT_TRUE(store.is_gathered(u - 1));
    }
    store.release(u);
  }
  EXPECT_THROW(store.release(0), zlora::Error);
  EXPECT_THROW(store.acquire(store.num_units()), zlora::Error);

  // Training with the frozen weights coming through the store matches the reference.
  zero::ZeroOptions o = options_for({3, false, 500000000, 64});
  zero::NamedTensors params = fresh_params();
  zero::ZeroOptimizer opt(params, *comm, o);
  std::vector<at::Tensor> held;
  Frozen through_store = [&](size_t l) {
    auto w = store.acquire(static_cast<int>(l));
    // The autograd graph keeps the gathered tensors alive for the backward; the real decoder re-acquires.
    store.release(static_cast<int>(l));
    return std::make_pair(w[0].second, w[1].second);
  };
  run_steps(opt, *comm, params, 0, kSteps, through_store, nullptr);
  EXPECT_LE(max_rel_error(params, reference().weights[kSteps - 1]), 1e-5);
}

namespace {

// Test-only transport of optimizer state between ranks (the ckpt module writes files instead).
std::vector<zero::StateSlice> all_slices(const zero::OptimizerState& mine, int64_t* step) {
  std::string bytes;
  auto put = [&](const void* p, size_t n) { bytes.append(static_cast<const char*>(p), n); };
  for (const auto& s : mine.slices) {
    int64_t header[4] = {static_cast<int64_t>(s.name.size()), static_cast<int64_t>(s.shape.size()), s.offset,
                         s.master.numel()};
    put(header, sizeof header);
    put(s.name.data(), s.name.size());
    put(s.shape.data(), s.shape.size() * sizeof(int64_t));
    for (const at::Tensor* t : {&s.master, &s.exp_avg, &s.exp_avg_sq})
      put(t->contiguous().data_ptr<float>(), t->numel() * sizeof(float));
  }
  const int world = test_mpi().size();
  int n = static_cast<int>(bytes.size());
  std::vector<int> sizes(world), displs(world);
  MPI_Allgather(&n, 1, MPI_INT, sizes.data(), 1, MPI_INT, test_mpi().world());
  int totalb = 0;
  for (int r = 0; r < world; ++r) {
    displs[r] = totalb;
    totalb += sizes[r];
  }
  std::string all(totalb, '\0');
  MPI_Allgatherv(bytes.data(), n, MPI_BYTE, all.data(), sizes.data(), displs.data(), MPI_BYTE, test_mpi().world());
  int64_t max_step = mine.step;
  MPI_Allreduce(MPI_IN_PLACE, &max_step, 1, MPI_INT64_T, MPI_MAX, test_mpi().world());
  *step = max_step;
  std::vector<zero::StateSlice> out;
  size_t pos = 0;
  auto get = [&](void* p, size_t k) {
    std::memcpy(p, all.data() + pos, k);
    pos += k;
  };
  while (pos < all.size()) {
    int64_t header[4];
    get(header, sizeof header);
    zero::StateSlice s;
    s.name.resize(header[0]);
    get(s.name.data(), header[0]);
    s.shape.resize(header[1]);
    get(s.shape.data(), header[1] * sizeof(int64_t));
    s.offset = header[2];
    for (at::Tensor* t : {&s.master, &s.exp_avg, &s.exp_avg_sq}) {
      *t = at::empty({header[3]}, at::kFloat);
      get(t->data_ptr<float>(), header[3] * sizeof(float));
    }
    out.push_back(std::move(s));
  }
  return out;
}

}  // namespace

// Save after 5 steps at world size W-1 (W at np 1), load at world size W with another stage, train 5
// more: the weights equal 10 steps of the reference.
TEST(ZeroOptimizer, StateRepartitionsAcrossWorldSizeAndStage) {
  auto comm = world_comm();
  const int world = comm->size();
  const int saved_world = std::max(1, world - 1);
  auto first = comm->split(comm->rank() < saved_world ? 0 : -1);
  const int half = kSteps / 2;
  const std::vector<std::pair<Config, Config>> cases = {{{2, false, 500000000, 4}, {1, true, 500000000, 64}},
                                                        {{0, false, 500000000, 64}, {3, false, 13, 1}},
                                                        {{1, true, 17, 1}, {2, false, 500000000, 4}}};
  for (const auto& [before, after] : cases) {
    SCOPED_TRACE(before.label() + " -> " + after.label());
    zero::OptimizerState saved;
    if (first) {
      zero::NamedTensors params = fresh_params();
      zero::ZeroOptimizer opt(params, *first, options_for(before));
      run_steps(opt, *first, params, 0, half, resident_frozen(), nullptr);
      saved = opt.export_state();
      EXPECT_EQ(saved.step, half);
    }
    int64_t step = 0;
    zero::OptimizerState loaded;
    loaded.slices = all_slices(saved, &step);
    loaded.step = step;
    // Arbitrary starting weights: import must set them from the saved masters.
    zero::NamedTensors params = fresh_params();
    for (auto& [n, p] : params) p.detach().zero_();
    zero::ZeroOptimizer opt(params, *comm, options_for(after));
    opt.import_state(loaded);
    EXPECT_EQ(opt.step_count(), half);
    EXPECT_LE(max_rel_error(params, reference().weights[half - 1]), 1e-5);
    run_steps(opt, *comm, params, half, kSteps, resident_frozen(), nullptr);
    EXPECT_LE(max_rel_error(params, reference().weights[kSteps - 1]), 1e-5);

    // Incomplete or foreign state is refused (stage 0 needs everything on every rank: all ranks throw).
    zero::NamedTensors p0 = fresh_params();
    zero::ZeroOptimizer full(p0, *comm, options_for({0, false, 500000000, 64}));
    zero::OptimizerState missing = loaded;
    missing.slices.pop_back();
    try {
      full.import_state(missing);
      ADD_FAILURE() << "incomplete state accepted";
    } catch (const zlora::Error& e) {
      EXPECT_NE(std::string(e.what()).find("missing"), std::string::npos) << e.what();
    }
    zero::OptimizerState foreign = loaded;
    foreign.slices[0].name = "base_model.model.lm_head.lora_A.weight";
    EXPECT_THROW(full.import_state(foreign), zlora::Error);
  }
}

TEST(ZeroOptimizer, BadConfigurationsAreClearErrors) {
  auto comm = world_comm();
  auto expect_error = [](const std::function<void()>& f, const std::string& needle) {
    try {
      f();
      ADD_FAILURE() << "accepted; expected an error mentioning " << needle;
    } catch (const zlora::Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  auto opts = [](int stage, bool offload) {
    zero::ZeroOptions o;
    o.stage = stage;
    o.offload = offload;
    return o;
  };
  expect_error([&] { zero::ZeroOptimizer(fresh_params(), *comm, opts(4, false)); }, "zero_stage");
  expect_error([&] { zero::ZeroOptimizer(fresh_params(), *comm, opts(0, true)); }, "offload_optimizer");
  expect_error([&] { zero::ZeroOptimizer({}, *comm, opts(1, false)); }, "no trainable");
  expect_error(
      [&] {
        auto p = fresh_params();
        p[1].first = p[0].first;
        zero::ZeroOptimizer(p, *comm, opts(1, false));
      },
      "twice");
  expect_error(
      [&] {
        auto p = fresh_params();
        p[2].second = p[2].second.detach().to(at::kDouble).set_requires_grad(true);
        zero::ZeroOptimizer(p, *comm, opts(1, false));
      },
      "fp32");
  // Ranks building different trainable sets all get the same error instead of a silent mismatch.
  if (comm->size() > 1) {
    expect_error(
        [&] {
          auto p = fresh_params();
          if (comm->rank() == 0) p.pop_back();
          zero::ZeroOptimizer(p, *comm, opts(1, false));
        },
        "ranks disagree");
  }
  // A .grad replaced behind the optimizer's back is caught before any communication.
  auto p = fresh_params();
  zero::ZeroOptimizer opt(p, *comm, opts(2, false));
  p[3].second.mutable_grad() = at::Tensor();
  expect_error([&] { opt.step(1e-3); }, "no longer views");
}

TEST(MemoryPlan, ComponentsFollowStageOffloadAndWorld) {
  zero::MemoryPlanInput in;
  in.base_params = 7'600'000'000;
  in.largest_unit_params = 545'000'000;
  in.lora_params = 20'185'088;
  in.vocab_size = 152064;
  in.activation_bytes_per_token = 4'500'000;  // Qwen2.5-7B's order (model::activation_bytes)
  in.checkpointed_activation_bytes_per_token = 400'000;
  in.loss_chunk_tokens = 256;
  in.tokens_per_micro_batch = 4096;
  in.world_size = 8;
  const auto at = [&](int stage, bool offload) {
    auto i = in;
    i.stage = stage;
    i.offload = offload;
    return zero::plan_memory(i);
  };
  const auto s0 = at(0, false), s1 = at(1, false), s2 = at(2, false), s3 = at(3, false), o1 = at(1, true);
  EXPECT_EQ(s0.base_weights, in.base_params * 2);
  EXPECT_EQ(s0.lora_weights, in.lora_params * 4);
  EXPECT_EQ(s0.optimizer, 2 * in.lora_params * 4);
  EXPECT_EQ(s1.optimizer, s0.optimizer / 8);
  EXPECT_EQ(s2.grads, s1.grads + in.lora_params * 4 / 8);
  EXPECT_EQ(o1.optimizer, 0);
  EXPECT_EQ(o1.host_optimizer, 4 * in.lora_params * 4 / 8);
  EXPECT_LT(s3.base_weights, s0.base_weights / 2);
  EXPECT_EQ(s0.activations, s3.activations);
  EXPECT_EQ(s0.activations, 4096 * in.activation_bytes_per_token + 2 * 256 * in.vocab_size * 4);
  EXPECT_EQ(s0.total, s0.base_weights + s0.lora_weights + s0.grads + s0.optimizer + s0.activations + in.reserve_bytes);
  auto ckpt = in;
  ckpt.gradient_checkpointing = true;
  EXPECT_LT(zero::plan_memory(ckpt).activations, s0.activations);
  EXPECT_NE(s0.describe().find("base weights"), std::string::npos);

  // No device: nothing to check. Enough room: no error. Only stage 3 fits: the refusal says so.
  EXPECT_NO_THROW(zero::require_fits(in));
  in.free_device_bytes = s0.total;
  EXPECT_NO_THROW(zero::require_fits(in));
  in.free_device_bytes = (s3.total + at(2, true).total) / 2;
  ASSERT_LT(s3.total, at(2, true).total);
  try {
    zero::require_fits(in);
    ADD_FAILURE() << "accepted";
  } catch (const zlora::Error& e) {
    EXPECT_NE(std::string(e.what()).find("zero_stage 3 would need"), std::string::npos) << e.what();
  }
  in.free_device_bytes = int64_t{1} << 30;
  try {
    zero::require_fits(in);
    ADD_FAILURE() << "accepted";
  } catch (const zlora::Error& e) {
    EXPECT_NE(std::string(e.what()).find("no ZeRO stage fits"), std::string::npos) << e.what();
  }
  in.world_size = 0;
  EXPECT_THROW(zero::plan_memory(in), zlora::Error);
}
