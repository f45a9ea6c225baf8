// The decoder forward, its custom autograd functions, and the chunked cross-entropy.
#include "zlora/model/decoder.h"

#include <torch/torch.h>

#include <cmath>
#include <functional>
#include <initializer_list>
#include <memory>
#include <set>

#include "attention.h"
#include "lora_ops.h"
#include "zlora/core/error.h"

#ifdef ZLORA_WITH_CUDA
#include <c10/cuda/CUDAStream.h>

#include "zlora/model/kernels.h"
#endif

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

// x W^T (+ b): the frozen part of every linear layer, with or without LoRA.
at::Tensor frozen_forward(const at::Tensor& x, const FrozenTensors& wb) {
  return wb.bias.defined() ? at::linear(x, wb.weight, wb.bias) : at::linear(x, wb.weight);
}

// y = x W^T + b with W, b frozen. Backward: dx = dy W (W re-acquired).
struct FrozenLinear : torch::autograd::Function<FrozenLinear> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, FrozenTensors wb, WeightStore* store,
                            int64_t unit, const std::string& name) {
    save_ref(ctx, store, unit, name);
    return frozen_forward(x, wb);
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

// ---- zlora's CUDA kernels (model/kernels.cu) where they serve, ATen compositions elsewhere ----------

// Whether the fused kernels serve tensors like `x`: a CUDA build, a CUDA tensor of a supported dtype.
bool use_kernels(const at::Tensor& x) {
#ifdef ZLORA_WITH_CUDA
  const auto t = x.scalar_type();
  return x.is_cuda() && (t == at::kFloat || t == at::kHalf || t == at::kBFloat16);
#else
  (void)x;
  return false;
#endif
}

#ifdef ZLORA_WITH_CUDA
kernels::DType kernel_dtype(const at::Tensor& x) {
  switch (x.scalar_type()) {
    case at::kHalf:
      return kernels::DType::kFloat16;
    case at::kBFloat16:
      return kernels::DType::kBFloat16;
    default:
      return kernels::DType::kFloat32;
  }
}
void* stream_of(const at::Tensor& x) { return c10::cuda::getCurrentCUDAStream(x.device().index()).stream(); }
void check_kernel(const char* error, const char* what) {
  if (error) fail("CUDA kernel {} failed: {}", what, error);
}
#endif

at::Tensor rms_norm_kernel_forward(const at::Tensor& x, const at::Tensor& w, double eps, at::Tensor& rstd) {
#ifdef ZLORA_WITH_CUDA
  const int64_t cols = x.size(-1), rows = x.numel() / cols;
  at::Tensor y = at::empty_like(x);
  rstd = at::empty({rows, 1}, x.options().dtype(at::kFloat));
  check_kernel(kernels::rms_norm_forward(kernel_dtype(x), x.data_ptr(), w.data_ptr(), static_cast<float>(eps), rows,
                                         cols, y.data_ptr(), rstd.data_ptr<float>(), stream_of(x)),
               "rms_norm_forward");
  return y;
#else
  (void)x, (void)w, (void)eps, (void)rstd;
  fail("internal: CUDA kernel called in a build without CUDA");
#endif
}

at::Tensor rms_norm_kernel_backward(const at::Tensor& dy, const at::Tensor& x, const at::Tensor& w,
                                    const at::Tensor& rstd) {
#ifdef ZLORA_WITH_CUDA
  const int64_t cols = x.size(-1), rows = x.numel() / cols;
  at::Tensor dx = at::empty_like(x);
  check_kernel(kernels::rms_norm_backward(kernel_dtype(x), dy.data_ptr(), x.data_ptr(), w.data_ptr(),
                                          rstd.data_ptr<float>(), rows, cols, dx.data_ptr(), stream_of(x)),
               "rms_norm_backward");
  return dx;
#else
  (void)dy, (void)x, (void)w, (void)rstd;
  fail("internal: CUDA kernel called in a build without CUDA");
#endif
}

at::Tensor rope_kernel(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin, bool backward) {
#ifdef ZLORA_WITH_CUDA
  const at::Tensor xc = x.contiguous();
  at::Tensor out = at::empty_like(xc);
  check_kernel(kernels::rope(kernel_dtype(xc), backward, xc.data_ptr(), cos.data_ptr(), sin.data_ptr(), xc.size(0),
                             xc.size(1), xc.size(2), out.data_ptr(), stream_of(xc)),
               "rope");
  return out;
#else
  (void)x, (void)cos, (void)sin, (void)backward;
  fail("internal: CUDA kernel called in a build without CUDA");
#endif
}

// HF's Qwen2RMSNorm/LlamaRMSNorm: normalise in fp32, cast back to the input dtype, multiply by the frozen
// weight in that dtype. Saves x and the fp32 reciprocal RMS [T, 1].
struct RmsNorm : torch::autograd::Function<RmsNorm> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, FrozenTensors w, WeightStore* store,
                            int64_t unit, const std::string& name, double eps) {
    save_ref(ctx, store, unit, name);
    if (use_kernels(x) && w.weight.scalar_type() == x.scalar_type()) {
      const at::Tensor xc = x.contiguous();
      at::Tensor rstd;
      at::Tensor y = rms_norm_kernel_forward(xc, w.weight.contiguous(), eps, rstd);
      ctx->save_for_backward({xc, rstd});
      return y;
    }
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
      if (use_kernels(x) && r.weight.scalar_type() == x.scalar_type())
        return {rms_norm_kernel_backward(grad[0].contiguous(), x, r.weight.contiguous(), rstd),
                at::Tensor(),
                at::Tensor(),
                at::Tensor(),
                at::Tensor(),
                at::Tensor()};
      // y = xf * rstd with rstd = (mean(xf^2) + eps)^-1/2:  dxf = rstd * (gy - xf * rstd^2 * mean(gy * xf)).
      at::Tensor gy = (grad[0] * r.weight).to(at::kFloat);
      at::Tensor xf = x.to(at::kFloat);
      at::Tensor dot = (gy * xf).mean(-1, true);
      dx = ((gy - xf * (rstd * rstd * dot)) * rstd).to(x.scalar_type());
    }
    return {dx, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

// ---- LoRA (model/lora_ops.h) ---------------------------------------------------------------------

#ifdef ZLORA_WITH_CUDA
// Whether zlora's mask kernels serve a tensor like `t`: contiguous on a CUDA device.
bool mask_kernels_apply(const at::Tensor& t) { return t.is_cuda() && t.is_contiguous(); }
#endif

// PyTorch's fused dropout kernel draws from the device's default generator; it serves when that is the
// generator asked for (the trainer passes it on CUDA).
bool fused_dropout_applies(const at::Tensor& x, const c10::optional<at::Generator>& generator) {
  if (!x.is_cuda()) return false;
  if (!generator) return true;
  return generator->unsafeGetGeneratorImpl() ==
         at::globalContext().defaultGenerator(x.device()).unsafeGetGeneratorImpl();
}

}  // namespace

