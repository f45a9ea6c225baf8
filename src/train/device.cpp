#include "device.h"

#include <sys/resource.h>

#include "zlora/core/error.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/cuda.h>
#include <torch/torch.h>

#ifdef ZLORA_WITH_CUDA
#include <ATen/cuda/CUDAGeneratorImpl.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <cuda_runtime.h>
#endif

#include <cstring>

namespace zlora::train {

at::Device resolve_device(const std::string& choice, int local_rank) {
  const bool have_cuda = torch::cuda::is_available();
  if (choice == "cuda" && !have_cuda)
    fail("device cuda was asked for, but {} (use --device cpu or auto)",
         at::hasCUDA() ? "no GPU is visible to this process" : "this zlora was built without CUDA");
  if (choice == "cpu" || !have_cuda) return at::Device(at::kCPU);
  // Ranks of one node share its GPUs round-robin: one GPU per rank under NCCL, several ranks on one
  // GPU with the MPI backend (tests, debugging).
  const int count = static_cast<int>(torch::cuda::device_count());
  return at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(local_rank % count));
}

at::ScalarType compute_dtype(const config::TrainConfig& c) {
  if (c.training.bf16) return at::kBFloat16;
  if (c.training.fp16) return at::kHalf;
  return at::kFloat;
}

std::string device_name(const at::Device& d) {
#ifdef ZLORA_WITH_CUDA
  if (d.is_cuda()) {
    cudaDeviceProp prop{};
    if (cudaGetDeviceProperties(&prop, d.index()) == cudaSuccess) return prop.name;
  }
#endif
  return d.is_cuda() ? "cuda" : "cpu";
}

std::optional<double> peak_vram_gib(const at::Device& d) {
#ifdef ZLORA_WITH_CUDA
  if (d.is_cuda()) {
    auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(d.index());
    return double(stats.allocated_bytes[0].peak) / double(1ull << 30);
  }
#endif
  return std::nullopt;
}

long long peak_host_rss_kib() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<long long>(ru.ru_maxrss);  // Linux: KiB
}

std::string collective_transport(const std::string& backend, const at::Device& d) {
  if (backend == "nccl") return "nccl (GPU buffers)";
  return d.is_cuda() ? "mpi (GPU buffers staged through pinned host memory)" : "mpi (host memory)";
}

std::optional<int64_t> free_device_bytes(const at::Device& d) {
#ifdef ZLORA_WITH_CUDA
  if (d.is_cuda()) {
    size_t free_b = 0, total_b = 0;
    if (cudaMemGetInfo(&free_b, &total_b) == cudaSuccess) return static_cast<int64_t>(free_b);
  }
#endif
  (void)d;
  return std::nullopt;
}

// Asking the library beats guessing from its version: LibTorch 1.13's CPU kernels have no float16
// matmul ("addmm_impl_cpu_" not implemented for 'Half'); later versions have.
std::optional<std::string> cpu_half_unsupported() {
  try {
    const at::Tensor a = at::ones({2, 2}, at::TensorOptions().dtype(at::kHalf));
    (void)at::softmax(at::mm(a, a), -1);
    return std::nullopt;
  } catch (const c10::Error& e) {
    const std::string what = e.what_without_backtrace();
    return what.substr(0, what.find('\n'));
  }
}

at::Generator make_generator(const at::Device& d, uint64_t seed) {
#ifdef ZLORA_WITH_CUDA
  if (d.is_cuda()) {
    at::Generator g = at::cuda::detail::getDefaultCUDAGenerator(d.index());
    g.set_current_seed(seed);
    return g;
  }
#endif
  return at::make_generator<at::CPUGeneratorImpl>(seed);
}

std::string generator_state(const at::Generator& g) {
  at::Tensor s = g.get_state();
  return std::string(static_cast<const char*>(s.data_ptr()), static_cast<size_t>(s.numel()));
}

void set_generator_state(at::Generator& g, const std::string& bytes) {
  at::Tensor s = at::empty({static_cast<int64_t>(bytes.size())}, at::kByte);
  std::memcpy(s.data_ptr(), bytes.data(), bytes.size());
  g.set_state(s);
}

}  // namespace zlora::train
