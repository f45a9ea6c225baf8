// ZeRO-3's frozen base weights behind the decoder's WeightStore (model/weights.h): the partitioned
// store (zero/weight_store.h) adapted to the decoder's units, with its shards read from safetensors.
#pragma once

#include "zlora/dist/communicator.h"
#include "zlora/model/config.h"
#include "zlora/model/safetensors.h"
#include "zlora/model/weights.h"
#include "zlora/zero/weight_store.h"

#include <memory>
#include <string>
#include <vector>

namespace zlora::train {

// The decoder acquires a unit around its forward and again in the backward of each frozen op; without
// a pin, a layer's seven projections would each re-gather the layer in backward. So the unit acquired
// last stays pinned until another unit is acquired: one gather per unit per pass, DeepSpeed's reuse
// distance in its simplest form. With tied embeddings the shared matrix is sharded in unit 0 and again
// in the last unit, so that each unit can be gathered on its own (1/world of the matrix extra per rank).
class Zero3WeightStore : public model::WeightStore {
 public:
  // Collective: reads this rank's shard of every unit from `st`. `comm` must outlive the store.
  Zero3WeightStore(const model::ModelConfig& config, const model::SafetensorsModel& st, dist::Communicator& comm,
                   at::Device device, at::ScalarType dtype, int64_t prefetch);
  ~Zero3WeightStore() override;

  const model::ModelConfig& config() const override { return config_; }
  at::Device device() const override { return device_; }
  at::ScalarType dtype() const override { return dtype_; }
  model::UnitWeights acquire(int64_t unit) override;
  void release(int64_t unit) override;

  int64_t local_numel() const;                        // base-model elements this rank keeps
  std::vector<int64_t> gathered_unit_numels() const;  // each unit's length once gathered (shard x world)

 private:
  void unpin();
  model::ModelConfig config_;
  at::Device device_;
  at::ScalarType dtype_;
  std::unique_ptr<zero::PartitionedWeightStore> store_;
  int64_t pinned_ = -1;
  int world_ = 1;
};

}  // namespace zlora::train
