// The epoch order of the training samples, as the HF Trainer draws it: accelerate's SeedableRandomSampler
// seeds a CPU torch.Generator with seed + epoch and takes torch.randperm(n, generator). at::randperm with a
// CPU generator seeded the same way gives the same permutation, so zlora visits samples in the order
// LLaMA-Factory would. With disable_shuffling the order is file order (LLaMA-Factory's SequentialSampler).
#pragma once

#include <cstdint>
#include <vector>

namespace zlora::train {

std::vector<int64_t> epoch_order(int64_t num_samples, long long seed, long long epoch, bool shuffle);

}  // namespace zlora::train
