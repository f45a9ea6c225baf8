// What the recipe derives from the model's config and the run's options before it allocates anything:
// the attention kernel, the FLOPs model behind MFU, and the start-of-run memory plan's inputs.
#pragma once

#include "zlora/config/args.h"
#include "zlora/model/config.h"
#include "zlora/model/decoder.h"
#include "zlora/model/lora.h"
#include "zlora/train/metrics.h"
#include "zlora/zero/memory_plan.h"

#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include <string>

namespace zlora::train {

// LLaMA-Factory's flash_attn values onto the decoder's kernels: sdpa (torch's fused attention) maps to
// the same variable-length flash kernel where it exists, as auto does; fa2 insists on it.
model::AttentionKernel attention_kernel(const std::string& flash_attn);

FlopsModel flops_model(const model::ModelConfig& c, const model::LoraAdapter& lora);

// The inputs of zero::plan_memory for this run on `device` (printed by rank 0 at start, and refused
// before any large allocation when it cannot fit, naming the stage/offload that would).
zero::MemoryPlanInput memory_plan_input(const model::ModelConfig& c, const config::TrainConfig& cfg,
                                        at::ScalarType dtype, int world, const at::Device& device,
                                        int64_t micro_batch_tokens);

}  // namespace zlora::train
