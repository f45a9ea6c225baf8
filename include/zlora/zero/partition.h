// How ZeRO lays a flat buffer over the ranks: padded to a multiple of world x alignment elements, so that
// each rank's partition has the same length and starts aligned (alignment 64 elements: 256-byte starts
// for fp32). The LoRA buffer (zero_optimizer.h) and each ZeRO-3 unit (weight_store.h) use it, and so does
// the communication model (comm_model.h), which prices exactly these lengths. No LibTorch.
#pragma once

#include <algorithm>
#include <cstdint>

namespace zlora::zero {

inline constexpr int64_t kPartitionAlignment = 64;

inline int64_t padded_flat_numel(int64_t numel, int world, int64_t alignment = kPartitionAlignment) {
  const int64_t m = int64_t(world) * alignment;
  return (std::max<int64_t>(numel, 1) + m - 1) / m * m;
}

}  // namespace zlora::zero
