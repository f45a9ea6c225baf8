// Causal attention over packed samples (internal to the model library).
//
// Two implementations of one contract: q [T, H, hd], k/v [T, Hkv, hd] holding samples back to back at
// the offsets cu_seqlens; each token attends to the tokens of its own sample up to itself.
//   - math:  HF's eager arithmetic (scores in the compute dtype, softmax in fp32), one sample at a time.
//            Exact against transformers' eager path; every device, every dtype.
//   - flash: PyTorch's variable-length flash-attention kernel (CUDA, bf16/fp16, LibTorch >= 2.1): one
//            launch per layer for the whole packed batch, no padding, no [T, T] scores in memory.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <vector>

#include "zlora/model/decoder.h"

namespace zlora::model::detail {

// The packed layout of a batch as the kernels want it: host offsets for the math path, device int32
// offsets for flash (built once per forward, shared by every layer).
struct VarlenLayout {
  std::vector<int64_t> cu_seqlens;  // host, n+1
  at::Tensor cu_seqlens_device;     // int32 on the compute device (flash only; undefined otherwise)
  int64_t max_seqlen = 0;
  bool flash = false;  // which implementation the layers call
};

// Resolves the requested kernel for this device and dtype (auto: flash where it exists); fails with the
// reason when flash was required and cannot run.
bool use_flash(AttentionKernel requested, const at::Device& device, at::ScalarType dtype, int64_t head_dim);

VarlenLayout make_layout(const std::vector<int64_t>& cu_seqlens, int64_t max_seqlen, bool flash,
                         const at::Device& device);

// Causal attention of q [Tq, H, hd] over k/v [Tk, Hkv, hd]; query i sits at key position i + (Tk - Tq).
at::Tensor attention_dense(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double scale);

// Packed causal attention; returns [T, H * hd].
at::Tensor attention_varlen(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const VarlenLayout& layout,
                            double scale);

}  // namespace zlora::model::detail
