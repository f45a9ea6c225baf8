#include "model_setup.h"

#include "device.h"

#include <algorithm>

namespace zlora::train {

model::AttentionKernel attention_kernel(const std::string& flash_attn) {
  if (flash_attn == "disabled") return model::AttentionKernel::kMath;
  if (flash_attn == "fa2") return model::AttentionKernel::kFlash;
  return model::AttentionKernel::kAuto;
}

FlopsModel flops_model(const model::ModelConfig& c, const model::LoraAdapter& lora) {
  FlopsModel f;
  const int64_t h = c.hidden_size, i = c.intermediate_size;
  const int64_t per_layer = h * c.q_dim() + 2 * h * c.kv_dim() + c.q_dim() * h + 3 * h * i;
  f.frozen_linear_params = c.num_hidden_layers * per_layer + c.vocab_size * h;
  for (const auto& p : lora.parameters()) f.lora_params += p.numel();
  f.num_layers = c.num_hidden_layers;
  f.attn_width = c.q_dim();
  return f;
}

zero::MemoryPlanInput memory_plan_input(const model::ModelConfig& c, const config::TrainConfig& cfg,
                                        at::ScalarType dtype, int world, const at::Device& device,
                                        int64_t micro_batch_tokens) {
  zero::MemoryPlanInput in;
  int64_t largest = 0, total = 0;
  for (int64_t u = 0; u < c.num_units(); ++u) {
    int64_t n = 0;
    for (const auto& w : model::unit_weight_specs(c, u)) {
      int64_t e = 1;
      for (int64_t d : w.shape) e *= d;
      n += e;
    }
    largest = std::max(largest, n);
    total += n;
  }
  if (c.tie_word_embeddings) total -= c.vocab_size * c.hidden_size;  // listed in two units, stored once
  in.base_params = total;
  in.largest_unit_params = largest;
  const int64_t r = cfg.lora.lora_rank, h = c.hidden_size, i = c.intermediate_size;
  const int64_t per_layer_all = r * ((h + c.q_dim()) + 2 * (h + c.kv_dim()) + (c.q_dim() + h) + 3 * (h + i));
  in.lora_params = c.num_hidden_layers * per_layer_all;  // an upper bound when only some modules are targeted
  in.vocab_size = c.vocab_size;
  in.compute_dtype_bytes = dtype == at::kFloat ? 4 : 2;
  model::ActivationInput act;
  act.lora_modules = model::resolve_lora_targets(c, cfg.lora.lora_target);
  act.lora_rank = r;
  act.dropout = cfg.lora.lora_dropout > 0;
  act.dtype_bytes = in.compute_dtype_bytes;
  act.flash = model::uses_flash_attention(c, attention_kernel(cfg.training.flash_attn), device, dtype);
  act.max_seqlen = cfg.data.cutoff_len;
  const model::ActivationBytes kept = model::activation_bytes(c, act);
  in.activation_bytes_per_token = kept.per_token;
  in.checkpointed_activation_bytes_per_token = kept.checkpointed_per_token;
  in.loss_chunk_tokens = model::ForwardOptions{}.loss_chunk_tokens;
  in.tokens_per_micro_batch = micro_batch_tokens;
  in.gradient_checkpointing = cfg.training.gradient_checkpointing;
  in.stage = static_cast<int>(cfg.dist.zero_stage);
  in.offload = cfg.dist.offload_optimizer == "cpu";
  in.world_size = world;
  in.prefetch_units = cfg.dist.stage3_prefetch_layers;
  in.free_device_bytes = free_device_bytes(device);
  return in;
}

}  // namespace zlora::train
