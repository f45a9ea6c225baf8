// Fuzz target: a DeepSpeed JSON mapped onto a valid training config, then validated.
#include "zlora/config/load.h"
#include "zlora/core/error.h"

#include <cstddef>
#include <cstdint>
#include <string>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string text(reinterpret_cast<const char*>(data), size);
  try {
    auto r = zlora::config::parse(zlora::config::train_schema(), {"--model_name_or_path", "m", "--dataset", "d"});
    zlora::config::apply_deepspeed_json_text(r, text, "fuzz.json");
    zlora::config::validate(r);
  } catch (const zlora::Error&) {
  }
  return 0;
}
