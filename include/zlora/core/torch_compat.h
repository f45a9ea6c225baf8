// The one place where LibTorch 1.13 (Debian, CPU) and 2.x (PyTorch wheels, CUDA) differ for zlora.
// Code elsewhere uses these names instead of testing versions itself.
#pragma once

#include <torch/version.h>

#define ZLORA_TORCH_AT_LEAST(major, minor) \
  (TORCH_VERSION_MAJOR > (major) || (TORCH_VERSION_MAJOR == (major) && TORCH_VERSION_MINOR >= (minor)))

namespace zlora::compat {

// True where at::Tensor::mT and at::_scaled_dot_product_* exist (2.0+).
constexpr bool kHasSdpa = ZLORA_TORCH_AT_LEAST(2, 0);

// at::_flash_attention_forward with cu_seqlens, a `scale` argument and a registered backward: CUDA
// builds of 2.1+. The macro guards the call; the constant lets code branch without #if.
#if defined(ZLORA_WITH_CUDA) && ZLORA_TORCH_AT_LEAST(2, 1)
#define ZLORA_HAS_VARLEN_FLASH 1
#else
#define ZLORA_HAS_VARLEN_FLASH 0
#endif
constexpr bool kHasVarlenFlash = ZLORA_HAS_VARLEN_FLASH;

// at::cuda::CUDAGraph::register_generator_state: a graph replays the draws of a generator other than the
// default one (the run's dropout generator). CUDA builds of 2.5+.
#if defined(ZLORA_WITH_CUDA) && ZLORA_TORCH_AT_LEAST(2, 5)
#define ZLORA_HAS_CUDA_GRAPHS 1
#else
#define ZLORA_HAS_CUDA_GRAPHS 0
#endif
constexpr bool kHasCudaGraphs = ZLORA_HAS_CUDA_GRAPHS;

}  // namespace zlora::compat
