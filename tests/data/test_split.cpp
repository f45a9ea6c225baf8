// LLaMA-Factory's val_size split (data/split.h): numpy's default_rng stream and permutation, and
// datasets' train_test_split sizes. The reference values are numpy's own outputs (numpy >= 1.17,
// np.random.default_rng(seed).random(3) / .permutation(10)), as printed in numpy's documentation and
// by `python3 -c "import numpy as np; print(np.random.default_rng(42).permutation(10))"`.
#include "zlora/core/error.h"
#include "zlora/data/split.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>

using namespace zlora::data;

TEST(Split, NumpyDefaultRngStream) {
  // PCG64 seeded through SeedSequence; random() = (next64 >> 11) * 2^-53.
  const std::vector<double> s42 = numpy_random(3, 42);
  EXPECT_DOUBLE_EQ(s42[0], 0.7739560485559633);
  EXPECT_DOUBLE_EQ(s42[1], 0.4388784397520523);
  EXPECT_DOUBLE_EQ(s42[2], 0.8585979199113825);
  const std::vector<double> s0 = numpy_random(3, 0);
  EXPECT_DOUBLE_EQ(s0[0], 0.6369616873214543);
  EXPECT_DOUBLE_EQ(s0[1], 0.2697867137638703);
  EXPECT_DOUBLE_EQ(s0[2], 0.04097352393619469);
  EXPECT_DOUBLE_EQ(numpy_random(1, 12345)[0], 0.22733602246716966);
}

TEST(Split, NumpyPermutation) {
  EXPECT_EQ(numpy_permutation(10, 42), (std::vector<int64_t>{5, 6, 0, 7, 3, 2, 4, 9, 1, 8}));
  // A permutation of 0..n-1 for sizes on both sides of the 32-bit draw boundary of small bounds.
  for (int64_t n : {0, 1, 2, 3, 1000, 3631}) {
    std::vector<int64_t> p = numpy_permutation(n, 7);
    std::sort(p.begin(), p.end());
    std::vector<int64_t> want(static_cast<size_t>(n));
    std::iota(want.begin(), want.end(), 0);
    EXPECT_EQ(p, want) << n;
  }
  EXPECT_NE(numpy_permutation(100, 1), numpy_permutation(100, 2));
}

TEST(Split, TrainTestSplitSizesAndOrderFollowDatasets) {
  // A fraction: ceil(val_size * n) held out; the rest in permutation order.
  TrainTestSplit s = train_test_split(10, 0.25, 42);
  EXPECT_EQ(s.test, (std::vector<int64_t>{5, 6, 0}));
  EXPECT_EQ(s.train, (std::vector<int64_t>{7, 3, 2, 4, 9, 1, 8}));
  // A count (> 1): that many; exactly 1.0 is a fraction (everything), refused.
  s = train_test_split(10, 4, 42);
  EXPECT_EQ(s.test, (std::vector<int64_t>{5, 6, 0, 7}));
  EXPECT_EQ(s.train.size(), 6u);
  // The seed's 3,631 samples at LLaMA-Factory's example val_size 0.1: 364 held out.
  s = train_test_split(3631, 0.1, 42);
  EXPECT_EQ(s.test.size(), 364u);
  EXPECT_EQ(s.train.size(), 3267u);
  try {
    train_test_split(10, 1.0, 42);
    FAIL() << "val_size 1.0 leaves nothing to train on";
  } catch (const zlora::Error& e) {
    EXPECT_NE(std::string(e.what()).find("val_size 1 holds out 10 of the 10 samples, leaving none to train on"),
              std::string::npos)
        << e.what();
  }
  EXPECT_THROW(train_test_split(10, 12, 42), zlora::Error);
}
