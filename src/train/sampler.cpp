#include "zlora/train/sampler.h"

#include "zlora/core/error.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <numeric>

namespace zlora::train {

std::vector<int64_t> epoch_order(int64_t num_samples, long long seed, long long epoch, bool shuffle) {
  ZLORA_REQUIRE(num_samples > 0, "the training set is empty: no samples to order");
  ZLORA_REQUIRE(epoch >= 0, "negative epoch {}", epoch);
  std::vector<int64_t> order(num_samples);
  if (!shuffle) {
    std::iota(order.begin(), order.end(), int64_t(0));
    return order;
  }
  // A private generator: the global one is the model's (dropout, init), which must not shift the order.
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(uint64_t(seed + epoch));
  at::Tensor perm = at::randperm(num_samples, gen, at::TensorOptions().dtype(at::kLong));
  const int64_t* p = perm.data_ptr<int64_t>();
  std::copy(p, p + num_samples, order.begin());
  return order;
}

}  // namespace zlora::train
