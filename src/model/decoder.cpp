// The decoder forward, its custom autograd functions, and the chunked cross-entropy.
#include "zlora/model/decoder.h"

#include <torch/torch.h>

#include <cmath>
#include <functional>
#include <memory>

#include "attention.h"
#include "zlora/core/error.h"

namespace zlora::model {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// ---- frozen weights in autograd ---------------------------------------------------------------
// A frozen op saves *where* its weight comes from (store, unit, name), never the weight: backward
// re-acquires it from the store. Under ZeRO-3 the gathered weight is thus freed between forward and
// backward. The store pointer is kept as an integer because saved_data holds IValues; the decoder's
// contract says the store outlives the graph.

void save_ref(AutogradContext* ctx, WeightStore* store, int64_t unit, const std::string& name) {
  ctx->saved_data["store"] = static_cast<int64_t>(reinterpret_cast<intptr_t>(store));
  ctx->saved_data["unit"] = unit;
  ctx->saved_data["name"] = name;
}

// Re-acquires the saved weight for the duration of a backward.
struct Reacquired {
  explicit Reacquired(AutogradContext* ctx)
      : lease(*reinterpret_cast<WeightStore*>(static_cast<intptr_t>(ctx->saved_data["store"].toInt())),
              ctx->saved_data["unit"].toInt()),
        weight(lease.get(ctx->saved_data["name"].toStringRef())) {}
  UnitLease lease;
  at::Tensor weight;
};

// The frozen tensors of an op, passed to autograd functions as a non-tensor argument: autograd records
// no input metadata for them (LibTorch 1.13 also rejects undefined tensor inputs, i.e. a missing bias).
struct FrozenTensors {
  at::Tensor weight;
  at::Tensor bias;  // may be undefined
};

// y = x W^T + b with W, b frozen. Backward: dx = dy W (W re-acquired).
struct FrozenLinear : torch::autograd::Function<FrozenLinear> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, FrozenTensors wb, WeightStore* store,
                            int64_t unit, const std::string& name) {
    save_ref(ctx, store, unit, name);
    return wb.bias.defined() ? at::linear(x, wb.weight, wb.bias) : at::linear(x, wb.weight);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grad) {
    at::Tensor dx;
    if (ctx->needs_input_grad(0)) {
      Reacquired r(ctx);
      dx = at::matmul(grad[0], r.weight);
    }
    return {dx, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

// ---- fused ops: one autograd node each, backward written out ------------------------------------
// Each op below runs its forward as plain ATen calls (custom functions run forward with autograd off)
// and writes its backward by hand, so the autograd graph holds a handful of nodes per layer instead of
// ~100. On a GPU the per-op CPU cost of autograd, not the arithmetic, bounded the step (profile_steps).
// The forward arithmetic is HF/PEFT's, op for op, so outputs are unchanged; gradients agree to rounding.

// HF's Qwen2RMSNorm/LlamaRMSNorm: normalise in fp32, cast back to the input dtype, multiply by the frozen
// weight in that dtype. Saves x and the fp32 reciprocal RMS [T, 1].
struct RmsNorm : torch::autograd::Function<RmsNorm> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, FrozenTensors w, WeightStore* store,
                            int64_t unit, const std::string& name, double eps) {
    save_ref(ctx, store, unit, name);
    at::Tensor xf = x.to(at::kFloat);
    at::Tensor rstd = at::rsqrt(xf.pow(2).mean(-1, true) + eps);
    ctx->save_for_backward({x, rstd});
    return w.weight * (xf * rstd).to(x.scalar_type());
  }
  static variable_list backward(AutogradContext* ctx, variable_list grad) {
    at::Tensor dx;
    if (ctx->needs_input_grad(0)) {
      auto saved = ctx->get_saved_variables();
      const at::Tensor& x = saved[0];
      const at::Tensor& rstd = saved[1];
      Reacquired r(ctx);
      // y = xf * rstd with rstd = (mean(xf^2) + eps)^-1/2:  dxf = rstd * (gy - xf * rstd^2 * mean(gy * xf)).
      at::Tensor gy = (grad[0] * r.weight).to(at::kFloat);
      at::Tensor xf = x.to(at::kFloat);
      at::Tensor dot = (gy * xf).mean(-1, true);
      dx = ((gy - xf * (rstd * rstd * dot)) * rstd).to(x.scalar_type());
    }
    return {dx, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

// What a LoRA linear needs besides its tensors.
struct LoraCall {
  double scaling = 1;
  double dropout = 0;  // applied only when training
  bool training = false;
  c10::optional<at::Generator> generator;
};

// PEFT's lora.Linear: y = x W^T + b + lora_B(lora_A(dropout(x))) * scaling, W/b frozen, A/B the fp32
// masters cast to the compute dtype. Saves the dropped-out input, the keep mask and the rank-r
// activation; W is re-acquired in backward.
struct LoraLinear : torch::autograd::Function<LoraLinear> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& A, const at::Tensor& B,
                            FrozenTensors wb, WeightStore* store, int64_t unit, const std::string& name,
                            LoraCall call) {
    save_ref(ctx, store, unit, name);
    at::Tensor y = wb.bias.defined() ? at::linear(x, wb.weight, wb.bias) : at::linear(x, wb.weight);
    at::Tensor xin = x, keep;
    const double p = call.training ? call.dropout : 0.0;
    if (p > 0) {
      keep = at::empty_like(x).bernoulli_(1 - p, call.generator);
      xin = x * keep / (1 - p);
    }
    const auto dt = x.scalar_type();
    at::Tensor Ad = A.to(dt), Bd = B.to(dt);
    at::Tensor u = at::matmul(xin, Ad.t());
    ctx->save_for_backward({xin, keep.defined() ? keep : at::Tensor(), u, Ad, Bd});
    ctx->saved_data["scaling"] = call.scaling;
    ctx->saved_data["p"] = p;
    return y + at::matmul(u, Bd.t()) * call.scaling;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grad) {
    auto saved = ctx->get_saved_variables();
    const at::Tensor &xin = saved[0], &keep = saved[1], &u = saved[2], &Ad = saved[3], &Bd = saved[4];
    const double scaling = ctx->saved_data["scaling"].toDouble(), p = ctx->saved_data["p"].toDouble();
    const at::Tensor& g = grad[0];
    at::Tensor gs = g * scaling;         // d(lora_B(u))
    at::Tensor du = at::matmul(gs, Bd);  // [T, r]
    at::Tensor dA, dB, dx;
    if (ctx->needs_input_grad(2))
      dB = at::matmul(gs.reshape({-1, gs.size(-1)}).t(), u.reshape({-1, u.size(-1)})).to(at::kFloat);
    if (ctx->needs_input_grad(1))
      dA = at::matmul(du.reshape({-1, du.size(-1)}).t(), xin.reshape({-1, xin.size(-1)})).to(at::kFloat);
    if (ctx->needs_input_grad(0)) {
      Reacquired r(ctx);
      at::Tensor dxin = at::matmul(du, Ad);
      if (p > 0) dxin = dxin / (1 - p) * keep;
      dx = at::matmul(g, r.weight) + dxin;
    }
    return {dx, dA, dB, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

// HF's apply_rotary_pos_emb on q [T, H, hd] and k [T, Hkv, hd] with cos/sin [T, hd] (compute dtype):
// x * cos + rotate_half(x) * sin. Its transpose: rotate_half^T(y) = cat(y2, -y1).
at::Tensor rotate_half(const at::Tensor& x) {
  const int64_t half = x.size(-1) / 2;
  return at::cat({-x.slice(-1, half), x.slice(-1, 0, half)}, -1);
}
at::Tensor rotate_half_t(const at::Tensor& y) {
  const int64_t half = y.size(-1) / 2;
  return at::cat({y.slice(-1, half), -y.slice(-1, 0, half)}, -1);
}

struct Rope : torch::autograd::Function<Rope> {
  static variable_list forward(AutogradContext* ctx, const at::Tensor& q, const at::Tensor& k, at::Tensor cos,
                               at::Tensor sin) {
    cos = cos.unsqueeze(1);
    sin = sin.unsqueeze(1);
    ctx->saved_data["cos"] = cos;
    ctx->saved_data["sin"] = sin;
    return {q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin};
  }
  static variable_list backward(AutogradContext* ctx, variable_list grad) {
    const at::Tensor cos = ctx->saved_data["cos"].toTensor(), sin = ctx->saved_data["sin"].toTensor();
    auto back = [&](const at::Tensor& g) { return g.defined() ? g * cos + rotate_half_t(g * sin) : at::Tensor(); };
    return {back(grad[0]), back(grad[1]), at::Tensor(), at::Tensor()};
  }
};

// SwiGLU's gate: silu(g) * u.
struct SwiGlu : torch::autograd::Function<SwiGlu> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& g, const at::Tensor& u) {
    at::Tensor s = at::silu(g);
    ctx->save_for_backward({g, u, s});
    return s * u;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grad) {
    auto saved = ctx->get_saved_variables();
    const at::Tensor &g = saved[0], &u = saved[1], &s = saved[2];
    return {at::silu_backward(grad[0] * u, g), grad[0] * s};
  }
};

// ---- gradient checkpointing --------------------------------------------------------------------
// HF's (reentrant) checkpoint of a decoder layer: forward runs the layer without a graph and keeps only
// its input; backward runs it again with a graph and back-propagates through that. The recomputation
// draws the same dropout masks: the generator's state before the forward is saved, restored for the
// recomputation, and the generator put back afterwards so later draws are unaffected. LoRA gradients
// accumulate into their leaves from the inner backward, so only the input's gradient is returned.
struct CheckpointCall : torch::CustomClassHolder {
  std::function<at::Tensor(const at::Tensor&)> run;  // the layer, owning what it needs
  c10::optional<at::Generator> generator;
  at::Tensor generator_state;
};

struct CheckpointedLayer : torch::autograd::Function<CheckpointedLayer> {
  // `anchor` is a tensor that requires grad (x itself, or a LoRA parameter of the layer when x does
  // not), so that autograd records this node and calls backward.
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& anchor,
                            c10::intrusive_ptr<CheckpointCall> call) {
    (void)anchor;
    if (call->generator) call->generator_state = call->generator->get_state();
    at::Tensor out = call->run(x);
    ctx->save_for_backward({x});
    ctx->saved_data["call"] = c10::IValue::make_capsule(call);
    return out;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grad) {
    auto call = c10::static_intrusive_pointer_cast<CheckpointCall>(ctx->saved_data["call"].toCapsule());
    at::Tensor x = ctx->get_saved_variables()[0].detach().requires_grad_(ctx->needs_input_grad(0));
    at::Tensor resume;
    if (call->generator) {
      resume = call->generator->get_state();
      call->generator->set_state(call->generator_state);
    }
    at::Tensor out;
    {
      at::AutoGradMode enable(true);
      out = call->run(x);
    }
    if (call->generator) call->generator->set_state(resume);
    if (out.requires_grad()) torch::autograd::backward({out}, {grad[0]});
    return {x.requires_grad() ? x.grad() : at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

// Sum over rows of cross_entropy(h W^T, target) for h [N, d] (rows with a target only). Logits exist one
// chunk of rows at a time, in forward and again in backward (recomputed), so memory is chunk × vocab.
// Logits are computed in the compute dtype and upcast to fp32, as transformers does.
struct ChunkedCrossEntropy : torch::autograd::Function<ChunkedCrossEntropy> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& h, FrozenTensors head, const at::Tensor& targets,
                            WeightStore* store, int64_t unit, const std::string& name, int64_t chunk) {
    save_ref(ctx, store, unit, name);
    const at::Tensor& w = head.weight;
    ctx->saved_data["chunk"] = chunk;
    const int64_t n = h.size(0);
    at::Tensor lse = at::empty({n}, h.options().dtype(at::kFloat));
    at::Tensor total = at::zeros({}, h.options().dtype(at::kFloat));
    for (int64_t c0 = 0; c0 < n; c0 += chunk) {
      const int64_t c1 = std::min(n, c0 + chunk);
      at::Tensor logits = at::matmul(h.slice(0, c0, c1), w.t()).to(at::kFloat);
      at::Tensor l = at::logsumexp(logits, 1);
      at::Tensor picked = logits.gather(1, targets.slice(0, c0, c1).unsqueeze(1)).squeeze(1);
      total.add_((l - picked).sum());
      lse.slice(0, c0, c1).copy_(l);
    }
    ctx->save_for_backward({h, targets, lse});
    return total;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grad) {
    auto saved = ctx->get_saved_variables();
    const at::Tensor& h = saved[0];
    const at::Tensor& targets = saved[1];
    const at::Tensor& lse = saved[2];
    const int64_t chunk = ctx->saved_data["chunk"].toInt();
    at::Tensor dh;
    if (ctx->needs_input_grad(0)) {
      Reacquired r(ctx);
      const at::Tensor& w = r.weight;
      dh = at::empty_like(h);
      const at::Tensor g = grad[0].to(at::kFloat);
      for (int64_t c0 = 0; c0 < h.size(0); c0 += chunk) {
        const int64_t c1 = std::min(h.size(0), c0 + chunk);
        at::Tensor logits = at::matmul(h.slice(0, c0, c1), w.t()).to(at::kFloat);
        // d/dlogits of (lse - logit[t]) = softmax - onehot(t)
        at::Tensor p = (logits - lse.slice(0, c0, c1).unsqueeze(1)).exp_();
        at::Tensor t = targets.slice(0, c0, c1).unsqueeze(1);
        p.scatter_add_(1, t, at::full(t.sizes(), -1.0, p.options()));
        p.mul_(g);
        dh.slice(0, c0, c1).copy_(at::matmul(p.to(h.scalar_type()), w));
      }
    }
    return {dh, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

// LibTorch 1.13 takes c10::optional, 2.x std::optional (c10::optional is an alias there).
c10::optional<at::Generator> generator_of(const ForwardOptions& o) {
  return o.generator ? c10::optional<at::Generator>(*o.generator) : c10::nullopt;
}

}  // namespace

// ---- PackedBatch -----------------------------------------------------------------------------

PackedBatch PackedBatch::from_samples(const std::vector<std::vector<int64_t>>& input_ids,
                                      const std::vector<std::vector<int64_t>>& labels) {
  if (input_ids.size() != labels.size())
    fail("packing: {} samples of input_ids but {} of labels", input_ids.size(), labels.size());
  if (input_ids.empty()) fail("packing: no samples");
  PackedBatch b;
  std::vector<int64_t> ids, pos, tgt;
  b.cu_seqlens.push_back(0);
  for (size_t s = 0; s < input_ids.size(); ++s) {
    const auto& x = input_ids[s];
    const auto& y = labels[s];
    if (x.empty()) fail("packing: sample {} is empty", s);
    if (x.size() != y.size()) fail("packing: sample {} has {} input_ids but {} labels", s, x.size(), y.size());
    for (size_t t = 0; t < x.size(); ++t) {
      ids.push_back(x[t]);
      pos.push_back(int64_t(t));
      const int64_t target = t + 1 < x.size() ? y[t + 1] : -100;
      if (target < -100 || (target < 0 && target != -100))
        fail("packing: sample {} has label {} (< 0, not -100)", s, target);
      tgt.push_back(target);
      if (target != -100) ++b.num_targets;
    }
    b.cu_seqlens.push_back(int64_t(ids.size()));
    b.max_seqlen = std::max<int64_t>(b.max_seqlen, int64_t(x.size()));
  }
  auto as_tensor = [](const std::vector<int64_t>& v) {
    return at::tensor(at::ArrayRef<int64_t>(v), at::TensorOptions().dtype(at::kLong));
  };
  b.input_ids = as_tensor(ids);
  b.position_ids = as_tensor(pos);
  b.targets = as_tensor(tgt);
  return b;
}

// ---- RoPE ----------------------------------------------------------------------------------

at::Tensor rope_inv_freq(const ModelConfig& c, at::Device device) {
  // HF: 1 / theta^(arange(0, dim, 2) / dim) in fp32.
  at::Tensor exponent = at::arange(0, c.head_dim, 2, at::TensorOptions().dtype(at::kLong)).to(at::kFloat) /
                        static_cast<double>(c.head_dim);
  at::Tensor inv = at::reciprocal(at::pow(c.rope_theta, exponent));
  if (c.rope_scaling.type == "llama3") {
    // Llama 3.1: wavelengths longer than the original context are divided by `factor`, shorter than
    // original/high_freq_factor kept, the band between interpolated smoothly.
    const RopeScaling& s = c.rope_scaling;
    const double old_ctx = static_cast<double>(s.original_max_position_embeddings);
    const double low_wavelen = old_ctx / s.low_freq_factor;
    const double high_wavelen = old_ctx / s.high_freq_factor;
    at::Tensor wavelen = at::reciprocal(inv) * (2 * M_PI);
    at::Tensor scaled = at::where(wavelen > low_wavelen, inv / s.factor, inv);
    at::Tensor smooth =
        (at::reciprocal(wavelen) * old_ctx - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
    at::Tensor smoothed = (1 - smooth) * scaled / s.factor + smooth * scaled;
    at::Tensor medium = (wavelen >= high_wavelen).logical_and(wavelen <= low_wavelen);
    inv = at::where(medium, smoothed, scaled);
  }
  return inv.to(device);
}

// ---- Decoder -------------------------------------------------------------------------------

struct Decoder::Attn {
  const detail::VarlenLayout* packed = nullptr;  // packed samples, or
  KVCache* cache = nullptr;                      // incremental decoding
  at::Tensor cos, sin;                           // RoPE tables [T, hd] in the compute dtype, shared by layers
};

namespace {
// RoPE: angles in fp32 (positions x inv_freq), cos/sin cast to the compute dtype, as HF. Computed once
// per forward: every layer uses the same tables.
std::pair<at::Tensor, at::Tensor> rope_tables(const at::Tensor& positions, const at::Tensor& inv_freq,
                                              at::ScalarType dtype) {
  at::Tensor freqs = positions.to(at::kFloat).unsqueeze(1) * inv_freq.unsqueeze(0);
  at::Tensor emb = at::cat({freqs, freqs}, -1);
  return {emb.cos().to(dtype), emb.sin().to(dtype)};
}
}  // namespace

Decoder::Decoder(WeightStore& weights, const LoraAdapter* lora)
    : weights_(weights),
      lora_(lora),
      config_(weights.config()),
      inv_freq_(model::rope_inv_freq(config_, weights.device())) {
  if (lora_) {
    for (const auto& m : lora_->modules()) {
      if (m.layer >= config_.num_hidden_layers) fail("LoRA module {} is beyond the model's layers", m.module);
      auto [in, out] = linear_shape(config_, m.local);
      if (m.A.size(1) != in || m.B.size(0) != out) fail("LoRA module {} does not fit this model's shapes", m.module);
    }
  }
}

at::Tensor Decoder::rms_norm(const at::Tensor& x, int64_t unit, const std::string& name, const UnitWeights& w) const {
  return RmsNorm::apply(x, FrozenTensors{w.get(name), {}}, &weights_, unit, name, config_.rms_norm_eps);
}

at::Tensor Decoder::linear(const at::Tensor& x, int64_t layer, const std::string& local, const UnitWeights& w,
                           const ForwardOptions& options) const {
  const std::string prefix = fmt::format("model.layers.{}.{}", layer, local);
  const std::string wname = prefix + ".weight";
  const FrozenTensors wb{w.get(wname), w.get_optional(prefix + ".bias")};
  const LoraModule* m = lora_ ? lora_->find(layer, local) : nullptr;
  if (!m) return FrozenLinear::apply(x, wb, &weights_, layer + 1, wname);
  LoraCall call;
  call.scaling = lora_->scaling();
  call.dropout = lora_->config().dropout;
  call.training = options.training;
  call.generator = generator_of(options);
  return LoraLinear::apply(x, m->A, m->B, wb, &weights_, layer + 1, wname, call);
}

at::Tensor Decoder::layer(const at::Tensor& x, int64_t l, const UnitWeights& w, const Attn& attn,
                          const ForwardOptions& options) const {
  const int64_t unit = l + 1;
  const std::string p = fmt::format("model.layers.{}.", l);
  const int64_t t = x.size(0), hd = config_.head_dim;
  at::Tensor h = rms_norm(x, unit, p + "input_layernorm.weight", w);
  at::Tensor q = linear(h, l, "self_attn.q_proj", w, options).view({t, config_.num_attention_heads, hd});
  at::Tensor k = linear(h, l, "self_attn.k_proj", w, options).view({t, config_.num_key_value_heads, hd});
  at::Tensor v = linear(h, l, "self_attn.v_proj", w, options).view({t, config_.num_key_value_heads, hd});
  {
    variable_list qk = Rope::apply(q, k, attn.cos, attn.sin);
    q = qk[0];
    k = qk[1];
  }
  const double scale = 1.0 / std::sqrt(double(hd));
  at::Tensor a;
  if (attn.cache) {
    KVCache& c = *attn.cache;
    c.k[l] = c.k[l].defined() ? at::cat({c.k[l], k}, 0) : k;
    c.v[l] = c.v[l].defined() ? at::cat({c.v[l], v}, 0) : v;
    a = detail::attention_dense(q, c.k[l], c.v[l], scale);
  } else {
    a = detail::attention_varlen(q, k, v, *attn.packed, scale);
  }
  at::Tensor x1 = x + linear(a, l, "self_attn.o_proj", w, options);
  at::Tensor h2 = rms_norm(x1, unit, p + "post_attention_layernorm.weight", w);
  // Gate before up (PEFT's order of dropout draws); separate statements fix the order.
  at::Tensor gate = linear(h2, l, "mlp.gate_proj", w, options);
  at::Tensor up = linear(h2, l, "mlp.up_proj", w, options);
  at::Tensor mlp = SwiGlu::apply(gate, up);
  return x1 + linear(mlp, l, "mlp.down_proj", w, options);
}

at::Tensor Decoder::lora_anchor(int64_t layer) const {
  if (!lora_) return {};
  for (const auto& m : lora_->modules())
    if (m.layer == layer && m.A.requires_grad()) return m.A;
  return {};
}

void Decoder::check_vocab_range(const at::Tensor& ids, const char* what) const {
  // On the host copy the batch arrives in, so the check never waits for the device.
  if (ids.numel() == 0) return;
  const at::Tensor host = ids.to(at::kCPU, at::kLong);
  auto mm = at::aminmax(host);
  const int64_t lo = std::get<0>(mm).item<int64_t>(), hi = std::get<1>(mm).item<int64_t>();
  if (lo < 0 || hi >= config_.vocab_size)
    fail("decoder: {} {} is outside the vocabulary [0, {})", what, lo < 0 ? lo : hi, config_.vocab_size);
}

at::Tensor Decoder::final_hidden(const PackedBatch& batch, const ForwardOptions& options) const {
  const int64_t T = batch.num_tokens();
  if (T == 0 || !batch.input_ids.defined()) fail("decoder: empty batch");
  if (batch.input_ids.numel() != T || batch.position_ids.numel() != T || batch.targets.numel() != T)
    fail("decoder: batch tensors disagree with cu_seqlens ({} tokens)", T);
  if (config_.sliding_window && batch.max_seqlen > *config_.sliding_window)
    fail(
        "decoder: a sample of {} tokens exceeds the model's sliding_window {}; sliding-window attention is not "
        "implemented, lower cutoff_len",
        batch.max_seqlen, *config_.sliding_window);
  const at::Device dev = weights_.device();
  check_vocab_range(batch.input_ids, "token id");
  at::Tensor ids = batch.input_ids.to(dev);
  at::Tensor x;
  {
    UnitLease lease(weights_, 0);
    x = at::embedding(lease.get("model.embed_tokens.weight"), ids);
  }
  if (options.training && options.neftune_alpha > 0) {
    // NEFTune (HF's hook): uniform noise of magnitude alpha / sqrt(L * d), L = the sample's length.
    at::Tensor noise = at::empty_like(x);
    for (size_t i = 0; i + 1 < batch.cu_seqlens.size(); ++i) {
      const int64_t a = batch.cu_seqlens[i], b = batch.cu_seqlens[i + 1];
      const double mag = options.neftune_alpha / std::sqrt(double(b - a) * double(config_.hidden_size));
      noise.slice(0, a, b).uniform_(-mag, mag, generator_of(options));
    }
    x = x + noise;
  }
  // Shared: a checkpointed layer's recomputation in backward still needs the layout.
  auto packed = std::make_shared<const detail::VarlenLayout>(
      detail::make_layout(batch.cu_seqlens, batch.max_seqlen,
                          detail::use_flash(options.attention, dev, x.scalar_type(), config_.head_dim), dev));
  Attn attn;
  attn.packed = packed.get();
  std::tie(attn.cos, attn.sin) = rope_tables(batch.position_ids.to(dev), inv_freq_, x.scalar_type());
  const bool checkpoint = options.gradient_checkpointing && at::GradMode::is_enabled();
  for (int64_t l = 0; l < config_.num_hidden_layers; ++l) {
    at::Tensor anchor = x.requires_grad() ? x : lora_anchor(l);
    if (checkpoint && anchor.defined()) {
      auto call = c10::make_intrusive<CheckpointCall>();
      call->generator = options.training ? generator_of(options) : c10::nullopt;
      call->run = [this, l, attn, packed, options](const at::Tensor& in) {
        UnitLease lease(weights_, l + 1);
        return layer(in, l, lease.weights(), attn, options);
      };
      x = CheckpointedLayer::apply(x, anchor, call);
    } else {
      UnitLease lease(weights_, l + 1);
      x = layer(x, l, lease.weights(), attn, options);
    }
  }
  return x;
}

LossResult Decoder::loss(const PackedBatch& batch, const ForwardOptions& options) const {
  if (options.loss_chunk_tokens < 1) fail("decoder: loss_chunk_tokens must be >= 1");
  at::Tensor x = final_hidden(batch, options);
  const int64_t unit = config_.num_hidden_layers + 1;
  UnitLease lease(weights_, unit);
  at::Tensor h = rms_norm(x, unit, "model.norm.weight", lease.weights());
  // Rows with a target are found on the host copy: no device synchronisation inside the step.
  const at::Tensor targets_host = batch.targets.to(at::kCPU);
  at::Tensor rows_host = (targets_host != -100).nonzero().squeeze(1);
  LossResult r;
  r.count = rows_host.numel();
  if (r.count != batch.num_targets)
    fail("decoder: batch.num_targets is {} but its targets hold {}", batch.num_targets, r.count);
  if (r.count == 0) {
    r.sum = (h.sum() * 0).to(at::kFloat);  // keeps the graph (zero gradients) for a batch without targets
    return r;
  }
  at::Tensor t_host = targets_host.index_select(0, rows_host);
  check_vocab_range(t_host, "target id");
  const at::Device dev = x.device();
  at::Tensor rows = rows_host.to(dev), t = t_host.to(dev);
  const std::string head = lm_head_weight_name(config_);
  r.sum = ChunkedCrossEntropy::apply(h.index_select(0, rows), FrozenTensors{lease.get(head), {}}, t, &weights_, unit,
                                     head, options.loss_chunk_tokens);
  return r;
}

at::Tensor Decoder::logits(const PackedBatch& batch, const ForwardOptions& options) const {
  at::Tensor x = final_hidden(batch, options);
  const int64_t unit = config_.num_hidden_layers + 1;
  UnitLease lease(weights_, unit);
  at::Tensor h = rms_norm(x, unit, "model.norm.weight", lease.weights());
  const std::string head = lm_head_weight_name(config_);
  return FrozenLinear::apply(h, FrozenTensors{lease.get(head), at::Tensor()}, &weights_, unit, head).to(at::kFloat);
}

at::Tensor Decoder::decode(const at::Tensor& ids_in, KVCache& cache) const {
  at::NoGradGuard no_grad;
  const at::Device dev = weights_.device();
  check_vocab_range(ids_in, "token id");
  at::Tensor ids = ids_in.reshape({-1}).to(dev, at::kLong);
  const int64_t n = ids.numel();
  if (n == 0) fail("decode: no tokens given");
  if (config_.sliding_window && cache.length + n > *config_.sliding_window)
    fail("decode: {} tokens exceed the model's sliding_window {}", cache.length + n, *config_.sliding_window);
  if (cache.k.empty()) {
    cache.k.resize(config_.num_hidden_layers);
    cache.v.resize(config_.num_hidden_layers);
  } else if (int64_t(cache.k.size()) != config_.num_hidden_layers) {
    fail("decode: the KV cache belongs to a model with {} layers, not {}", cache.k.size(), config_.num_hidden_layers);
  }
  at::Tensor x;
  {
    UnitLease lease(weights_, 0);
    x = at::embedding(lease.get("model.embed_tokens.weight"), ids);
  }
  at::Tensor positions = at::arange(cache.length, cache.length + n, at::TensorOptions().dtype(at::kLong).device(dev));
  Attn attn;
  attn.cache = &cache;
  std::tie(attn.cos, attn.sin) = rope_tables(positions, inv_freq_, x.scalar_type());
  ForwardOptions options;
  for (int64_t l = 0; l < config_.num_hidden_layers; ++l) {
    UnitLease lease(weights_, l + 1);
    x = layer(x, l, lease.weights(), attn, options);
  }
  cache.length += n;
  const int64_t unit = config_.num_hidden_layers + 1;
  UnitLease lease(weights_, unit);
  at::Tensor h = rms_norm(x, unit, "model.norm.weight", lease.weights());
  return at::linear(h, lease.get(lm_head_weight_name(config_))).to(at::kFloat);
}

}  // namespace zlora::model
