// The decoder and LoRA (CPU, fp32) against goldens computed by transformers + PEFT (float64 reference,
// tools/golden/model/make_goldens.py): logits, loss, LoRA gradients, a 5-step AdamW trajectory, on an
// unpacked and a packed batch; plus the contracts the trainer and ZeRO rely on.
#include <malloc.h>
#include <torch/torch.h>

#include <mutex>
#include <nlohmann/json.hpp>

#include "lora_ops.h"  // src/model: LoRA's autograd ops
#include "test_util.h"
#include "zlora/core/error.h"
#include "zlora/model/decoder.h"

namespace zm = zlora::model;
using zlora::test::expect_error;
using zlora::test::TempDir;

namespace {

std::filesystem::path golden(const std::string& rel) { return zlora::test::source_dir() / "tests/golden/model" / rel; }

// ||a - b|| / ||b|| in float64.
double rel_err(const at::Tensor& a, const at::Tensor& b) {
  at::Tensor x = a.detach().to(at::kDouble), y = b.detach().to(at::kDouble);
  EXPECT_EQ(x.sizes(), y.sizes());
  return (x - y).norm().item<double>() / std::max(y.norm().item<double>(), 1e-300);
}

// One golden model: base weights, the PEFT adapter, the reference tensors and metadata.
struct Golden {
  std::string name;
  zm::ModelConfig config;
  std::unique_ptr<zm::ResidentWeightStore> store;
  std::unique_ptr<zm::SafetensorsModel> ref;
  nlohmann::json meta;

  explicit Golden(const std::string& n) : name(n) {
    config = zm::load_model_config(golden(n));
    zm::SafetensorsModel weights(golden(n));
    store = std::make_unique<zm::ResidentWeightStore>(config, weights, at::kCPU, at::kFloat);
    ref = std::make_unique<zm::SafetensorsModel>(golden(n + "/reference.safetensors"));
    meta = nlohmann::json::parse(zlora::test::read_file(golden(n + "/reference.json")));
  }
  at::Tensor tensor(const std::string& key) const { return zm::load_tensor(*ref, key, at::TensorOptions()); }
  zm::LoraAdapter adapter() const { return zm::LoraAdapter::load(golden(name), config); }

  // The batch's samples as the data module hands them over (input_ids, unshifted labels).
  std::pair<std::vector<std::vector<int64_t>>, std::vector<std::vector<int64_t>>> samples(const std::string& b) const {
    at::Tensor ids = tensor(b + ".input_ids"), labels = tensor(b + ".labels");
    std::vector<std::vector<int64_t>> xs, ys;
    int64_t off = 0;
    for (int64_t len : meta["batches"][b]["lengths"].get<std::vector<int64_t>>()) {
      auto x = ids.slice(0, off, off + len), y = labels.slice(0, off, off + len);
      xs.emplace_back(x.data_ptr<int64_t>(), x.data_ptr<int64_t>() + len);
      ys.emplace_back(y.data_ptr<int64_t>(), y.data_ptr<int64_t>() + len);
      off += len;
    }
    return {xs, ys};
  }
  zm::PackedBatch batch(const std::string& b) const {
    auto [xs, ys] = samples(b);
    return zm::PackedBatch::from_samples(xs, ys);
  }
};

const Golden& golden_model(const std::string& name) {
  static std::map<std::string, std::unique_ptr<Golden>> cache;  // loaded once per test binary
  auto& g = cache[name];
  if (!g) g = std::make_unique<Golden>(name);
  return *g;
}

// torch.optim.AdamW (decoupled weight decay, bias correction), test-local: the real optimizer is zero's.
struct AdamW {
  double lr = 0, b1 = 0, b2 = 0, eps = 0, wd = 0;
  std::vector<at::Tensor> m, v;
  int64_t t = 0;
  void step(const std::vector<at::Tensor>& params) {
    if (m.empty())
      for (const auto& p : params) {
        m.push_back(at::zeros_like(p));
        v.push_back(at::zeros_like(p));
      }
    ++t;
    at::NoGradGuard ng;
    for (size_t i = 0; i < params.size(); ++i) {
      at::Tensor p = params[i], g = p.grad();
      p.mul_(1 - lr * wd);
      m[i].mul_(b1).add_(g, 1 - b1);
      v[i].mul_(b2).addcmul_(g, g, 1 - b2);
      const double bc1 = 1 - std::pow(b1, double(t)), bc2 = 1 - std::pow(b2, double(t));
      at::Tensor denom = (v[i].sqrt() / std::sqrt(bc2)).add_(eps);
      p.addcdiv_(m[i], denom, -lr / bc1);
    }
  }
};

class GoldenTest : public ::testing::TestWithParam<std::tuple<std::string, std::string>> {};

}  // namespace

TEST(Rope, InverseFrequenciesMatchTransformers) {
  for (const char* name : {"qwen2", "llama"}) {
    const Golden& g = golden_model(name);
    at::Tensor mine = zm::rope_inv_freq(g.config), ref = g.tensor("rope_inv_freq");
    EXPECT_LE(rel_err(mine, ref), 1e-6) << name;
  }
}