namespace detail {

DroppedInput lora_dropout(const at::Tensor& x, double p, const c10::optional<at::Generator>& generator) {
  DroppedInput d{x, at::Tensor(), false};
  if (p <= 0) return d;
  d.fused = fused_dropout_applies(x, generator);
  if (d.fused) {
    std::tie(d.xin, d.keep) = at::native_dropout(x, p, true);
    return d;
  }
  at::Tensor keep = at::empty_like(x).bernoulli_(1 - p, generator);
  d.xin = x * keep / (1 - p);
  d.keep = keep.to(at::kBool);  // as the fused kernel returns it (the LoRA functions keep it as bits)
  return d;
}

at::Tensor mask_bit_weights(const at::Device& device) {
  const uint8_t w[8] = {1, 2, 4, 8, 16, 32, 64, 128};
  return at::tensor(at::ArrayRef<uint8_t>(w, 8), at::TensorOptions().dtype(at::kByte)).to(device);
}

// ATen: two kernels each way (weigh the 0/1 bytes and sum them in eights; and each byte with the weights).
at::Tensor pack_mask(const at::Tensor& keep, const at::Tensor& bits) {
#ifdef ZLORA_WITH_CUDA
  if (mask_kernels_apply(keep) && keep.scalar_type() == at::kBool) {
    at::Tensor out = at::empty({(keep.numel() + 7) / 8}, keep.options().dtype(at::kByte));
    check_kernel(kernels::pack_mask_bits(keep.data_ptr<bool>(), keep.numel(), out.data_ptr<uint8_t>(), stream_of(keep)),
                 "pack_mask_bits");
    return out;
  }
#endif
  at::Tensor bytes = keep.contiguous().view(at::kByte).reshape({-1});
  const int64_t pad = (8 - bytes.numel() % 8) % 8;
  if (pad) bytes = at::constant_pad_nd(bytes, {0, pad});
  return bytes.view({-1, 8}).mul(bits).sum(1, false, at::kByte);
}

at::Tensor unpack_mask(const at::Tensor& packed, at::IntArrayRef sizes, const at::Tensor& bits) {
  int64_t n = 1;
  for (int64_t d : sizes) n *= d;
  return packed.unsqueeze(1).bitwise_and(bits).view({-1}).to(at::kBool).slice(0, 0, n).view(sizes);
}

void apply_mask_(at::Tensor& t, const at::Tensor& packed, const at::Tensor& bits) {
#ifdef ZLORA_WITH_CUDA
  if (mask_kernels_apply(t) && use_kernels(t)) {
    check_kernel(
        kernels::mask_bits_inplace(kernel_dtype(t), t.data_ptr(), packed.data_ptr<uint8_t>(), t.numel(), stream_of(t)),
        "mask_bits_inplace");
    return;
  }
#endif
  t.mul_(unpack_mask(packed, t.sizes(), bits));
}

double fused_dropout_scale(at::ScalarType dtype, double p) {
  // The fused kernel computes x * mask * scale in the accumulate type, scale = 1 / acc(1 - p), rounded
  // once to the dtype; native_dropout_backward and zlora's kernels compute it the same way.
  return dtype == at::kDouble ? 1.0 / (1.0 - p) : 1.0 / double(float(1.0 - p));
}

at::Tensor replay_dropout(const at::Tensor& x, const at::Tensor& packed, double p, bool fused, const at::Tensor& bits) {
  if (!packed.defined()) return x;
  if (fused) {
    const double scale = fused_dropout_scale(x.scalar_type(), p);
#ifdef ZLORA_WITH_CUDA
    if (mask_kernels_apply(x) && use_kernels(x)) {
      at::Tensor out = at::empty_like(x);
      check_kernel(kernels::dropout_replay_bits(kernel_dtype(x), x.data_ptr(), packed.data_ptr<uint8_t>(),
                                                static_cast<float>(scale), x.numel(), out.data_ptr(), stream_of(x)),
                   "dropout_replay_bits");
      return out;
    }
#endif
    return at::native_dropout_backward(x, unpack_mask(packed, x.sizes(), bits), scale);
  }
  return x * unpack_mask(packed, x.sizes(), bits).to(x.scalar_type()) / (1 - p);  // lora_dropout's ops, same 0/1
}

}  // namespace detail

