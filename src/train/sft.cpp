// The LoRA SFT recipe (see sft.h). Order of a run:
//   1. device, precision, communicator           5. ZeRO optimizer over the LoRA parameters
//   2. the token store                           6. output dir safety, resume
//   3. the frozen base weights (ZeRO-3: shards)  7. the loop: plan -> micro-batches -> step -> log/save
//   4. the LoRA adapter (new or loaded)          8. the final adapter, results, plot
#include "zlora/train/sft.h"

#include "zlora/ckpt/checkpoint.h"
#include "zlora/ckpt/payload.h"
#include "zlora/ckpt/preempt.h"
#include "zlora/ckpt/run_descriptor.h"
#include "zlora/core/error.h"
#include "zlora/core/fs.h"
#include "zlora/core/log.h"
#include "zlora/core/sha256.h"
#include "zlora/data/template.h"
#include "zlora/data/token_store.h"
#include "zlora/dist/communicator.h"
#include "zlora/dist/mpi_runtime.h"
#include "zlora/dist/phase_timer.h"
#include "zlora/model/config.h"
#include "zlora/model/decoder.h"
#include "zlora/model/lora.h"
#include "zlora/model/safetensors.h"
#include "zlora/model/weights.h"
#include "zlora/train/metrics.h"
#include "zlora/train/run_logger.h"
#include "zlora/train/sampler.h"
#include "zlora/train/schedule.h"
#include "zlora/train/step_graphs.h"
#include "zlora/train/step_plan.h"
#include "zlora/zero/loss_scaler.h"
#include "zlora/zero/memory_plan.h"
#include "zlora/zero/weight_store.h"
#include "zlora/zero/zero_optimizer.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/cuda.h>
#include <torch/torch.h>
#include <torch/version.h>

#ifdef ZLORA_WITH_CUDA
#include <ATen/cuda/CUDAGeneratorImpl.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <cuda_runtime.h>
#endif

#include <nlohmann/json.hpp>

#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <memory>

namespace zlora::train {

namespace {

namespace stdfs = std::filesystem;
using config::TrainConfig;

double now_s() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

// ---- 1. device and precision -----------------------------------------------------------------

at::Device resolve_device(const std::string& choice, int local_rank) {
  const bool have_cuda = torch::cuda::is_available();
  if (choice == "cuda" && !have_cuda)
    fail("device cuda was asked for, but {} (use --device cpu or auto)",
         at::hasCUDA() ? "no GPU is visible to this process" : "this zlora was built without CUDA");
  if (choice == "cpu" || !have_cuda) return at::Device(at::kCPU);
  // Ranks of one node share its GPUs round-robin: one GPU per rank under NCCL, several ranks on one
  // GPU with the MPI backend (tests, debugging).
  const int count = static_cast<int>(torch::cuda::device_count());
  return at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(local_rank % count));
}

at::ScalarType compute_dtype(const TrainConfig& c) {
  if (c.training.bf16) return at::kBFloat16;
  if (c.training.fp16) return at::kHalf;
  return at::kFloat;
}

std::string device_name(const at::Device& d) {
#ifdef ZLORA_WITH_CUDA
  if (d.is_cuda()) {
    cudaDeviceProp prop{};
    if (cudaGetDeviceProperties(&prop, d.index()) == cudaSuccess) return prop.name;
  }
#endif
  return d.is_cuda() ? "cuda" : "cpu";
}

std::optional<double> peak_vram_gib(const at::Device& d) {
#ifdef ZLORA_WITH_CUDA
  if (d.is_cuda()) {
    auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(d.index());
    return double(stats.allocated_bytes[0].peak) / double(1ull << 30);
  }
#endif
  return std::nullopt;
}

// ---- 3. ZeRO-3 frozen weights behind the decoder's WeightStore ----------------------------------

// Adapts the partitioned store to the decoder's units. The decoder acquires a unit around its forward
// and again in the backward of each frozen op; without a pin, a layer's seven projections would each
// re-gather the layer in backward. So the unit acquired last stays pinned until another unit is
// acquired: one gather per unit per pass, DeepSpeed's reuse distance in its simplest form. With tied
// embeddings the shared matrix is sharded in unit 0 and again in the last unit, so that each unit can
// be gathered on its own (1/world of the matrix extra per rank).
class Zero3WeightStore : public model::WeightStore {
 public:
  Zero3WeightStore(const model::ModelConfig& config, const model::SafetensorsModel& st, dist::Communicator& comm,
                   at::Device device, at::ScalarType dtype, int64_t prefetch)
      : config_(config), device_(device), dtype_(dtype) {
    std::vector<zero::UnitSpec> specs;
    const int64_t last = config.num_units() - 1;
    for (int64_t u = 0; u < config.num_units(); ++u) {
      zero::UnitSpec spec;
      for (const auto& w : model::unit_weight_specs(config, u)) {
        // The partitioned store keeps each name once; the head's copy of a tied matrix gets an alias.
        const bool tied_copy = u == last && config.tie_word_embeddings && w.name == model::lm_head_weight_name(config);
        spec.push_back({tied_copy ? kTiedAlias + w.name : w.name, w.shape});
      }
      specs.push_back(std::move(spec));
    }
    auto loader = [&st](const std::string& name, int64_t offset, int64_t count) {
      const std::string real = name.rfind(kTiedAlias, 0) == 0 ? name.substr(kTiedAlias.size()) : name;
      return model::load_flat_range(st, real, offset, offset + count, at::TensorOptions().dtype(at::kFloat));
    };
    zero::WeightStoreOptions opt;
    opt.dtype = dtype;
    opt.device = device;
    opt.prefetch = prefetch;
    store_ = std::make_unique<zero::PartitionedWeightStore>(std::move(specs), loader, comm, opt);
  }
  ~Zero3WeightStore() override { unpin(); }

