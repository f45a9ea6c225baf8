#include "zero3_weights.h"

#include <ATen/ATen.h>

namespace zlora::train {

namespace {
// The partitioned store keeps each name once; the head's copy of a tied matrix gets this prefix.
const std::string kTiedAlias = "tied_lm_head:";

std::string real_name(const std::string& name) {
  return name.rfind(kTiedAlias, 0) == 0 ? name.substr(kTiedAlias.size()) : name;
}
}  // namespace

Zero3WeightStore::Zero3WeightStore(const model::ModelConfig& config, const model::SafetensorsModel& st,
                                   dist::Communicator& comm, at::Device device, at::ScalarType dtype, int64_t prefetch)
    : config_(config), device_(device), dtype_(dtype), world_(comm.size()) {
  std::vector<zero::UnitSpec> specs;
  const int64_t last = config.num_units() - 1;
  for (int64_t u = 0; u < config.num_units(); ++u) {
    zero::UnitSpec spec;
    for (const auto& w : model::unit_weight_specs(config, u)) {
      const bool tied_copy = u == last && config.tie_word_embeddings && w.name == model::lm_head_weight_name(config);
      spec.push_back({tied_copy ? kTiedAlias + w.name : w.name, w.shape});
    }
    specs.push_back(std::move(spec));
  }
  auto loader = [&st](const std::string& name, int64_t offset, int64_t count) {
    return model::load_flat_range(st, real_name(name), offset, offset + count, at::TensorOptions().dtype(at::kFloat));
  };
  zero::WeightStoreOptions opt;
  opt.dtype = dtype;
  opt.device = device;
  opt.prefetch = prefetch;
  store_ = std::make_unique<zero::PartitionedWeightStore>(std::move(specs), loader, comm, opt);
}

Zero3WeightStore::~Zero3WeightStore() { unpin(); }

model::UnitWeights Zero3WeightStore::acquire(int64_t unit) {
  if (pinned_ != unit) {
    unpin();
    store_->acquire(static_cast<int>(unit));  // the pin's own reference
    pinned_ = unit;
  }
  model::UnitWeights w;
  for (auto& [name, t] : store_->acquire(static_cast<int>(unit))) w.set(real_name(name), t);
  return w;
}

void Zero3WeightStore::release(int64_t unit) { store_->release(static_cast<int>(unit)); }

int64_t Zero3WeightStore::local_numel() const { return store_->local_numel(); }

std::vector<int64_t> Zero3WeightStore::gathered_unit_numels() const {
  std::vector<int64_t> out;
  for (int u = 0; u < store_->num_units(); ++u) out.push_back(store_->shard_numel(u) * world_);
  return out;
}

void Zero3WeightStore::unpin() {
  if (pinned_ >= 0) store_->release(static_cast<int>(pinned_));
  pinned_ = -1;
}

}  // namespace zlora::train