TEST_P(GoldenTest, LogitsLossGradientsAndTrajectory) {
  const auto& [model, bname] = GetParam();
  const Golden& g = golden_model(model);
  const auto& bm = g.meta["batches"][bname];
  zm::PackedBatch batch = g.batch(bname);
  ASSERT_EQ(batch.num_targets, bm["num_targets"].get<int64_t>());

  // Base model (no adapter).
  {
    zm::Decoder base(*g.store);
    at::NoGradGuard ng;
    const double e = rel_err(base.logits(batch), g.tensor(bname + ".logits_base"));
    EXPECT_LE(e, 1e-5);
    auto loss = base.loss(batch);
    const double ref = bm["loss_sum_base"].get<double>();
    EXPECT_LE(std::abs(loss.sum.item<double>() - ref) / ref, 1e-6);
    std::printf("[golden] %s/%s base: logits rel err %.3g, loss rel err %.3g\n", model.c_str(), bname.c_str(), e,
                std::abs(loss.sum.item<double>() - ref) / ref);
  }
  // With the PEFT adapter as saved (B random): logits, loss, gradients of the mean loss.
  zm::LoraAdapter lora = g.adapter();
  zm::Decoder dec(*g.store, &lora);
  {
    at::NoGradGuard ng;
    const double e = rel_err(dec.logits(batch), g.tensor(bname + ".logits_lora"));
    EXPECT_LE(e, 1e-5);
    std::printf("[golden] %s/%s lora: logits rel err %.3g\n", model.c_str(), bname.c_str(), e);
  }
  auto loss = dec.loss(batch);
  const double ref_sum = bm["loss_sum"].get<double>();
  const double loss_err = std::abs(loss.sum.item<double>() - ref_sum) / ref_sum;
  EXPECT_LE(loss_err, 1e-6);
  EXPECT_EQ(loss.count, bm["num_targets"].get<int64_t>());
  (loss.sum / double(loss.count)).backward();
  double worst = 0;
  for (const auto& [n, p] : lora.named_parameters()) {
    ASSERT_TRUE(p.grad().defined()) << n;
    const double e = rel_err(p.grad(), g.tensor(bname + ".grad." + n));
    EXPECT_LE(e, 1e-4) << n;
    worst = std::max(worst, e);
  }
  std::printf("[golden] %s/%s lora: loss rel err %.3g, worst grad rel err %.3g\n", model.c_str(), bname.c_str(),
              loss_err, worst);

  // 5 AdamW steps from PEFT's init (stored A, B = 0), the same batch every step.
  {
    at::NoGradGuard ng;
    for (const auto& [n, p] : lora.named_parameters()) p.copy_(g.tensor("init." + n));
  }
  const auto& adam = g.meta["adam"];
  AdamW opt;
  opt.lr = adam["lr"];
  opt.b1 = adam["betas"][0];
  opt.b2 = adam["betas"][1];
  opt.eps = adam["eps"];
  opt.wd = adam["weight_decay"];
  const auto losses = bm["traj_losses"].get<std::vector<double>>();
  double worst_traj = 0, worst_loss = 0;
  for (int step = 1; step <= g.meta["steps"].get<int>(); ++step) {
    for (auto& p : lora.parameters()) p.mutable_grad() = at::Tensor();
    auto l = dec.loss(batch);
    at::Tensor mean = l.sum / double(l.count);
    mean.backward();
    worst_loss = std::max(worst_loss, std::abs(mean.item<double>() - losses[step - 1]) / losses[step - 1]);
    opt.step(lora.parameters());
    if (step == 1 || step == 5)
      for (const auto& [n, p] : lora.named_parameters()) {
        const double e = rel_err(p, g.tensor(bname + ".traj" + std::to_string(step) + "." + n));
        EXPECT_LE(e, 1e-4) << "step " << step << " " << n;
        worst_traj = std::max(worst_traj, e);
      }
  }
  EXPECT_LE(worst_loss, 1e-4);
  std::printf("[golden] %s/%s trajectory: worst param rel err %.3g, worst loss rel err %.3g\n", model.c_str(),
              bname.c_str(), worst_traj, worst_loss);
}

INSTANTIATE_TEST_SUITE_P(Models, GoldenTest,
                         ::testing::Combine(::testing::Values("qwen2", "llama"),
                                            ::testing::Values("unpacked", "packed")),
                         [](const auto& info) { return std::get<0>(info.param) + "_" + std::get<1>(info.param); });

TEST(Packing, PackedEqualsSamplesOneByOne) {
  for (const char* name : {"qwen2", "llama"}) {
    const Golden& g = golden_model(name);
    zm::LoraAdapter lora = g.adapter();
    zm::Decoder dec(*g.store, &lora);
    auto [xs, ys] = g.samples("packed");
    zm::PackedBatch packed = zm::PackedBatch::from_samples(xs, ys);
    EXPECT_EQ(packed.cu_seqlens, (std::vector<int64_t>{0, 9, 23, 29}));
    EXPECT_EQ(packed.position_ids[9].item<int64_t>(), 0);  // restarts per sample
    EXPECT_EQ(packed.targets[8].item<int64_t>(), -100);    // no target across the sample boundary
    auto pl = dec.loss(packed);
    pl.sum.backward();
    std::vector<at::Tensor> packed_grads;
    for (auto& p : lora.parameters()) {
      packed_grads.push_back(p.grad().clone());
      p.mutable_grad() = at::Tensor();
    }
    at::Tensor packed_logits = dec.logits(packed).detach();
    double sum = 0;
    int64_t count = 0;
    std::vector<at::Tensor> logits;
    for (size_t i = 0; i < xs.size(); ++i) {
      auto one = zm::PackedBatch::from_samples({xs[i]}, {ys[i]});
      auto l = dec.loss(one);
      l.sum.backward();  // gradients accumulate over the samples
      sum += l.sum.item<double>();
      count += l.count;
      logits.push_back(dec.logits(one).detach());
    }
    EXPECT_EQ(count, pl.count);
    EXPECT_LE(std::abs(sum - pl.sum.item<double>()) / sum, 1e-6) << name;
    EXPECT_LE(rel_err(packed_logits, at::cat(logits, 0)), 1e-6) << name;
    auto params = lora.parameters();
    for (size_t i = 0; i < params.size(); ++i) EXPECT_LE(rel_err(packed_grads[i], params[i].grad()), 1e-5) << name;
  }
}

TEST(Loss, ChunkingDoesNotChangeLossOrGradients) {
  const Golden& g = golden_model("qwen2");
  zm::LoraAdapter lora = g.adapter();
  zm::Decoder dec(*g.store, &lora);
  zm::PackedBatch batch = g.batch("packed");
  std::vector<std::vector<at::Tensor>> grads;
  std::vector<double> sums;
  for (int64_t chunk : {1024, 5, 1}) {
    zm::ForwardOptions o;
    o.loss_chunk_tokens = chunk;
    auto l = dec.loss(batch, o);
    l.sum.backward();
    sums.push_back(l.sum.item<double>());
    grads.emplace_back();
    for (auto& p : lora.parameters()) {
      grads.back().push_back(p.grad().clone());
      p.mutable_grad() = at::Tensor();
    }
  }
  // And against cross-entropy of the full logits, computed the plain way.
  at::Tensor logits = dec.logits(batch).detach();
  at::Tensor plain = at::cross_entropy_loss(logits, batch.targets, {}, at::Reduction::Sum, -100);
  for (size_t i = 0; i < sums.size(); ++i) {
    EXPECT_LE(std::abs(sums[i] - plain.item<double>()) / sums[i], 1e-6);
    for (size_t j = 0; j < grads[i].size(); ++j) EXPECT_LE(rel_err(grads[i][j], grads[0][j]), 1e-6);
  }
}

