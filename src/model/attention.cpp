#include "attention.h"

#include <limits>

#include "zlora/core/error.h"
#include "zlora/core/torch_compat.h"

namespace zlora::model::detail {

bool use_flash(AttentionKernel requested, const at::Device& device, at::ScalarType dtype, int64_t head_dim) {
  if (requested == AttentionKernel::kMath) return false;
  std::string why;
  if (!compat::kHasVarlenFlash)
    why = "this LibTorch has no variable-length flash attention (needs >= 2.1 with CUDA)";
  else if (!device.is_cuda())
    why = "flash attention runs on CUDA devices only";
  else if (dtype != at::kBFloat16 && dtype != at::kHalf)
    why = "flash attention needs bf16 or fp16 compute";
  else if (head_dim % 8 != 0 || head_dim > 256)
    why = "flash attention needs head_dim a multiple of 8 and at most 256";
  if (why.empty()) return true;
  if (requested == AttentionKernel::kFlash) fail("flash_attn=fa2: {}; use flash_attn=auto or disabled", why);
  return false;
}

VarlenLayout make_layout(const std::vector<int64_t>& cu_seqlens, int64_t max_seqlen, bool flash,
                         const at::Device& device) {
  VarlenLayout l;
  l.cu_seqlens = cu_seqlens;
  l.max_seqlen = max_seqlen;
  l.flash = flash;
  if (flash) {
    std::vector<int32_t> cu(cu_seqlens.begin(), cu_seqlens.end());
    l.cu_seqlens_device = at::tensor(at::ArrayRef<int32_t>(cu), at::TensorOptions().dtype(at::kInt)).to(device);
  }
  return l;
}

// HF's eager math: scores in the compute dtype, softmax in fp32, probabilities cast back.
at::Tensor attention_dense(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double scale) {
  const int64_t tq = q.size(0), tk = k.size(0), heads = q.size(1), kv_heads = k.size(1);
  at::Tensor qh = q.transpose(0, 1);  // [H, Tq, hd]
  // GQA: head h reads kv head h / (H / Hkv), as HF's repeat_kv.
  at::Tensor kh = k.transpose(0, 1).repeat_interleave(heads / kv_heads, 0);
  at::Tensor vh = v.transpose(0, 1).repeat_interleave(heads / kv_heads, 0);
  at::Tensor scores = at::matmul(qh, kh.transpose(1, 2)) * scale;
  at::Tensor masked = at::ones({tq, tk}, q.options().dtype(at::kBool)).triu(1 + (tk - tq));
  scores = scores.masked_fill(masked, -std::numeric_limits<double>::infinity());
  at::Tensor probs = at::softmax(scores, -1, at::kFloat).to(q.scalar_type());
  return at::matmul(probs, vh).transpose(0, 1).reshape({tq, heads * q.size(2)});
}

namespace {

at::Tensor attention_flash(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const VarlenLayout& l,
                           double scale) {
#if ZLORA_HAS_VARLEN_FLASH
  // GQA is native to the kernel (Hkv divides H); its backward is registered with autograd.
  auto out = at::_flash_attention_forward(q, k, v, l.cu_seqlens_device, l.cu_seqlens_device, l.max_seqlen, l.max_seqlen,
                                          /*dropout_p=*/0.0, /*is_causal=*/true,
                                          /*return_debug_mask=*/false, scale);
  return std::get<0>(out).reshape({q.size(0), q.size(1) * q.size(2)});
#else
  (void)q, (void)k, (void)v, (void)l, (void)scale;
  fail("internal: flash attention requested in a build without it");
#endif
}

}  // namespace

at::Tensor attention_varlen(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const VarlenLayout& l,
                            double scale) {
  if (l.flash) return attention_flash(q, k, v, l, scale);
  const auto& cu = l.cu_seqlens;
  if (cu.size() == 2) return attention_dense(q, k, v, scale);
  std::vector<at::Tensor> outs;
  outs.reserve(cu.size() - 1);
  for (size_t i = 0; i + 1 < cu.size(); ++i) {
    const int64_t a = cu[i], b = cu[i + 1];
    outs.push_back(attention_dense(q.slice(0, a, b), k.slice(0, a, b), v.slice(0, a, b), scale));
  }
  return at::cat(outs, 0);
}

}  // namespace zlora::model::detail