namespace {

using detail::LoraCall;

// Whether zlora's 8-wide kernels (kernels.h) serve these tensors: CUDA, one supported dtype, contiguous,
// `n` (a count or a row length) a multiple of 8, 16-byte aligned.
bool vec8_kernels_apply(int64_t n, std::initializer_list<const at::Tensor*> ts) {
#ifdef ZLORA_WITH_CUDA
  const at::Tensor& first = **ts.begin();
  if (!use_kernels(first)) return false;
  for (const at::Tensor* t : ts)
    if (!t->is_cuda() || !t->is_contiguous() || t->scalar_type() != first.scalar_type() ||
        !kernels::vec8_ok(n, {t->data_ptr()}))
      return false;
  return true;
#else
  (void)n, (void)ts;
  return false;
#endif
}

// zlora's SwiGLU kernel (kernels.h) on CUDA tensors g, u of one shape: silu(g) * u, or with `packed`
// its dropout replayed. Undefined where the kernel does not serve them (the callers compose ATen ops).
at::Tensor swiglu_kernel(const at::Tensor& g, const at::Tensor& u, const at::Tensor& packed, float scale) {
#ifdef ZLORA_WITH_CUDA
  if (g.sizes() != u.sizes() || !vec8_kernels_apply(g.numel(), {&g, &u})) return {};
  at::Tensor out = at::empty_like(g);
  check_kernel(kernels::swiglu(kernel_dtype(g), g.data_ptr(), u.data_ptr(),
                               packed.defined() ? packed.data_ptr<uint8_t>() : nullptr, scale, g.numel(),
                               out.data_ptr(), stream_of(g)),
               "swiglu");
  return out;
#else
  (void)g, (void)u, (void)packed, (void)scale;
  return {};
#endif
}

// SwiGLU's gate silu(g) * u and its backward {d/dg, d/du}; silu(g) is recomputed in backward rather
// than saved ([T, intermediate] per layer, the largest activations of the step).
at::Tensor swiglu(const at::Tensor& g, const at::Tensor& u) {
  at::Tensor out = swiglu_kernel(g, u, at::Tensor(), 1.0f);
  return out.defined() ? out : at::silu(g) * u;
}
std::pair<at::Tensor, at::Tensor> swiglu_backward(const at::Tensor& d, const at::Tensor& g, const at::Tensor& u) {
  return {at::silu_backward(d * u, g), d * at::silu(g)};
}

// replay_dropout(swiglu(g, u), ...): on CUDA one pass from g, u and the bits (silu(g) * u never written).
at::Tensor swiglu_replay_dropout(const at::Tensor& g, const at::Tensor& u, const at::Tensor& packed, double p,
                                 bool fused, const at::Tensor& bits) {
  if (packed.defined() && fused) {
    at::Tensor out = swiglu_kernel(g, u, packed, static_cast<float>(detail::fused_dropout_scale(g.scalar_type(), p)));
    if (out.defined()) return out;
  }
  return detail::replay_dropout(swiglu(g, u), packed, p, fused, bits);
}

struct SwiGlu : torch::autograd::Function<SwiGlu> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& g, const at::Tensor& u) {
    ctx->save_for_backward({g, u});
    return swiglu(g, u);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grad) {
    auto saved = ctx->get_saved_variables();
    auto [dg, du] = swiglu_backward(grad[0], saved[0], saved[1]);
    return {dg, du};
  }
};

// The arithmetic of PEFT's lora.Linear, shared by the two autograd functions below, which differ only in
// how they get the module's input back in backward. Fewer passes over [T, in] and [T, out] than the
// literal PEFT graph (the step is bound by these memory-bound kernels once the launches are gone, see
// cuda_graphs): the frozen GEMM accumulates onto scaling * lora_B(u) (+ bias), so y is written once by a
// rank-r GEMM and read once in the big GEMM's epilogue; backward scales the rank-r tensors in the GEMMs'
// alpha, never [T, out], and on CUDA adds the dropped-out input's gradient onto dx in one pass.
struct LoraForward {
  at::Tensor y;
  at::Tensor keep;    // dropout's keep mask, packed (undefined without dropout)
  at::Tensor u;       // rank-r activation lora_A(dropout(x))
  at::Tensor Ad, Bd;  // A, B in the compute dtype
  bool fused = false;
};