TEST(WeightStore, AutogradHoldsNoFrozenWeightAndBackwardReacquires) {
  const Golden& g = golden_model("llama");
  zm::ResidentWeightStore& store = *g.store;
  zm::LoraAdapter lora = g.adapter();
  zm::Decoder dec(store, &lora);
  const std::string wname = "model.layers.1.mlp.down_proj.weight";
  auto use_count = [&] {
    auto w = store.acquire(2);
    const long n = w.get(wname).use_count();
    store.release(2);
    return n;
  };
  const long before = use_count();
  std::vector<int64_t> acquired;
  for (int64_t u = 0; u < g.config.num_units(); ++u) acquired.push_back(store.acquire_count(u));
  {
    auto l = dec.loss(g.batch("packed"));
    for (int64_t u = 0; u < g.config.num_units(); ++u) EXPECT_EQ(store.held(u), 0) << "unit " << u;
    EXPECT_EQ(use_count(), before) << "the graph keeps a reference to a frozen weight";
    const int64_t after_forward = store.acquire_count(2);
    l.sum.backward();
    EXPECT_GT(store.acquire_count(2), after_forward) << "backward must re-acquire the layer's weights";
    EXPECT_GT(store.acquire_count(g.config.num_hidden_layers + 1), acquired.back() + 1);  // lm_head in backward
  }
  for (int64_t u = 0; u < g.config.num_units(); ++u) EXPECT_EQ(store.held(u), 0) << "unit " << u;
}

TEST(WeightStore, MissingOrMisshapenTensorsAreErrors) {
  const Golden& g = golden_model("qwen2");
  zm::SafetensorsModel st(golden("qwen2"));
  auto tensors = zm::load_tensors(st, st.names(), at::TensorOptions());
  auto bad = tensors;
  bad.erase("model.layers.1.self_attn.k_proj.bias");
  expect_error([&] { zm::ResidentWeightStore s(g.config, bad, at::kCPU, at::kFloat); },
               {"model.layers.1.self_attn.k_proj.bias", "missing"});
  bad = tensors;
  bad["model.layers.0.mlp.up_proj.weight"] = at::zeros({3, 3});
  expect_error([&] { zm::ResidentWeightStore s(g.config, bad, at::kCPU, at::kFloat); },
               {"model.layers.0.mlp.up_proj.weight", "config.json implies [80, 48]"});
  zm::ModelConfig untied = golden_model("llama").config;
  untied.tie_word_embeddings = false;
  zm::SafetensorsModel llama(golden("llama"));
  expect_error([&] { zm::ResidentWeightStore s(untied, llama, at::kCPU, at::kFloat); },
               {"lm_head.weight", "tie_word_embeddings"});
}

// Model files that disagree with config.json are refused where the weights are loaded: an integer
// weight (by every loader, ZeRO-3's slices included) and tensors of layers config.json does not declare.
TEST(WeightStore, ModelFilesThatDisagreeWithConfigJsonAreRefused) {
  const Golden& g = golden_model("qwen2");
  zm::SafetensorsModel st(golden("qwen2"));
  // The golden model with one weight stored as I32.
  TempDir dir;
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  for (const auto& n : st.names()) {
    at::Tensor t = zm::load_tensor(st, n, at::TensorOptions());
    tensors.emplace_back(n, n == "model.layers.1.mlp.gate_proj.weight" ? t.to(at::kInt) : t);
  }
  zm::save_tensors(dir / "model.safetensors", tensors);
  zm::SafetensorsModel bad(dir.path());
  const std::string file = (dir / "model.safetensors").string();
  expect_error([&] { zm::ResidentWeightStore s(g.config, bad, at::kCPU, at::kFloat); },
               {file, "model.layers.1.mlp.gate_proj.weight", "dtype I32", "F16, BF16, F32 or F64"});
  expect_error(
      [&] {
        zm::load_flat_range(bad, "model.layers.1.mlp.gate_proj.weight", 0, 4, at::TensorOptions().dtype(at::kFloat));
      },
      {file, "dtype I32"});
  // Read as it is stored (no conversion to a float), an integer tensor is still readable.
  EXPECT_EQ(zm::load_tensor(bad, "model.layers.1.mlp.gate_proj.weight", at::TensorOptions()).scalar_type(), at::kInt);

  // config.json declaring fewer layers than the files hold.
  zm::ModelConfig fewer = g.config;
  ASSERT_GE(fewer.num_hidden_layers, 2);
  fewer.num_hidden_layers = 1;
  expect_error([&] { zm::ResidentWeightStore s(fewer, st, at::kCPU, at::kFloat); },
               {"belong to decoder layer 1", (golden("qwen2") / "config.json").string(), "num_hidden_layers 1",
                "model.layers.1.input_layernorm.weight"});
}

TEST(TensorIo, SlicesConversionsAndRoundTrip) {
  const Golden& g = golden_model("qwen2");
  zm::SafetensorsModel st(golden("qwen2"));
  const std::string n = "model.embed_tokens.weight";
  at::Tensor full = zm::load_tensor(st, n, at::TensorOptions());
  EXPECT_TRUE(at::equal(zm::load_rows(st, n, 10, 17, at::TensorOptions()), full.slice(0, 10, 17)));
  EXPECT_TRUE(
      at::equal(zm::load_flat_range(st, n, 100, 1000, at::TensorOptions()), full.reshape(-1).slice(0, 100, 1000)));
  expect_error([&] { zm::load_rows(st, n, 90, 97, at::TensorOptions()); }, {"outside tensor", "96 rows"});
  at::Tensor bf = zm::load_tensor(st, n, at::TensorOptions().dtype(at::kBFloat16));
  EXPECT_TRUE(at::equal(bf, full.to(at::kBFloat16)));
  TempDir dir;
  at::Tensor ids = at::arange(5, at::kLong);
  zm::save_tensors(dir / "t.safetensors", {{"bf", bf}, {"ids", ids}, {"h", full.to(at::kHalf)}});
  zm::SafetensorsModel back(dir / "t.safetensors");
  EXPECT_EQ(back.info("bf").dtype, zm::DType::kBF16);
  EXPECT_TRUE(at::equal(zm::load_tensor(back, "bf", at::TensorOptions()), bf));
  EXPECT_TRUE(at::equal(zm::load_tensor(back, "ids", at::TensorOptions()), ids));
  EXPECT_TRUE(
      at::equal(zm::load_tensor(back, "h", at::TensorOptions().dtype(at::kFloat)), full.to(at::kHalf).to(at::kFloat)));
  (void)g;
}

