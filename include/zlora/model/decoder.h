// The decoder (Qwen2 / Llama / Mistral) in ATen + autograd, with Hugging Face's numerics:
// RMSNorm in fp32 then weight * x.to(dtype), RoPE with rotate_half (theta, llama3 scaling), grouped-query
// attention (q/k/v bias where the config has it), SwiGLU MLP, tied or untied lm_head.
//
// Input is always packed: samples concatenated without padding, positions restarting per sample, no
// attention across samples (an "unpacked" batch is a pack of one sample). Frozen weights come from a
// WeightStore unit by unit; frozen ops are custom autograd functions that re-acquire their weight in
// backward, so only activations and LoRA tensors live between forward and backward.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "zlora/model/lora.h"
#include "zlora/model/weights.h"

namespace zlora::model {
namespace detail {
struct VarlenLayout;
}

struct PackedBatch {
  at::Tensor input_ids;             // [T] int64
  at::Tensor position_ids;          // [T] int64, restarting at 0 per sample
  at::Tensor targets;               // [T] int64: label of token t+1 of the same sample; -100 = no loss
  std::vector<int64_t> cu_seqlens;  // n+1 offsets into T (host)
  int64_t max_seqlen = 0;
  int64_t num_targets = 0;  // targets != -100

  int64_t num_tokens() const { return cu_seqlens.empty() ? 0 : cu_seqlens.back(); }
  int64_t num_samples() const { return cu_seqlens.empty() ? 0 : int64_t(cu_seqlens.size()) - 1; }

  // Packs samples given as the data module stores them: input_ids and *unshifted* labels (-100 = masked),
  // same length per sample. Shifts labels inside each sample; empty samples are refused.
  static PackedBatch from_samples(const std::vector<std::vector<int64_t>>& input_ids,
                                  const std::vector<std::vector<int64_t>>& labels);
};

// A packed batch already on the compute device, in buffers of fixed sizes: what a captured CUDA graph
// replays against (train/step_graphs.h). A forward over it reads nothing back to the host. Padding is
// explicit: padding tokens form samples of their own (cu_seqlens), and loss rows carry a weight (1 for a
// real target, 0 for a padding row), so a padded batch gives the loss and gradients of the unpadded one.
struct DeviceBatch {
  at::Tensor input_ids;                  // [T] int64
  at::Tensor position_ids;               // [T] int64, restarting at 0 per sample
  at::Tensor cu_seqlens;                 // [S + 1] int32 offsets (the flash kernel's layout)
  std::vector<int64_t> cu_seqlens_host;  // the same offsets on the host: needed by the math attention only
  int64_t max_seqlen = 0;                // at least the longest sample: sizes the attention kernel's grid
  at::Tensor rows;                       // [R] int64: the token whose target enters the loss
  at::Tensor targets;                    // [R] int64: that target (any valid id for a padding row)
  at::Tensor row_weight;                 // [R] fp32: 1 for a real target, 0 for a padding row
};

// Which attention implementation the packed forward uses (the `flash_attn` argument).
enum class AttentionKernel {
  kAuto,   // variable-length flash attention where it exists (CUDA, bf16/fp16), else math
  kMath,   // HF's eager arithmetic, one sample at a time (exact reference; every device)
  kFlash,  // flash attention or a clear error
};

struct ForwardOptions {
  bool training = false;     // LoRA dropout and NEFTune act only when training
  double neftune_alpha = 0;  // NEFTune: uniform noise of magnitude alpha / sqrt(L * d) per sample; 0 = off
  std::optional<at::Generator> generator;  // RNG for dropout and NEFTune (the default generator when unset)
  // Rows of logits alive at once in the loss ([rows, vocab] in fp32, forward and backward): the loss's
  // transient sits on top of every layer's activations at the step's memory peak, so it is kept small;
  // 256 rows still make each chunk's GEMM large (256 x hidden x vocab).
  int64_t loss_chunk_tokens = 256;
  AttentionKernel attention = AttentionKernel::kAuto;
  // Recompute each layer's activations in backward instead of keeping them (HF's gradient_checkpointing):
  // one extra layer forward per layer, activations of one layer alive at a time.
  bool gradient_checkpointing = false;
  // Called between the pieces of a forward's work, before each decoder layer and each loss chunk (not in
  // backward, nor in a layer's recomputation). It may throw to abandon the pass: the trainer ends a
  // micro-batch early this way when a preemption signal arrives.
  std::function<void()> interruption_point;
};

struct LossResult {
  at::Tensor sum;     // fp32 scalar: sum of token cross-entropies over targets != -100 (differentiable)
  int64_t count = 0;  // number of those targets
};

// Keys and values of the tokens decoded so far (one sequence), per layer [length, kv_heads, head_dim].
struct KVCache {
  std::vector<at::Tensor> k, v;
  int64_t length = 0;
};

// Whether `requested` resolves to variable-length flash attention for this model on `device` in `dtype`
// (fails with the reason when flash was required and cannot run).
bool uses_flash_attention(const ModelConfig& config, AttentionKernel requested, const at::Device& device,
                          at::ScalarType dtype);

// Bytes per token that a training forward keeps for its backward (the memory plan's activation term).
// It mirrors what the decoder's autograd functions save, layer by layer, and tests/model measures it on
// the CPU: each norm's input, the normed input once per group of LoRA modules reading it (q/k/v, gate/up),
// LoRA's rank-r activation and, with dropout, its keep mask (1 bit per input element), the attention's
// tensors, and gate and up (SwiGLU's backward; a LoRA down projection recomputes its input from them).
// Layers before the first one with a LoRA module keep nothing (no gradient reaches them).
struct ActivationInput {
  std::vector<std::string> lora_modules;  // full names (model.layers.N.self_attn.q_proj), resolve_lora_targets
  int64_t lora_rank = 0;
  bool dropout = false;     // training with lora_dropout > 0
  int64_t dtype_bytes = 2;  // compute dtype
  bool flash = true;        // flash attention; else the math path ([heads, len, len] per sample)
  int64_t max_seqlen = 0;   // the math path's sample length (its probabilities grow with it)
};
struct ActivationBytes {
  int64_t per_token = 0;               // every layer's, plus the final norm and the loss rows
  int64_t checkpointed_per_token = 0;  // gradient checkpointing: layer inputs + the largest layer recomputed
};
ActivationBytes activation_bytes(const ModelConfig& config, const ActivationInput& in);

class Decoder {
 public:
  // `weights` (and `lora`, optional) must outlive the decoder and any autograd graph it builds.
  Decoder(WeightStore& weights, const LoraAdapter* lora = nullptr);

