// ZeRO-3 for the frozen base weights: each rank keeps only its shard of every unit (docs/design.md's
// WeightStore units: 0 = embeddings, 1..L = decoder layers, L+1 = final norm + lm_head) and a unit's
// full weights exist only between acquire(unit) and release(unit).
//
// A unit's tensors are concatenated (in the given order) into one flat sequence, padded to a multiple
// of world x alignment elements and split into `world` equal shards; rank r asks the loader only for
// the elements of shard r (so it never reads, let alone holds, the whole model). acquire() all-gathers
// the unit into a full buffer (one collective; NCCL: on the communicator's stream) and, on the way,
// starts gathering the next `prefetch` units in the direction of travel (ascending in forward,
// descending in backward), so that layer i+1's gather overlaps layer i's compute.
//
// Collective discipline: every rank must acquire and release the same units in the same order (the
// decoder's forward/backward order is the same on every rank), since prefetches are collectives.
#pragma once

#include "zlora/zero/partition.h"

#include "zlora/dist/communicator.h"

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

namespace zlora::zero {

struct TensorSpec {
  std::string name;
  std::vector<int64_t> shape;
};
using UnitSpec = std::vector<TensorSpec>;

// Returns elements [offset, offset + count) of the row-major flattened tensor `name`, as a 1-D tensor
// of `count` elements (any dtype/device; converted as needed). The glue reads them from safetensors.
using SliceLoader = std::function<at::Tensor(const std::string& name, int64_t offset, int64_t count)>;

struct WeightStoreOptions {
  at::ScalarType dtype = at::kBFloat16;     // storage and compute dtype of the frozen weights
  at::Device device = at::kCPU;             // compute device
  int64_t prefetch = 1;                     // stage3_prefetch_layers
  int64_t alignment = kPartitionAlignment;  // shard sizes are multiples of this
};

class PartitionedWeightStore {
 public:
  // Loads this rank's shard of every unit through `load`. `comm` must outlive the store.
  PartitionedWeightStore(std::vector<UnitSpec> units, const SliceLoader& load, dist::Communicator& comm,
                         WeightStoreOptions options);
  ~PartitionedWeightStore();
  PartitionedWeightStore(const PartitionedWeightStore&) = delete;
  PartitionedWeightStore& operator=(const PartitionedWeightStore&) = delete;

  int num_units() const;

  // The unit's full weights (name, tensor of its shape) on the compute device; valid until the
  // matching release(). Nested acquires of one unit are counted. Collective (see above).
  std::vector<std::pair<std::string, at::Tensor>> acquire(int unit);
  // The caller no longer needs the unit's full weights; they are freed once every acquire is released.
  void release(int unit);

  int64_t unit_numel(int unit) const;   // real elements of the unit
  int64_t shard_numel(int unit) const;  // elements of each rank's shard (padded)
  int64_t local_numel() const;          // elements this rank keeps permanently (sum of its shards)
  bool is_gathered(int unit) const;     // full weights held (gathered or being gathered)

 private:
  struct Unit;
  void start_gather(int unit);
  Unit& at_unit(int unit, const char* what);
  const Unit& at_unit(int unit, const char* what) const;

  dist::Communicator& comm_;
  WeightStoreOptions options_;
  std::vector<Unit> units_;
  int last_acquired_ = -1;
  int direction_ = 1;
};

}  // namespace zlora::zero