TEST(Lora, PeftInitScalingAndNames) {
  const Golden& g = golden_model("qwen2");
  zm::LoraConfig c;
  c.r = 4;
  c.alpha = 8;
  c.seed = 7;
  auto a = zm::LoraAdapter::create(g.config, c);
  EXPECT_EQ(a.modules().size(), 14u);  // 'all' = 7 linears x 2 layers, never lm_head
  // Same PEFT names as the adapter PEFT itself saved for the same targets.
  std::vector<std::string> mine, peft;
  for (const auto& [n, t] : a.named_parameters()) mine.push_back(n);
  zm::SafetensorsModel st(golden("qwen2/adapter_model.safetensors"));
  EXPECT_EQ(mine, st.names());
  EXPECT_EQ(mine.front(), "base_model.model.model.layers.0.mlp.down_proj.lora_A.weight");
  for (const auto& m : a.modules()) {
    const double bound = 1.0 / std::sqrt(double(m.A.size(1)));
    EXPECT_EQ(m.A.scalar_type(), at::kFloat);
    EXPECT_TRUE(m.A.requires_grad() && m.B.requires_grad());
    EXPECT_LE(m.A.abs().max().item<double>(), bound);
    EXPECT_GT(m.A.abs().max().item<double>(), 0.5 * bound);
    EXPECT_EQ(m.B.abs().max().item<double>(), 0.0);
  }
  // Uniform(-b, b) has std b / sqrt(3): checked over all of q_proj's A (in = 48).
  at::Tensor qa = a.find(0, "self_attn.q_proj")->A;
  EXPECT_NEAR(qa.std().item<double>(), (1.0 / std::sqrt(48.0)) / std::sqrt(3.0), 0.02);
  auto same = zm::LoraAdapter::create(g.config, c);
  EXPECT_TRUE(at::equal(same.find(1, "mlp.up_proj")->A, a.find(1, "mlp.up_proj")->A));
  c.seed = 8;
  EXPECT_FALSE(at::equal(zm::LoraAdapter::create(g.config, c).find(1, "mlp.up_proj")->A, a.find(1, "mlp.up_proj")->A));
  EXPECT_DOUBLE_EQ(a.scaling(), 2.0);
  c.use_rslora = true;
  EXPECT_DOUBLE_EQ(c.scaling(), 4.0);
  // The base weights never require grad.
  auto w = g.store->acquire(1);
  for (const auto& [n, t] : w.all()) EXPECT_FALSE(t.requires_grad()) << n;
  g.store->release(1);
}

TEST(Lora, TargetsResolveLikePeftAndUnknownOnesListTheModules) {
  const auto& c = golden_model("llama").config;
  auto t = zm::resolve_lora_targets(c, {"q_proj", " v_proj"});
  EXPECT_EQ(t, (std::vector<std::string>{"model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.v_proj",
                                         "model.layers.1.self_attn.q_proj", "model.layers.1.self_attn.v_proj"}));
  EXPECT_EQ(zm::resolve_lora_targets(c, {"mlp.down_proj"}).size(), 2u);
  EXPECT_EQ(zm::resolve_lora_targets(c, {"model.layers.1.mlp.down_proj"}).size(), 1u);
  // The seed's pitfall: GPT-2's c_attn on a Llama/Qwen model.
  expect_error([&] { zm::resolve_lora_targets(c, {"c_attn"}); },
               {"'c_attn' matches no module", "q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj"});
  expect_error([&] { zm::resolve_lora_targets(c, {"q_proj", "qproj"}); }, {"'qproj'", "did you mean 'q_proj'"});
  expect_error([&] { zm::resolve_lora_targets(c, {"lm_head"}); }, {"'lm_head' matches no module"});
  zm::LoraConfig bad;
  bad.r = 0;
  expect_error([&] { zm::LoraAdapter::create(c, bad); }, {"lora_rank"});
}

TEST(Lora, AdapterFilesRoundTripInPeftLayout) {
  const Golden& g = golden_model("llama");
  zm::LoraAdapter peft = g.adapter();  // as PEFT wrote it: r 8, alpha 16, rsLoRA, q/v/down
  EXPECT_EQ(peft.config().r, 8);
  EXPECT_TRUE(peft.config().use_rslora);
  EXPECT_DOUBLE_EQ(peft.scaling(), 16.0 / std::sqrt(8.0));
  EXPECT_EQ(peft.modules().size(), 6u);
  TempDir dir;
  peft.save(dir.path(), "meta-llama/Llama-3.1-8B");
  auto j = nlohmann::json::parse(zlora::test::read_file(dir / "adapter_config.json"));
  EXPECT_EQ(j["peft_type"], "LORA");
  EXPECT_EQ(j["task_type"], "CAUSAL_LM");
  EXPECT_EQ(j["r"], 8);
  EXPECT_EQ(j["lora_alpha"], 16);
  EXPECT_EQ(j["bias"], "none");
  EXPECT_EQ(j["fan_in_fan_out"], false);
  EXPECT_EQ(j["use_rslora"], true);
  EXPECT_EQ(j["base_model_name_or_path"], "meta-llama/Llama-3.1-8B");
  EXPECT_TRUE(j["modules_to_save"].is_null());
  EXPECT_EQ(j["target_modules"], (std::vector<std::string>{"down_proj", "q_proj", "v_proj"}));
  zm::SafetensorsModel mine(dir / "adapter_model.safetensors"), theirs(golden("llama/adapter_model.safetensors"));
  EXPECT_EQ(mine.names(), theirs.names());
  auto back = zm::LoraAdapter::load(dir.path(), g.config);
  auto p1 = peft.named_parameters(), p2 = back.named_parameters();
  ASSERT_EQ(p1.size(), p2.size());
  for (size_t i = 0; i < p1.size(); ++i) EXPECT_TRUE(at::equal(p1[i].second, p2[i].second)) << p1[i].first;
  // Loading checks shapes against the model.
  expect_error([&] { zm::LoraAdapter::load(golden("llama"), golden_model("qwen2").config); }, {"lora_A", "needs"});
  expect_error([&] { zm::LoraAdapter::load(dir / "nothing", g.config); }, {"adapter_config.json", "not found"});
  // adapter_config.json options zlora does not implement are refused by name.
  const std::string good = zlora::test::read_file(dir / "adapter_config.json");
  auto with = [&](const std::string& key, const std::string& value) {
    auto jj = nlohmann::json::parse(good);
    jj[key] = nlohmann::json::parse(value);
    zlora::test::write_file(dir / "adapter_config.json", jj.dump());
  };
  with("use_dora", "true");
  expect_error([&] { zm::LoraAdapter::load(dir.path(), g.config); }, {"DoRA"});
  with("peft_type", "\"PREFIX_TUNING\"");
  expect_error([&] { zm::LoraAdapter::load(dir.path(), g.config); }, {"peft_type must be LORA", "PREFIX_TUNING"});
  with("modules_to_save", "[\"lm_head\"]");
  expect_error([&] { zm::LoraAdapter::load(dir.path(), g.config); }, {"modules_to_save"});
  with("use_rslora", "\"yes\"");
  expect_error([&] { zm::LoraAdapter::load(dir.path(), g.config); }, {"'use_rslora' must be true or false"});
  with("lora_dropout", "null");  // PEFT writes null for unset options: accepted
  EXPECT_EQ(zm::LoraAdapter::load(dir.path(), g.config).modules().size(), 6u);
}