  const model::ModelConfig& config() const override { return config_; }
  at::Device device() const override { return device_; }
  at::ScalarType dtype() const override { return dtype_; }

  model::UnitWeights acquire(int64_t unit) override {
    if (pinned_ != unit) {
      unpin();
      store_->acquire(static_cast<int>(unit));  // the pin's own reference
      pinned_ = unit;
    }
    model::UnitWeights w;
    for (auto& [name, t] : store_->acquire(static_cast<int>(unit)))
      w.set(name.rfind(kTiedAlias, 0) == 0 ? name.substr(kTiedAlias.size()) : name, t);
    return w;
  }
  void release(int64_t unit) override { store_->release(static_cast<int>(unit)); }

  int64_t local_numel() const { return store_->local_numel(); }

 private:
  inline static const std::string kTiedAlias = "tied_lm_head:";
  void unpin() {
    if (pinned_ >= 0) store_->release(static_cast<int>(pinned_));
    pinned_ = -1;
  }
  model::ModelConfig config_;
  at::Device device_;
  at::ScalarType dtype_;
  std::unique_ptr<zero::PartitionedWeightStore> store_;
  int64_t pinned_ = -1;
};

// ---- checkpoint payload sections ----------------------------------------------------------------

// ZeRO state as two sections: "zero" (JSON: AdamW step, each slice's name/shape/offset/length) and
// "zero_data" (the slices' fp32 master, exp_avg, exp_avg_sq, concatenated little-endian).
void put_optimizer_state(ckpt::Payload& p, const zero::OptimizerState& s) {
  nlohmann::json meta = {{"adam_step", s.step}, {"slices", nlohmann::json::array()}};
  std::string data;
  for (const auto& sl : s.slices) {
    meta["slices"].push_back(
        {{"name", sl.name}, {"shape", sl.shape}, {"offset", sl.offset}, {"numel", sl.master.numel()}});
    for (const at::Tensor& t : {sl.master, sl.exp_avg, sl.exp_avg_sq}) {
      at::Tensor c = t.to(at::kCPU, at::kFloat).contiguous();
      data.append(static_cast<const char*>(c.data_ptr()), static_cast<size_t>(c.numel()) * sizeof(float));
    }
  }
  p.set("zero", meta.dump());
  p.set("zero_data", std::move(data));
}

void get_optimizer_state(const ckpt::Payload& p, const std::string& origin, zero::OptimizerState& out) {
  nlohmann::json meta;
  try {
    meta = nlohmann::json::parse(p.get("zero"));
    out.step = meta.at("adam_step").get<int64_t>();
    const std::string& data = p.get("zero_data");
    size_t at_byte = 0;
    for (const auto& j : meta.at("slices")) {
      zero::StateSlice s;
      s.name = j.at("name").get<std::string>();
      s.shape = j.at("shape").get<std::vector<int64_t>>();
      s.offset = j.at("offset").get<int64_t>();
      const int64_t n = j.at("numel").get<int64_t>();
      const size_t bytes = static_cast<size_t>(n) * sizeof(float);
      if (n < 0 || at_byte + 3 * bytes > data.size()) fail("{}: the optimizer state is truncated", origin);
      for (at::Tensor* t : {&s.master, &s.exp_avg, &s.exp_avg_sq}) {
        *t = at::empty({n}, at::kFloat);
        std::memcpy(t->data_ptr(), data.data() + at_byte, bytes);
        at_byte += bytes;
      }
      out.slices.push_back(std::move(s));
    }
  } catch (const nlohmann::json::exception& e) {
    fail("{}: corrupt optimizer state: {}", origin, e.what());
  }
}

// The fp16 loss scaler and the steps it skipped, as JSON ("loss_scaler"): the scale is a power of two
// (or the static value) and round-trips exactly; the skipped count shifts the LR schedule (see the loop).
struct ScalerCheckpoint {
  zero::LossScalerState state;
  long long skipped_steps = 0;
  double last_grad_norm = 0;
};

std::string encode_scaler(const ScalerCheckpoint& s) {
  return nlohmann::json{{"scale", s.state.scale},
                        {"iter", s.state.iter},
                        {"last_overflow_iter", s.state.last_overflow_iter},
                        {"hysteresis", s.state.hysteresis},
                        {"skipped_steps", s.skipped_steps},
                        {"last_grad_norm", s.last_grad_norm}}
      .dump();
}

ScalerCheckpoint decode_scaler(const std::string& text, const std::string& origin) {
  ScalerCheckpoint s;
  try {
    const nlohmann::json j = nlohmann::json::parse(text);
    s.state.scale = j.at("scale").get<double>();
    s.state.iter = j.at("iter").get<int64_t>();
    s.state.last_overflow_iter = j.at("last_overflow_iter").get<int64_t>();
    s.state.hysteresis = j.at("hysteresis").get<int64_t>();
    s.skipped_steps = j.at("skipped_steps").get<long long>();
    s.last_grad_norm = j.at("last_grad_norm").get<double>();
  } catch (const nlohmann::json::exception& e) {
    fail("{}: corrupt loss scaler state: {}", origin, e.what());
  }
  if (s.skipped_steps < 0) fail("{}: corrupt loss scaler state: {} skipped steps", origin, s.skipped_steps);
  return s;
}

// LibTorch 1.13's CPU kernels have no float16 matmul ("addmm_impl_cpu_" not implemented for 'Half');
// later versions have. Asking the library beats guessing from its version.
std::optional<std::string> cpu_half_unsupported() {
  try {
    const at::Tensor a = at::ones({2, 2}, at::TensorOptions().dtype(at::kHalf));
    (void)at::softmax(at::mm(a, a), -1);
    return std::nullopt;
  } catch (const c10::Error& e) {
    const std::string what = e.what_without_backtrace();
    return what.substr(0, what.find('\n'));
  }
}

// Dropout and NEFTune draw on the compute device, so the generator must live there too. On CUDA it is
// the device's default generator (seeded here, saved in checkpoints): PyTorch's fused dropout kernel,
// which the decoder uses, draws from that one.
at::Generator make_generator(const at::Device& d, uint64_t seed) {
#ifdef ZLORA_WITH_CUDA
  if (d.is_cuda()) {
    at::Generator g = at::cuda::detail::getDefaultCUDAGenerator(d.index());
    g.set_current_seed(seed);
    return g;
  }
#endif
  return at::make_generator<at::CPUGeneratorImpl>(seed);
}

std::string generator_state(const at::Generator& g) {
  at::Tensor s = g.get_state();
  return std::string(static_cast<const char*>(s.data_ptr()), static_cast<size_t>(s.numel()));
}

void set_generator_state(at::Generator& g, const std::string& bytes) {
  at::Tensor s = at::empty({static_cast<int64_t>(bytes.size())}, at::kByte);
  std::memcpy(s.data_ptr(), bytes.data(), bytes.size());
  g.set_state(s);
}

// ---- data ---------------------------------------------------------------------------------------

// Loss targets per sample after the causal shift (labels[1:] != -100), read in blocks so that a rank
// never holds more than a block of the corpus.
std::vector<int64_t> count_loss_tokens(const data::TokenStore& store) {
  std::vector<int64_t> out(store.size(), 0);
  const size_t block = 4096;
  for (size_t b = 0; b < store.size(); b += block) {
    std::vector<size_t> idx;
    for (size_t i = b; i < std::min(store.size(), b + block); ++i) idx.push_back(i);
    auto samples = store.read(idx);
    for (size_t k = 0; k < samples.size(); ++k) {
      const auto& l = samples[k].labels;
      int64_t n = 0;
      for (size_t t = 1; t < l.size(); ++t) n += l[t] != data::kIgnoreIndex;
      out[idx[k]] = n;
    }
  }
  return out;
}

model::PackedBatch read_batch(const data::TokenStore& store, const std::vector<int64_t>& samples) {
  std::vector<size_t> idx(samples.begin(), samples.end());
  auto stored = store.read(idx);
  std::vector<std::vector<int64_t>> ids, labels;
  for (auto& s : stored) {
    ids.emplace_back(s.input_ids.begin(), s.input_ids.end());
    labels.emplace_back(s.labels.begin(), s.labels.end());
  }
  return model::PackedBatch::from_samples(ids, labels);
}

// What identifies the training data of a run (for the output-dir check): the store's provenance.
std::string data_hash(const data::TokenStore& store) {
  const auto& m = store.meta();
  Sha256 h;
  h.update(m.tokenizer_sha256);
  h.update(m.template_name);
  h.update(std::to_string(m.cutoff_len) + (m.train_on_prompt ? "p" : "-") + (m.mask_history ? "h" : "-"));
  for (const auto& s : m.sources)
    for (const auto& sha : s.sha256s) h.update(sha);
  h.update(std::to_string(m.num_samples) + "/" + std::to_string(m.num_tokens));
  return h.hex();
}

// ---- profile_steps: where a step's time goes ----
// Wall time between device synchronisations, summed over the profiled steps. The optimizer reports its
// own split (communication vs update) because its collectives interleave with its arithmetic.
// kGraph: forward and backward of a micro-batch as one CUDA graph replay (cuda_graphs), not separable.
enum class Phase { kData, kForward, kBackward, kGraph, kComm, kUpdate, kOther, kCount };
constexpr const char* kPhaseNames[] = {"data",          "forward",   "backward", "forward+backward (graph)",
                                       "communication", "optimizer", "other"};

class PhaseProfile {
 public:
  explicit PhaseProfile(at::Device device) : device_(device) {}
  void begin_step(bool on) {
    timer_ = dist::PhaseTimer(device_, on);
    timer_.restart();
  }
  void lap(Phase p) { sums_[static_cast<size_t>(p)] += timer_.lap(); }
  // The optimizer's step ran between the last lap and now: credit its own split, restart the clock.
  void add_optimizer(const zero::StepTimes& t) {
    if (!timer_.on()) return;
    sums_[static_cast<size_t>(Phase::kComm)] += t.comm_s;
    sums_[static_cast<size_t>(Phase::kUpdate)] += t.update_s;
    timer_.restart();
  }
  void end_step() {
    if (timer_.on()) ++steps_;
  }
  long long steps() const { return steps_; }

