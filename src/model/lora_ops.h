// LoRA's autograd ops (internal to the model library; the decoder calls them, tests/model checks them
// against plain autograd).
//
// What a LoRA linear keeps for its backward decides most of a training step's activation memory: per
// module it keeps its input x (a tensor the layer keeps anyway, or shares with its sibling modules: q, k
// and v read the same normed input, gate and up another) and the dropout's keep mask (1 bit per
// element), never the dropped-out input: backward recomputes that from x and the mask, bit for bit. The
// down projection's input, silu(gate) * up, is not kept either: swiglu_lora_linear recomputes it from
// gate and up, which the SwiGLU backward needs anyway. activation_bytes (decoder.h) counts what is kept.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <string>

#include "zlora/model/weights.h"

namespace zlora::model::detail {

// What a LoRA linear needs besides its tensors.
struct LoraCall {
  double scaling = 1;
  double dropout = 0;  // applied only when training
  bool training = false;
  c10::optional<at::Generator> generator;
  at::Tensor mask_bits;  // mask_bit_weights() on the compute device (needed with dropout)
};

// Keep masks are kept 8 to a byte: [8] uint8 {1, 2, ..., 128} on `device`, what pack_mask and unpack_mask
// weigh the bits with (built once, outside any CUDA graph capture: the decoder holds one).
at::Tensor mask_bit_weights(const at::Device& device);
// A bool mask as ceil(numel / 8) uint8 (element i is bit i % 8 of byte i / 8), and back to bool `sizes`.
// On CUDA the packing is one kernel (model/kernels.h) and the two uses below read the bits directly.
at::Tensor pack_mask(const at::Tensor& keep, const at::Tensor& bits);
at::Tensor unpack_mask(const at::Tensor& packed, at::IntArrayRef sizes, const at::Tensor& bits);
// t *= mask (in place), as t.mul_(bool mask) rounds it.
void apply_mask_(at::Tensor& t, const at::Tensor& packed, const at::Tensor& bits);

// LoRA's dropout of an input x: the dropped-out input and the keep mask (bool; undefined when p == 0).
// On CUDA with the device's default generator it is PyTorch's fused kernel (what nn.Dropout runs for
// PEFT: output and mask in one pass); elsewhere the mask is drawn with bernoulli_ on the generator.
struct DroppedInput {
  at::Tensor xin;
  at::Tensor keep;
  bool fused = false;  // drawn by the fused kernel (which fixes how replay_dropout rounds)
};
DroppedInput lora_dropout(const at::Tensor& x, double p, const c10::optional<at::Generator>& generator);

// The fused dropout kernel's scale for a keep probability 1 - p: 1 / (1 - p) rounded through the
// accumulate type (fp32 for every dtype but double), as that kernel and native_dropout_backward compute it.
double fused_dropout_scale(at::ScalarType dtype, double p);

// lora_dropout's xin again from x and its packed keep mask, bit for bit: the arithmetic of the kernel that
// drew it (x itself without a mask).
at::Tensor replay_dropout(const at::Tensor& x, const at::Tensor& packed, double p, bool fused, const at::Tensor& bits);

// PEFT's lora.Linear: x W^T + b + scaling * lora_B(lora_A(dropout(x))). W and b are frozen; backward
// re-acquires W from `store` (unit, weight_name). A and B are the fp32 masters (cast to x's dtype).
at::Tensor lora_linear(const at::Tensor& x, const at::Tensor& A, const at::Tensor& B, const at::Tensor& weight,
                       const at::Tensor& bias, WeightStore& store, int64_t unit, const std::string& weight_name,
                       const LoraCall& call);

// lora_linear(silu(gate) * up, ...): the SwiGLU MLP's down projection with its input recomputed in backward
// from gate and up (which it keeps: the decoder calls it when they require grad, so SwiGLU keeps them anyway).
at::Tensor swiglu_lora_linear(const at::Tensor& gate, const at::Tensor& up, const at::Tensor& A, const at::Tensor& B,
                              const at::Tensor& weight, const at::Tensor& bias, WeightStore& store, int64_t unit,
                              const std::string& weight_name, const LoraCall& call);

}  // namespace zlora::model::detail
