// zlora_adapter_diff A B [TOLERANCE]: compares two adapter_model.safetensors files (or the directories
// that hold them) tensor by tensor, for tests that cannot run python: the cluster tests compare a
// multi-rank run with one process (the same global batch, where only the order of the floating-point
// reductions differs). For each tensor it prints the relative error ||a - b|| / ||b|| (F32 tensors;
// ||a - b|| alone where b is all zeros) and the largest element difference; then the maximum.
// Exit status: 0 when both hold the same tensor names, dtypes and shapes and every tensor's relative
// error is <= TOLERANCE (default 1e-5); 1 over the tolerance; 2 on a mismatch of names, dtypes or
// shapes, an unreadable file or bad arguments.
#include "zlora/model/safetensors.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <filesystem>
#include <string>

namespace {

std::filesystem::path adapter_file(const std::string& arg) {
  std::filesystem::path p(arg);
  if (std::filesystem::is_directory(p)) p /= "adapter_model.safetensors";
  return p;
}

int run(int argc, char** argv) {
  if (argc < 3 || argc > 4) {
    std::fprintf(stderr, "usage: %s A B [TOLERANCE]  (adapter_model.safetensors files or their directories)\n",
                 argv[0]);
    return 2;
  }
  double tol = 1e-5;
  if (argc == 4) {
    char* end = nullptr;
    tol = std::strtod(argv[3], &end);
    if (end == argv[3] || *end != '\0' || !(tol >= 0)) {
      std::fprintf(stderr, "adapter_diff: bad tolerance '%s'\n", argv[3]);
      return 2;
    }
  }
  const zlora::model::SafetensorsFile a(adapter_file(argv[1]));
  const zlora::model::SafetensorsFile b(adapter_file(argv[2]));
  const auto& ta = a.header().tensors;
  const auto& tb = b.header().tensors;
  if (ta.size() != tb.size()) {
    std::fprintf(stderr, "adapter_diff: %s has %zu tensors, %s has %zu\n", a.path().c_str(), ta.size(),
                 b.path().c_str(), tb.size());
    return 2;
  }
  double worst = 0;
  std::string worst_name;
  for (const auto& y : tb) {
    const auto* x = a.find(y.name);
    if (x == nullptr) {
      std::fprintf(stderr, "adapter_diff: %s has no tensor %s\n", a.path().c_str(), y.name.c_str());
      return 2;
    }
    if (x->dtype != zlora::model::DType::kF32 || y.dtype != zlora::model::DType::kF32 || x->shape != y.shape) {
      std::fprintf(stderr, "adapter_diff: %s: dtype or shape differ (%s vs %s; F32 only)\n", y.name.c_str(),
                   zlora::model::dtype_name(x->dtype), zlora::model::dtype_name(y.dtype));
      return 2;
    }
    const auto n = static_cast<size_t>(y.numel());
    const auto* pa = reinterpret_cast<const float*>(a.data(*x));
    const auto* pb = reinterpret_cast<const float*>(b.data(y));
    double num = 0, den = 0, max_abs = 0;
    for (size_t i = 0; i < n; ++i) {
      float fa, fb;  // the map need not be aligned for float
      std::memcpy(&fa, pa + i, sizeof fa);
      std::memcpy(&fb, pb + i, sizeof fb);
      const double d = double(fa) - double(fb);
      num += d * d;
      den += double(fb) * double(fb);
      max_abs = std::fmax(max_abs, std::fabs(d));
    }
    const double rel = den > 0 ? std::sqrt(num / den) : std::sqrt(num);
    if (!std::isfinite(rel)) {
      std::printf("%-60s rel err %s\n", y.name.c_str(), "not finite");
      return 1;
    }
    std::printf("%-60s rel err %.3e  max |a-b| %.3e\n", y.name.c_str(), rel, max_abs);
    if (rel >= worst) {
      worst = rel;
      worst_name = y.name;
    }
  }
  std::printf("max rel err %.3e (%s) over %zu tensors; tolerance %.1e: %s\n", worst, worst_name.c_str(), tb.size(),
              tol, worst <= tol ? "ok" : "OVER");
  return worst <= tol ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "adapter_diff: %s\n", e.what());
    return 2;
  }
}
