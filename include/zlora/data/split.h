// LLaMA-Factory's validation split (data/data_utils.py::split_dataset with val_size): Hugging Face
// datasets' Dataset.train_test_split(test_size=val_size, seed=seed), reproduced index for index:
//   n_test = ceil(val_size * n) for a fraction (val_size <= 1), or val_size samples (> 1);
//   permutation = numpy.random.default_rng(seed).permutation(n);
//   test = permutation[:n_test], train = permutation[n_test:], both in permutation order.
// numpy's default_rng is PCG64 seeded through SeedSequence, and permutation is a Fisher-Yates shuffle
// drawing bounded integers by masked rejection (numpy/random/_generator.pyx, distributions.c); both are
// written out in split.cpp, so zlora holds out exactly the samples LLaMA-Factory would.
#pragma once

#include <cstdint>
#include <vector>

namespace zlora::data {

struct TrainTestSplit {
  std::vector<int64_t> train;  // indices into the dataset, in the order datasets gives them
  std::vector<int64_t> test;
};

// Throws zlora::Error when val_size leaves no training or no test sample.
TrainTestSplit train_test_split(int64_t num_samples, double val_size, uint64_t seed);

// numpy.random.default_rng(seed).permutation(n) (exposed for the tests).
std::vector<int64_t> numpy_permutation(int64_t n, uint64_t seed);
// numpy.random.default_rng(seed).random() draws, n of them (exposed for the tests).
std::vector<double> numpy_random(int64_t n, uint64_t seed);

}  // namespace zlora::data