TEST(Lora, DropoutAndNeftuneOnlyWhileTraining) {
  const Golden& g = golden_model("qwen2");
  zm::LoraAdapter lora = g.adapter();
  zm::Decoder plain(*g.store, &lora);
  zm::PackedBatch batch = g.batch("packed");
  at::NoGradGuard ng;
  at::Tensor ref = plain.logits(batch);
  zm::LoraConfig c = lora.config();
  c.dropout = 0.5;
  // Same tensors, a dropout rate: the eval path ignores it, training draws masks from the generator.
  zm::LoraAdapter dropped = zm::LoraAdapter::create(g.config, c);
  for (size_t i = 0; i < dropped.modules().size(); ++i) {
    dropped.modules()[i].A.detach().copy_(lora.modules()[i].A);
    dropped.modules()[i].B.detach().copy_(lora.modules()[i].B);
  }
  zm::Decoder dec(*g.store, &dropped);
  EXPECT_LE(rel_err(dec.logits(batch), ref), 1e-6);
  zm::ForwardOptions train;
  train.training = true;
  train.generator = at::detail::createCPUGenerator(1);
  at::Tensor t1 = dec.logits(batch, train);
  EXPECT_GT(rel_err(t1, ref), 1e-3);
  train.generator = at::detail::createCPUGenerator(1);
  EXPECT_TRUE(at::equal(dec.logits(batch, train), t1));  // deterministic from the generator
  zm::ForwardOptions neft;
  neft.neftune_alpha = 5;
  EXPECT_TRUE(at::equal(plain.logits(batch, neft), ref));  // not training: no noise
  neft.training = true;
  EXPECT_GT(rel_err(plain.logits(batch, neft), ref), 1e-4);
}

// Gradient checkpointing recomputes each layer in backward: with dropout on (the recomputation must
// draw the same masks) the loss, every LoRA gradient and the generator's final state equal the run
// that keeps its activations, bit for bit on the CPU.
TEST(Decoder, GradientCheckpointingChangesNothingButMemory) {
  const Golden& g = golden_model("qwen2");
  zm::LoraConfig c = g.adapter().config();
  c.dropout = 0.25;
  zm::PackedBatch batch = g.batch("packed");
  struct Run {
    double loss = 0;
    std::vector<at::Tensor> grads;
    at::Tensor generator_state;
  };
  auto run = [&](bool checkpointing) {
    zm::LoraAdapter lora = zm::LoraAdapter::create(g.config, c);
    const zm::LoraAdapter& ref = g.adapter();
    {
      at::NoGradGuard ng;
      for (size_t i = 0; i < lora.modules().size(); ++i) {
        lora.modules()[i].A.copy_(ref.modules()[i].A);
        lora.modules()[i].B.copy_(ref.modules()[i].B);
      }
    }
    zm::Decoder dec(*g.store, &lora);
    zm::ForwardOptions o;
    o.training = true;
    o.generator = at::detail::createCPUGenerator(7);
    o.gradient_checkpointing = checkpointing;
    zm::LossResult l = dec.loss(batch, o);
    (l.sum / double(l.count)).backward();
    Run r;
    r.loss = l.sum.item<double>();
    for (const auto& [n, p] : lora.named_parameters()) r.grads.push_back(p.grad().clone());
    r.generator_state = o.generator->get_state();
    return r;
  };
  const Run kept = run(false), recomputed = run(true);
  EXPECT_EQ(kept.loss, recomputed.loss);
  ASSERT_EQ(kept.grads.size(), recomputed.grads.size());
  for (size_t i = 0; i < kept.grads.size(); ++i) EXPECT_TRUE(at::equal(kept.grads[i], recomputed.grads[i])) << i;
  EXPECT_TRUE(at::equal(kept.generator_state, recomputed.generator_state));
}

TEST(Decode, KvCacheMatchesTheFullForward) {
  for (const char* name : {"qwen2", "llama"}) {
    const Golden& g = golden_model(name);
    zm::LoraAdapter lora = g.adapter();
    zm::Decoder dec(*g.store, &lora);
    auto [xs, ys] = g.samples("unpacked");
    at::NoGradGuard ng;
    at::Tensor full = dec.logits(zm::PackedBatch::from_samples(xs, ys));
    at::Tensor ids = at::tensor(at::ArrayRef<int64_t>(xs[0]), at::kLong);
    zm::KVCache cache;
    std::vector<at::Tensor> parts = {dec.decode(ids.slice(0, 0, 6), cache)};  // a prompt, then token by token
    for (int64_t t = 6; t < ids.size(0); ++t) parts.push_back(dec.decode(ids.slice(0, t, t + 1), cache));
    EXPECT_EQ(cache.length, ids.size(0));
    EXPECT_LE(rel_err(at::cat(parts, 0), full), 1e-6) << name;
  }
}

