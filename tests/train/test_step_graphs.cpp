// StepGraphs (cuda_graphs): a micro-batch padded into a bucket gives the loss and LoRA gradients of the
// unpadded batch (CPU, fp32, every build), and on a CUDA build a captured graph's replays give exactly
// what the same padded work run eagerly gives, dropout draws included.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <random>

#include "test_util.h"
#include "zlora/core/torch_compat.h"
#include "zlora/model/config.h"
#include "zlora/model/decoder.h"
#include "zlora/model/lora.h"
#include "zlora/model/safetensors.h"
#include "zlora/model/weights.h"
#include "zlora/train/step_graphs.h"

#if ZLORA_HAS_CUDA_GRAPHS
#include <ATen/cuda/CUDAGeneratorImpl.h>
#endif

namespace zm = zlora::model;
namespace zt = zlora::train;

namespace {

// qwen2: q/k/v biases; llama: head_dim 16, which the flash kernel takes (qwen2's 12 it does not).
const std::filesystem::path kQwen2 = zlora::test::source_dir() / "tests/golden/model/qwen2";
const std::filesystem::path kLlama = zlora::test::source_dir() / "tests/golden/model/llama";

// Samples of the given lengths with random ids; the first third of each is a masked prompt.
zm::PackedBatch random_batch(const std::vector<int64_t>& lengths, int64_t vocab, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int64_t> id(0, vocab - 1);
  std::vector<std::vector<int64_t>> ids, labels;
  for (int64_t n : lengths) {
    std::vector<int64_t> x(static_cast<size_t>(n)), y(static_cast<size_t>(n));
    for (int64_t t = 0; t < n; ++t) {
      x[static_cast<size_t>(t)] = id(rng);
      y[static_cast<size_t>(t)] = t < n / 3 ? -100 : x[static_cast<size_t>(t)];
    }
    ids.push_back(x);
    labels.push_back(y);
  }
  return zm::PackedBatch::from_samples(ids, labels);
}

// The LoRA gradients, copied to the CPU in fp32, then zeroed.
std::vector<at::Tensor> take_grads(zm::LoraAdapter& lora) {
  std::vector<at::Tensor> out;
  for (auto& [name, p] : lora.named_parameters()) {
    out.push_back(p.grad().defined() ? p.grad().to(at::kCPU, at::kFloat).clone() : at::zeros(p.sizes()));
    if (p.grad().defined()) p.mutable_grad().zero_();
  }
  return out;
}

double rel_err(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>() /
         std::max(1e-30, b.to(at::kDouble).abs().max().item<double>());
}

// The golden adapter's weights (non-zero A and B) with the given dropout.
zm::LoraAdapter golden_lora(const std::filesystem::path& dir, const zm::ModelConfig& config, at::Device dev,
                            double dropout) {
  zm::LoraAdapter golden = zm::LoraAdapter::load(dir, config, dev);
  zm::LoraConfig lc = golden.config();
  lc.dropout = dropout;
  zm::LoraAdapter out = zm::LoraAdapter::create(config, lc, dev);
  at::NoGradGuard no_grad;
  auto src = golden.named_parameters(), dst = out.named_parameters();
  for (size_t i = 0; i < dst.size(); ++i) {
    EXPECT_EQ(src[i].first, dst[i].first);
    dst[i].second.copy_(src[i].second);
  }
  return out;
}

struct Rig {
  zm::ModelConfig config;
  zm::SafetensorsModel st;
  zm::ResidentWeightStore store;
  zm::LoraAdapter lora;
  zm::Decoder decoder;
  Rig(const std::filesystem::path& dir, at::Device dev, at::ScalarType dtype, double dropout = 0)
      : config(zm::load_model_config(dir)),
        st(dir),
        store(config, st, dev, dtype),
        lora(golden_lora(dir, config, dev, dropout)),
        decoder(store, &lora) {
    // Gradient buffers that stay put, as ZeroOptimizer's flat views do.
    for (auto& [name, p] : lora.named_parameters()) p.mutable_grad() = at::zeros_like(p);
  }
};

}  // namespace