  const ModelConfig& config() const { return config_; }

  // Sum of cross-entropies (fp32, chunked: [T, vocab] fp32 logits are never materialised) and the count.
  LossResult loss(const PackedBatch& batch, const ForwardOptions& options = {}) const;
  // The same sum over a DeviceBatch (weighted rows). Host offsets are required unless the attention
  // resolves to flash; NEFTune is not available here (its noise is sized per sample on the host).
  at::Tensor loss_sum(const DeviceBatch& batch, const ForwardOptions& options = {}) const;
  // Whether `options.attention` resolves to flash attention on this decoder's device and dtype (fails as
  // the forward would when flash was required and cannot run).
  bool uses_flash(const ForwardOptions& options) const;
  // Full logits [T, vocab] in fp32 (tests, evaluation of short inputs).
  at::Tensor logits(const PackedBatch& batch, const ForwardOptions& options = {}) const;

  // Incremental decoding of one sequence: feeds `ids` [n] at positions cache.length.., extends the cache,
  // returns logits [n, vocab] fp32. Runs without autograd.
  at::Tensor decode(const at::Tensor& ids, KVCache& cache) const;

  // The rotary inverse frequencies [head_dim / 2] (fp32), llama3 scaling applied.
  at::Tensor rope_inv_freq() const { return inv_freq_; }

 private:
  struct Attn;  // how a layer attends: packed (cu_seqlens) or against a KV cache
  at::Tensor final_hidden(const PackedBatch& batch, const ForwardOptions& options) const;  // before the final norm
  // Embedding output x [T, d] through every layer, positions and layout on the device.
  at::Tensor run_layers(at::Tensor x, const at::Tensor& positions, std::shared_ptr<const detail::VarlenLayout> layout,
                        const ForwardOptions& options) const;
  // Sum of the (weighted) cross-entropies of the rows of x (before the final norm).
  at::Tensor head_loss(const at::Tensor& x, const at::Tensor& rows, const at::Tensor& targets,
                       const at::Tensor& row_weight, const ForwardOptions& options) const;
  at::Tensor layer(const at::Tensor& x, int64_t layer, const UnitWeights& w, const Attn& attn,
                   const ForwardOptions& options) const;
  void check_vocab_range(const at::Tensor& ids, const char* what) const;  // fails naming the bad id
  at::Tensor lora_anchor(int64_t layer) const;  // a trainable LoRA tensor of the layer, or undefined
  // x W^T (+ b) (+ LoRA) of the block linear `local`. With `up` given, the input is silu(x) * up (SwiGLU
  // into mlp.down_proj), formed here so that a LoRA down projection recomputes it instead of keeping it.
  at::Tensor linear(const at::Tensor& x, int64_t layer, const std::string& local, const UnitWeights& w,
                    const ForwardOptions& options, const at::Tensor& up = {}) const;
  at::Tensor rms_norm(const at::Tensor& x, int64_t unit, const std::string& name, const UnitWeights& w) const;

  WeightStore& weights_;
  const LoraAdapter* lora_;
  ModelConfig config_;
  at::Tensor inv_freq_;
  at::Tensor mask_bits_;  // LoRA dropout masks are kept as bits (model/lora_ops.h)
};

// HF's rotary frequencies for a config (fp32, on `device`).
at::Tensor rope_inv_freq(const ModelConfig& config, at::Device device = at::kCPU);

}  // namespace zlora::model
