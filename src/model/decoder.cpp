// The decoder forward, its custom autograd functions, and the chunked cross-entropy.
#include "zlora/model/decoder.h"

#include <torch/torch.h>

#include <cmath>

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

// y = w * x (RMSNorm's elementwise weight) with w frozen. Backward: dx = dy * w.
struct FrozenScale : torch::autograd::Function<FrozenScale> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, FrozenTensors w, WeightStore* store,
                            int64_t unit, const std::string& name) {
    save_ref(ctx, store, unit, name);
    return w.weight * x;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grad) {
    at::Tensor dx;
    if (ctx->needs_input_grad(0)) {
      Reacquired r(ctx);
      dx = grad[0] * r.weight;
    }
    return {dx, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
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

at::Tensor rotate_half(const at::Tensor& x) {
  const int64_t half = x.size(-1) / 2;
  return at::cat({-x.slice(-1, half), x.slice(-1, 0, half)}, -1);
}

// q/k [T, heads, hd]; cos/sin [T, hd].
at::Tensor apply_rope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  return x * cos.unsqueeze(1) + rotate_half(x) * sin.unsqueeze(1);
}

// Causal attention of q [Tq, H, hd] over k/v [Tk, Hkv, hd]; query i sits at key position i + (Tk - Tq).
// HF's eager math: scores in the compute dtype, softmax in fp32, probabilities cast back.
at::Tensor attention_dense(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double scale) {
  const int64_t tq = q.size(0), tk = k.size(0), heads = q.size(1), kv_heads = k.size(1);
  at::Tensor qh = q.transpose(0, 1);  // [H, Tq, hd]
  // GQA: head h reads kv head h / (H / Hkv), as HF's repeat_kv.
  at::Tensor kh = k.transpose(0, 1).repeat_interleave(heads / kv_heads, 0);
  at::Tensor vh = v.transpose(0, 1).repeat_interleave(heads / kv_heads, 0);
  at::Tensor scores = at::matmul(qh, kh.transpose(1, 2)) * scale;
  at::Tensor masked = at::ones({tq, tk}, q.options().dtype(at::kBool)).triu(1 + (tk - tq));
  scores = scores.masked_fill(masked, -std::numeric_limits<double>::infinity());
  at::Tensor probs = at::softmax(scores, -1, at::kFloat).to(q.scalar_type());
  return at::matmul(probs, vh).transpose(0, 1).reshape({tq, heads * q.size(2)});
}

// Packed attention: samples [cu[i], cu[i+1]) attend only within themselves. This is the seam for a GPU
// varlen flash-attention kernel (same inputs: cu_seqlens, max_seqlen); until it exists every device
// takes the exact per-sample loop below.
at::Tensor attention_varlen(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                            const std::vector<int64_t>& cu_seqlens, int64_t max_seqlen, double scale) {
  (void)max_seqlen;
  if (cu_seqlens.size() == 2) return attention_dense(q, k, v, scale);
  std::vector<at::Tensor> outs;
  for (size_t i = 0; i + 1 < cu_seqlens.size(); ++i) {
    const int64_t a = cu_seqlens[i], b = cu_seqlens[i + 1];
    outs.push_back(attention_dense(q.slice(0, a, b), k.slice(0, a, b), v.slice(0, a, b), scale));
  }
  return at::cat(outs, 0);
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
  const std::vector<int64_t>* cu_seqlens = nullptr;  // packed
  int64_t max_seqlen = 0;
  KVCache* cache = nullptr;  // incremental decoding
};

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
  // HF: normalise in fp32, cast back to the input dtype, then multiply by the weight.
  at::Tensor xf = x.to(at::kFloat);
  at::Tensor normed = xf * at::rsqrt(xf.pow(2).mean(-1, true) + config_.rms_norm_eps);
  return FrozenScale::apply(normed.to(x.scalar_type()), FrozenTensors{w.get(name), {}}, &weights_, unit, name);
}

at::Tensor Decoder::linear(const at::Tensor& x, int64_t layer, const std::string& local, const UnitWeights& w,
                           const ForwardOptions& options) const {
  const std::string prefix = fmt::format("model.layers.{}.{}", layer, local);
  const std::string wname = prefix + ".weight";
  at::Tensor y = FrozenLinear::apply(x, FrozenTensors{w.get(wname), w.get_optional(prefix + ".bias")}, &weights_,
                                     layer + 1, wname);
  const LoraModule* m = lora_ ? lora_->find(layer, local) : nullptr;
  if (!m) return y;
  at::Tensor xin = x;
  const double p = lora_->config().dropout;
  if (options.training && p > 0) {
    at::Tensor keep = at::empty_like(x).bernoulli_(1 - p, generator_of(options));
    xin = x * keep / (1 - p);
  }
  // PEFT: result + lora_B(lora_A(dropout(x))) * scaling, the fp32 masters cast to the compute dtype.
  const auto dt = x.scalar_type();
  at::Tensor lora = at::matmul(at::matmul(xin, m->A.to(dt).t()), m->B.to(dt).t());
  return y + lora * lora_->scaling();
}