// Padding tokens as a separate sample and padding rows of weight 0 change neither the loss nor the
// gradients: CPU, fp32, math attention, several buckets and a bucket refilled with another batch.
TEST(StepGraphs, PaddedBatchGivesTheUnpaddedLossAndGradients) {
  const at::Device cpu(at::kCPU);
  Rig s(kQwen2, cpu, at::kFloat);
  zm::ForwardOptions fo;
  fo.training = false;  // no dropout: the padded shapes draw other masks
  fo.attention = zm::AttentionKernel::kMath;
  zt::StepGraphOptions go;
  go.token_granularity = 8;
  go.row_granularity = 4;
  go.max_seqlen = 16;
  zt::StepGraphs graphs(s.decoder, fo, cpu, go);
  const std::vector<std::vector<int64_t>> shapes = {{5, 9, 3}, {7, 7}, {6, 8, 2}, {15}, {4, 4, 4, 4}};
  for (size_t k = 0; k < shapes.size(); ++k) {
    const zm::PackedBatch batch = random_batch(shapes[k], s.config.vocab_size, 100 + uint32_t(k));
    const double w = 1.0 / double(k + 2);
    zm::LossResult eager = s.decoder.loss(batch, fo);
    (eager.sum * w).backward();
    const double eager_loss = eager.sum.item<double>();
    const std::vector<at::Tensor> eager_grads = take_grads(s.lora);

    at::Tensor acc = at::zeros({1}, at::kDouble);
    graphs.run(batch, w, acc);
    const std::vector<at::Tensor> padded_grads = take_grads(s.lora);
    EXPECT_NEAR(acc.item<double>(), eager_loss, 1e-5 * std::abs(eager_loss)) << "batch " << k;
    double worst = 0;
    for (size_t i = 0; i < eager_grads.size(); ++i) worst = std::max(worst, rel_err(padded_grads[i], eager_grads[i]));
    EXPECT_LE(worst, 1e-5) << "batch " << k;
    EXPECT_GT(eager_grads[0].abs().max().item<double>(), 0) << "the test must exercise non-zero gradients";
  }
  EXPECT_EQ(graphs.stats().eager, static_cast<long long>(shapes.size()));
  EXPECT_EQ(graphs.stats().captures, 0);  // the CPU never captures
}

TEST(StepGraphs, RefusesWhatAGraphWouldFreezeWrong) {
  zm::ForwardOptions fo;
  fo.training = true;
  const at::Device cuda(at::kCUDA, 0), cpu(at::kCPU);
  EXPECT_TRUE(zt::StepGraphs::unsupported(fo, cpu, true, 0).has_value());
  if (zlora::compat::kHasCudaGraphs) {
    EXPECT_FALSE(zt::StepGraphs::unsupported(fo, cuda, true, 2).has_value());
    EXPECT_NE(zt::StepGraphs::unsupported(fo, cuda, false, 0)->find("math attention"), std::string::npos);
    EXPECT_NE(zt::StepGraphs::unsupported(fo, cuda, true, 3)->find("ZeRO-3"), std::string::npos);
    zm::ForwardOptions neft = fo;
    neft.neftune_alpha = 5;
    EXPECT_NE(zt::StepGraphs::unsupported(neft, cuda, true, 0)->find("NEFTune"), std::string::npos);
    zm::ForwardOptions gc = fo;
    gc.gradient_checkpointing = true;
    EXPECT_NE(zt::StepGraphs::unsupported(gc, cuda, true, 0)->find("checkpointing"), std::string::npos);
  } else {
    EXPECT_TRUE(zt::StepGraphs::unsupported(fo, cuda, true, 0).has_value());
  }
}

