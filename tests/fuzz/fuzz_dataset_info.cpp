// Fuzz target: a dataset_info.json (the registry of dataset names, files, formats, column and tag
// mappings). Only zlora::Error may escape; every accepted entry must be usable by the converters.
#include "fuzz_util.h"
#include "zlora/core/error.h"
#include "zlora/data/dataset.h"
#include "zlora/data/json_file.h"

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace {

// A registry is a few KB; 1 MiB bounds the work per input.
constexpr size_t kMaxInput = size_t(1) << 20;

// Rows in the shapes the default and common custom mappings read, and a few malformed ones.
constexpr const char* kRows = R"([
    {"instruction": "Say hi", "input": "", "output": "hi", "system": "Be brief.", "history": [["q", "a"]]},
    {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]},
    {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"},
                  {"role": "assistant", "content": "a"}]},
    {"instruction": null, "output": 3}, [], "text"
])";

const std::vector<nlohmann::json>& sample_rows() {
  static const std::vector<nlohmann::json> rows = zlora::data::parse_json_rows(kRows, "fuzz/rows.json");
  return rows;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > kMaxInput) return 0;
  std::string_view text(reinterpret_cast<const char*>(data), size);
  std::optional<zlora::data::DatasetRegistry> reg;
  try {
    reg.emplace(zlora::data::DatasetRegistry::from_json(text, "/nonexistent/fuzz-data", "fuzz/dataset_info.json"));
  } catch (const zlora::Error& e) {
    zlora::fuzz::refused(e);
    return 0;
  }
  zlora::fuzz::accepted("dataset_info");
  for (const std::string& name : reg->names()) {
    // Entries are validated when a run names them: a bad one is an error for that name only.
    zlora::data::DatasetAttr a;
    try {
      a = reg->get(name);
    } catch (const zlora::Error& e) {
      zlora::fuzz::refused(e);
      continue;
    }
    if (a.name != name) std::abort();
    if (a.formatting != "alpaca" && a.formatting != "sharegpt") std::abort();
    // convert_row looks these tags up unconditionally for sharegpt.
    if (a.formatting == "sharegpt")
      for (const char* tag :
           {"role_tag", "content_tag", "user_tag", "assistant_tag", "observation_tag", "function_tag", "system_tag"})
        if (!a.tags.count(tag)) std::abort();
    try {
      zlora::data::check_columns(a, sample_rows(), "fuzz/rows.json");
    } catch (const zlora::Error&) {
    }
    for (const auto& row : sample_rows()) {
      zlora::data::Conversation c;
      try {
        if (zlora::data::convert_row(a, row, c, "fuzz row") && (c.messages.empty() || c.messages.size() % 2))
          std::abort();
      } catch (const zlora::Error&) {
      }
    }
  }
  // An undefined name is an error that lists the defined ones, never a crash.
  try {
    reg->get("no such dataset \xE4\xBD\xA0");
    std::abort();
  } catch (const zlora::Error&) {
  }
  return 0;
}