TEST(Decoder, BadBatchesAreErrors) {
  const Golden& g = golden_model("qwen2");
  zm::Decoder dec(*g.store);
  expect_error([] { zm::PackedBatch::from_samples({{1, 2}}, {{1}}); }, {"2 input_ids but 1 labels"});
  expect_error([] { zm::PackedBatch::from_samples({{}}, {{}}); }, {"empty"});
  expect_error(
      [&] {
        dec.logits(zm::PackedBatch::from_samples({{1, 500}}, {{1, 500}}));
      },
      {"token id 500", "vocabulary"});
  expect_error([&] { dec.loss(zm::PackedBatch::from_samples({{1, 5}}, {{1, 96}})); }, {"target id", "vocabulary"});
}

// bf16 on the device this runs on (the GPU when LibTorch has one, else the CPU) against transformers in
// bf16 on the same kind of device: the same casts (RMSNorm in fp32, cos/sin in bf16, softmax in fp32,
// logits upcast for the loss) must land within bf16 rounding of HF's.
TEST(Bf16, MatchesTransformersInBf16OnThisDevice) {
  const bool cuda = at::hasCUDA();
  const at::Device dev = cuda ? at::Device(at::kCUDA, 0) : at::Device(at::kCPU);
  const std::string tag = cuda ? "bf16_cuda" : "bf16_cpu";
  for (const char* model : {"qwen2", "llama"}) {
    const Golden& g = golden_model(model);
    zm::SafetensorsModel st(golden(model));
    zm::ResidentWeightStore store(g.config, st, dev, at::kBFloat16);
    zm::LoraAdapter lora = zm::LoraAdapter::load(golden(model), g.config, dev);
    zm::Decoder dec(store, &lora);
    // Both attention kernels: math (HF's eager arithmetic) and auto (variable-length flash attention on
    // a CUDA build of LibTorch >= 2.1; math elsewhere).
    for (const auto& [kname, kernel] :
         {std::pair{"math", zm::AttentionKernel::kMath}, std::pair{"auto", zm::AttentionKernel::kAuto}})
      for (const char* bname : {"unpacked", "packed"}) {
        zm::ForwardOptions fo;
        fo.attention = kernel;
        zm::PackedBatch batch = g.batch(bname);
        const auto& ref = g.meta["bf16"][cuda ? "cuda" : "cpu"][bname];
        at::Tensor logits;
        {
          at::NoGradGuard ng;
          logits = dec.logits(batch, fo).cpu();
        }
        // bf16 rounding differs between kernels (LibTorch versions, CPU vs GPU), so two bf16 runs differ by
        // bf16 noise; the yardstick is transformers' own bf16 error against the float64 reference.
        const at::Tensor hf = g.tensor(tag + "." + bname + ".logits_lora");
        const at::Tensor exact = g.tensor(std::string(bname) + ".logits_lora");
        const double le = rel_err(logits, hf), mine = rel_err(logits, exact), theirs = rel_err(hf, exact);
        auto loss = dec.loss(batch, fo);
        const double ref_sum = ref["loss_sum"].get<double>();
        const double exact_sum = g.meta["batches"][bname]["loss_sum"].get<double>();
        const double loss_err = std::abs(loss.sum.item<double>() - ref_sum) / ref_sum;
        const double loss_mine = std::abs(loss.sum.item<double>() - exact_sum) / exact_sum;
        const double loss_theirs = std::abs(ref_sum - exact_sum) / exact_sum;
        (loss.sum / double(loss.count)).backward();
        double worst = 0, worst_mine = 0, worst_theirs = 0;
        for (const auto& [n, p] : lora.named_parameters()) {
          const at::Tensor hf_grad = g.tensor(tag + "." + bname + ".grad." + n);
          const at::Tensor exact_grad = g.tensor(std::string(bname) + ".grad." + n);
          worst = std::max(worst, rel_err(p.grad().cpu(), hf_grad));
          worst_mine = std::max(worst_mine, rel_err(p.grad().cpu(), exact_grad));
          worst_theirs = std::max(worst_theirs, rel_err(hf_grad, exact_grad));
          p.mutable_grad() = at::Tensor();
        }
        std::printf(
            "[golden] %s %s/%s attention %s vs transformers bf16: logits %.3g, loss %.3g, grads %.3g | vs float64: "
            "zlora logits %.3g loss %.3g grads %.3g, transformers logits %.3g loss %.3g grads %.3g\n",
            tag.c_str(), model, bname, kname, le, loss_err, worst, mine, loss_mine, worst_mine, theirs, loss_theirs,
            worst_theirs);
        EXPECT_LE(le, 3e-2) << model << " " << bname << " " << kname;
        EXPECT_LE(loss_err, 5e-3) << model << " " << bname << " " << kname;
        // Two bf16 computations rounding at different places are apart by about both errors: zlora's LoRA
        // adds scaling * (u B^T) inside the GEMM (one rounding), PEFT rounds three times; transformers' own
        // gradient error here reaches 0.15 of the largest element.
        EXPECT_LE(worst, 1.5e-1) << model << " " << bname << " " << kname;
        // No worse than transformers' own bf16 error, with slack of about half a bf16 epsilon (2^-8).
        EXPECT_LE(mine, 2 * theirs + 4e-3) << model << " " << bname << " " << kname;
        EXPECT_LE(loss_mine, 2 * loss_theirs + 4e-3) << model << " " << bname << " " << kname;
        EXPECT_LE(worst_mine, 2 * worst_theirs + 2e-2) << model << " " << bname << " " << kname;
      }
  }
}

// ---- what LoRA keeps for its backward ----------------------------------------------------------------