// t as [rows, features] (packed inputs are [T, features] already; generation's are [1, T, features]).
at::Tensor rows_of(const at::Tensor& t) { return t.reshape({-1, t.size(-1)}); }

// alpha * (a @ b) in one GEMM (beta 0: the uninitialised output is never read).
at::Tensor scaled_mm(const at::Tensor& a, const at::Tensor& b, double alpha) {
  return at::empty({a.size(0), b.size(1)}, a.options()).addmm_(a, b, 0.0, alpha);
}

LoraForward lora_forward(const at::Tensor& x, const at::Tensor& A, const at::Tensor& B, const FrozenTensors& wb,
                         const LoraCall& call) {
  LoraForward f;
  const detail::DroppedInput d = detail::lora_dropout(x, call.training ? call.dropout : 0.0, call.generator);
  if (d.keep.defined()) {
    if (!call.mask_bits.defined()) fail("internal: LoRA dropout without the mask's bit weights");
    f.keep = detail::pack_mask(d.keep, call.mask_bits);
  }
  f.fused = d.fused;
  const auto dt = x.scalar_type();
  f.Ad = A.to(dt);
  f.Bd = B.to(dt);
  f.u = at::matmul(d.xin, f.Ad.t());  // d.xin dies with d: backward replays it from x and the mask
  const at::Tensor u2 = rows_of(f.u), x2 = rows_of(x);
  at::Tensor y2 =
      wb.bias.defined() ? at::addmm(wb.bias, u2, f.Bd.t(), 1.0, call.scaling) : scaled_mm(u2, f.Bd.t(), call.scaling);
  y2.addmm_(x2, wb.weight.t());
  std::vector<int64_t> sizes = x.sizes().vec();
  sizes.back() = wb.weight.size(0);
  f.y = y2.view(sizes);
  return f;
}

// The tensors after the module's input(s) in the saved list, and the scalars.
void save_lora(AutogradContext* ctx, std::vector<at::Tensor> inputs, const LoraForward& f, const LoraCall& call) {
  for (const at::Tensor& t : {f.keep, f.u, f.Ad, f.Bd}) inputs.push_back(t);
  ctx->save_for_backward(inputs);
  ctx->saved_data["scaling"] = call.scaling;
  ctx->saved_data["p"] = call.training ? call.dropout : 0.0;
  ctx->saved_data["fused"] = f.fused;
  if (f.keep.defined()) ctx->saved_data["mask_bits"] = call.mask_bits;
}

// What a LoRA backward reads from its context: the saved list's LoRA tensors from `first`, the scalars.
struct LoraSaved {
  at::Tensor keep, u, Ad, Bd, bits;
  double scaling = 1, p = 0;
  bool fused = false;
  LoraSaved(AutogradContext* ctx, const variable_list& saved, size_t first)
      : keep(saved[first]),
        u(saved[first + 1]),
        Ad(saved[first + 2]),
        Bd(saved[first + 3]),
        scaling(ctx->saved_data["scaling"].toDouble()),
        p(ctx->saved_data["p"].toDouble()),
        fused(ctx->saved_data["fused"].toBool()) {
    if (keep.defined()) bits = ctx->saved_data["mask_bits"].toTensor();
  }
};

// dx += the dropped-out input's gradient: mask(dr A) / (1 - p), or dr A without dropout.
void add_lora_dx_(at::Tensor& dx, const at::Tensor& dr, const LoraSaved& s) {
  if (s.p <= 0) {
    dx.addmm_(dr, s.Ad);
    return;
  }
#ifdef ZLORA_WITH_CUDA
  if (vec8_kernels_apply(dx.size(1), {&dx, &dr, &s.Ad})) {
    check_kernel(kernels::lora_dx_add(kernel_dtype(dx), dx.data_ptr(), dr.data_ptr(), s.Ad.data_ptr(),
                                      s.keep.data_ptr<uint8_t>(), static_cast<float>(1.0 / (1 - s.p)), dx.size(0),
                                      dx.size(1), dr.size(1), stream_of(dx)),
                 "lora_dx_add");
    return;
  }
#endif
  at::Tensor dxin = at::matmul(dr, s.Ad);
  detail::apply_mask_(dxin, s.keep, s.bits);
  dx.add_(dxin, 1.0 / (1 - s.p));
}

struct LoraGrads {
  at::Tensor dx, dA, dB;
  at::Tensor dr;  // the gradient of lora_A's output [rows, r], scaling included
};

