// zlora's CUDA kernels (see include/zlora/model/kernels.h for the contract and why they exist).
// Compiled with -fmad=false: a*b+c must round like ATen's separate mul and add kernels.
#include "zlora/model/kernels.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

namespace zlora::model::kernels {
namespace {

// fp32 <-> storage type, rounding to nearest even as ATen's casts do.
template <typename T>
__device__ __forceinline__ float f32(T v);
template <>
__device__ __forceinline__ float f32<float>(float v) {
  return v;
}
template <>
__device__ __forceinline__ float f32<__half>(__half v) {
  return __half2float(v);
}
template <>
__device__ __forceinline__ float f32<__nv_bfloat16>(__nv_bfloat16 v) {
  return __bfloat162float(v);
}
template <typename T>
__device__ __forceinline__ T cast(float v);
template <>
__device__ __forceinline__ float cast<float>(float v) {
  return v;
}
template <>
__device__ __forceinline__ __half cast<__half>(float v) {
  return __float2half_rn(v);
}
template <>
__device__ __forceinline__ __nv_bfloat16 cast<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}
// One elementwise ATen op on T operands: computed in fp32, rounded to T, seen again as fp32.
template <typename T>
__device__ __forceinline__ float rounded(float v) {
  return f32<T>(cast<T>(v));
}

constexpr int kBlock = 256;

// Sum over the block (every thread gets the result).
__device__ float block_sum(float v) {
  __shared__ float warp_sums[kBlock / 32];
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) warp_sums[warp] = v;
  __syncthreads();
  float total = 0;
  for (int w = 0; w < kBlock / 32; ++w) total += warp_sums[w];
  __syncthreads();  // warp_sums may be reused by the next call
  return total;
}

template <typename T>
__global__ void rms_norm_forward_kernel(const T* __restrict__ x, const T* __restrict__ w, float eps, int64_t cols,
                                        T* __restrict__ y, float* __restrict__ rstd) {
  const T* xr = x + blockIdx.x * cols;
  T* yr = y + blockIdx.x * cols;
  float ss = 0;
  for (int64_t i = threadIdx.x; i < cols; i += kBlock) {
    const float v = f32(xr[i]);
    ss += v * v;
  }
  // HF: variance = x.pow(2).mean(-1) (ATen's mean: sum * (1 / n)); x * rsqrt(variance + eps).
  const float r = rsqrtf(block_sum(ss) * (1.0f / float(cols)) + eps);
  if (threadIdx.x == 0) rstd[blockIdx.x] = r;
  for (int64_t i = threadIdx.x; i < cols; i += kBlock) {
    const float normed = rounded<T>(f32(xr[i]) * r);  // .to(input_dtype)
    yr[i] = cast<T>(f32(w[i]) * normed);              // weight * hidden_states
  }
}

template <typename T>
__global__ void rms_norm_backward_kernel(const T* __restrict__ dy, const T* __restrict__ x, const T* __restrict__ w,
                                         const float* __restrict__ rstd, int64_t cols, T* __restrict__ dx) {
  const int64_t off = blockIdx.x * cols;
  const float r = rstd[blockIdx.x];
  float dot = 0;
  for (int64_t i = threadIdx.x; i < cols; i += kBlock) {
    const float gy = rounded<T>(f32(dy[off + i]) * f32(w[i]));  // (grad * weight) in the dtype, then fp32
    dot += gy * f32(x[off + i]);
  }
  const float c = (r * r) * (block_sum(dot) * (1.0f / float(cols)));
  for (int64_t i = threadIdx.x; i < cols; i += kBlock) {
    const float gy = rounded<T>(f32(dy[off + i]) * f32(w[i]));
    const float xf = f32(x[off + i]);
    dx[off + i] = cast<T>((gy - xf * c) * r);
  }
}

// One thread per element of x [tokens, heads, hd].
template <typename T>
__global__ void rope_kernel(bool backward, const T* __restrict__ x, const T* __restrict__ cos,
                            const T* __restrict__ sin, int64_t n, int64_t heads, int64_t hd, T* __restrict__ out) {
  const int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (e >= n) return;
  const int64_t i = e % hd, t = e / (hd * heads), half = hd / 2;
  const int64_t row = e - i;                         // start of this head's vector
  const int64_t j = i < half ? i + half : i - half;  // the partner element rotate_half reads
  const float c = f32(cos[t * hd + i]);
  const float a = rounded<T>(f32(x[e]) * c);
  float b;
  if (!backward) {
    // rotate_half(x)[i] = i < half ? -x[i + half] : x[i - half]; times sin[i].
    const float partner = f32(x[row + j]);
    b = rounded<T>((i < half ? -partner : partner) * f32(sin[t * hd + i]));
  } else {
    // rotate_half^T(g * sin)[i] = i < half ? (g*sin)[i + half] : -(g*sin)[i - half].
    const float gs = rounded<T>(f32(x[row + j]) * f32(sin[t * hd + j]));
    b = i < half ? gs : -gs;
  }
  out[e] = cast<T>(a + b);
}