at::Tensor Decoder::layer(const at::Tensor& x, int64_t l, const UnitWeights& w, const at::Tensor& positions,
                          const Attn& attn, const ForwardOptions& options) const {
  const int64_t unit = l + 1;
  const std::string p = fmt::format("model.layers.{}.", l);
  const int64_t t = x.size(0), hd = config_.head_dim;
  at::Tensor h = rms_norm(x, unit, p + "input_layernorm.weight", w);
  at::Tensor q = linear(h, l, "self_attn.q_proj", w, options).view({t, config_.num_attention_heads, hd});
  at::Tensor k = linear(h, l, "self_attn.k_proj", w, options).view({t, config_.num_key_value_heads, hd});
  at::Tensor v = linear(h, l, "self_attn.v_proj", w, options).view({t, config_.num_key_value_heads, hd});
  // RoPE: angles in fp32 (positions × inv_freq), cos/sin cast to the compute dtype, as HF.
  at::Tensor freqs = positions.to(at::kFloat).unsqueeze(1) * inv_freq_.unsqueeze(0);
  at::Tensor emb = at::cat({freqs, freqs}, -1);
  at::Tensor cos = emb.cos().to(x.scalar_type()), sin = emb.sin().to(x.scalar_type());
  q = apply_rope(q, cos, sin);
  k = apply_rope(k, cos, sin);
  const double scale = 1.0 / std::sqrt(double(hd));
  at::Tensor a;
  if (attn.cache) {
    KVCache& c = *attn.cache;
    c.k[l] = c.k[l].defined() ? at::cat({c.k[l], k}, 0) : k;
    c.v[l] = c.v[l].defined() ? at::cat({c.v[l], v}, 0) : v;
    a = attention_dense(q, c.k[l], c.v[l], scale);
  } else {
    a = attention_varlen(q, k, v, *attn.cu_seqlens, attn.max_seqlen, scale);
  }
  at::Tensor x1 = x + linear(a, l, "self_attn.o_proj", w, options);
  at::Tensor h2 = rms_norm(x1, unit, p + "post_attention_layernorm.weight", w);
  at::Tensor mlp = at::silu(linear(h2, l, "mlp.gate_proj", w, options)) * linear(h2, l, "mlp.up_proj", w, options);
  return x1 + linear(mlp, l, "mlp.down_proj", w, options);
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
  at::Tensor ids = batch.input_ids.to(dev);
  {
    auto mm = at::aminmax(ids);
    const int64_t lo = std::get<0>(mm).item<int64_t>(), hi = std::get<1>(mm).item<int64_t>();
    if (lo < 0 || hi >= config_.vocab_size)
      fail("decoder: token id {} is outside the vocabulary [0, {})", lo < 0 ? lo : hi, config_.vocab_size);
  }
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
  at::Tensor positions = batch.position_ids.to(dev);
  Attn attn;
  attn.cu_seqlens = &batch.cu_seqlens;
  attn.max_seqlen = batch.max_seqlen;
  for (int64_t l = 0; l < config_.num_hidden_layers; ++l) {
    UnitLease lease(weights_, l + 1);
    x = layer(x, l, lease.weights(), positions, attn, options);
  }
  return x;
}

LossResult Decoder::loss(const PackedBatch& batch, const ForwardOptions& options) const {
  if (options.loss_chunk_tokens < 1) fail("decoder: loss_chunk_tokens must be >= 1");
  at::Tensor x = final_hidden(batch, options);
  const int64_t unit = config_.num_hidden_layers + 1;
  UnitLease lease(weights_, unit);
  at::Tensor h = rms_norm(x, unit, "model.norm.weight", lease.weights());
  at::Tensor targets = batch.targets.to(x.device());
  at::Tensor rows = (targets != -100).nonzero().squeeze(1);
  LossResult r;
  r.count = rows.numel();
  if (r.count != batch.num_targets)
    fail("decoder: batch.num_targets is {} but its targets hold {}", batch.num_targets, r.count);
  if (r.count == 0) {
    r.sum = (h.sum() * 0).to(at::kFloat);  // keeps the graph (zero gradients) for a batch without targets
    return r;
  }
  at::Tensor t = targets.index_select(0, rows);
  {
    auto mm = at::aminmax(t);
    if (std::get<0>(mm).item<int64_t>() < 0 || std::get<1>(mm).item<int64_t>() >= config_.vocab_size)
      fail("decoder: a target id is outside the vocabulary [0, {})", config_.vocab_size);
  }
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
  ForwardOptions options;
  for (int64_t l = 0; l < config_.num_hidden_layers; ++l) {
    UnitLease lease(weights_, l + 1);
    x = layer(x, l, lease.weights(), positions, attn, options);
  }
  cache.length += n;
  const int64_t unit = config_.num_hidden_layers + 1;
  UnitLease lease(weights_, unit);
  at::Tensor h = rms_norm(x, unit, "model.norm.weight", lease.weights());
  return at::linear(h, lease.get(lm_head_weight_name(config_))).to(at::kFloat);
}

}  // namespace zlora::model