// Backward of lora_forward given grad_y; `dropped` makes the forward's dropped-out input again (called
// only when dA is needed), dx (when asked) comes back shaped `x_sizes`.
LoraGrads lora_backward(AutogradContext* ctx, const LoraSaved& s, const at::Tensor& grad_y, at::IntArrayRef x_sizes,
                        const std::function<at::Tensor()>& dropped, bool need_dx, bool need_dA, bool need_dB) {
  const at::Tensor g = rows_of(grad_y);
  // d(lora_B(u)) = g * scaling; scaled on the rank-r side: dr = scaling (g B), dB = scaling g^T u.
  LoraGrads r;
  r.dr = scaled_mm(g, s.Bd, s.scaling);  // [T, r]
  if (need_dB) r.dB = scaled_mm(g.t(), rows_of(s.u), s.scaling).to(at::kFloat);
  if (need_dA) r.dA = at::matmul(r.dr.t(), rows_of(dropped())).to(at::kFloat);
  if (need_dx) {
    Reacquired w(ctx);
    at::Tensor dx = at::matmul(g, w.weight);
    add_lora_dx_(dx, r.dr, s);
    r.dx = dx.view(x_sizes);
  }
  return r;
}

// y = lora(x). Keeps x (shared with whatever else keeps it), the mask, the rank-r activation.
struct LoraLinear : torch::autograd::Function<LoraLinear> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& A, const at::Tensor& B,
                            FrozenTensors wb, WeightStore* store, int64_t unit, const std::string& name,
                            LoraCall call) {
    save_ref(ctx, store, unit, name);
    LoraForward f = lora_forward(x, A, B, wb, call);
    save_lora(ctx, {x}, f, call);
    return f.y;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grad) {
    const variable_list saved = ctx->get_saved_variables();
    const at::Tensor& x = saved[0];
    const LoraSaved s(ctx, saved, 1);
    LoraGrads r = lora_backward(
        ctx, s, grad[0], x.sizes(), [&] { return detail::replay_dropout(x, s.keep, s.p, s.fused, s.bits); },
        ctx->needs_input_grad(0), ctx->needs_input_grad(1), ctx->needs_input_grad(2));
    return {r.dx, r.dA, r.dB, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

// y = lora(silu(gate) * up). Keeps gate and up (what SwiGLU's backward needs), not their product.
struct SwiGluLoraLinear : torch::autograd::Function<SwiGluLoraLinear> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& gate, const at::Tensor& up, const at::Tensor& A,
                            const at::Tensor& B, FrozenTensors wb, WeightStore* store, int64_t unit,
                            const std::string& name, LoraCall call) {
    save_ref(ctx, store, unit, name);
    LoraForward f = lora_forward(swiglu(gate, up), A, B, wb, call);
    save_lora(ctx, {gate, up}, f, call);
    return f.y;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grad) {
    const variable_list saved = ctx->get_saved_variables();
    const at::Tensor &gate = saved[0], &up = saved[1];
    const LoraSaved s(ctx, saved, 2);
    const bool need_x = ctx->needs_input_grad(0) || ctx->needs_input_grad(1);
    // The forward's dropped-out input again, bit for bit, from gate, up and the mask.
    auto dropped = [&] { return swiglu_replay_dropout(gate, up, s.keep, s.p, s.fused, s.bits); };
    const int64_t cols = gate.size(-1);
    // On CUDA the LoRA dx term and SwiGLU's backward are one pass (swiglu_lora_backward) after the GEMM.
    const bool fused_backward =
        need_x && gate.sizes() == up.sizes() && vec8_kernels_apply(cols, {&gate, &up, &s.Ad}) && s.Ad.size(1) == cols;
    LoraGrads r = lora_backward(ctx, s, grad[0], gate.sizes(), dropped, need_x && !fused_backward,
                                ctx->needs_input_grad(2), ctx->needs_input_grad(3));
    at::Tensor dg, du;
    if (fused_backward) {
#ifdef ZLORA_WITH_CUDA
      Reacquired w(ctx);
      const at::Tensor dx = at::matmul(rows_of(grad[0]), w.weight);
      dg = at::empty_like(gate);
      du = at::empty_like(up);
      const bool masked = s.p > 0;
      check_kernel(kernels::swiglu_lora_backward(kernel_dtype(dx), dx.data_ptr(), r.dr.data_ptr(), s.Ad.data_ptr(),
                                                 masked ? s.keep.data_ptr<uint8_t>() : nullptr,
                                                 masked ? static_cast<float>(1.0 / (1 - s.p)) : 1.0f, gate.data_ptr(),
                                                 up.data_ptr(), dx.size(0), cols, r.dr.size(1), dg.data_ptr(),
                                                 du.data_ptr(), stream_of(dx)),
                   "swiglu_lora_backward");
#endif
    } else if (need_x) {
      std::tie(dg, du) = swiglu_backward(r.dx, gate, up);
    }
    return {dg, du, r.dA, r.dB, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

namespace detail {

at::Tensor lora_linear(const at::Tensor& x, const at::Tensor& A, const at::Tensor& B, const at::Tensor& weight,
                       const at::Tensor& bias, WeightStore& store, int64_t unit, const std::string& weight_name,
                       const LoraCall& call) {
  return LoraLinear::apply(x, A, B, FrozenTensors{weight, bias}, &store, unit, weight_name, call);
}

at::Tensor swiglu_lora_linear(const at::Tensor& gate, const at::Tensor& up, const at::Tensor& A, const at::Tensor& B,
                              const at::Tensor& weight, const at::Tensor& bias, WeightStore& store, int64_t unit,
                              const std::string& weight_name, const LoraCall& call) {
  return SwiGluLoraLinear::apply(gate, up, A, B, FrozenTensors{weight, bias}, &store, unit, weight_name, call);
}

}  // namespace detail

namespace {
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
  static variable_list forward(AutogradContext* ctx, const at::Tensor& q, const at::Tensor& k, const at::Tensor& cos,
                               const at::Tensor& sin) {
    ctx->saved_data["cos"] = cos;
    ctx->saved_data["sin"] = sin;
    if (kernel_applies(q, cos, sin)) return {rope_kernel(q, cos, sin, false), rope_kernel(k, cos, sin, false)};
    const at::Tensor c = cos.unsqueeze(1), s = sin.unsqueeze(1);
    return {q * c + rotate_half(q) * s, k * c + rotate_half(k) * s};
  }
  static variable_list backward(AutogradContext* ctx, variable_list grad) {
    const at::Tensor cos = ctx->saved_data["cos"].toTensor(), sin = ctx->saved_data["sin"].toTensor();
    const at::Tensor c = cos.unsqueeze(1), s = sin.unsqueeze(1);
    auto back = [&](const at::Tensor& g) {
      if (!g.defined()) return at::Tensor();
      if (kernel_applies(g, cos, sin)) return rope_kernel(g, cos, sin, true);
      return g * c + rotate_half_t(g * s);
    };
    return {back(grad[0]), back(grad[1]), at::Tensor(), at::Tensor()};
  }
  // cos/sin [T, hd] contiguous in x's dtype, x [T, heads, hd].
  static bool kernel_applies(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
    return use_kernels(x) && x.dim() == 3 && cos.scalar_type() == x.scalar_type() &&
           sin.scalar_type() == x.scalar_type() && cos.is_contiguous() && sin.is_contiguous() && cos.dim() == 2 &&
           cos.size(0) == x.size(0) && cos.size(1) == x.size(2);
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
// chunk of rows at a time, so memory is chunk × vocab. When h requires grad, the forward also computes
// the gradient: the loss is the graph's last node, so its incoming gradient is a scalar that can multiply
// afterwards (dh is linear in it). Backward then neither recomputes the logits (the head's GEMM, the
// step's largest, once more per chunk) nor re-reads the lm_head weight; it keeps dh [N, d] (small: N
// counts target rows only). Logits are computed in the compute dtype and upcast to fp32, as transformers
// does. Optional per-row weights of the cross-entropy (a padded DeviceBatch: 0 for padding rows). A
// non-tensor argument because LibTorch 1.13 rejects undefined tensor inputs to autograd functions.
struct RowWeights {
  at::Tensor weight;  // [N] fp32, or undefined: every row counts once
};

struct ChunkedCrossEntropy : torch::autograd::Function<ChunkedCrossEntropy> {
  // `between_chunks`: ForwardOptions::interruption_point (may be empty).
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& h, FrozenTensors head, const at::Tensor& targets,
                            RowWeights rw, int64_t chunk, const std::function<void()>* between_chunks) {
    const at::Tensor& w = head.weight;
    const int64_t n = h.size(0);
    const bool grad = h.requires_grad();
    at::Tensor dh = grad ? at::empty_like(h) : at::Tensor();
    at::Tensor total = at::zeros({}, h.options().dtype(at::kFloat));
    for (int64_t c0 = 0; c0 < n; c0 += chunk) {
      if (*between_chunks) (*between_chunks)();
      const int64_t c1 = std::min(n, c0 + chunk);
      at::Tensor logits = at::matmul(h.slice(0, c0, c1), w.t()).to(at::kFloat);
      const at::Tensor t = targets.slice(0, c0, c1).unsqueeze(1);
      at::Tensor lse = at::logsumexp(logits, 1, true);
      at::Tensor ce = lse.squeeze(1) - logits.gather(1, t).squeeze(1);
      if (rw.weight.defined()) ce = ce * rw.weight.slice(0, c0, c1);
      total.add_(ce.sum());
      if (!grad) continue;
      // d/dlogits of (lse - logit[t]) = softmax - onehot(t), times the row's weight; in place on the
      // chunk's logits, whose values are no longer needed.
      at::Tensor p = logits.sub_(lse).exp_();
      p.scatter_add_(1, t, at::full(t.sizes(), -1.0, p.options()));
      if (rw.weight.defined()) p.mul_(rw.weight.slice(0, c0, c1).unsqueeze(1));
      dh.slice(0, c0, c1).copy_(at::matmul(p.to(h.scalar_type()), w));
    }
    if (grad) ctx->save_for_backward({dh});
    return total;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grad) {
    at::Tensor dh;
    if (ctx->needs_input_grad(0)) dh = ctx->get_saved_variables()[0] * grad[0];
    return {dh, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
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
      inv_freq_(model::rope_inv_freq(config_, weights.device())),
      mask_bits_(detail::mask_bit_weights(weights.device())) {
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
                           const ForwardOptions& options, const at::Tensor& up) const {
  const std::string prefix = fmt::format("model.layers.{}.{}", layer, local);
  const std::string wname = prefix + ".weight";
  const at::Tensor& weight = w.get(wname);
  const at::Tensor bias = w.get_optional(prefix + ".bias");
  const LoraModule* m = lora_ ? lora_->find(layer, local) : nullptr;
  if (!m) {
    const at::Tensor in = up.defined() ? SwiGlu::apply(x, up) : x;
    return FrozenLinear::apply(in, FrozenTensors{weight, bias}, &weights_, layer + 1, wname);
  }
  LoraCall call;
  call.scaling = lora_->scaling();
  call.dropout = lora_->config().dropout;
  call.training = options.training;
  call.generator = generator_of(options);
  call.mask_bits = mask_bits_;
  // Recomputing silu(gate) * up saves memory only when gate and up are kept anyway, i.e. when they require
  // grad; otherwise the down projection keeps its input, which is half their size.
  if (up.defined() && (x.requires_grad() || up.requires_grad()))
    return detail::swiglu_lora_linear(x, up, m->A, m->B, weight, bias, weights_, layer + 1, wname, call);
  const at::Tensor in = up.defined() ? swiglu(x, up) : x;
  return detail::lora_linear(in, m->A, m->B, weight, bias, weights_, layer + 1, wname, call);
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
  return x1 + linear(gate, l, "mlp.down_proj", w, options, up);
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
  return run_layers(x, batch.position_ids.to(dev), std::move(packed), options);
}

at::Tensor Decoder::run_layers(at::Tensor x, const at::Tensor& positions,
                               std::shared_ptr<const detail::VarlenLayout> packed,
                               const ForwardOptions& options) const {
  Attn attn;
  attn.packed = packed.get();
  std::tie(attn.cos, attn.sin) = rope_tables(positions, inv_freq_, x.scalar_type());
  const bool checkpoint = options.gradient_checkpointing && at::GradMode::is_enabled();
  for (int64_t l = 0; l < config_.num_hidden_layers; ++l) {
    if (options.interruption_point) options.interruption_point();
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

at::Tensor Decoder::head_loss(const at::Tensor& x, const at::Tensor& rows, const at::Tensor& targets,
                              const at::Tensor& row_weight, const ForwardOptions& options) const {
  const int64_t unit = config_.num_hidden_layers + 1;
  UnitLease lease(weights_, unit);
  at::Tensor h = rms_norm(x, unit, "model.norm.weight", lease.weights());
  const std::string head = lm_head_weight_name(config_);
  return ChunkedCrossEntropy::apply(h.index_select(0, rows), FrozenTensors{lease.get(head), {}}, targets,
                                    RowWeights{row_weight}, options.loss_chunk_tokens, &options.interruption_point);
}

bool uses_flash_attention(const ModelConfig& config, AttentionKernel requested, const at::Device& device,
                          at::ScalarType dtype) {
  return detail::use_flash(requested, device, dtype, config.head_dim);
}

bool Decoder::uses_flash(const ForwardOptions& options) const {
  return uses_flash_attention(config_, options.attention, weights_.device(), weights_.dtype());
}

at::Tensor Decoder::loss_sum(const DeviceBatch& batch, const ForwardOptions& options) const {
  if (options.loss_chunk_tokens < 1) fail("decoder: loss_chunk_tokens must be >= 1");
  if (options.training && options.neftune_alpha > 0)
    fail("decoder: NEFTune needs the host batch (its noise is sized per sample); use Decoder::loss");
  const int64_t T = batch.input_ids.numel();
  if (T == 0 || batch.position_ids.numel() != T) fail("decoder: device batch of {} tokens is malformed", T);
  if (batch.rows.numel() != batch.targets.numel() || batch.rows.numel() != batch.row_weight.numel())
    fail("decoder: device batch has {} rows, {} targets, {} row weights", batch.rows.numel(), batch.targets.numel(),
         batch.row_weight.numel());
  if (config_.sliding_window && batch.max_seqlen > *config_.sliding_window)
    fail("decoder: a sample of {} tokens exceeds the model's sliding_window {}", batch.max_seqlen,
         *config_.sliding_window);
  at::Tensor x;
  {
    UnitLease lease(weights_, 0);
    x = at::embedding(lease.get("model.embed_tokens.weight"), batch.input_ids);
  }
  auto layout = std::make_shared<detail::VarlenLayout>();
  layout->flash = uses_flash(options);
  layout->max_seqlen = batch.max_seqlen;
  layout->cu_seqlens = batch.cu_seqlens_host;
  layout->cu_seqlens_device = batch.cu_seqlens;
  if (!layout->flash && (batch.cu_seqlens_host.size() < 2 || batch.cu_seqlens_host.back() != T))
    fail("decoder: the math attention needs the device batch's host offsets (cu_seqlens_host)");
  at::Tensor h = run_layers(x, batch.position_ids, std::move(layout), options);
  if (batch.rows.numel() == 0) return (h.sum() * 0).to(at::kFloat);
  return head_loss(h, batch.rows, batch.targets, batch.row_weight, options);
}

LossResult Decoder::loss(const PackedBatch& batch, const ForwardOptions& options) const {
  if (options.loss_chunk_tokens < 1) fail("decoder: loss_chunk_tokens must be >= 1");
  at::Tensor x = final_hidden(batch, options);
  // Rows with a target are found on the host copy: no device synchronisation inside the step.
  const at::Tensor targets_host = batch.targets.to(at::kCPU);
  at::Tensor rows_host = (targets_host != -100).nonzero().squeeze(1);
  LossResult r;
  r.count = rows_host.numel();
  if (r.count != batch.num_targets)
    fail("decoder: batch.num_targets is {} but its targets hold {}", batch.num_targets, r.count);
  if (r.count == 0) {
    // The head's unit is acquired all the same: under ZeRO-3 every acquire may be an all-gather, and a
    // rank whose batch has targets acquires it here, so skipping it would leave the ranks' gathers out of
    // step (a dummy or fully masked micro-batch on one rank only; MPI_ERR_TRUNCATE or a hang).
    UnitLease head(weights_, config_.num_hidden_layers + 1);
    r.sum = (x.sum() * 0).to(at::kFloat);  // keeps the graph (zero gradients) for a batch without targets
    return r;
  }
  at::Tensor t_host = targets_host.index_select(0, rows_host);
  check_vocab_range(t_host, "target id");
  const at::Device dev = x.device();
  r.sum = head_loss(x, rows_host.to(dev), t_host.to(dev), at::Tensor(), options);
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

ActivationBytes activation_bytes(const ModelConfig& c, const ActivationInput& in) {
  const int64_t cd = in.dtype_bytes, h = c.hidden_size, q = c.q_dim(), kv = c.kv_dim(), I = c.intermediate_size;
  const int64_t H = c.num_attention_heads, L = std::max<int64_t>(in.max_seqlen, 1), f32 = 4;
  const std::set<std::string> lora(in.lora_modules.begin(), in.lora_modules.end());
  ActivationBytes r;
  int64_t largest = 0, recorded_layers = 0;
  bool grad = false;      // whether the layer's input requires grad (a LoRA module below it)
  bool any_rope = false;  // whether some layer's RoPE is recorded (it keeps the shared cos/sin)
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    auto has = [&](const std::string& m) { return lora.count(fmt::format("model.layers.{}.{}", l, m)) > 0; };
    auto lora_own = [&](const std::string& m) {  // rank-r activation and keep mask
      return has(m) ? in.lora_rank * cd + (in.dropout ? (linear_shape(c, m).first + 7) / 8 : 0) : 0;
    };
    const bool qkv = has("self_attn.q_proj") || has("self_attn.k_proj") || has("self_attn.v_proj");
    const bool gate_up = has("mlp.gate_proj") || has("mlp.up_proj");
    int64_t b = 0;
    if (grad) b += h * cd + f32;  // input norm: its input and rstd
    if (qkv) b += h * cd;         // the normed input, shared by q/k/v's LoRA
    for (const char* m : {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj"})
      b += lora_own(m);
    const bool attention = grad || qkv;  // q, k, v require grad
    any_rope = any_rope || attention;
    if (attention && in.flash) {
      b += (2 * q + 2 * kv) * cd + H * f32;  // q, k (rotated), v, the output, log-sum-exp
    } else if (attention) {
      // Per sample: q, k and v repeated to every head, the fp32 softmax (and its cast to the compute
      // dtype for the second matmul), the causal mask.
      b += 3 * q * cd + H * L * f32 + (cd != f32 ? H * L * cd : 0) + L;
    }
    if (has("self_attn.o_proj") && !(attention && in.flash)) b += q * cd;  // o_proj's input (else flash's output)
    grad = grad || qkv || has("self_attn.o_proj");
    if (grad) b += h * cd + f32;  // post-attention norm: the residual and rstd
    if (gate_up) b += h * cd;     // the normed input, shared by gate/up's LoRA
    for (const char* m : {"mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"}) b += lora_own(m);
    // gate and up: SwiGLU's backward needs them, and a LoRA down projection recomputes its input from them;
    // when they need no gradient, that LoRA keeps its input instead.
    if (grad || gate_up)
      b += 2 * I * cd;
    else if (has("mlp.down_proj"))
      b += I * cd;
    grad = grad || gate_up || has("mlp.down_proj");
    if (grad) ++recorded_layers;
    r.per_token += b;
    largest = std::max(largest, b);
  }
  if (!grad) return r;  // nothing trains
  // Shared by the layers: RoPE's cos/sin. The head: the final norm's input and rstd, the loss rows (at
  // most one per token: hidden state, target, log-sum-exp).
  const int64_t shared = (any_rope ? 2 * c.head_dim * cd : 0) + (h * cd + f32) + (h * cd + 8 + f32);
  r.per_token += shared;
  // Checkpointing keeps each recorded layer's input and recomputes one layer at a time.
  r.checkpointed_per_token = recorded_layers * h * cd + largest + shared;
  return r;
}

}  // namespace zlora::model