#if ZLORA_HAS_CUDA_GRAPHS
// On the GPU, bf16 + flash attention + LoRA dropout 0.25: the captured graphs' replays (new buckets,
// refilled buckets) equal the same padded work run eagerly bit for bit, dropout masks included: with a
// generator of the caller's (bernoulli_ masks; the generator registered with each graph) and with the
// device's default generator (PyTorch's fused dropout kernel, what the trainer uses).
TEST(StepGraphs, ReplaysEqualTheEagerPaddedStepOnTheGpu) {
  ASSERT_TRUE(at::hasCUDA()) << "a CUDA build's tests run on a GPU machine";
  const at::Device dev(at::kCUDA, 0);
  for (const bool default_generator : {false, true}) {
    Rig graphed(kLlama, dev, at::kBFloat16, 0.25), eager(kLlama, dev, at::kBFloat16, 0.25);
    auto make_options = [&](uint64_t seed) {
      zm::ForwardOptions fo;
      fo.training = true;
      fo.attention = zm::AttentionKernel::kFlash;
      at::Generator g =
          default_generator ? at::cuda::detail::getDefaultCUDAGenerator(0) : at::cuda::detail::createCUDAGenerator(0);
      g.set_current_seed(seed);
      fo.generator = g;
      return fo;
    };
    zm::ForwardOptions o1 = make_options(7), o2 = make_options(7);
    zt::StepGraphOptions go;
    go.max_seqlen = 64;
    zt::StepGraphs g1(graphed.decoder, o1, dev, go);
    go.capture = false;
    zt::StepGraphs g2(eager.decoder, o2, dev, go);
    // Buckets: the first call runs eagerly, then (A) captured, (A) replayed with other data, (B) captured.
    const std::vector<std::vector<int64_t>> shapes = {{20, 30}, {25, 30}, {30, 20}, {60, 50, 40}, {20, 30}};
    for (size_t k = 0; k < shapes.size(); ++k) {
      const zm::PackedBatch batch = random_batch(shapes[k], graphed.config.vocab_size, 300 + uint32_t(k));
      at::Tensor a1 = at::zeros({1}, at::TensorOptions().dtype(at::kDouble).device(dev)), a2 = a1.clone();
      // One shared default generator: both sides start each batch from the same state.
      const at::Tensor start = o1.generator->get_state();
      g1.run(batch, 0.01, a1);
      const at::Tensor after = o1.generator->get_state();
      if (default_generator) o2.generator->set_state(start);
      g2.run(batch, 0.01, a2);
      EXPECT_TRUE(at::equal(o2.generator->get_state(), after)) << "both drew the same amount, batch " << k;
      EXPECT_EQ(a1.item<double>(), a2.item<double>()) << "batch " << k << " default " << default_generator;
      const auto r1 = take_grads(graphed.lora), r2 = take_grads(eager.lora);
      for (size_t i = 0; i < r1.size(); ++i)
        EXPECT_TRUE(at::equal(r1[i], r2[i])) << "batch " << k << " grad " << i << " default " << default_generator;
    }
    EXPECT_EQ(g1.stats().eager, 1);
    EXPECT_EQ(g1.stats().captures, 2);
    EXPECT_EQ(g1.stats().replays, 4);
  }
}

// Without dropout the replayed padded step is the unpadded eager step up to bf16 rounding (flash
// attention over the extra padding sample, the larger max_seqlen grid, weight-0 loss rows).
TEST(StepGraphs, ReplaysMatchTheUnpaddedStepInBf16OnTheGpu) {
  ASSERT_TRUE(at::hasCUDA()) << "a CUDA build's tests run on a GPU machine";
  const at::Device dev(at::kCUDA, 0);
  Rig graphed(kLlama, dev, at::kBFloat16), eager(kLlama, dev, at::kBFloat16);
  zm::ForwardOptions fo;
  fo.training = true;
  fo.attention = zm::AttentionKernel::kFlash;
  zt::StepGraphOptions go;
  go.max_seqlen = 64;
  zt::StepGraphs graphs(graphed.decoder, fo, dev, go);
  const std::vector<std::vector<int64_t>> shapes = {{20, 30}, {25, 30}, {60, 50, 40}, {25, 30}};
  for (size_t k = 0; k < shapes.size(); ++k) {
    const zm::PackedBatch batch = random_batch(shapes[k], graphed.config.vocab_size, 500 + uint32_t(k));
    at::Tensor acc = at::zeros({1}, at::TensorOptions().dtype(at::kDouble).device(dev));
    graphs.run(batch, 0.01, acc);
    zm::LossResult ref = eager.decoder.loss(batch, fo);
    (ref.sum * 0.01).backward();
    const double want = ref.sum.item<double>(), got = acc.item<double>();
    EXPECT_NEAR(got, want, 2e-3 * std::abs(want)) << "batch " << k;
    const auto r1 = take_grads(graphed.lora), r2 = take_grads(eager.lora);
    double worst = 0;
    for (size_t i = 0; i < r1.size(); ++i) worst = std::max(worst, rel_err(r1[i], r2[i]));
    std::printf("[graphs] batch %zu: loss %.6f vs %.6f, worst LoRA gradient rel. error %.3g\n", k, got, want, worst);
    EXPECT_LE(worst, 3e-2) << "batch " << k;
  }
  EXPECT_EQ(graphs.stats().replays, 3);
}
#endif