// One thread per byte of bits: reads its 8 bools, writes one byte.
__global__ void pack_mask_bits_kernel(const bool* __restrict__ keep, int64_t n, uint8_t* __restrict__ bits) {
  const int64_t j = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (j * 8 >= n) return;
  unsigned b = 0;
  for (int i = 0; i < 8; ++i) {
    const int64_t e = j * 8 + i;
    if (e < n && keep[e]) b |= 1u << i;
  }
  bits[j] = uint8_t(b);
}

__device__ __forceinline__ float mask_bit(const uint8_t* __restrict__ bits, int64_t e) {
  return float((bits[e >> 3] >> (e & 7)) & 1u);
}

// One thread per element.
template <typename T>
__global__ void dropout_replay_bits_kernel(const T* __restrict__ x, const uint8_t* __restrict__ bits, float scale,
                                           int64_t n, T* __restrict__ out) {
  const int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (e >= n) return;
  out[e] = cast<T>(f32(x[e]) * mask_bit(bits, e) * scale);  // the fused kernel's src * mask * scale
}

template <typename T>
__global__ void mask_bits_inplace_kernel(T* __restrict__ x, const uint8_t* __restrict__ bits, int64_t n) {
  const int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (e >= n) return;
  x[e] = cast<T>(f32(x[e]) * mask_bit(bits, e));
}

unsigned blocks_for(int64_t n) { return unsigned((n + kBlock - 1) / kBlock); }

const char* status() {
  const cudaError_t e = cudaGetLastError();
  return e == cudaSuccess ? nullptr : cudaGetErrorString(e);
}

template <typename F>
const char* dispatch(DType dtype, F&& f) {
  switch (dtype) {
    case DType::kFloat32:
      f(float{});
      break;
    case DType::kFloat16:
      f(__half{});
      break;
    case DType::kBFloat16:
      f(__nv_bfloat16{});
      break;
  }
  return status();
}

}  // namespace

const char* rms_norm_forward(DType dtype, const void* x, const void* w, float eps, int64_t rows, int64_t cols, void* y,
                             float* rstd, void* stream) {
  if (rows == 0) return nullptr;
  return dispatch(dtype, [&](auto tag) {
    using T = decltype(tag);
    rms_norm_forward_kernel<T><<<dim3(unsigned(rows)), kBlock, 0, static_cast<cudaStream_t>(stream)>>>(
        static_cast<const T*>(x), static_cast<const T*>(w), eps, cols, static_cast<T*>(y), rstd);
  });
}

const char* rms_norm_backward(DType dtype, const void* dy, const void* x, const void* w, const float* rstd,
                              int64_t rows, int64_t cols, void* dx, void* stream) {
  if (rows == 0) return nullptr;
  return dispatch(dtype, [&](auto tag) {
    using T = decltype(tag);
    rms_norm_backward_kernel<T><<<dim3(unsigned(rows)), kBlock, 0, static_cast<cudaStream_t>(stream)>>>(
        static_cast<const T*>(dy), static_cast<const T*>(x), static_cast<const T*>(w), rstd, cols, static_cast<T*>(dx));
  });
}

const char* rope(DType dtype, bool backward, const void* x, const void* cos, const void* sin, int64_t tokens,
                 int64_t heads, int64_t head_dim, void* out, void* stream) {
  const int64_t n = tokens * heads * head_dim;
  if (n == 0) return nullptr;
  const int threads = 256;
  const unsigned blocks = unsigned((n + threads - 1) / threads);
  return dispatch(dtype, [&](auto tag) {
    using T = decltype(tag);
    rope_kernel<T><<<blocks, threads, 0, static_cast<cudaStream_t>(stream)>>>(
        backward, static_cast<const T*>(x), static_cast<const T*>(cos), static_cast<const T*>(sin), n, heads, head_dim,
        static_cast<T*>(out));
  });
}

const char* pack_mask_bits(const bool* keep, int64_t n, uint8_t* bits, void* stream) {
  if (n == 0) return nullptr;
  pack_mask_bits_kernel<<<blocks_for((n + 7) / 8), kBlock, 0, static_cast<cudaStream_t>(stream)>>>(keep, n, bits);
  return status();
}

const char* dropout_replay_bits(DType dtype, const void* x, const uint8_t* bits, float scale, int64_t n, void* out,
                                void* stream) {
  if (n == 0) return nullptr;
  return dispatch(dtype, [&](auto tag) {
    using T = decltype(tag);
    dropout_replay_bits_kernel<T><<<blocks_for(n), kBlock, 0, static_cast<cudaStream_t>(stream)>>>(
        static_cast<const T*>(x), bits, scale, n, static_cast<T*>(out));
  });
}

const char* mask_bits_inplace(DType dtype, void* x, const uint8_t* bits, int64_t n, void* stream) {
  if (n == 0) return nullptr;
  return dispatch(dtype, [&](auto tag) {
    using T = decltype(tag);
    mask_bits_inplace_kernel<T>
        <<<blocks_for(n), kBlock, 0, static_cast<cudaStream_t>(stream)>>>(static_cast<T*>(x), bits, n);
  });
}

}  // namespace zlora::model::kernels
