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
    const double eps_t = t == at::kBFloat16 ? 1.0 / 128 : t == at::kHalf ? 1.0 / 1024 : 1.0 / 8388608;
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
