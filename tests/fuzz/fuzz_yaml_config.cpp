// Fuzz target: a YAML/JSON training config, parsed, typed through the train schema, validated.
// The only acceptable failure is zlora::Error (a message for the user); anything else is a bug.
#include "zlora/config/load.h"
#include "zlora/core/error.h"

#include <cstddef>
#include <cstdint>
#include <string>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string text(reinterpret_cast<const char*>(data), size);
  try {
    zlora::config::Resolved<zlora::config::TrainConfig> r;
    zlora::config::apply(zlora::config::train_schema(), r, zlora::config::parse_yaml_assignments(text, "fuzz.yaml"));
    zlora::config::validate(r);
  } catch (const zlora::Error&) {
  }
  return 0;
}
