// Host-side kernels of the offloaded optimizer. Kept free of LibTorch headers: their TU is the only one
// compiled with OpenMP (-fopenmp would invalidate the shared LibTorch precompiled header).
#pragma once

#include <cstdint>

namespace zlora::zero {

struct AdamWOptions {
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.0;
};

// torch.optim.AdamW's update for one step on fp32 host arrays, OpenMP-parallel and vectorisable:
// p *= 1 - lr*wd; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2; p -= lr/bc1 * m / (sqrt(v)/sqrt(bc2) + eps),
// with g = grad * grad_scale (the clipping coefficient). `step` is 1 for the first update.
void host_adamw(float* param, float* exp_avg, float* exp_avg_sq, const float* grad, int64_t n, double grad_scale,
                double lr, int64_t step, const AdamWOptions& adam);

// Sum of squares in double (the gradient-norm contribution of an offloaded partition), OpenMP-parallel.
double host_sum_squares(const float* x, int64_t n);

}  // namespace zlora::zero
