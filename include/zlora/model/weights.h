// Frozen base weights: LibTorch views of safetensors, and the WeightStore the decoder draws them from.
//
// Units: 0 = embeddings, 1..L = decoder layers, L+1 = final norm + lm_head. `acquire(unit)` returns the
// unit's full weights on the compute device (ZeRO-3 gathers them); `release(unit)` says they may be
// freed. Calls nest and pair up: the decoder acquires a unit once around its forward and again inside
// the backward of each frozen op of that unit (autograd never holds a frozen weight), so a store that
// gathers should keep a unit alive while its count is above zero and may cache or prefetch the unit used
// next (backward walks the units in reverse order).
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "zlora/model/config.h"
#include "zlora/model/safetensors.h"

namespace zlora::model {

// ---- safetensors ↔ LibTorch -------------------------------------------------------------------

at::ScalarType to_scalar_type(DType d);
DType to_safetensors_dtype(at::ScalarType s);
// "bfloat16"/"bf16", "float16"/"fp16"/"half", "float32"/"fp32"/"float" → ScalarType; others refused.
at::ScalarType parse_compute_dtype(const std::string& name);

// An owned copy of tensor `name` converted to `options` (device, dtype).
at::Tensor load_tensor(const SafetensorsModel& model, const std::string& name, const at::TensorOptions& options);
// Rows [row_begin, row_end) of dim 0, reading only those bytes (ZeRO-3 ranks load their shard).
at::Tensor load_rows(const SafetensorsModel& model, const std::string& name, int64_t row_begin, int64_t row_end,
                     const at::TensorOptions& options);
// Elements [begin, end) of the tensor flattened to 1-D (flat partitions that cut across rows).
at::Tensor load_flat_range(const SafetensorsModel& model, const std::string& name, int64_t begin, int64_t end,
                           const at::TensorOptions& options);
std::map<std::string, at::Tensor> load_tensors(const SafetensorsModel& model, const std::vector<std::string>& names,
                                               const at::TensorOptions& options);
// Writes tensors (any device; contiguous copies are made on the host) atomically as safetensors.
void save_tensors(const std::filesystem::path& path, const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                  const std::map<std::string, std::string>& metadata = {});

// ---- units ---------------------------------------------------------------------------------

struct WeightSpec {
  std::string name;  // Hugging Face name, e.g. model.layers.0.self_attn.q_proj.weight
  std::vector<int64_t> shape;
};

// The frozen tensors of `unit` with the shapes config.json implies. With tied embeddings, the last
// unit's lm_head is `model.embed_tokens.weight` (listed in both unit 0 and unit L+1).
std::vector<WeightSpec> unit_weight_specs(const ModelConfig& config, int64_t unit);
// The tensor used as lm_head (lm_head.weight, or model.embed_tokens.weight when tied).
std::string lm_head_weight_name(const ModelConfig& config);

class UnitWeights {
 public:
  void set(const std::string& name, at::Tensor t) { tensors_[name] = std::move(t); }
  const at::Tensor& get(const std::string& name) const;  // throws naming the tensor when absent
  at::Tensor get_optional(const std::string& name) const;
  const std::map<std::string, at::Tensor>& all() const { return tensors_; }

 private:
  std::map<std::string, at::Tensor> tensors_;
};

class WeightStore {
 public:
  virtual ~WeightStore() = default;
  virtual const ModelConfig& config() const = 0;
  virtual at::Device device() const = 0;
  virtual at::ScalarType dtype() const = 0;  // the compute dtype the weights come in
  virtual UnitWeights acquire(int64_t unit) = 0;
  virtual void release(int64_t unit) = 0;
};

// Acquires a unit for the scope; releases it at scope exit (also on exceptions).
class UnitLease {
 public:
  UnitLease(WeightStore& store, int64_t unit) : store_(store), unit_(unit), weights_(store.acquire(unit)) {}
  ~UnitLease() { store_.release(unit_); }
  UnitLease(const UnitLease&) = delete;
  UnitLease& operator=(const UnitLease&) = delete;
  const UnitWeights& weights() const { return weights_; }
  const at::Tensor& get(const std::string& name) const { return weights_.get(name); }

 private:
  WeightStore& store_;
  int64_t unit_;
  UnitWeights weights_;
};

// Every weight loaded once onto `device` in `dtype` and kept there (no ZeRO-3).
class ResidentWeightStore : public WeightStore {
 public:
  // Loads and checks every tensor config.json implies (missing or misshapen tensors are errors).
  ResidentWeightStore(const ModelConfig& config, const SafetensorsModel& model, at::Device device,
                      at::ScalarType dtype);
  // From tensors already in memory (tests, merged exports); same checks.
  ResidentWeightStore(const ModelConfig& config, const std::map<std::string, at::Tensor>& tensors, at::Device device,
                      at::ScalarType dtype);

  const ModelConfig& config() const override { return config_; }
  at::Device device() const override { return device_; }
  at::ScalarType dtype() const override { return dtype_; }
  UnitWeights acquire(int64_t unit) override;
  void release(int64_t unit) override;

  // Counters for tests: how often each unit was acquired, and how many are held now.
  int64_t acquire_count(int64_t unit) const { return acquired_.at(unit); }
  int64_t held(int64_t unit) const { return held_.at(unit); }

 private:
  void init(const std::map<std::string, at::Tensor>& tensors, const std::string& origin);
  ModelConfig config_;
  at::Device device_;
  at::ScalarType dtype_;
  std::vector<UnitWeights> units_;
  std::vector<int64_t> acquired_, held_;
};

}  // namespace zlora::model
