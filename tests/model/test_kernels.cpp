// zlora's CUDA kernels (model/kernels.cu) against the ATen compositions they replace, on the GPU:
// RoPE bit for bit, RMSNorm within one rounding of the dtype (only the row's sum of squares is summed
// in another order). Built in CUDA builds only (the GPU machine runs it).
#include <c10/cuda/CUDAStream.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "zlora/model/kernels.h"

namespace zk = zlora::model::kernels;

namespace {

zk::DType dtype_of(at::ScalarType t) {
  return t == at::kBFloat16 ? zk::DType::kBFloat16 : t == at::kHalf ? zk::DType::kFloat16 : zk::DType::kFloat32;
}
void* stream() { return c10::cuda::getCurrentCUDAStream().stream(); }
// The dtype's machine epsilon (its ulp at 1).
double eps_of(at::ScalarType t) { return t == at::kBFloat16 ? 1.0 / 128 : t == at::kHalf ? 1.0 / 1024 : 1.0 / 8388608; }

at::Tensor rotate_half(const at::Tensor& x) {
  const int64_t h = x.size(-1) / 2;
  return at::cat({-x.slice(-1, h), x.slice(-1, 0, h)}, -1);
}
at::Tensor rotate_half_t(const at::Tensor& y) {
  const int64_t h = y.size(-1) / 2;
  return at::cat({y.slice(-1, h), -y.slice(-1, 0, h)}, -1);
}

// Largest difference in units of the dtype's rounding at each element's magnitude.
double max_ulps(const at::Tensor& a, const at::Tensor& b, double eps) {
  at::Tensor d = (a.to(at::kDouble) - b.to(at::kDouble)).abs();
  at::Tensor scale = b.to(at::kDouble).abs().clamp_min(1e-30) * eps;
  return (d / scale).max().item<double>();
}

}  // namespace

TEST(Kernels, RopeEqualsTheAtenCompositionBitForBit) {
  ASSERT_TRUE(at::hasCUDA());
  for (at::ScalarType t : {at::kBFloat16, at::kHalf, at::kFloat}) {
    const auto opt = at::TensorOptions().device(at::kCUDA).dtype(t);
    const int64_t T = 37, H = 5, hd = 64;
    at::Tensor x = at::randn({T, H, hd}, opt), g = at::randn({T, H, hd}, opt);
    at::Tensor ang = at::rand({T, hd}, opt.dtype(at::kFloat)) * 50;
    at::Tensor cos = ang.cos().to(t), sin = ang.sin().to(t);
    const at::Tensor c = cos.unsqueeze(1), s = sin.unsqueeze(1);
    at::Tensor out = at::empty_like(x), back = at::empty_like(g);
    ASSERT_EQ(
        zk::rope(dtype_of(t), false, x.data_ptr(), cos.data_ptr(), sin.data_ptr(), T, H, hd, out.data_ptr(), stream()),
        nullptr);
    ASSERT_EQ(
        zk::rope(dtype_of(t), true, g.data_ptr(), cos.data_ptr(), sin.data_ptr(), T, H, hd, back.data_ptr(), stream()),
        nullptr);
    EXPECT_TRUE(at::equal(out, x * c + rotate_half(x) * s)) << t;
    EXPECT_TRUE(at::equal(back, g * c + rotate_half_t(g * s))) << t;
  }
}

