// Per-rank device memory plan, printed at start and used to refuse a run that cannot fit before it
// allocates anything: base weights, LoRA weights, gradients, optimizer state and an activation estimate
// as functions of the model dims, tokens per micro-batch, ZeRO stage, offload, world size and dtype.
// The numbers are first-order estimates (they ignore the allocator's fragmentation and CUDA/NCCL's own
// workspace, covered by `reserve_bytes`), written so that a refusal is rarely wrong and its suggestion
// (another stage, or offload) is computed by the same formulas.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace zlora::zero {

struct MemoryPlanInput {
  // Model.
  int64_t base_params = 0;          // frozen elements (all units)
  int64_t largest_unit_params = 0;  // frozen elements of the largest unit (ZeRO-3 gather buffers)
  int64_t lora_params = 0;          // trainable elements
  int64_t vocab_size = 0;
  int64_t compute_dtype_bytes = 2;  // bf16/fp16: 2, fp32: 4
  // What the forward keeps for the backward per token, without and with gradient checkpointing (the
  // decoder's own count: model::activation_bytes).
  int64_t activation_bytes_per_token = 0;
  int64_t checkpointed_activation_bytes_per_token = 0;
  // Run.
  int64_t tokens_per_micro_batch = 0;
  int64_t loss_chunk_tokens = 0;  // rows of logits materialised at once by the chunked loss
  bool gradient_checkpointing = false;
  int stage = 0;
  bool offload = false;
  int world_size = 1;
  int64_t prefetch_units = 1;  // ZeRO-3
  // Device.
  std::optional<int64_t> free_device_bytes;  // unknown (CPU run): no check
  int64_t reserve_bytes = int64_t{2} << 30;  // CUDA context, NCCL buffers, fragmentation
};

struct MemoryPlan {
  int64_t base_weights = 0;
  int64_t lora_weights = 0;
  int64_t grads = 0;
  int64_t optimizer = 0;       // on the device
  int64_t host_optimizer = 0;  // offload: on the host
  int64_t activations = 0;
  int64_t total = 0;  // device bytes including reserve
  std::optional<int64_t> free_device_bytes;
  bool fits() const { return !free_device_bytes || total <= *free_device_bytes; }
  // Multi-line table in GiB, for the start-of-run log.
  std::string describe() const;
};

MemoryPlan plan_memory(const MemoryPlanInput& in);

// Throws zlora::Error when the plan does not fit, naming what is needed, what is free, and the
// lowest stage/offload setting that would fit (or that none does at this world size).
void require_fits(const MemoryPlanInput& in);

}  // namespace zlora::zero
