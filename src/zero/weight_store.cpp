#include "zlora/zero/weight_store.h"

#include "zlora/core/error.h"
#include "zlora/zero/partition.h"

#include <ATen/ATen.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <set>

namespace zlora::zero {

struct PartitionedWeightStore::Unit {
  UnitSpec spec;
  std::vector<int64_t> offsets;  // of each tensor in the unit's flat sequence
  int64_t numel = 0, padded = 0, shard = 0;
  at::Tensor local;    // [shard]: this rank's permanent piece
  at::Tensor full;     // [padded] while gathered, else undefined
  dist::WorkPtr work;  // the gather in flight, if any
  int refs = 0;        // acquires not yet released
};

namespace {}  // namespace

PartitionedWeightStore::PartitionedWeightStore(std::vector<UnitSpec> units, const SliceLoader& load,
                                               dist::Communicator& comm, WeightStoreOptions options)
    : comm_(comm), options_(options) {
  ZLORA_REQUIRE(!units.empty(), "PartitionedWeightStore: no units");
  ZLORA_REQUIRE(options_.prefetch >= 0, "stage3_prefetch_layers must be >= 0, got {}", options_.prefetch);
  ZLORA_REQUIRE(options_.alignment > 0, "ZeRO-3 alignment must be positive, got {}", options_.alignment);
  ZLORA_REQUIRE(static_cast<bool>(load), "PartitionedWeightStore: no slice loader");
  const int world = comm_.size(), rank = comm_.rank();
  std::set<std::string> names;
  units_.resize(units.size());
  for (size_t u = 0; u < units.size(); ++u) {
    Unit& unit = units_[u];
    unit.spec = std::move(units[u]);
    ZLORA_REQUIRE(!unit.spec.empty(), "ZeRO-3 unit {} has no tensors", u);
    for (const TensorSpec& t : unit.spec) {
      ZLORA_REQUIRE(names.insert(t.name).second, "ZeRO-3: tensor {} appears in two units or twice", t.name);
      int64_t n = 1;
      for (int64_t d : t.shape) {
        ZLORA_REQUIRE(d >= 0, "ZeRO-3: tensor {} has a negative dimension in [{}]", t.name, fmt::join(t.shape, ", "));
        n *= d;
      }
      unit.offsets.push_back(unit.numel);
      unit.numel += n;
    }
    unit.padded = padded_flat_numel(unit.numel, world, options_.alignment);
    unit.shard = unit.padded / world;

    // Ask the loader only for the tensors' elements inside [begin, end): rank r reads 1/world of the
    // model. The padding tail stays zero.
    unit.local = at::zeros({unit.shard}, at::TensorOptions().dtype(options_.dtype).device(options_.device));
    const int64_t begin = rank * unit.shard, end = begin + unit.shard;
    for (size_t i = 0; i < unit.spec.size(); ++i) {
      const int64_t t0 = unit.offsets[i];
      const int64_t t1 = i + 1 < unit.spec.size() ? unit.offsets[i + 1] : unit.numel;
      const int64_t lo = std::max(t0, begin), hi = std::min(t1, end);
      if (lo >= hi) continue;
      at::Tensor piece = load(unit.spec[i].name, lo - t0, hi - lo);
      ZLORA_REQUIRE(piece.defined() && piece.numel() == hi - lo,
                    "the weight loader returned {} elements for {} [{}, {}); expected {}",
                    piece.defined() ? piece.numel() : 0, unit.spec[i].name, lo - t0, hi - t0, hi - lo);
      unit.local.narrow(0, lo - begin, hi - lo).copy_(piece.reshape({-1}));
    }
  }
}

PartitionedWeightStore::~PartitionedWeightStore() {
  // Outstanding gathers write into buffers we are about to free: finish them first.
  for (Unit& unit : units_)
    if (unit.work) unit.work->wait();
}

PartitionedWeightStore::Unit& PartitionedWeightStore::at_unit(int unit, const char* what) {
  ZLORA_REQUIRE(unit >= 0 && unit < num_units(), "PartitionedWeightStore::{}: unit {} is out of range 0..{}", what,
                unit, num_units() - 1);
  return units_[unit];
}
const PartitionedWeightStore::Unit& PartitionedWeightStore::at_unit(int unit, const char* what) const {
  ZLORA_REQUIRE(unit >= 0 && unit < num_units(), "PartitionedWeightStore::{}: unit {} is out of range 0..{}", what,
                unit, num_units() - 1);
  return units_[unit];
}

void PartitionedWeightStore::start_gather(int u) {
  Unit& unit = units_[u];
  if (unit.full.defined()) return;  // gathered or in flight
  unit.full = at::empty({unit.padded}, unit.local.options());
  unit.work = comm_.all_gather(unit.full, unit.local);
}

std::vector<std::pair<std::string, at::Tensor>> PartitionedWeightStore::acquire(int u) {
  Unit& unit = at_unit(u, "acquire");
  if (last_acquired_ >= 0 && u != last_acquired_) direction_ = u > last_acquired_ ? 1 : -1;
  last_acquired_ = u;
  start_gather(u);
  // Queue the next units' gathers before waiting on this one, so they overlap this unit's compute.
  for (int64_t k = 1; k <= options_.prefetch; ++k) {
    const int64_t next = u + direction_ * k;
    if (next < 0 || next >= num_units()) break;
    start_gather(static_cast<int>(next));
  }
  if (unit.work) {
    unit.work->wait();
    unit.work.reset();
  }
  ++unit.refs;
  std::vector<std::pair<std::string, at::Tensor>> out;
  out.reserve(unit.spec.size());
  for (size_t i = 0; i < unit.spec.size(); ++i) {
    const TensorSpec& t = unit.spec[i];
    int64_t n = 1;
    for (int64_t d : t.shape) n *= d;
    out.emplace_back(t.name, unit.full.narrow(0, unit.offsets[i], n).view(t.shape));
  }
  return out;
}

void PartitionedWeightStore::release(int u) {
  Unit& unit = at_unit(u, "release");
  ZLORA_REQUIRE(unit.refs > 0, "PartitionedWeightStore::release({}) without a matching acquire", u);
  if (--unit.refs > 0) return;
  // Freed now; a caller still holding a view keeps the storage alive (the caching allocator reuses it
  // only after the last reference), so an early release cannot corrupt a computation, only cost memory.
  unit.full = at::Tensor();
}

int PartitionedWeightStore::num_units() const { return static_cast<int>(units_.size()); }
int64_t PartitionedWeightStore::unit_numel(int u) const { return at_unit(u, "unit_numel").numel; }
int64_t PartitionedWeightStore::shard_numel(int u) const { return at_unit(u, "shard_numel").shard; }
int64_t PartitionedWeightStore::local_numel() const {
  int64_t n = 0;
  for (const Unit& unit : units_) n += unit.shard;
  return n;
}
bool PartitionedWeightStore::is_gathered(int u) const { return at_unit(u, "is_gathered").full.defined(); }

}  // namespace zlora::zero
