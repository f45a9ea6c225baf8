// zlora's own CUDA kernels for the decoder's memory-bound ops (RMSNorm, RoPE, forward and backward; LoRA
// dropout masks kept as bits).
//
// Why: once a step runs as a CUDA graph (cuda_graphs) the GPU, not the CPU, bounds it, and these ops as
// ATen compositions make 8-12 passes over [T, d] in fp32 where one read and one write suffice. Each kernel
// reproduces the ATen composition's roundings (every intermediate of an elementwise op rounded to the
// tensor dtype where ATen rounds it, fp32 arithmetic, no FMA contraction: built with -fmad=false), so:
//   RoPE      equals the ATen ops bit for bit;
//   RMSNorm   differs only by the order of the row's fp32 sum of squares (ATen's reduction tree vs a
//             block reduction): rstd within a few fp32 ulps, outputs within one rounding of the dtype.
//
// Torch-free (raw pointers, an opaque stream) so that the library compiles wherever nvcc exists, CI
// included; the decoder calls it on CUDA tensors (model/decoder.cpp). Tensors are contiguous row-major.
// Each function returns nullptr on success or the CUDA error's description.
#pragma once

#include <cstdint>
#include <initializer_list>

namespace zlora::model::kernels {

enum class DType { kFloat32, kFloat16, kBFloat16 };

// y = w * cast(x_f32 * rstd), rstd = 1 / sqrt(mean(x_f32^2) + eps) per row (HF's Qwen2/Llama RMSNorm).
// x, y: [rows, cols]; w: [cols]; rstd: [rows] fp32 (saved for backward).
const char* rms_norm_forward(DType dtype, const void* x, const void* w, float eps, int64_t rows, int64_t cols, void* y,
                             float* rstd, void* stream);

// dx for the above given dy: gy = f32(cast(dy * w)), dx = cast((gy - x_f32 * (rstd^2 * mean(gy * x_f32))) * rstd).
const char* rms_norm_backward(DType dtype, const void* dy, const void* x, const void* w, const float* rstd,
                              int64_t rows, int64_t cols, void* dx, void* stream);

// HF's apply_rotary_pos_emb on x [tokens, heads, head_dim] with cos/sin [tokens, head_dim]:
//   forward   out = x * cos + rotate_half(x) * sin,          rotate_half(x)   = cat(-x2, x1)
//   backward  out = g * cos + rotate_half^T(g * sin),        rotate_half^T(y) = cat(y2, -y1)
const char* rope(DType dtype, bool backward, const void* x, const void* cos, const void* sin, int64_t tokens,
                 int64_t heads, int64_t head_dim, void* out, void* stream);

// LoRA dropout masks kept as bits between forward and backward: element i of a mask is bit i % 8 of byte
// i / 8 (model/lora_ops.h; the ATen fallback packs the same layout). One pass each instead of two ATen
// kernels with a byte-per-element temporary, and the unpacking fused into its two uses:
//   pack_mask_bits      bits[j] = sum_i keep[8j + i] << i over the n bools (a last partial byte padded with 0)
//   dropout_replay_bits out = x * mask * scale, computed as PyTorch's fused dropout kernel computes its
//                       output (fp32 (x * m) * scale, one rounding to the dtype): bit for bit that output
//   mask_bits_inplace   x = x * mask (in place), as ATen's x.mul_(bool mask) rounds it (x or a signed 0)
// tests/model's Lora.DropoutReplayEqualsTheForwardsDroppedInputBitForBit checks all three on the GPU
// against the fused dropout's own output and mask.
const char* pack_mask_bits(const bool* keep, int64_t n, uint8_t* bits, void* stream);
const char* dropout_replay_bits(DType dtype, const void* x, const uint8_t* bits, float scale, int64_t n, void* out,
                                void* stream);
const char* mask_bits_inplace(DType dtype, void* x, const uint8_t* bits, int64_t n, void* stream);

// The kernels below move 8 elements per thread: they need `n` (a count or a row length) a multiple of 8 and
// every tensor 16-byte aligned (the two above take that path when it holds, one element per thread else).
inline bool vec8_ok(int64_t n, std::initializer_list<const void*> ptrs) {
  if (n % 8 != 0) return false;
  for (const void* p : ptrs)
    if (reinterpret_cast<uintptr_t>(p) % 16 != 0) return false;
  return true;
}

// SwiGLU's product for the MLP's down projection ([T, intermediate]: the step's largest tensors), as ATen
// rounds at::silu(g) * u. With `bits` (non-null) it is that product's LoRA dropout replayed instead,
// dropout_replay_bits(silu(g) * u), so backward makes the down projection's dropped-out input in one pass.
const char* swiglu(DType dtype, const void* g, const void* u, const uint8_t* bits, float scale, int64_t n, void* out,
                   void* stream);

// LoRA's backward past its GEMMs, with dr [rows, rank] the gradient of lora_A's output and A [rank, cols]
// (the compute-dtype copy): the dropped-out input's gradient, masked, added onto the frozen GEMM's dx,
// one pass instead of a rank-r GEMM writing [rows, cols], a masking pass and an add:
//   lora_dx_add           dx += alpha * mask * (dr A)  with bits, as dx.add_(apply_mask_(dr @ A), alpha);
//                         dx += dr A                   without (bits null), as dx.addmm_(dr, A)
//   swiglu_lora_backward  the same sum d (not written), then SwiGLU's backward at the down projection's
//                         inputs g, u: d_gate = silu_backward(d * u, g), d_up = d * silu(g), as ATen rounds
//                         them. Replaces the four elementwise passes over [rows, intermediate] that follow.
// The rank-r dot products are summed in fp32 in another order than cuBLAS's: within one rounding of dr A.
const char* lora_dx_add(DType dtype, void* dx, const void* dr, const void* A, const uint8_t* bits, float alpha,
                        int64_t rows, int64_t cols, int64_t rank, void* stream);
const char* swiglu_lora_backward(DType dtype, const void* dx, const void* dr, const void* A, const uint8_t* bits,
                                 float alpha, const void* g, const void* u, int64_t rows, int64_t cols, int64_t rank,
                                 void* d_gate, void* d_up, void* stream);

}  // namespace zlora::model::kernels
