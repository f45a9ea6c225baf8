#include "zlora/zero/host_adam.h"

#include <cmath>

namespace zlora::zero {

void host_adamw(float* param, float* exp_avg, float* exp_avg_sq, const float* grad, int64_t n, double grad_scale,
                double lr, int64_t step, const AdamWOptions& adam) {
  // Scalars rounded to fp32 where ATen's fp32 kernels round them (a scalar argument is cast to the
  // tensor's dtype), and the same operation order as torch's AdamW, so results agree to a few ulps.
  const float decay = static_cast<float>(1.0 - lr * adam.weight_decay);
  const float b1 = static_cast<float>(adam.beta1), one_minus_b1 = static_cast<float>(1.0 - adam.beta1);
  const float b2 = static_cast<float>(adam.beta2), one_minus_b2 = static_cast<float>(1.0 - adam.beta2);
  const double bc1 = 1.0 - std::pow(adam.beta1, static_cast<double>(step));
  const double bc2 = 1.0 - std::pow(adam.beta2, static_cast<double>(step));
  const float step_size = static_cast<float>(lr / bc1);
  const float bc2_sqrt = static_cast<float>(std::sqrt(bc2));
  const float eps = static_cast<float>(adam.eps);
  const float scale = static_cast<float>(grad_scale);
  const bool decays = adam.weight_decay != 0;
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    const float g = grad[i] * scale;
    const float p = decays ? param[i] * decay : param[i];
    const float m = exp_avg[i] * b1 + g * one_minus_b1;
    const float v = exp_avg_sq[i] * b2 + g * g * one_minus_b2;
    const float denom = std::sqrt(v) / bc2_sqrt + eps;
    exp_avg[i] = m;
    exp_avg_sq[i] = v;
    param[i] = p - step_size * (m / denom);
  }
}

double host_sum_squares(const float* x, int64_t n) {
  double sq = 0;
#pragma omp parallel for simd reduction(+ : sq) schedule(static)
  for (int64_t i = 0; i < n; ++i) sq += static_cast<double>(x[i]) * x[i];
  return sq;
}

}  // namespace zlora::zero