  // Prints the per-step breakdown and writes it as JSON (benchmarks/ reads it).
  void report(const std::filesystem::path& json_path) const {
    double total = 0;
    for (double v : sums_) total += v;
    nlohmann::json j;
    j["steps"] = steps_;
    j["step_ms"] = 1e3 * total / double(steps_);
    std::string line;
    for (size_t i = 0; i < static_cast<size_t>(Phase::kCount); ++i) {
      const double ms = 1e3 * sums_[i] / double(steps_);
      j["phases_ms"][kPhaseNames[i]] = ms;
      line += fmt::format("  {} {:.1f} ms ({:.0f}%)", kPhaseNames[i], ms, total > 0 ? 100 * sums_[i] / total : 0.0);
    }
    log::info("profile over {} steps: {:.1f} ms/step:{}", steps_, 1e3 * total / double(steps_), line);
    fs::write_file_atomic(json_path, j.dump(1) + "\n");
  }

 private:
  at::Device device_;
  dist::PhaseTimer timer_{device_, false};
  long long steps_ = 0;
  double sums_[static_cast<size_t>(Phase::kCount)] = {};
};

// LLaMA-Factory's flash_attn values onto the decoder's kernels: sdpa (torch's fused attention) maps to
// the same variable-length flash kernel where it exists, as auto does; fa2 insists on it.
model::AttentionKernel attention_kernel(const std::string& flash_attn) {
  if (flash_attn == "disabled") return model::AttentionKernel::kMath;
  if (flash_attn == "fa2") return model::AttentionKernel::kFlash;
  return model::AttentionKernel::kAuto;
}

FlopsModel flops_model(const model::ModelConfig& c, const model::LoraAdapter& lora) {
  FlopsModel f;
  const int64_t h = c.hidden_size, i = c.intermediate_size;
  const int64_t per_layer = h * c.q_dim() + 2 * h * c.kv_dim() + c.q_dim() * h + 3 * h * i;
  f.frozen_linear_params = c.num_hidden_layers * per_layer + c.vocab_size * h;
  for (const auto& p : lora.parameters()) f.lora_params += p.numel();
  f.num_layers = c.num_hidden_layers;
  f.attn_width = c.q_dim();
  return f;
}

// The start-of-run memory plan (printed by rank 0; refused before any large allocation when it cannot
// fit on the device, naming the stage/offload that would).
zero::MemoryPlanInput memory_plan_input(const model::ModelConfig& c, const TrainConfig& cfg, at::ScalarType dtype,
                                        int world, const at::Device& device, int64_t micro_batch_tokens) {
  zero::MemoryPlanInput in;
  int64_t largest = 0, total = 0;
  for (int64_t u = 0; u < c.num_units(); ++u) {
    int64_t n = 0;
    for (const auto& w : model::unit_weight_specs(c, u)) {
      int64_t e = 1;
      for (int64_t d : w.shape) e *= d;
      n += e;
    }
    largest = std::max(largest, n);
    total += n;
  }
  if (c.tie_word_embeddings) total -= c.vocab_size * c.hidden_size;  // listed in two units, stored once
  in.base_params = total;
  in.largest_unit_params = largest;
  const int64_t r = cfg.lora.lora_rank, h = c.hidden_size, i = c.intermediate_size;
  const int64_t per_layer_all = r * ((h + c.q_dim()) + 2 * (h + c.kv_dim()) + (c.q_dim() + h) + 3 * (h + i));
  in.lora_params = c.num_hidden_layers * per_layer_all;  // an upper bound when only some modules are targeted
  in.vocab_size = c.vocab_size;
  in.compute_dtype_bytes = dtype == at::kFloat ? 4 : 2;
  model::ActivationInput act;
  act.lora_modules = model::resolve_lora_targets(c, cfg.lora.lora_target);
  act.lora_rank = r;
  act.dropout = cfg.lora.lora_dropout > 0;
  act.dtype_bytes = in.compute_dtype_bytes;
  act.flash = model::uses_flash_attention(c, attention_kernel(cfg.training.flash_attn), device, dtype);
  act.max_seqlen = cfg.data.cutoff_len;
  const model::ActivationBytes kept = model::activation_bytes(c, act);
  in.activation_bytes_per_token = kept.per_token;
  in.checkpointed_activation_bytes_per_token = kept.checkpointed_per_token;
  in.loss_chunk_tokens = model::ForwardOptions{}.loss_chunk_tokens;
  in.tokens_per_micro_batch = micro_batch_tokens;
  in.gradient_checkpointing = cfg.training.gradient_checkpointing;
  in.stage = static_cast<int>(cfg.dist.zero_stage);
  in.offload = cfg.dist.offload_optimizer == "cpu";
  in.world_size = world;
  in.prefetch_units = cfg.dist.stage3_prefetch_layers;
#ifdef ZLORA_WITH_CUDA
  if (device.is_cuda()) {
    size_t free_b = 0, total_b = 0;
    if (cudaMemGetInfo(&free_b, &total_b) == cudaSuccess) in.free_device_bytes = static_cast<int64_t>(free_b);
  }
#endif
  return in;
}

}  // namespace

