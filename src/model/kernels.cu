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

// ---- eight elements per thread -----------------------------------------------------------------
// The memory-bound kernels below move 8 consecutive elements per thread: one byte of a bit mask, one
// 16-byte load of bf16/fp16 (two of fp32). Scalar 2-byte accesses reach about half of the memory
// bandwidth (measured on an H200: 1.5 TB/s against ATen's vectorized kernels' 3.4). Callers check
// vec8_ok (kernels.h): counts and row lengths a multiple of 8, pointers 16-byte aligned.
template <typename T>
struct alignas(16) Vec8 {
  T v[8];
};
template <typename T>
__device__ __forceinline__ void load8(const T* __restrict__ p, float (&f)[8]) {
  const Vec8<T>* q = reinterpret_cast<const Vec8<T>*>(p);
  if constexpr (sizeof(T) == 2) {
    const Vec8<T> r = *q;
#pragma unroll
    for (int i = 0; i < 8; ++i) f[i] = f32(r.v[i]);
  } else {
    const float4 a = reinterpret_cast<const float4*>(p)[0], b = reinterpret_cast<const float4*>(p)[1];
    f[0] = a.x, f[1] = a.y, f[2] = a.z, f[3] = a.w, f[4] = b.x, f[5] = b.y, f[6] = b.z, f[7] = b.w;
  }
}
template <typename T>
__device__ __forceinline__ void store8(T* __restrict__ p, const float (&f)[8]) {
  if constexpr (sizeof(T) == 2) {
    Vec8<T> r;
#pragma unroll
    for (int i = 0; i < 8; ++i) r.v[i] = cast<T>(f[i]);
    *reinterpret_cast<Vec8<T>*>(p) = r;
  } else {
    reinterpret_cast<float4*>(p)[0] = make_float4(f[0], f[1], f[2], f[3]);
    reinterpret_cast<float4*>(p)[1] = make_float4(f[4], f[5], f[6], f[7]);
  }
}

// One thread per element (any n, any alignment).
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

// The same two, 8 elements (one mask byte) per thread: out = x * mask * scale, which with scale 1 is
// x * mask exactly (the masking, in place: out may be x, hence no __restrict__).
template <typename T>
__global__ void mask_bits_vec8(const T* x, const uint8_t* __restrict__ bits, float scale, int64_t n8, T* out) {
  const int64_t j = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (j >= n8) return;
  float f[8];
  load8(x + 8 * j, f);
  const unsigned b = bits[j];
#pragma unroll
  for (int i = 0; i < 8; ++i) f[i] = f[i] * float((b >> i) & 1u) * scale;
  store8(out + 8 * j, f);
}

// ---- SwiGLU ------------------------------------------------------------------------------------
// ATen's silu and silu_backward, in fp32 (opmath) as ActivationSiluKernel.cu writes them.
__device__ __forceinline__ float silu_f32(float g) { return g / (1.0f + expf(-g)); }
__device__ __forceinline__ float silu_backward_f32(float dy, float g) {
  const float s = 1.0f / (1.0f + expf(-g));
  return dy * s * (1.0f + g * (1.0f - s));
}
// at::silu(g) * u: silu rounded to T, the product rounded to T.
template <typename T>
__device__ __forceinline__ float swiglu_f32(float g, float u) {
  return rounded<T>(rounded<T>(silu_f32(g)) * u);
}

// out = silu(g) * u; with bits, out = dropout_replay(silu(g) * u): the down projection's dropped-out input
// again, without writing silu(g) * u first.
template <typename T, bool kMask>
__global__ void swiglu_vec8(const T* __restrict__ g, const T* __restrict__ u, const uint8_t* __restrict__ bits,
                            float scale, int64_t n8, T* __restrict__ out) {
  const int64_t j = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (j >= n8) return;
  float a[8], b[8];
  load8(g + 8 * j, a);
  load8(u + 8 * j, b);
  const unsigned m = kMask ? bits[j] : 0xffu;
#pragma unroll
  for (int i = 0; i < 8; ++i) {
    const float x = swiglu_f32<T>(a[i], b[i]);
    a[i] = kMask ? x * float((m >> i) & 1u) * scale : x;
  }
  store8(out + 8 * j, a);
}