TEST(Kernels, RmsNormMatchesTheAtenCompositionWithinOneRounding) {
  ASSERT_TRUE(at::hasCUDA());
  for (at::ScalarType t : {at::kBFloat16, at::kHalf, at::kFloat}) {
    const auto opt = at::TensorOptions().device(at::kCUDA).dtype(t);
    const double eps_t = eps_of(t);
    for (int64_t d : {48, 3584, 5000}) {
      const int64_t rows = 301;
      const double eps = 1e-6;
      at::Tensor x = at::randn({rows, d}, opt) * 3, w = at::rand({d}, opt) + 0.5, dy = at::randn({rows, d}, opt);
      // The ATen composition of decoder.cpp (HF's arithmetic).
      at::Tensor xf = x.to(at::kFloat);
      at::Tensor rstd_ref = at::rsqrt(xf.pow(2).mean(-1, true) + eps);
      at::Tensor y_ref = w * (xf * rstd_ref).to(t);
      at::Tensor gy = (dy * w).to(at::kFloat);
      at::Tensor dot = (gy * xf).mean(-1, true);
      at::Tensor dx_ref = ((gy - xf * (rstd_ref * rstd_ref * dot)) * rstd_ref).to(t);

      at::Tensor y = at::empty_like(x), dx = at::empty_like(x);
      at::Tensor rstd = at::empty({rows}, opt.dtype(at::kFloat));
      ASSERT_EQ(zk::rms_norm_forward(dtype_of(t), x.data_ptr(), w.data_ptr(), float(eps), rows, d, y.data_ptr(),
                                     rstd.data_ptr<float>(), stream()),
                nullptr);
      ASSERT_EQ(zk::rms_norm_backward(dtype_of(t), dy.data_ptr(), x.data_ptr(), w.data_ptr(), rstd.data_ptr<float>(),
                                      rows, d, dx.data_ptr(), stream()),
                nullptr);
      const double r_err = ((rstd - rstd_ref.squeeze(1)).abs() / rstd_ref.squeeze(1)).max().item<double>();
      const double y_ulps = max_ulps(y, y_ref, eps_t), same = (y == y_ref).to(at::kFloat).mean().item<double>();
      // dx subtracts nearly equal terms: compare against the row's scale, not each element's.
      const double dx_err =
          ((dx.to(at::kDouble) - dx_ref.to(at::kDouble)).abs().max() / dx_ref.to(at::kDouble).abs().max())
              .item<double>();
      std::printf("[kernels] rms_norm %s d=%ld: rstd rel %.3g, y max %.2f ulps (%.4f identical), dx rel %.3g\n",
                  c10::toString(t), long(d), r_err, y_ulps, same, dx_err);
      EXPECT_LE(r_err, 4e-7) << t << " " << d;
      // A few fp32 ulps of rstd move x * rstd across a rounding boundary now and then: one rounding there
      // and one in the product with w (fp32: a few ulps, no rounding to a narrower type).
      EXPECT_LE(y_ulps, t == at::kFloat ? 8.0 : 2.01) << t << " " << d;
      if (t != at::kFloat) EXPECT_GE(same, 0.99) << t << " " << d;  // rounding to 16 bits hides rstd's ulps
      EXPECT_LE(dx_err, 2 * eps_t) << t << " " << d;
    }
  }
}

namespace {
at::Tensor pack_bits(const at::Tensor& keep) {
  at::Tensor bits = at::empty({(keep.numel() + 7) / 8}, keep.options().dtype(at::kByte));
  EXPECT_EQ(zk::pack_mask_bits(keep.data_ptr<bool>(), keep.numel(), bits.data_ptr<uint8_t>(), stream()), nullptr);
  return bits;
}
double identical(const at::Tensor& a, const at::Tensor& b) { return (a == b).to(at::kFloat).mean().item<double>(); }
// Largest |a - b| in units of eps * scale (a tensor of per-element magnitudes, float64).
double err_in(const at::Tensor& a, const at::Tensor& b, const at::Tensor& scale, double eps) {
  at::Tensor d = (a.to(at::kDouble) - b.to(at::kDouble)).abs();
  return (d / (scale * eps).clamp_min(1e-300)).max().item<double>();
}
}  // namespace