int run_sft(const config::Resolved<TrainConfig>& resolved, dist::MpiRuntime& mpi) {
  const TrainConfig& c = resolved.cfg;
  const int rank = mpi.rank(), world = mpi.size();
  const stdfs::path output_dir = c.training.output_dir;

  // ---- 1. device, precision, communicator ----
  const at::Device device = resolve_device(c.training.device, mpi.local_rank());
  if (c.training.fp16 && device.is_cpu())
    if (auto why = cpu_half_unsupported())
      fail(
          "fp16 needs float16 kernels, which this LibTorch ({}) lacks on the CPU ({}); on the CPU train in fp32 "
          "(drop --fp16), or run fp16/bf16 on a GPU",
          TORCH_VERSION, *why);
  const at::ScalarType dtype = compute_dtype(c);
  // NCCL moves GPU tensors only: a CPU run takes the MPI backend whatever `auto` would pick.
  std::string comm_kind = c.dist.comm;
  if (device.is_cpu()) {
    if (comm_kind == "nccl") fail("comm nccl needs the CUDA device; this run is on the CPU (use --comm mpi or auto)");
    comm_kind = "mpi";
  }
  auto comm = dist::make_communicator(mpi, {comm_kind, static_cast<double>(c.training.ddp_timeout)});
  log::info("world size {} ({}), device {} ({}), compute {}, ZeRO stage {}{}", world, comm->backend(), device.str(),
            device_name(device), c10::toString(dtype), c.dist.zero_stage,
            c.dist.offload_optimizer == "cpu" ? " + CPU optimizer offload" : "");
  if (c.training.full_determinism) at::globalContext().setDeterministicAlgorithms(true, false);
  // ---- 2. the token store ----
  if (!c.data.tokenized_path) fail("internal: the token store path was not resolved before training");
  data::TokenStore store(*c.data.tokenized_path);
  const int64_t n_samples = static_cast<int64_t>(store.size());
  ZLORA_REQUIRE(n_samples > 0, "the token store {} holds no samples", store.path().string());

  // ---- 3. frozen base weights ----
  const stdfs::path model_dir = c.model.model_name_or_path;
  const model::ModelConfig mcfg = model::load_model_config(model_dir);
  if (stdfs::exists(model_dir / "tokenizer.json"))
    store.require_compatible(sha256_file((model_dir / "tokenizer.json").string()),
                             c.data.template_name.value_or(store.meta().template_name));
  else
    log::warn("{} has no tokenizer.json: cannot check that the token store was made with the model's tokenizer",
              model_dir.string());
  {
    const int64_t mbt = resolve_micro_batch_tokens(c.dist.micro_batch_tokens, c.training.per_device_train_batch_size,
                                                   c.data.cutoff_len);
    const zero::MemoryPlanInput plan_in = memory_plan_input(mcfg, c, dtype, world, device, mbt);
    log::info("memory plan per rank:\n{}", zero::plan_memory(plan_in).describe());
    zero::require_fits(plan_in);
  }
  model::SafetensorsModel st(model_dir);
  std::unique_ptr<model::WeightStore> weights;
  if (c.dist.zero_stage == 3) {
    auto z3 = std::make_unique<Zero3WeightStore>(mcfg, st, *comm, device, dtype, c.dist.stage3_prefetch_layers);
    log::info("ZeRO-3: this rank keeps {} base-model elements (its shard)", z3->local_numel());
    weights = std::move(z3);
  } else {
    weights = std::make_unique<model::ResidentWeightStore>(mcfg, st, device, dtype);
  }

  // ---- 4. LoRA ----
  model::LoraAdapter lora = [&] {
    if (c.model.adapter_name_or_path) {
      log::info("continuing training of the adapter in {}", *c.model.adapter_name_or_path);
      return model::LoraAdapter::load(*c.model.adapter_name_or_path, mcfg, device);
    }
    model::LoraConfig lc;
    lc.r = c.lora.lora_rank;
    lc.alpha = *c.lora.lora_alpha;
    lc.dropout = c.lora.lora_dropout;
    lc.targets = c.lora.lora_target;
    lc.use_rslora = c.lora.use_rslora;
    lc.seed = static_cast<uint64_t>(c.training.seed);
    return model::LoraAdapter::create(mcfg, lc, device);
  }();
  model::Decoder decoder(*weights, &lora);

  // ---- 5. ZeRO optimizer over the LoRA parameters ----
  zero::ZeroOptions zo;
  zo.stage = static_cast<int>(c.dist.zero_stage);
  zo.offload = c.dist.offload_optimizer == "cpu";
  zo.reduce_bucket_size = c.dist.reduce_bucket_size;
  zo.allgather_bucket_size = c.dist.allgather_bucket_size;
  zo.max_grad_norm = c.training.max_grad_norm;
  zo.adam = {c.training.adam_beta1, c.training.adam_beta2, c.training.adam_epsilon, c.training.weight_decay};
  zero::ZeroOptimizer optimizer(lora.named_parameters(), *comm, zo);
  // fp16: DeepSpeed's loss scaling (zero/loss_scaler.h). The LoRA masters and AdamW stay fp32; only the
  // frozen base and the activations are float16.
  std::optional<zero::LossScaler> scaler;
  if (c.training.fp16) {
    zero::LossScalerOptions so;
    so.static_scale = c.dist.loss_scale;
    so.initial_scale_power = c.dist.initial_scale_power;
    so.scale_window = c.dist.loss_scale_window;
    so.hysteresis = c.dist.hysteresis;
    so.min_scale = c.dist.min_loss_scale;
    scaler.emplace(so);
    if (scaler->dynamic())
      log::info("fp16 dynamic loss scaling: initial scale {:g}, window {}, hysteresis {}, min scale {:g}",
                scaler->scale(), so.scale_window, so.hysteresis, so.min_scale);
    else
      log::info("fp16 static loss scale {:g}", scaler->scale());
  }
  // Steps skipped on overflow: they count as steps (max_steps, the logs, the sample order) but do not
  // advance the LR schedule, as in DeepSpeed's engine (its scheduler steps only when the optimizer did).
  long long skipped_steps = 0;
  double last_grad_norm = 0;  // logged for a skipped step, as DeepSpeed keeps the previous norm

  // ---- step counting, schedule, plan ----
  const StepCounts counts =
      count_steps(n_samples, c.training.per_device_train_batch_size, c.training.gradient_accumulation_steps, world,
                  c.training.num_train_epochs, c.training.max_steps);
  if (c.dist.train_batch_size && *c.dist.train_batch_size != counts.global_batch)
    fail(
        "train_batch_size {} must equal per_device_train_batch_size x gradient_accumulation_steps x world size "
        "= {} x {} x {} = {}",
        *c.dist.train_batch_size, c.training.per_device_train_batch_size, c.training.gradient_accumulation_steps, world,
        counts.global_batch);
  const Schedule schedule =
      make_schedule(c.training.lr_scheduler_type, c.training.learning_rate, c.training.warmup_steps,
                    c.training.warmup_ratio, c.training.warmup_type, counts.total_steps);
  const long long logging_steps = resolve_interval(c.training.logging_steps, counts.total_steps, "logging_steps");
  const long long save_steps =
      c.training.save_strategy == "no" ? 0 : resolve_interval(c.training.save_steps, counts.total_steps, "save_steps");
  PlanOptions po;
  po.per_device_batch = c.training.per_device_train_batch_size;
  po.grad_accum = c.training.gradient_accumulation_steps;
  po.world_size = world;
  po.rank = rank;
  po.micro_batch_tokens =
      resolve_micro_batch_tokens(c.dist.micro_batch_tokens, c.training.per_device_train_batch_size, c.data.cutoff_len);
  po.steps_per_epoch = counts.steps_per_epoch;
  const bool shuffle = !c.training.disable_shuffling;
  const long long seed = c.training.seed;
  const std::vector<int64_t> lengths = store.lengths();
  StepPlanner planner(lengths, count_loss_tokens(store), po, [n_samples, seed, shuffle](long long epoch) {
    return epoch_order(n_samples, seed, epoch, shuffle);
  });
  log::info("{} samples, {} optimizer steps ({} per epoch), global batch {}, micro-batch budget {} tokens", n_samples,
            counts.total_steps, counts.steps_per_epoch, counts.global_batch, po.micro_batch_tokens);

  // ---- 6. output dir, resume ----
  const bool resume = c.training.resume_from_checkpoint.has_value();
  if (rank == 0) {
    ckpt::RunDescriptor run;
    run.model_path = stdfs::absolute(model_dir).lexically_normal().string();
    run.model_config_sha256 = sha256_file((model_dir / "config.json").string());
    run.lora_rank = lora.config().r;
    run.lora_alpha = lora.config().alpha;
    run.lora_target = c.lora.lora_target;
    run.use_rslora = lora.config().use_rslora;
    run.data_hash = data_hash(store);
    run.template_name = store.meta().template_name;
    for (const auto& p : ckpt::clean_stale(output_dir))
      log::warn("removed {}, left by an interrupted save", p.string());
    auto od = ckpt::prepare_output_dir(output_dir, run, c.training.overwrite_output_dir, resume);
    if (!od.warning.empty()) log::warn("{}", od.warning);
  }
  comm->barrier()->wait();

  // RNG for LoRA dropout and NEFTune: per rank, so ranks draw different masks for different samples.
  at::Generator gen = make_generator(device, static_cast<uint64_t>(seed) * 1000003ull + rank + 1);
  SamplerPosition position;
  std::optional<TrainerState> resumed_state;
  std::string resumed_logger;
  if (resume) {
    ckpt::CheckpointInfo info = ckpt::resolve_resume(output_dir, *c.training.resume_from_checkpoint, mpi.world());
    ckpt::ResumePayloads payloads = ckpt::read_payloads(info, rank, world);
    zero::OptimizerState merged;
    for (size_t i = 0; i < payloads.payloads.size(); ++i) {
      const int from_rank = payloads.same_world ? rank : static_cast<int>(i);
      const std::string origin = (info.dir / ckpt::rank_file_name(from_rank)).string();
      ckpt::Payload p = ckpt::Payload::parse(payloads.payloads[i], origin);
      get_optimizer_state(p, origin, merged);
      if (i == 0) position = planner.decode(p.get("sampler"), seed, shuffle);
      if (payloads.same_world && p.has("rng")) set_generator_state(gen, p.get("rng"));
      if (from_rank == 0 && p.has("logger")) resumed_logger = p.get("logger");
      if (i == 0 && p.has("loss_scaler")) {
        const ScalerCheckpoint sc = decode_scaler(p.get("loss_scaler"), origin);
        skipped_steps = sc.skipped_steps;
        last_grad_norm = sc.last_grad_norm;
        if (scaler) scaler->set_state(sc.state);
      } else if (i == 0 && scaler) {
        log::warn("{} holds no fp16 loss scaler state (saved by a bf16/fp32 run): the scale starts at {:g}", origin,
                  scaler->scale());
      }
    }
    optimizer.import_state(merged);
    resumed_state = TrainerState::read(info.dir / ckpt::kTrainerStateName);
    log::info("resumed from {} at step {} (saved at world size {}, now {})", info.dir.string(), info.step(),
              info.world_size(), world);
  }

  // ---- 7. the loop ----
  const FlopsModel flops = flops_model(mcfg, lora);
  const std::optional<double> peak =
      device.is_cuda() ? peak_flops(device_name(device), dtype != at::kFloat) : std::nullopt;
  std::unique_ptr<RunLogger> logger;
  if (rank == 0) {
    RunLoggerOptions lo;
    lo.output_dir = output_dir;
    lo.total_steps = counts.total_steps;
    lo.steps_per_epoch = counts.steps_per_epoch;
    lo.logging_steps = logging_steps;
    lo.save_steps = save_steps;
    lo.per_device_batch = c.training.per_device_train_batch_size;
    lo.num_train_epochs = counts.num_train_epochs;
    lo.world_size = world;
    lo.peak_flops = peak;
    lo.plot_loss = c.training.plot_loss;
    logger = std::make_unique<RunLogger>(lo, now_s(), resumed_state ? &*resumed_state : nullptr, resumed_logger);
  }
  long long global_step = resumed_state ? resumed_state->global_step : 0;
  ckpt::PreemptionGuard preempt_guard;
  model::ForwardOptions fwd;
  fwd.training = true;
  fwd.neftune_alpha = c.lora.neftune_noise_alpha.value_or(0.0);
  fwd.generator = gen;
  fwd.attention = attention_kernel(c.training.flash_attn);
  fwd.gradient_checkpointing = c.training.gradient_checkpointing;
  at::Tensor loss_acc = at::zeros({1}, at::TensorOptions().dtype(at::kDouble).device(device));
  // cuda_graphs: each micro-batch padded to a bucket and replayed as a CUDA graph (train/step_graphs.h).
  std::unique_ptr<StepGraphs> graphs;
  if (c.dist.cuda_graphs != "false") {
    const std::optional<std::string> why =
        StepGraphs::unsupported(fwd, device, decoder.uses_flash(fwd), static_cast<int>(c.dist.zero_stage));
    if (!why) {
      StepGraphOptions go;
      go.max_seqlen = *std::max_element(lengths.begin(), lengths.end());
      graphs = std::make_unique<StepGraphs>(decoder, fwd, device, go);
      log::info("cuda_graphs: micro-batches run as CUDA graphs (tokens padded to multiples of {}, loss rows of {})",
                go.token_granularity, go.row_granularity);
    } else if (c.dist.cuda_graphs == "true") {
      fail("cuda_graphs=true: {}; use cuda_graphs=auto or false", *why);
    } else if (device.is_cuda()) {
      log::info("cuda_graphs: off ({})", *why);
    }
  }
  const model::PackedBatch dummy = model::PackedBatch::from_samples({{0, 0}}, {{-100, -100}});

  auto save = [&](long long step) {
    ckpt::Payload p;
    put_optimizer_state(p, optimizer.export_state());
    p.set("sampler", planner.encode(position, seed, shuffle));
    p.set("rng", generator_state(gen));
    if (rank == 0) p.set("logger", logger->logger_state());
    if (scaler || skipped_steps > 0)
      p.set("loss_scaler",
            encode_scaler({scaler ? scaler->state() : zero::LossScalerState{}, skipped_steps, last_grad_norm}));
    const std::string payload = p.serialize();
    ckpt::SaveRequest req;
    req.step = step;
    req.payload = payload;
    req.rank0_files = [&](const stdfs::path& dir) { lora.save(dir, c.model.model_name_or_path); };
    if (rank == 0) req.trainer_state_json = logger->trainer_state_json();
    req.save_total_limit = c.training.save_total_limit;
    const stdfs::path dir = ckpt::save_checkpoint(output_dir, req, mpi.world());
    log::info("saved {}", dir.string());
  };

  // A step's micro-batches read from the store (empty micro-batches stay empty: ZeRO-3 runs `dummy`).
  auto read_step = [&](const StepPlan& plan) {
    std::vector<model::PackedBatch> out(plan.micro_batches.size());
    for (size_t i = 0; i < out.size(); ++i)
      if (!plan.micro_batches[i].empty()) out[i] = read_batch(store, plan.micro_batches[i].samples);
    return out;
  };
  std::optional<std::pair<StepPlan, std::vector<model::PackedBatch>>> next;  // prefetched next step

  int exit_code = 0;
  // profile_steps: the last N steps of this run are timed phase by phase.
  PhaseProfile profile(device);
  const long long profile_from = counts.total_steps - c.dist.profile_steps;
  while (global_step < counts.total_steps) {
    const bool profiling = c.dist.profile_steps > 0 && global_step >= profile_from;
    optimizer.set_profiling(profiling);
    profile.begin_step(profiling);
    StepPlan plan;
    std::vector<model::PackedBatch> batches;
    if (next) {
      plan = std::move(next->first);
      batches = std::move(next->second);
      next.reset();
    } else {
      plan = planner.plan(position);
      batches = read_step(plan);
    }
    profile.lap(Phase::kData);
    optimizer.zero_grad();
    loss_acc.zero_();
    // The loss is the mean over every unmasked target of the global batch: each micro-batch adds
    // sum / (global target count), so the gradients summed over ranks are the global gradient.
    const double inv_targets = 1.0 / static_cast<double>(std::max<long long>(plan.global_loss_tokens, 1));
    for (size_t i = 0; i < plan.micro_batches.size(); ++i) {
      const MicroBatch& mb = plan.micro_batches[i];
      if (mb.empty() && c.dist.zero_stage != 3) continue;
      // ZeRO-3 gathers every layer in forward and backward on every rank: a rank without real work
      // still runs a 2-token batch with weight 0 so the collectives line up.
      const model::PackedBatch& batch = mb.empty() ? dummy : batches[i];
      if (graphs && !mb.empty()) {
        graphs->run(batch, scaler ? inv_targets * scaler->scale() : inv_targets, loss_acc);
        profile.lap(Phase::kGraph);
        continue;
      }
      model::LossResult out = decoder.loss(batch, fwd);
      profile.lap(Phase::kForward);
      // fp16: the backward runs on loss x scale so that small gradients stay representable.
      (out.sum * (mb.empty() ? 0.0 : scaler ? inv_targets * scaler->scale() : inv_targets)).backward();
      if (!mb.empty()) loss_acc += out.sum.detach().to(at::kDouble);
      profile.lap(Phase::kBackward);
    }
    // The device is still working through this step: read the next step's samples meanwhile.
    if (global_step + 1 < counts.total_steps) {
      StepPlan next_plan = planner.plan(planner.next(position));
      std::vector<model::PackedBatch> next_batches = read_step(next_plan);
      next.emplace(std::move(next_plan), std::move(next_batches));
    }
    profile.lap(Phase::kData);
    const double lr = schedule.lr(global_step - skipped_steps);
    double grad_norm = 0;
    if (scaler) {
      // Every rank sees the same overflow verdict (the norm is all-reduced), so all skip together.
      const zero::ZeroOptimizer::StepResult r = optimizer.step_scaled(lr, scaler->scale());
      const zero::LossScaleUpdate u = scaler->update(r.overflow);
      if (r.overflow) {
        ++skipped_steps;
        grad_norm = last_grad_norm;
        log::info("step {}: fp16 gradient overflow (inf/NaN), skipping step; {}", global_step + 1, u.describe());
      } else {
        grad_norm = last_grad_norm = r.grad_norm;
        if (u.new_scale != u.old_scale) log::info("step {}: {}", global_step + 1, u.describe());
      }
    } else {
      grad_norm = optimizer.step(lr);
    }
    profile.add_optimizer(optimizer.last_step_times());
    comm->all_reduce(loss_acc, dist::ReduceOp::kSum)->wait();
    const double step_loss = loss_acc.item<double>() * inv_targets;
    profile.lap(Phase::kComm);
    ++global_step;
    position = planner.next(position);
    if (!std::isfinite(step_loss))
      fail("the loss became {} at step {} (lr {:.3g}, grad norm {:.3g}); lower learning_rate or check the data{}",
           step_loss, global_step, lr, grad_norm,
           scaler ? "; in fp16 the forward pass can overflow float16's range (65504), which loss scaling cannot "
                    "fix: use bf16"
                  : "");

    if (rank == 0) {
      StepStats ss;
      ss.loss = step_loss;
      ss.lr = schedule.lr(global_step - skipped_steps);  // HF logs the rate after the scheduler's step: the next step's
      ss.grad_norm = grad_norm;
      ss.tokens = plan.global_tokens;
      ss.samples = static_cast<long long>(plan.step_samples.size());
      for (int64_t i : plan.step_samples) ss.flops += flops.sample_flops(lengths[static_cast<size_t>(i)]);
      logger->on_step(ss, now_s(), peak_vram_gib(device));
    }
    const bool preempted = ckpt::agree_preempt(mpi.world());
    if ((save_steps > 0 && global_step % save_steps == 0) || preempted) save(global_step);
    if (preempted) {
      // Only the signalled rank knows the signal; the others were told by agree_preempt.
      const int sig = ckpt::preempt_signal();
      log::warn(
          "preempted ({}): checkpoint-{} written; exiting with code {}, resume with --resume_from_checkpoint latest",
          sig != 0 ? fmt::format("signal {}", sig) : std::string("another rank was signalled"), global_step,
          ckpt::kExitPreempted);
      exit_code = ckpt::kExitPreempted;
      break;
    }
    profile.lap(Phase::kOther);
    profile.end_step();
  }
  if (rank == 0 && profile.steps() > 0) profile.report(output_dir / "profile.json");
  if (graphs) {
    const StepGraphStats& gs = graphs->stats();
    log::info("cuda_graphs: {} graphs captured, {} replays, {} eager micro-batches, {} graphs evicted", gs.captures,
              gs.replays, gs.eager, gs.evictions);
  }

  // ---- 8. the final adapter, results, plot ----
  if (exit_code == 0 && rank == 0) {
    lora.save(output_dir, c.model.model_name_or_path);
    TrainResults res = logger->finish(now_s());
    log::info("done: {} steps, train_loss {:.4f}, {:.1f} s; adapter in {}", global_step, res.train_loss,
              res.train_runtime, output_dir.string());
  }
  comm->barrier()->wait();
  return exit_code;
}

}  // namespace zlora::train
