#include "zlora/zero/memory_plan.h"

#include "zlora/core/error.h"

#include <fmt/format.h>

#include <algorithm>
#include <utility>
#include <vector>

namespace zlora::zero {

namespace {

double gib(int64_t bytes) { return static_cast<double>(bytes) / (1 << 30); }

std::string setting(int stage, bool offload) {
  return fmt::format("zero_stage {}{}", stage, offload ? " with offload_optimizer cpu" : "");
}

}  // namespace

MemoryPlan plan_memory(const MemoryPlanInput& in) {
  ZLORA_REQUIRE(in.world_size >= 1, "memory plan: world size must be >= 1, got {}", in.world_size);
  ZLORA_REQUIRE(in.stage >= 0 && in.stage <= 3, "memory plan: zero_stage must be 0..3, got {}", in.stage);
  ZLORA_REQUIRE(in.compute_dtype_bytes == 2 || in.compute_dtype_bytes == 4,
                "memory plan: compute dtype must be 2 (bf16/fp16) or 4 (fp32) bytes, got {}", in.compute_dtype_bytes);
  const int64_t w = in.world_size, cd = in.compute_dtype_bytes, f32 = 4;
  const int64_t lora = in.lora_params;
  MemoryPlan p;
  p.free_device_bytes = in.free_device_bytes;

  // Frozen base: replicated below stage 3; at stage 3 a 1/world shard plus the gathered units (the
  // one computing and the prefetched ones).
  if (in.stage == 3) {
    p.base_weights = in.base_params * cd / w + (1 + in.prefetch_units) * in.largest_unit_params * cd;
  } else {
    p.base_weights = in.base_params * cd;
  }
  // Trainable fp32 weights: the flat buffer is full on every rank (it is what the forward reads).
  p.lora_weights = lora * f32;
  // Flat gradient buffer (micro-batches accumulate into it) + the reduce-scattered partition.
  p.grads = lora * f32 + (in.stage >= 2 ? lora * f32 / w : 0);
  // AdamW m and v: everything at stage 0, a partition otherwise; offload moves them (and an fp32
  // master and gradient staging copy of the partition) to the host.
  const int64_t state = 2 * lora * f32;
  if (in.offload) {
    p.host_optimizer = 2 * state / w;
  } else {
    p.optimizer = in.stage == 0 ? state : state / w;
  }
  // Activations kept for the backward (the decoder's count per token) for the largest micro-batch.
  const int64_t t = in.tokens_per_micro_batch;
  const int64_t kept =
      in.gradient_checkpointing ? in.checkpointed_activation_bytes_per_token : in.activation_bytes_per_token;
  // Chunked loss: fp32 logits and their gradient for one chunk of rows.
  const int64_t loss = 2 * std::min(in.loss_chunk_tokens, std::max<int64_t>(t, 1)) * in.vocab_size * f32;
  p.activations = t * kept + loss;
  p.total = p.base_weights + p.lora_weights + p.grads + p.optimizer + p.activations + in.reserve_bytes;
  return p;
}

std::string MemoryPlan::describe() const {
  std::string s = fmt::format(
      "memory plan per rank (GiB): base weights {:.2f}, LoRA weights {:.3f}, gradients {:.3f}, optimizer {:.3f}{}, "
      "activations ~{:.2f}, total with reserve ~{:.2f}",
      gib(base_weights), gib(lora_weights), gib(grads), gib(optimizer),
      host_optimizer ? fmt::format(" (+{:.3f} on the host)", gib(host_optimizer)) : std::string(), gib(activations),
      gib(total));
  if (free_device_bytes) s += fmt::format("; device free {:.2f}", gib(*free_device_bytes));
  return s;
}

void require_fits(const MemoryPlanInput& in) {
  const MemoryPlan plan = plan_memory(in);
  if (plan.fits()) return;
  // Cheapest first: lower stages communicate less, offload costs a host round trip per step, and
  // stage 3 re-gathers the whole base model every micro-batch (distributed.md §1.5).
  const std::vector<std::pair<int, bool>> order = {{0, false}, {1, false}, {2, false}, {1, true},
                                                   {2, true},  {3, false}, {3, true}};
  for (const auto& [stage, offload] : order) {
    MemoryPlanInput alt = in;
    alt.stage = stage;
    alt.offload = offload;
    const MemoryPlan p = plan_memory(alt);
    if (p.fits())
      fail(
          "the run needs ~{:.2f} GiB per GPU with {} but only {:.2f} GiB are free ({}); {} would need ~{:.2f} GiB "
          "and fits: set it (or lower cutoff_len / micro_batch_tokens)",
          gib(plan.total), setting(in.stage, in.offload), gib(*plan.free_device_bytes), plan.describe(),
          setting(stage, offload), gib(p.total));
  }
  MemoryPlanInput best = in;
  best.stage = 3;
  best.offload = true;
  std::string hint = in.gradient_checkpointing ? "" : ", enable gradient_checkpointing";
  fail(
      "the run needs ~{:.2f} GiB per GPU with {} but only {:.2f} GiB are free ({}); no ZeRO stage fits at world "
      "size {} (zero_stage 3 with offload_optimizer cpu still needs ~{:.2f} GiB): lower cutoff_len / "
      "micro_batch_tokens{}, or use more GPUs",
      gib(plan.total), setting(in.stage, in.offload), gib(*plan.free_device_bytes), plan.describe(), in.world_size,
      gib(plan_memory(best).total), hint);
}

}  // namespace zlora::zero
