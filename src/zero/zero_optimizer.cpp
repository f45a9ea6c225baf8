#include "zlora/zero/zero_optimizer.h"

#include "zlora/core/error.h"
#include "zlora/dist/phase_timer.h"
#include "zlora/zero/partition.h"

#include <ATen/ATen.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <set>

namespace zlora::zero {

namespace {

// Issues `issue(k)` for k in [0, n) with at most two collectives in flight: double buffering bounds
// the staging memory to two buckets while the next bucket's copy overlaps the current transfer.
template <typename Issue>
void pipelined(int64_t n, Issue issue) {
  dist::WorkPtr in_flight[2];
  for (int64_t k = 0; k < n; ++k) {
    auto& slot = in_flight[k % 2];
    if (slot) slot->wait();
    slot = issue(k);
  }
  for (auto& w : in_flight)
    if (w) w->wait();
}

}  // namespace

ZeroOptimizer::ZeroOptimizer(NamedTensors params, dist::Communicator& comm, ZeroOptions options)
    : comm_(comm), options_(options), params_(std::move(params)) {
  ZLORA_REQUIRE(options_.stage >= 0 && options_.stage <= 3, "zero_stage must be 0, 1, 2 or 3, got {}", options_.stage);
  ZLORA_REQUIRE(!options_.offload || options_.stage >= 1,
                "offload_optimizer cpu needs zero_stage 1, 2 or 3 (as in DeepSpeed); stage 0 keeps the whole "
                "optimizer on every device");
  ZLORA_REQUIRE(options_.reduce_bucket_size > 0, "reduce_bucket_size must be positive, got {}",
                options_.reduce_bucket_size);
  ZLORA_REQUIRE(options_.allgather_bucket_size > 0, "allgather_bucket_size must be positive, got {}",
                options_.allgather_bucket_size);
  ZLORA_REQUIRE(options_.alignment > 0, "ZeRO alignment must be positive, got {}", options_.alignment);
  ZLORA_REQUIRE(!params_.empty(), "ZeroOptimizer: no trainable parameters (is the LoRA target list empty?)");

  std::set<std::string> names;
  const at::Device device = params_.front().second.device();
  for (const auto& [name, p] : params_) {
    ZLORA_REQUIRE(names.insert(name).second, "ZeroOptimizer: parameter {} is listed twice", name);
    ZLORA_REQUIRE(p.defined(), "ZeroOptimizer: parameter {} is undefined", name);
    ZLORA_REQUIRE(p.scalar_type() == at::kFloat, "ZeroOptimizer: parameter {} is {}; trainable parameters are fp32",
                  name, c10::toString(p.scalar_type()));
    ZLORA_REQUIRE(p.requires_grad() && p.is_leaf(), "ZeroOptimizer: parameter {} must be a leaf with requires_grad",
                  name);
    ZLORA_REQUIRE(p.device() == device, "ZeroOptimizer: parameter {} is on {} but {} is on {}; all must share one",
                  name, p.device().str(), params_.front().first, device.str());
    offsets_.push_back(numel_);
    numel_ += p.numel();
  }
  // Every rank must lay out the same buffer, or the partitions would silently mean different things:
  // one all-reduce of (count, numel) as max and as -min tells every rank whether all agree.
  {
    const int64_t count = static_cast<int64_t>(params_.size());
    at::Tensor t = at::tensor({count, numel_, -count, -numel_}, at::kLong).to(device);
    comm_.all_reduce(t, dist::ReduceOp::kMax)->wait();
    t = t.cpu();
    const int64_t* v = t.data_ptr<int64_t>();
    ZLORA_REQUIRE(v[0] == count && v[1] == numel_ && -v[2] == count && -v[3] == numel_,
                  "ZeroOptimizer: ranks disagree on the trainable parameters (this rank: {} tensors, {} elements; "
                  "across ranks: {}..{} tensors, {}..{} elements); every rank must build the same LoRA model",
                  count, numel_, -v[2], v[0], -v[3], v[1]);
  }
  const int world = comm_.size();
  padded_ = padded_flat_numel(numel_, world, options_.alignment);
  partition_ = padded_ / world;

  const auto f32 = at::TensorOptions().dtype(at::kFloat).device(device);
  flat_weights_ = at::zeros({padded_}, f32);
  flat_grads_ = at::zeros({padded_}, f32);
  {
    at::NoGradGuard no_grad;
    for (size_t i = 0; i < params_.size(); ++i) {
      at::Tensor& p = params_[i].second;
      at::Tensor w = flat_weights_.narrow(0, offsets_[i], p.numel()).view(p.sizes());
      w.copy_(p);
      p.set_data(w);
      p.mutable_grad() = flat_grads_.narrow(0, offsets_[i], p.numel()).view(p.sizes());
    }
  }
  const auto [begin, end] = owned_range();
  if (options_.stage >= 2) grad_partition_ = at::zeros({partition_}, f32);
  if (options_.offload) {
    // Pinned host memory makes the device<->host copies DMA transfers that can be asynchronous.
    const auto host = at::TensorOptions().dtype(at::kFloat).device(at::kCPU).pinned_memory(device.is_cuda());
    host_master_ = at::empty({end - begin}, host);
    host_master_.copy_(flat_weights_.narrow(0, begin, end - begin));
    host_grad_ = at::zeros({end - begin}, host);
    exp_avg_ = at::zeros({end - begin}, host);
    exp_avg_sq_ = at::zeros({end - begin}, host);
  } else {
    exp_avg_ = at::zeros({end - begin}, f32);
    exp_avg_sq_ = at::zeros({end - begin}, f32);
  }
}

std::pair<int64_t, int64_t> ZeroOptimizer::owned_range() const {
  if (options_.stage == 0) return {0, padded_};
  return {comm_.rank() * partition_, (comm_.rank() + 1) * partition_};
}

void ZeroOptimizer::zero_grad() {
  at::NoGradGuard no_grad;
  flat_grads_.zero_();
}

void ZeroOptimizer::check_grad_views() const {
  for (size_t i = 0; i < params_.size(); ++i) {
    const at::Tensor& g = params_[i].second.grad();
    const void* expected = static_cast<const float*>(flat_grads_.data_ptr()) + offsets_[i];
    ZLORA_REQUIRE(g.defined() && g.data_ptr() == expected,
                  "parameter {}'s .grad no longer views ZeroOptimizer's gradient buffer (was it reset or set to "
                  "None?); zero gradients only through ZeroOptimizer::zero_grad()",
                  params_[i].first);
  }
}

void ZeroOptimizer::reduce_gradients() {
  const int world = comm_.size();
  if (options_.stage <= 1) {
    // Every rank needs (stage 0) or may use (stage 1) the full reduced gradient.
    const int64_t bucket = options_.reduce_bucket_size;
    const int64_t n = (padded_ + bucket - 1) / bucket;
    pipelined(n, [&](int64_t k) {
      const int64_t start = k * bucket;
      return comm_.all_reduce(flat_grads_.narrow(0, start, std::min(bucket, padded_ - start)), dist::ReduceOp::kSum);
    });
    return;
  }
  // Stage 2/3: bucket k carries, from every rank's partition r, elements [k*b, k*b + len) — the
  // interleaving reduce-scatter needs — so each rank receives slice k of its own partition.
  const int64_t b = std::max<int64_t>(1, options_.reduce_bucket_size / world);
  if (b >= partition_) {
    comm_.reduce_scatter(grad_partition_, flat_grads_, dist::ReduceOp::kSum)->wait();
    return;
  }
  const int64_t n = (partition_ + b - 1) / b;
  at::Tensor staging[2];
  pipelined(n, [&](int64_t k) {
    const int64_t start = k * b, len = std::min(b, partition_ - start);
    at::Tensor& stage = staging[k % 2];
    if (!stage.defined()) stage = at::empty({world * b}, flat_grads_.options());
    at::Tensor in = stage.narrow(0, 0, world * len);
    in.view({world, len}).copy_(flat_grads_.view({world, partition_}).narrow(1, start, len));
    return comm_.reduce_scatter(grad_partition_.narrow(0, start, len), in, dist::ReduceOp::kSum);
  });
}

void ZeroOptimizer::gather_weights() {
  if (options_.stage == 0) return;  // every rank stepped everything
  const int world = comm_.size();
  const int64_t b = std::max<int64_t>(1, options_.allgather_bucket_size / world);
  at::Tensor mine = flat_weights_.narrow(0, comm_.rank() * partition_, partition_);
  if (b >= partition_) {
    comm_.all_gather(flat_weights_, mine)->wait();  // in place: our chunk is already in position
    return;
  }
  const int64_t n = (partition_ + b - 1) / b;
  at::Tensor staging[2];
  dist::WorkPtr in_flight[2];
  int64_t pending[2] = {-1, -1};
  // Scatters a finished bucket's chunks back into each rank's partition of the flat buffer.
  auto land = [&](int slot) {
    in_flight[slot]->wait();
    const int64_t start = pending[slot] * b, len = std::min(b, partition_ - start);
    flat_weights_.view({world, partition_})
        .narrow(1, start, len)
        .copy_(staging[slot].narrow(0, 0, world * len).view({world, len}));
    in_flight[slot].reset();
  };
  for (int64_t k = 0; k < n; ++k) {
    const int slot = static_cast<int>(k % 2);
    if (in_flight[slot]) land(slot);
    const int64_t start = k * b, len = std::min(b, partition_ - start);
    if (!staging[slot].defined()) staging[slot] = at::empty({world * b}, flat_weights_.options());
    pending[slot] = k;
    in_flight[slot] = comm_.all_gather(staging[slot].narrow(0, 0, world * len), mine.narrow(0, start, len));
  }
  for (int slot : {static_cast<int>(n % 2), static_cast<int>((n + 1) % 2)})
    if (in_flight[slot]) land(slot);
}

at::Tensor ZeroOptimizer::my_grads() const {
  if (options_.stage >= 2) return grad_partition_;
  const auto [begin, end] = owned_range();
  return flat_grads_.narrow(0, begin, end - begin);
}

double ZeroOptimizer::step(double lr) { return step_impl(lr, 1.0, false).grad_norm; }

ZeroOptimizer::StepResult ZeroOptimizer::step_scaled(double lr, double loss_scale) {
  ZLORA_REQUIRE(loss_scale > 0 && std::isfinite(loss_scale), "ZeroOptimizer: the loss scale must be positive, got {}",
                loss_scale);
  return step_impl(lr, loss_scale, true);
}

ZeroOptimizer::StepResult ZeroOptimizer::step_impl(double lr, double loss_scale, bool skip_overflow) {
  at::NoGradGuard no_grad;
  check_grad_views();
  // Profiling: wall time between device synchronisations, split into communication and update.
  dist::PhaseTimer timer(flat_grads_.device(), profiling_);
  double comm_s = 0, update_s = 0;
  auto lap = [&](double& into) { into += timer.lap(); };
  timer.restart();  // drains the backward still running on the device; its time is not ours
  reduce_gradients();
  lap(comm_s);

  // Global norm: stage 0 holds the full reduced gradient on every rank; otherwise each rank sums the
  // squares of its partition and one all-reduce adds them (padding is zero and adds nothing).
  at::Tensor g = my_grads();
  double sq = 0;
  if (options_.offload) {
    host_grad_.copy_(g, /*non_blocking=*/true);  // pinned: an asynchronous DMA on the GPU
    dist::synchronize_device(g.device());
    sq = host_sum_squares(host_grad_.data_ptr<float>(), host_grad_.numel());
  } else {
    sq = g.to(at::kDouble).square().sum().item<double>();
  }
  if (options_.stage >= 1 && comm_.size() > 1) {
    lap(update_s);
    at::Tensor t = at::full({1}, sq, at::TensorOptions().dtype(at::kDouble).device(g.device()));
    comm_.all_reduce(t, dist::ReduceOp::kSum)->wait();
    sq = t.item<double>();
    lap(comm_s);
  }
  // The squares are summed in double from fp32 values, so they cannot overflow: a non-finite sum means
  // inf/NaN in some rank's gradients, and every rank holds the same sum (see step_scaled).
  const double norm = std::sqrt(sq) / loss_scale;
  if (!std::isfinite(norm) && skip_overflow) {
    lap(update_s);
    times_ = StepTimes{comm_s, update_s};
    return {norm, true};
  }
  ZLORA_REQUIRE(std::isfinite(norm),
                "the global gradient norm is {} at optimizer step {}: the loss diverged (lower the learning rate, "
                "use bf16 instead of fp16, or check the data)",
                norm, step_ + 1);
  ++step_;
  // torch.nn.utils.clip_grad_norm_: coef = max_norm / (norm + 1e-6), applied when below 1. The loss
  // scale is divided out in the same multiply (exact when it is a power of two).
  double scale = 1.0;
  if (options_.max_grad_norm > 0) {
    const double coef = options_.max_grad_norm / (norm + 1e-6);
    if (coef < 1.0) scale = static_cast<float>(coef);
  }
  if (loss_scale != 1.0) scale /= loss_scale;

  const auto [begin, end] = owned_range();
  const AdamWOptions& a = options_.adam;
  if (options_.offload) {
    host_adamw(host_master_.data_ptr<float>(), exp_avg_.data_ptr<float>(), exp_avg_sq_.data_ptr<float>(),
               host_grad_.data_ptr<float>(), host_master_.numel(), scale, lr, step_, a);
    flat_weights_.narrow(0, begin, end - begin).copy_(host_master_, /*non_blocking=*/true);
  } else {
    // torch.optim.AdamW (the C++ frontend's, op for op) on this rank's range.
    at::Tensor p = flat_weights_.narrow(0, begin, end - begin);
    if (scale != 1.0) g.mul_(scale);
    if (a.weight_decay != 0) p.mul_(1 - lr * a.weight_decay);
    exp_avg_.mul_(a.beta1).add_(g, 1 - a.beta1);
    exp_avg_sq_.mul_(a.beta2).addcmul_(g, g, 1 - a.beta2);
    const double bc1 = 1 - std::pow(a.beta1, static_cast<double>(step_));
    const double bc2 = 1 - std::pow(a.beta2, static_cast<double>(step_));
    at::Tensor denom = (exp_avg_sq_.sqrt() / std::sqrt(bc2)).add_(a.eps);
    p.addcdiv_(exp_avg_, denom, -lr / bc1);
  }
  lap(update_s);
  gather_weights();
  lap(comm_s);
  times_ = StepTimes{comm_s, update_s};
  return {norm, false};
}

OptimizerState ZeroOptimizer::export_state() const {
  OptimizerState out;
  out.step = step_;
  const int64_t begin = comm_.rank() * partition_, end = begin + partition_;
  const auto [own_begin, own_end] = owned_range();
  at::Tensor master = options_.offload ? host_master_ : flat_weights_.narrow(0, own_begin, own_end - own_begin);
  for (size_t i = 0; i < params_.size(); ++i) {
    const int64_t p0 = offsets_[i], p1 = p0 + params_[i].second.numel();
    const int64_t lo = std::max(p0, begin), hi = std::min(p1, end);
    if (lo >= hi) continue;
    StateSlice s;
    s.name = params_[i].first;
    s.shape = params_[i].second.sizes().vec();
    s.offset = lo - p0;
    s.master = master.narrow(0, lo - own_begin, hi - lo).to(at::kCPU, /*non_blocking=*/false, /*copy=*/true);
    s.exp_avg = exp_avg_.narrow(0, lo - own_begin, hi - lo).to(at::kCPU, false, true);
    s.exp_avg_sq = exp_avg_sq_.narrow(0, lo - own_begin, hi - lo).to(at::kCPU, false, true);
    out.slices.push_back(std::move(s));
  }
  return out;
}

void ZeroOptimizer::import_state(const OptimizerState& state) {
  at::NoGradGuard no_grad;
  ZLORA_REQUIRE(state.step >= 0, "optimizer state: negative step count {}", state.step);
  const auto [begin, end] = owned_range();
  at::Tensor master = options_.offload ? host_master_ : flat_weights_.narrow(0, begin, end - begin);
  // Per element of our range: was it loaded? (Checks coverage without trusting slice bookkeeping.)
  at::Tensor covered = at::zeros({end - begin}, at::kInt);
  std::map<std::string, size_t> index;
  for (size_t i = 0; i < params_.size(); ++i) index[params_[i].first] = i;
  for (const StateSlice& s : state.slices) {
    auto it = index.find(s.name);
    ZLORA_REQUIRE(it != index.end(),
                  "optimizer state has parameter {}, which this run does not train (different lora_target, "
                  "lora_rank or model?)",
                  s.name);
    const size_t i = it->second;
    const at::Tensor& p = params_[i].second;
    ZLORA_REQUIRE(s.shape == p.sizes().vec(), "optimizer state for {} has shape [{}], the parameter is [{}]", s.name,
                  fmt::join(s.shape, ", "), fmt::join(p.sizes(), ", "));
    const int64_t n = s.master.numel();
    ZLORA_REQUIRE(s.offset >= 0 && s.offset + n <= p.numel() && s.exp_avg.numel() == n && s.exp_avg_sq.numel() == n,
                  "optimizer state slice of {} (offset {}, {}/{}/{} elements) does not fit its {} elements", s.name,
                  s.offset, n, s.exp_avg.numel(), s.exp_avg_sq.numel(), p.numel());
    const int64_t g0 = offsets_[i] + s.offset;  // global position of the slice
    const int64_t lo = std::max(g0, begin), hi = std::min(g0 + n, end);
    if (lo >= hi) continue;
    auto piece = [&](const at::Tensor& t) { return t.reshape({-1}).narrow(0, lo - g0, hi - lo); };
    master.narrow(0, lo - begin, hi - lo).copy_(piece(s.master));
    exp_avg_.narrow(0, lo - begin, hi - lo).copy_(piece(s.exp_avg));
    exp_avg_sq_.narrow(0, lo - begin, hi - lo).copy_(piece(s.exp_avg_sq));
    covered.narrow(0, lo - begin, hi - lo).add_(1);
  }
  for (size_t i = 0; i < params_.size(); ++i) {
    const int64_t lo = std::max(offsets_[i], begin), hi = std::min(offsets_[i] + params_[i].second.numel(), end);
    if (lo >= hi) continue;
    at::Tensor c = covered.narrow(0, lo - begin, hi - lo);
    ZLORA_REQUIRE(c.eq(1).all().item<bool>(),
                  "optimizer state does not cover parameter {} exactly once (elements {}..{} {}); is a rank's "
                  "checkpoint file missing?",
                  params_[i].first, lo - offsets_[i], hi - offsets_[i],
                  c.eq(0).any().item<bool>() ? "missing" : "given twice");
  }
  step_ = state.step;
  if (options_.offload) flat_weights_.narrow(0, begin, end - begin).copy_(host_master_);
  gather_weights();
}

ZeroFootprint ZeroOptimizer::footprint() const {
  auto bytes = [](const at::Tensor& t) { return t.defined() ? t.numel() * t.element_size() : int64_t{0}; };
  ZeroFootprint f;
  f.weights = bytes(flat_weights_);
  f.grads = bytes(flat_grads_) + bytes(grad_partition_);
  if (options_.offload) {
    f.host_state = bytes(host_master_) + bytes(host_grad_) + bytes(exp_avg_) + bytes(exp_avg_sq_);
  } else {
    f.device_state = bytes(exp_avg_) + bytes(exp_avg_sq_);
  }
  return f;
}

}  // namespace zlora::zero
