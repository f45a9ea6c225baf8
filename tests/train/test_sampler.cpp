// The epoch order must be the HF Trainer's: accelerate seeds a CPU torch.Generator with seed + epoch and
// takes torch.randperm(n). The reference below re-implements PyTorch's CPU randperm independently: the
// generator is the standard MT19937 (at::mt19937) seeded with the seed, and randperm_cpu is a forward
// Fisher-Yates that swaps element i with i + (random() % (n - i)) for i < n - 1 (ATen
// native/TensorFactories.cpp, n below 2^32 / 20).
#include "zlora/core/error.h"
#include "zlora/train/sampler.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <random>

using zlora::train::epoch_order;

namespace {
std::vector<int64_t> reference_randperm(int64_t n, uint32_t seed) {
  std::mt19937 gen(seed);
  std::vector<int64_t> r(static_cast<size_t>(n));
  std::iota(r.begin(), r.end(), 0);
  for (int64_t i = 0; i + 1 < n; ++i) {
    int64_t z = int64_t(gen() % uint32_t(n - i));
    std::swap(r[size_t(i)], r[size_t(i + z)]);
  }
  return r;
}
}  // namespace

TEST(Sampler, MatchesTorchRandpermSeededWithSeedPlusEpoch) {
  for (int64_t n : {1, 2, 10, 256, 1000})
    for (long long epoch : {0LL, 1LL, 2LL})
      EXPECT_EQ(epoch_order(n, 42, epoch, true), reference_randperm(n, uint32_t(42 + epoch)))
          << "n " << n << " epoch " << epoch;
}

TEST(Sampler, PermutationDeterministicAndDifferentPerEpoch) {
  auto a = epoch_order(500, 7, 0, true), b = epoch_order(500, 7, 0, true), c = epoch_order(500, 7, 1, true);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  std::vector<int64_t> s = a;
  std::sort(s.begin(), s.end());
  std::vector<int64_t> all(500);
  std::iota(all.begin(), all.end(), 0);
  EXPECT_EQ(s, all);
}

TEST(Sampler, DisableShufflingKeepsFileOrder) {
  std::vector<int64_t> all(37);
  std::iota(all.begin(), all.end(), 0);
  EXPECT_EQ(epoch_order(37, 42, 3, false), all);
  EXPECT_THROW(epoch_order(0, 42, 0, true), zlora::Error);
}