// LoRA's backward recomputes the dropped-out input from the input and the keep mask; the recomputation
// must be the forward's value bit for bit (else dA would be computed from another input than y was).
TEST(Lora, DropoutReplayEqualsTheForwardsDroppedInputBitForBit) {
  std::vector<std::pair<at::Device, c10::optional<at::Generator>>> where = {
      {at::kCPU, at::detail::createCPUGenerator(3)}};
  if (at::hasCUDA()) where.push_back({at::Device(at::kCUDA, 0), c10::nullopt});  // the fused kernel
  for (const auto& [dev, gen] : where)
    for (at::ScalarType t : {at::kFloat, at::kBFloat16})
      for (double p : {0.1, 0.25, 0.5}) {
        at::Tensor x = at::randn({333, 77}, at::TensorOptions().dtype(t).device(dev));
        const zm::detail::DroppedInput d = zm::detail::lora_dropout(x, p, gen);
        ASSERT_TRUE(d.keep.defined());
        EXPECT_EQ(d.keep.scalar_type(), at::kBool);
        EXPECT_EQ(d.fused, dev.is_cuda());
        // Kept as bits between forward and backward.
        const at::Tensor bits = zm::detail::mask_bit_weights(dev);
        const at::Tensor packed = zm::detail::pack_mask(d.keep, bits);
        EXPECT_EQ(packed.numel(), (x.numel() + 7) / 8);
        const at::Tensor keep = zm::detail::unpack_mask(packed, x.sizes(), bits);
        EXPECT_TRUE(at::equal(keep, d.keep)) << dev << " " << t << " " << p;
        EXPECT_TRUE(at::equal(zm::detail::replay_dropout(x, packed, p, d.fused, bits), d.xin))
            << dev << " " << t << " " << p;
        at::Tensor g = at::randn_like(x), masked = g.clone();
        zm::detail::apply_mask_(masked, packed, bits);
        EXPECT_TRUE(at::equal(masked, g.mul(d.keep))) << dev << " " << t << " " << p;
        const double kept = d.keep.to(at::kDouble).mean().item<double>();
        EXPECT_NEAR(kept, 1 - p, 0.02) << dev << " " << t << " " << p;
      }
  at::Tensor x = at::randn({4, 5});
  const zm::detail::DroppedInput none = zm::detail::lora_dropout(x, 0.0, c10::nullopt);
  EXPECT_FALSE(none.keep.defined());
  EXPECT_TRUE(none.xin.is_same(x));
}

// The two LoRA autograd functions against plain autograd through PEFT's formula, dropout on, with the
// same masks: output and every gradient. On the CPU the masks come from a second generator with the same
// seed. On the GPU (when there is one) the LoRA functions run PyTorch's fused dropout and zlora's kernels
// (bit masks, the SwiGLU replay, the fused dx and SwiGLU backward), and the mask is drawn again by
// reseeding the device's generator and running the same fused kernel on a tensor of the same shape.
TEST(Lora, LinearAndSwiGluDownProjectionMatchPlainAutogradWithDropout) {
  const Golden& g = golden_model("qwen2");
  const double p = 0.3, scaling = 1.75;
  std::vector<std::pair<at::Device, at::ScalarType>> runs = {{at::kCPU, at::kFloat}};
  if (at::hasCUDA())
    for (at::ScalarType t : {at::kFloat, at::kBFloat16}) runs.push_back({at::Device(at::kCUDA, 0), t});
  for (const auto& [dev, dtype] : runs) {
    SCOPED_TRACE(::testing::Message() << dev << " " << dtype);
    const bool cuda = dev.is_cuda();
    std::unique_ptr<zm::ResidentWeightStore> device_store;
    if (cuda) {
      zm::SafetensorsModel st(golden("qwen2"));
      device_store = std::make_unique<zm::ResidentWeightStore>(g.config, st, dev, dtype);
    }
    zm::ResidentWeightStore& store = cuda ? *device_store : *g.store;
    const auto opt = at::TensorOptions().device(dev).dtype(dtype);
    auto call_with = [&](uint64_t seed) {
      zm::detail::LoraCall call;
      call.scaling = scaling;
      call.dropout = p;
      call.training = true;
      if (!cuda) call.generator = at::detail::createCPUGenerator(seed);  // on CUDA: the device's default
      call.mask_bits = zm::detail::mask_bit_weights(dev);
      return call;
    };
    auto reseed = [&](uint64_t seed) {
      at::Generator gen = at::globalContext().defaultGenerator(dev);
      std::lock_guard<std::mutex> lock(gen.mutex());
      gen.set_current_seed(seed);
    };
    // PEFT's lora.Linear, literally: base(x) + lora_B(lora_A(dropout(x))) * scaling, with the keep mask.
    auto peft = [&](const at::Tensor& x, const at::Tensor& W, const at::Tensor& b, const at::Tensor& A,
                    const at::Tensor& B, const at::Tensor& keep) {
      at::Tensor base = b.defined() ? at::linear(x, W, b) : at::linear(x, W);
      return base + at::linear(at::linear(x * keep / (1 - p), A.to(dtype)), B.to(dtype)) * scaling;
    };
    auto keep_mask = [&](at::IntArrayRef shape, uint64_t seed) {
      if (!cuda) return at::empty(shape, opt).bernoulli_(1 - p, at::detail::createCPUGenerator(seed));
      reseed(seed);
      return std::get<1>(at::native_dropout(at::empty(shape, opt), p, true)).to(dtype);
    };
    auto leaf = [&](at::IntArrayRef shape, at::ScalarType t) {
      return at::randn(shape, opt.dtype(t)).requires_grad_(true);
    };
    auto fresh = [](const at::Tensor& t) { return t.detach().clone().requires_grad_(true); };
    // fp32: the same arithmetic up to summation order; bf16: two roundings of each product apart.
    const double tol = dtype == at::kBFloat16 ? 2e-2 : cuda ? 1e-5 : 1e-6;
    const int64_t T = 37, r = 4;
    zm::UnitLease lease(store, 1);
    for (const char* module : {"self_attn.q_proj", "mlp.down_proj"}) {
      SCOPED_TRACE(module);
      const std::string wname = std::string("model.layers.0.") + module + ".weight";
      const at::Tensor W = lease.get(wname),
                       b = lease.weights().get_optional(std::string("model.layers.0.") + module + ".bias");
      const bool down = std::string(module) == "mlp.down_proj";
      const int64_t in = W.size(1), out = W.size(0);
      at::Tensor A = leaf({r, in}, at::kFloat), B = leaf({out, r}, at::kFloat), G = at::randn({T, out}, opt);
      // The module's input(s): x, or gate and up for the down projection (input silu(gate) * up).
      std::vector<at::Tensor> inputs = down ? std::vector<at::Tensor>{leaf({T, in}, dtype), leaf({T, in}, dtype)}
                                            : std::vector<at::Tensor>{leaf({T, in}, dtype)};
      if (cuda) reseed(9);
      at::Tensor y =
          down ? zm::detail::swiglu_lora_linear(inputs[0], inputs[1], A, B, W, b, store, 1, wname, call_with(9))
               : zm::detail::lora_linear(inputs[0], A, B, W, b, store, 1, wname, call_with(9));
      std::vector<at::Tensor> ref_inputs;
      for (const auto& t : inputs) ref_inputs.push_back(fresh(t));
      at::Tensor Ar = fresh(A), Br = fresh(B);
      at::Tensor x_ref = down ? at::silu(ref_inputs[0]) * ref_inputs[1] : ref_inputs[0];
      at::Tensor y_ref = peft(x_ref, W, b, Ar, Br, keep_mask({T, in}, 9));
      EXPECT_LE(rel_err(y, y_ref), tol);
      (y * G).sum().backward();
      (y_ref * G).sum().backward();
      for (size_t i = 0; i < inputs.size(); ++i) EXPECT_LE(rel_err(inputs[i].grad(), ref_inputs[i].grad()), tol) << i;
      EXPECT_LE(rel_err(A.grad(), Ar.grad()), tol);
      EXPECT_LE(rel_err(B.grad(), Br.grad()), tol);
      EXPECT_GT(A.grad().norm().item<double>(), 0);
    }
  }
}