// silu(g) * u and its dropout replay: the same fp32 operations and roundings as at::silu(g) * u and the
// fused dropout's x * mask * scale, so bit for bit (up to the platform's expf, which both call).
TEST(Kernels, SwiGluAndItsDropoutReplayEqualTheAtenComposition) {
  ASSERT_TRUE(at::hasCUDA());
  for (at::ScalarType t : {at::kBFloat16, at::kHalf, at::kFloat}) {
    const auto opt = at::TensorOptions().device(at::kCUDA).dtype(t);
    const int64_t n = 301 * 88;
    at::Tensor g = at::randn({n}, opt) * 4, u = at::randn({n}, opt);
    at::Tensor keep = at::rand({n}, opt.dtype(at::kFloat)) > 0.1;
    const at::Tensor bits = pack_bits(keep);
    const double p = 0.1, scale = 1.0 / double(float(1.0 - p));
    at::Tensor out = at::empty_like(g), replay = at::empty_like(g);
    ASSERT_EQ(zk::swiglu(dtype_of(t), g.data_ptr(), u.data_ptr(), nullptr, 1.0f, n, out.data_ptr(), stream()), nullptr);
    ASSERT_EQ(zk::swiglu(dtype_of(t), g.data_ptr(), u.data_ptr(), bits.data_ptr<uint8_t>(), float(scale), n,
                         replay.data_ptr(), stream()),
              nullptr);
    const at::Tensor ref = at::silu(g) * u, ref_replay = at::native_dropout_backward(ref, keep, scale);
    const double same = identical(out, ref), same_replay = identical(replay, ref_replay);
    std::printf("[kernels] swiglu %s: %.5f identical, replay %.5f identical\n", c10::toString(t), same, same_replay);
    const at::Tensor mag = ref.to(at::kDouble).abs();
    EXPECT_LE(err_in(out, ref, mag, eps_of(t)), 1.01) << t;  // at most one rounding apart, where not identical
    EXPECT_GE(same, 0.999) << t;
    EXPECT_LE(err_in(replay, ref_replay, ref_replay.to(at::kDouble).abs(), eps_of(t)), 1.01) << t;
    EXPECT_GE(same_replay, 0.999) << t;
    // The 8-wide replay and masking kernels equal the one-element-per-thread ones they replaced.
    at::Tensor r8 = at::empty_like(ref), m8 = ref.clone(), r1 = at::empty_like(ref), m1 = ref.clone();
    ASSERT_EQ(zk::dropout_replay_bits(dtype_of(t), ref.data_ptr(), bits.data_ptr<uint8_t>(), float(scale), n,
                                      r8.data_ptr(), stream()),
              nullptr);
    ASSERT_EQ(zk::mask_bits_inplace(dtype_of(t), m8.data_ptr(), bits.data_ptr<uint8_t>(), n, stream()), nullptr);
    // n - 1 elements: not a multiple of 8, the scalar kernels.
    ASSERT_EQ(zk::dropout_replay_bits(dtype_of(t), ref.data_ptr(), bits.data_ptr<uint8_t>(), float(scale), n - 1,
                                      r1.data_ptr(), stream()),
              nullptr);
    ASSERT_EQ(zk::mask_bits_inplace(dtype_of(t), m1.data_ptr(), bits.data_ptr<uint8_t>(), n - 1, stream()), nullptr);
    EXPECT_TRUE(at::equal(r8, ref_replay)) << t;
    EXPECT_TRUE(at::equal(r1.slice(0, 0, n - 1), ref_replay.slice(0, 0, n - 1))) << t;
    EXPECT_TRUE(at::equal(m8, ref.mul(keep))) << t;
    EXPECT_TRUE(at::equal(m1.slice(0, 0, n - 1), ref.mul(keep).slice(0, 0, n - 1))) << t;
    // Unaligned or odd sizes are refused with a reason, not computed wrongly.
    EXPECT_NE(zk::swiglu(dtype_of(t), g.data_ptr(), u.data_ptr(), nullptr, 1.0f, n - 3, out.data_ptr(), stream()),
              nullptr);
  }
}

