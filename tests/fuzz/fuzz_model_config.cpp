// Fuzz target: a Hugging Face config.json parsed into a ModelConfig. Only zlora::Error may escape; an
// accepted config must satisfy what the decoder and the weight loader assume before allocating.
#include "fuzz_util.h"
#include "zlora/core/error.h"
#include "zlora/model/config.h"

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

namespace {

// config.json is a few KB (load_model_config reads at most 16 MiB); 1 MiB bounds the work per input.
constexpr size_t kMaxInput = size_t(1) << 20;

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > kMaxInput) return 0;
  std::string_view text(reinterpret_cast<const char*>(data), size);
  zlora::model::ModelConfig c;
  try {
    c = zlora::model::parse_model_config(text, "fuzz/config.json");
  } catch (const zlora::Error& e) {
    zlora::fuzz::refused(e);
    return 0;
  }
  zlora::fuzz::accepted("config.json");
  if (c.vocab_size < 1 || c.hidden_size < 1 || c.intermediate_size < 1 || c.num_hidden_layers < 1) std::abort();
  if (c.num_attention_heads < 1 || c.num_key_value_heads < 1 || c.num_attention_heads % c.num_key_value_heads != 0)
    std::abort();
  if (c.head_dim < 2 || c.head_dim % 2 != 0 || c.max_position_embeddings < 1) std::abort();
  if (!(c.rms_norm_eps > 0 && c.rms_norm_eps < 1) || !(c.rope_theta > 0)) std::abort();
  if (c.rope_scaling.type != "default" && c.rope_scaling.type != "llama3") std::abort();
  // Shape arithmetic stays far from int64 overflow: the biggest matrix is bounded by 2^34 elements.
  const int64_t limit = int64_t(1) << 34;
  if (c.vocab_size * c.hidden_size > limit || c.intermediate_size * c.hidden_size > limit ||
      c.q_dim() * c.hidden_size > limit || c.kv_dim() * c.hidden_size > limit)
    std::abort();
  for (int64_t id : c.eos_token_ids)
    if (id < 0) std::abort();
  if (c.bos_token_id && *c.bos_token_id < 0) std::abort();
  return 0;
}
