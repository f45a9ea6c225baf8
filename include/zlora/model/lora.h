// LoRA adapters as PEFT defines them: for a targeted linear y = W x + b,
//   y' = y + scaling · B (A dropout(x)),   A [r, in], B [out, r],   scaling = alpha / r (alpha / sqrt(r) rsLoRA)
// A, B are fp32 master tensors (the only tensors that require grad); the decoder casts them to the
// compute dtype. Names follow PEFT's saved adapters:
//   base_model.model.model.layers.N.self_attn.q_proj.lora_A.weight
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include "zlora/model/config.h"

namespace zlora::model {

struct LoraConfig {
  int64_t r = 8;
  double alpha = 16.0;
  double dropout = 0.0;
  std::vector<std::string> targets = {"all"};  // module-name suffixes, or {"all"}
  bool use_rslora = false;
  uint64_t seed = 42;  // A's initialisation
  double scaling() const;
};

// The linear modules of one decoder block, as PEFT's suffixes see them.
const std::vector<std::string>& block_linear_modules();  // self_attn.q_proj ... mlp.down_proj

// Full module names (model.layers.N.self_attn.q_proj) the targets select. "all" selects every linear of
// every block (never lm_head, as LLaMA-Factory's find_all_linear_modules). Each target must match a
// module (suffix at a '.' boundary, as PEFT matches); otherwise the error lists the names that exist.
std::vector<std::string> resolve_lora_targets(const ModelConfig& config, const std::vector<std::string>& targets);

// Input and output features of a block linear ("self_attn.q_proj" → {hidden, q_dim}).
std::pair<int64_t, int64_t> linear_shape(const ModelConfig& config, const std::string& local_name);

struct LoraModule {
  std::string module;  // model.layers.N.self_attn.q_proj
  int64_t layer = 0;
  std::string local;  // self_attn.q_proj
  at::Tensor A;       // [r, in] fp32, requires grad
  at::Tensor B;       // [out, r] fp32, requires grad
};

class LoraAdapter {
 public:
  // PEFT's init, deterministic from config.seed: A ~ kaiming_uniform(a=sqrt(5)) = U(-1/sqrt(in), 1/sqrt(in)),
  // B = 0. Random numbers are drawn on the CPU (same values on every device), module by module in name order.
  static LoraAdapter create(const ModelConfig& model, const LoraConfig& config, at::Device device = at::kCPU);
  // Reads a PEFT adapter directory (adapter_config.json + adapter_model.safetensors), e.g. LLaMA-Factory's.
  static LoraAdapter load(const std::filesystem::path& dir, const ModelConfig& model, at::Device device = at::kCPU);
  // Writes adapter_config.json and adapter_model.safetensors (fp32) in PEFT's layout, atomically.
  void save(const std::filesystem::path& dir, const std::string& base_model_name_or_path) const;

  const LoraConfig& config() const { return config_; }
  double scaling() const { return config_.scaling(); }
  const std::vector<LoraModule>& modules() const { return modules_; }
  const LoraModule* find(int64_t layer, const std::string& local) const;
  // (PEFT name, tensor) for every A and B, sorted by name.
  std::vector<std::pair<std::string, at::Tensor>> named_parameters() const;
  std::vector<at::Tensor> parameters() const;

 private:
  LoraConfig config_;
  std::vector<LoraModule> modules_;  // sorted by module name
};

std::string peft_param_name(const std::string& module, char which);  // which: 'A' or 'B'

}  // namespace zlora::model
