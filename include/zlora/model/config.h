// A Hugging Face `config.json` for the decoder families zlora trains: qwen2 (Qwen2/Qwen2.5), llama
// (Llama 2/3/3.1, rope scaling `llama3`) and mistral. Torch-free: the CLI and the data module read it too.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace zlora::model {

// The model types zlora implements; anything else is refused by name with this list.
inline const std::vector<std::string>& supported_model_types() {
  static const std::vector<std::string> kTypes = {"qwen2", "llama", "mistral"};
  return kTypes;
}

struct RopeScaling {
  std::string type = "default";  // "default" (none) or "llama3"
  double factor = 1.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  int64_t original_max_position_embeddings = 8192;
};

struct ModelConfig {
  std::string model_type;    // qwen2 | llama | mistral
  std::string architecture;  // e.g. Qwen2ForCausalLM
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t num_key_value_heads = 0;
  int64_t head_dim = 0;  // config's head_dim, else hidden_size / num_attention_heads
  int64_t max_position_embeddings = 0;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  bool tie_word_embeddings = false;
  bool qkv_bias = false;                  // qwen2 always; llama when attention_bias
  bool o_bias = false;                    // llama when attention_bias
  bool mlp_bias = false;                  // llama when mlp_bias
  std::optional<int64_t> sliding_window;  // mistral: attention window; longer samples are refused
  std::string torch_dtype = "float32";    // "dtype" (transformers 5) or "torch_dtype"
  std::optional<int64_t> bos_token_id;
  std::vector<int64_t> eos_token_ids;  // eos_token_id may be a number or a list

  int64_t q_dim() const { return num_attention_heads * head_dim; }
  int64_t kv_dim() const { return num_key_value_heads * head_dim; }
  int64_t num_units() const { return num_hidden_layers + 2; }  // embeddings, layers, norm + lm_head
};

// Parses config.json text; `origin` names the file in error messages.
ModelConfig parse_model_config(std::string_view json_text, const std::string& origin = "config.json");

// Reads `<model_dir>/config.json` (or the file itself when a file is given).
ModelConfig load_model_config(const std::filesystem::path& model_dir_or_file);

// The warning for samples of up to `cutoff_len` tokens on a model made for at most
// max_position_embeddings positions (`origin` names its config.json), or "" when they fit. Not an error:
// RoPE runs at any position, as transformers does, but quality beyond the trained context is the user's
// risk, so it is said once at the start.
std::string cutoff_len_warning(const ModelConfig& config, int64_t cutoff_len, const std::string& origin);

}  // namespace zlora::model
