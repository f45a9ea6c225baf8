// Fuzz target: arbitrary bytes as a safetensors file (header parse + validation), and as config.json.
// Only zlora::Error may escape the parsers; every accepted header must address bytes inside the input.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "zlora/core/error.h"
#include "zlora/model/config.h"
#include "zlora/model/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    auto h = zlora::model::parse_safetensors_header(data, size, "fuzz.safetensors");
    for (const auto& t : h.tensors) {
      // The invariants the readers rely on before touching the map.
      if (t.end < t.begin || h.data_start + t.end > size) std::abort();
      if (uint64_t(t.numel()) * zlora::model::dtype_size(t.dtype) != t.nbytes()) std::abort();
    }
  } catch (const zlora::Error&) {
  }
  try {
    zlora::model::parse_model_config(std::string(reinterpret_cast<const char*>(data), size), "fuzz/config.json");
  } catch (const zlora::Error&) {
  }
  return 0;
}