// ---- LoRA's rank-r backward ----------------------------------------------------------------------
// dr [rows, r] (the gradient of lora_A's output), A [r, cols]: each thread makes 8 consecutive columns of
// kRows rows, reading its 8 columns of A once per row from L1 (A is at most a few hundred KB).
constexpr int kRows = 8;

// sum_k dr[t, k] A[k, j..j+7] in fp32 (the GEMM cuBLAS would run sums in another order: within a rounding).
template <typename T>
__device__ __forceinline__ void rank_r_dot8(const T* __restrict__ dr_row, const T* __restrict__ A, int rank,
                                            int64_t cols, int64_t j0, float (&dot)[8]) {
#pragma unroll
  for (int i = 0; i < 8; ++i) dot[i] = 0;
  for (int k = 0; k < rank; ++k) {
    const float d = f32(dr_row[k]);
    float a[8];
    load8(A + k * cols + j0, a);
#pragma unroll
    for (int i = 0; i < 8; ++i) dot[i] += d * a[i];
  }
}

// dx + alpha * lora with lora = mask * round(dr A) (bits) or dr A unrounded (no bits: dx.addmm_(dr, A)),
// the value the ATen composition leaves in dx: dx.add_(mask_(dr @ A), alpha) or dx.addmm_(dr, A).
template <typename T>
__device__ __forceinline__ void add_lora8(const float (&dot)[8], const uint8_t* __restrict__ bits, int64_t e0,
                                          float alpha, float (&dx)[8]) {
  if (bits) {
    const unsigned m = bits[e0 >> 3];
#pragma unroll
    for (int i = 0; i < 8; ++i) dx[i] = rounded<T>(dx[i] + alpha * (rounded<T>(dot[i]) * float((m >> i) & 1u)));
  } else {
#pragma unroll
    for (int i = 0; i < 8; ++i) dx[i] = rounded<T>(dx[i] + dot[i]);
  }
}

template <typename T>
__global__ void lora_dx_add_kernel(T* __restrict__ dx, const T* __restrict__ dr, const T* __restrict__ A,
                                   const uint8_t* __restrict__ bits, float alpha, int64_t rows, int64_t cols,
                                   int rank) {
  const int64_t j0 = 8 * (blockIdx.x * int64_t(blockDim.x) + threadIdx.x);
  if (j0 >= cols) return;
  const int64_t t1 = min(rows, int64_t(blockIdx.y + 1) * kRows);
  for (int64_t t = int64_t(blockIdx.y) * kRows; t < t1; ++t) {
    float dot[8], d[8];
    rank_r_dot8(dr + t * rank, A, rank, cols, j0, dot);
    const int64_t e0 = t * cols + j0;
    load8(dx + e0, d);
    add_lora8<T>(dot, bits, e0, alpha, d);
    store8(dx + e0, d);
  }
}

// The down projection's backward past its GEMM: d = dx + alpha * lora (as lora_dx_add), then SwiGLU's
// backward of d at (g, u): d_gate = silu_backward(d * u, g), d_up = d * silu(g), each as ATen rounds it.
template <typename T>
__global__ void swiglu_lora_backward_kernel(const T* __restrict__ dx, const T* __restrict__ dr, const T* __restrict__ A,
                                            const uint8_t* __restrict__ bits, float alpha, const T* __restrict__ g,
                                            const T* __restrict__ u, int64_t rows, int64_t cols, int rank,
                                            T* __restrict__ d_gate, T* __restrict__ d_up) {
  const int64_t j0 = 8 * (blockIdx.x * int64_t(blockDim.x) + threadIdx.x);
  if (j0 >= cols) return;
  const int64_t t1 = min(rows, int64_t(blockIdx.y + 1) * kRows);
  for (int64_t t = int64_t(blockIdx.y) * kRows; t < t1; ++t) {
    float dot[8], d[8], gv[8], uv[8];
    rank_r_dot8(dr + t * rank, A, rank, cols, j0, dot);
    const int64_t e0 = t * cols + j0;
    load8(dx + e0, d);
    add_lora8<T>(dot, bits, e0, alpha, d);
    load8(g + e0, gv);
    load8(u + e0, uv);
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      const float du = rounded<T>(d[i] * rounded<T>(silu_f32(gv[i])));
      d[i] = silu_backward_f32(rounded<T>(d[i] * uv[i]), gv[i]);
      uv[i] = du;
    }
    store8(d_gate + e0, d);
    store8(d_up + e0, uv);
  }
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
  const bool vec = vec8_ok(n, {x, out});
  return dispatch(dtype, [&](auto tag) {
    using T = decltype(tag);
    auto s = static_cast<cudaStream_t>(stream);
    if (vec)
      mask_bits_vec8<T>
          <<<blocks_for(n / 8), kBlock, 0, s>>>(static_cast<const T*>(x), bits, scale, n / 8, static_cast<T*>(out));
    else
      dropout_replay_bits_kernel<T>
          <<<blocks_for(n), kBlock, 0, s>>>(static_cast<const T*>(x), bits, scale, n, static_cast<T*>(out));
  });
}

