// The compute device of one rank and what the recipe asks of it: which device, which dtype, its name
// and peak memory for the logs, and the generator dropout and NEFTune draw from (saved in checkpoints).
// Every CUDA-only line of the recipe lives here, behind ZLORA_WITH_CUDA.
#pragma once

#include "zlora/config/args.h"

#include <ATen/core/Generator.h>
#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include <cstdint>
#include <optional>
#include <string>

namespace zlora::train {

// `choice`: cpu | cuda | auto. Ranks of a node share its GPUs round-robin by node-local rank.
at::Device resolve_device(const std::string& choice, int local_rank);
at::ScalarType compute_dtype(const config::TrainConfig& c);  // bf16 | fp16 | fp32
std::string device_name(const at::Device& d);                // "NVIDIA H100 80GB HBM3", "cpu"
std::optional<double> peak_vram_gib(const at::Device& d);    // allocator peak; nullopt on the CPU
// This process's peak resident memory (getrusage's ru_maxrss), in KiB.
long long peak_host_rss_kib();
// How the training collectives travel: "nccl (GPU buffers)", "mpi (host memory)", "mpi (GPU buffers
// staged through pinned host memory)".
std::string collective_transport(const std::string& backend, const at::Device& d);
// Bytes free on the device (the memory plan's limit); nullopt on the CPU or when CUDA cannot tell.
std::optional<int64_t> free_device_bytes(const at::Device& d);

// Why this LibTorch cannot run float16 matmuls on the CPU (LibTorch 1.13 lacks the kernels), or nullopt.
std::optional<std::string> cpu_half_unsupported();

// The generator for dropout and NEFTune, on the compute device (on CUDA the device's default generator,
// which PyTorch's fused dropout draws from), seeded with `seed`.
at::Generator make_generator(const at::Device& d, uint64_t seed);
std::string generator_state(const at::Generator& g);  // raw bytes, for a checkpoint
void set_generator_state(at::Generator& g, const std::string& bytes);

}  // namespace zlora::train