// dx += alpha * mask * (dr A) and the SwiGLU backward after it, against the ATen composition they replace
// (decoder.cpp: matmul, apply_mask_, add_, silu_backward, silu, muls). The rank-r sums run in another
// order than cuBLAS's, so the results are within a rounding of the operands' magnitudes.
TEST(Kernels, LoraBackwardPassesMatchTheAtenComposition) {
  ASSERT_TRUE(at::hasCUDA());
  for (at::ScalarType t : {at::kBFloat16, at::kHalf, at::kFloat})
    for (bool masked : {true, false}) {
      const auto opt = at::TensorOptions().device(at::kCUDA).dtype(t);
      const int64_t rows = 133, cols = 3584 + 8, rank = 8;
      const double p = 0.1, alpha = masked ? 1.0 / (1 - p) : 1.0;
      at::Tensor dx = at::randn({rows, cols}, opt), dr = at::randn({rows, rank}, opt) * 0.3;
      at::Tensor A = at::randn({rank, cols}, opt) * 0.3, g = at::randn({rows, cols}, opt) * 3;
      at::Tensor u = at::randn({rows, cols}, opt);
      at::Tensor keep = at::rand({rows, cols}, opt.dtype(at::kFloat)) > p;
      const at::Tensor bits = pack_bits(keep);
      const uint8_t* bp = masked ? bits.data_ptr<uint8_t>() : nullptr;
      // ATen: what decoder.cpp ran before these kernels.
      at::Tensor d_ref = dx.clone();
      if (masked) {
        at::Tensor dxin = at::matmul(dr, A).mul_(keep);
        d_ref.add_(dxin, alpha);
      } else {
        d_ref.addmm_(dr, A);
      }
      const at::Tensor dg_ref = at::silu_backward(d_ref * u, g), du_ref = d_ref * at::silu(g);
      // Magnitude of each sum's operands (float64): |dx| + alpha |dr| |A|.
      const at::Tensor mag =
          dx.to(at::kDouble).abs() + alpha * at::matmul(dr.to(at::kDouble).abs(), A.to(at::kDouble).abs());

      at::Tensor d = dx.clone();
      ASSERT_EQ(zk::lora_dx_add(dtype_of(t), d.data_ptr(), dr.data_ptr(), A.data_ptr(), bp, float(alpha), rows, cols,
                                rank, stream()),
                nullptr);
      at::Tensor dg = at::empty_like(g), du = at::empty_like(u);
      ASSERT_EQ(zk::swiglu_lora_backward(dtype_of(t), dx.data_ptr(), dr.data_ptr(), A.data_ptr(), bp, float(alpha),
                                         g.data_ptr(), u.data_ptr(), rows, cols, rank, dg.data_ptr(), du.data_ptr(),
                                         stream()),
                nullptr);
      const double eps = eps_of(t);
      const double e_d = err_in(d, d_ref, mag, eps);
      // SwiGLU's backward scales d by |u| silu'(g) (at most ~1.1 |u|) and by |silu(g)| (at most |g|).
      const at::Tensor u_abs = u.to(at::kDouble).abs(), g_abs = g.to(at::kDouble).abs();
      const double e_dg = err_in(dg, dg_ref, mag * u_abs * 1.1, eps), e_du = err_in(du, du_ref, mag * g_abs, eps);
      std::printf(
          "[kernels] lora backward %s %s: dx %.2f, d_gate %.2f, d_up %.2f (eps x magnitude); identical "
          "%.4f %.4f %.4f\n",
          c10::toString(t), masked ? "masked" : "unmasked", e_d, e_dg, e_du, identical(d, d_ref), identical(dg, dg_ref),
          identical(du, du_ref));
      // fp32: the rank-8 sum's order (8 ulps at most) and the final rounding; 16-bit: two roundings.
      const double bound = t == at::kFloat ? rank + 2.0 : 3.0;
      EXPECT_LE(e_d, bound) << t << " " << masked;
      EXPECT_LE(e_dg, 2 * bound) << t << " " << masked;
      EXPECT_LE(e_du, 2 * bound) << t << " " << masked;
      // Masked, the rank-r sum is rounded to the dtype before the add (as matmul's output is), which hides
      // the summation order: nearly every element is identical. Unmasked, the fp32 sum goes into the add
      // unrounded (as addmm_'s epilogue), so ~15 % of the results land one rounding apart (measured on an
      // H200: 83-86 % identical), which the bounds above allow.
      if (t != at::kFloat && masked) {
        EXPECT_GE(identical(d, d_ref), 0.99) << t;
        EXPECT_GE(identical(du, du_ref), 0.99) << t;
      }
      EXPECT_NE(zk::lora_dx_add(dtype_of(t), d.data_ptr(), dr.data_ptr(), A.data_ptr(), bp, float(alpha), rows,
                                cols - 4, rank, stream()),
                nullptr);
    }
}