const char* mask_bits_inplace(DType dtype, void* x, const uint8_t* bits, int64_t n, void* stream) {
  if (n == 0) return nullptr;
  const bool vec = vec8_ok(n, {x});
  return dispatch(dtype, [&](auto tag) {
    using T = decltype(tag);
    auto s = static_cast<cudaStream_t>(stream);
    if (vec)
      mask_bits_vec8<T><<<blocks_for(n / 8), kBlock, 0, s>>>(static_cast<const T*>(x), bits, 1.0f, n / 8,
                                                               static_cast<T*>(x));
    else
      mask_bits_inplace_kernel<T><<<blocks_for(n), kBlock, 0, s>>>(static_cast<T*>(x), bits, n);
  });
}

const char* swiglu(DType dtype, const void* g, const void* u, const uint8_t* bits, float scale, int64_t n, void* out,
                   void* stream) {
  if (n == 0) return nullptr;
  if (!vec8_ok(n, {g, u, out})) return "swiglu: needs a multiple of 8 elements and 16-byte aligned tensors";
  return dispatch(dtype, [&](auto tag) {
    using T = decltype(tag);
    auto s = static_cast<cudaStream_t>(stream);
    const T *gp = static_cast<const T*>(g), *up = static_cast<const T*>(u);
    if (bits)
      swiglu_vec8<T, true><<<blocks_for(n / 8), kBlock, 0, s>>>(gp, up, bits, scale, n / 8, static_cast<T*>(out));
    else
      swiglu_vec8<T, false><<<blocks_for(n / 8), kBlock, 0, s>>>(gp, up, bits, scale, n / 8, static_cast<T*>(out));
  });
}

namespace {
dim3 rank_r_grid(int64_t rows, int64_t cols) {
  return dim3(blocks_for(cols / 8), unsigned((rows + kRows - 1) / kRows));
}
}  // namespace

const char* lora_dx_add(DType dtype, void* dx, const void* dr, const void* A, const uint8_t* bits, float alpha,
                        int64_t rows, int64_t cols, int64_t rank, void* stream) {
  if (rows == 0 || cols == 0) return nullptr;
  if (!vec8_ok(cols, {dx, A}) || rank < 1) return "lora_dx_add: needs cols a multiple of 8, 16-byte aligned dx and A";
  return dispatch(dtype, [&](auto tag) {
    using T = decltype(tag);
    lora_dx_add_kernel<T><<<rank_r_grid(rows, cols), kBlock, 0, static_cast<cudaStream_t>(stream)>>>(
        static_cast<T*>(dx), static_cast<const T*>(dr), static_cast<const T*>(A), bits, alpha, rows, cols, int(rank));
  });
}

const char* swiglu_lora_backward(DType dtype, const void* dx, const void* dr, const void* A, const uint8_t* bits,
                                 float alpha, const void* g, const void* u, int64_t rows, int64_t cols, int64_t rank,
                                 void* d_gate, void* d_up, void* stream) {
  if (rows == 0 || cols == 0) return nullptr;
  if (!vec8_ok(cols, {dx, A, g, u, d_gate, d_up}) || rank < 1)
    return "swiglu_lora_backward: needs cols a multiple of 8 and 16-byte aligned tensors";
  return dispatch(dtype, [&](auto tag) {
    using T = decltype(tag);
    swiglu_lora_backward_kernel<T><<<rank_r_grid(rows, cols), kBlock, 0, static_cast<cudaStream_t>(stream)>>>(
        static_cast<const T*>(dx), static_cast<const T*>(dr), static_cast<const T*>(A), bits, alpha,
        static_cast<const T*>(g), static_cast<const T*>(u), rows, cols, int(rank), static_cast<T*>(d_gate),
        static_cast<T*>(d_up));
  });
}

}  // namespace zlora::model::kernels
