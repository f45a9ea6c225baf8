// `zlora export`: merges PEFT LoRA adapters into a base model and writes a Hugging Face model
// directory, as LLaMA-Factory's `llamafactory-cli export` (train/tuner.py::export_model) does:
//   model.safetensors, or model-0000k-of-0000n.safetensors + model.safetensors.index.json
//   config.json (torch_dtype = the export dtype), generation_config.json, the base's tokenizer files,
//   and an Ollama Modelfile for the template.
//
// Merging streams: base tensors are read one at a time from the memory-mapped base shards, merged
// (W + scaling·B·A per adapter, in turn, accumulated in fp32), cast, and appended to the output shard
// being written; only one tensor (plus the adapters) is ever in memory. Output goes to
// `<export_dir>.tmp-<pid>` and is renamed into place once complete, so a failed export leaves nothing
// that looks like a model.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "zlora/config/args.h"

namespace zlora::exporter {

struct ExportOptions {
  std::filesystem::path base_dir;               // HF model directory (config.json + safetensors)
  std::vector<std::filesystem::path> adapters;  // PEFT adapter directories, merged in this order
  std::filesystem::path export_dir;             // created; must be empty or absent unless `overwrite`
  uint64_t max_shard_bytes = 5'000'000'000ull;  // export_size GB, decimal as transformers counts it
  std::string dtype = "auto";                   // auto (the base's torch_dtype) | bf16 | fp16 | fp32
  std::optional<std::string> template_name;     // writes the Modelfile and fixes the eos token
  std::optional<std::string> default_system;    // replaces the template's default system prompt
  bool overwrite = false;                       // replace a non-empty export_dir
};

// The options a validated `zlora export` configuration means (adapter paths split at commas).
ExportOptions export_options(const config::ExportConfig& cfg);

struct ExportSummary {
  std::vector<std::string> shard_files;  // in order
  uint64_t total_size = 0;               // bytes of tensor data, as index.json's metadata.total_size
  int64_t num_tensors = 0;
  int64_t merged_weights = 0;  // base weights changed by at least one adapter
  std::string dtype;           // "bfloat16" | "float16" | "float32"
};

ExportSummary export_merged(const ExportOptions& options);

// One tensor of the plan: its name and size in the output (bytes).
struct PlannedTensor {
  std::string name;
  uint64_t nbytes = 0;
};

// huggingface_hub's split_state_dict_into_shards: tensors in order; a new shard starts when the next
// tensor would push the current one past `max_shard_bytes`; a tensor larger than the limit gets a shard
// of its own. Returns, per shard, the indices of its tensors.
std::vector<std::vector<size_t>> plan_shards(const std::vector<PlannedTensor>& tensors, uint64_t max_shard_bytes);

// "model.safetensors" for one shard, else "model-00001-of-00003.safetensors".
std::string shard_file_name(size_t index, size_t count);

}  // namespace zlora::exporter