namespace {
// Bytes the process holds in malloc'd memory (LibTorch's CPU allocator allocates there).
int64_t malloc_in_use() {
  const struct mallinfo2 m = mallinfo2();
  return int64_t(m.uordblks) + int64_t(m.hblkhd);
}
}  // namespace

// activation_bytes (the memory plan's activation term) against what a training forward really keeps,
// measured on the CPU as the memory still allocated when the forward returns (the graph alive): with and
// without dropout, LoRA on every module or on a part, layers before the first LoRA module keeping nothing.
// The model is the golden Qwen2 widened (random weights) so that tensor payloads, which are what a GPU
// holds, dwarf the host's per-tensor bookkeeping that malloc also counts.
TEST(Decoder, ActivationMemoryIsWhatActivationBytesCounts) {
  zm::ModelConfig c = golden_model("qwen2").config;
  c.hidden_size = 256;
  c.intermediate_size = 1024;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 64;
  c.vocab_size = 512;
  std::map<std::string, at::Tensor> tensors;
  for (int64_t u = 0; u < c.num_units(); ++u)
    for (const auto& spec : zm::unit_weight_specs(c, u)) tensors[spec.name] = at::randn(spec.shape) * 0.05;
  zm::ResidentWeightStore store(c, tensors, at::kCPU, at::kFloat);
  const int64_t samples = 16, len = 128, T = samples * len;
  std::vector<std::vector<int64_t>> ids(samples), labels(samples);
  at::Tensor draw = at::randint(c.vocab_size, {samples, len}, at::TensorOptions().dtype(at::kLong));
  for (int64_t s = 0; s < samples; ++s) {
    ids[s].assign(draw[s].data_ptr<int64_t>(), draw[s].data_ptr<int64_t>() + len);
    labels[s] = ids[s];
  }
  const zm::PackedBatch batch = zm::PackedBatch::from_samples(ids, labels);
  struct Case {
    std::vector<std::string> targets;
    double dropout;
  };
  const std::vector<Case> cases = {{{"all"}, 0.25},
                                   {{"all"}, 0.0},
                                   {{"q_proj", "k_proj", "v_proj", "o_proj"}, 0.25},
                                   {{"gate_proj", "up_proj", "down_proj"}, 0.25},
                                   {{"o_proj"}, 0.1},
                                   {{"layers.1.mlp.down_proj"}, 0.1}};
  auto make_lora = [&](const Case& k) {
    zm::LoraConfig lc;
    lc.r = 8;
    lc.targets = k.targets;
    lc.dropout = k.dropout;
    zm::LoraAdapter lora = zm::LoraAdapter::create(c, lc);
    at::NoGradGuard ng;
    for (const auto& m : lora.modules()) m.B.normal_();  // a nonzero LoRA path (PEFT starts B at 0)
    return lora;
  };
  auto options = [] {
    zm::ForwardOptions o;
    o.training = true;
    o.generator = at::detail::createCPUGenerator(11);
    o.attention = zm::AttentionKernel::kMath;
    return o;
  };
  {
    // Warm-up: the BLAS and thread pools keep buffers from their first call.
    zm::LoraAdapter lora = make_lora(cases[0]);
    zm::Decoder dec(store, &lora);
    dec.loss(batch, options()).sum.backward();
  }
  std::vector<int64_t> measured;
  for (const Case& k : cases) {
    zm::LoraAdapter lora = make_lora(k);
    zm::Decoder dec(store, &lora);
    const zm::ForwardOptions o = options();
    const int64_t before = malloc_in_use();
    zm::LossResult l = dec.loss(batch, o);
    const int64_t kept = malloc_in_use() - before;
    l.sum.backward();  // the graph was complete
    measured.push_back(kept);

    zm::ActivationInput in;
    in.lora_modules = zm::resolve_lora_targets(c, k.targets);
    in.lora_rank = lora.config().r;
    in.dropout = k.dropout > 0;
    in.dtype_bytes = 4;
    in.flash = false;
    in.max_seqlen = len;
    const int64_t counted = zm::activation_bytes(c, in).per_token * T;
    std::printf("[memory] targets %s dropout %.2f: kept %lld bytes, activation_bytes %lld (%.4f)\n",
                k.targets[0].c_str(), k.dropout, (long long)kept, (long long)counted, double(kept) / double(counted));
    EXPECT_NEAR(double(kept) / double(counted), 1.0, 0.02) << k.targets[0] << " dropout " << k.dropout;
  }
  // Dropout adds its keep masks and nothing else: 1 bit per input element of every module, per token.
  int64_t mask_bytes = 0;
  for (const auto& m : zm::block_linear_modules()) mask_bytes += zm::linear_shape(c, m).first * T / 8;
  mask_bytes *= c.num_hidden_layers;
  EXPECT_NEAR(double(measured[0] - measured[1]) / double(mask_bytes), 1.0, 0.02);
}
