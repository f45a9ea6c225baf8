// Fuzz target: a local data file (a JSON array or JSON Lines) read through the dataset readers and
// converted with the alpaca and sharegpt mappings LLaMA-Factory users write, as load_datasets does for
// each file. Only zlora::Error may escape; every accepted row must be a well-formed conversation.
#include "fuzz_util.h"
#include "zlora/core/error.h"
#include "zlora/data/dataset.h"
#include "zlora/data/json_file.h"

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

namespace {

// Data files can be large, but the fuzzer's inputs stay far below 1 MiB; the cap bounds the work.
constexpr size_t kMaxInput = size_t(1) << 20;

// The mappings LLaMA-Factory users write: defaults, every alpaca column, and OpenAI-style messages.
constexpr const char* kInfo = R"({
    "alpaca": {"file_name": "a.json"},
    "alpaca_full": {"file_name": "b.jsonl", "columns": {"prompt": "instruction", "query": "input",
        "response": "output", "system": "system", "history": "history"}},
    "sharegpt": {"file_name": "c.json", "formatting": "sharegpt"},
    "sharegpt_system": {"file_name": "d.json", "formatting": "sharegpt",
        "columns": {"messages": "conversations", "system": "system"}},
    "openai": {"file_name": "e.jsonl", "formatting": "sharegpt", "columns": {"messages": "messages"},
        "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                 "assistant_tag": "assistant", "system_tag": "system"}}
})";

// The mappings, built once through the real dataset_info.json reader.
const zlora::data::DatasetRegistry& registry() {
  static const zlora::data::DatasetRegistry reg =
      zlora::data::DatasetRegistry::from_json(kInfo, "/nonexistent/fuzz-data", "fuzz/dataset_info.json");
  return reg;
}

// What the templates rely on: user/observation turns at even positions, assistant/function turns at odd
// ones, an even count ending with the response.
void check_conversation(const zlora::data::Conversation& c) {
  using zlora::data::Role;
  if (c.messages.empty() || c.messages.size() % 2 != 0) std::abort();
  for (size_t k = 0; k < c.messages.size(); ++k) {
    Role r = c.messages[k].role;
    bool prompt_side = r == Role::User || r == Role::Observation;
    bool response_side = r == Role::Assistant || r == Role::Function;
    if (k % 2 == 0 ? !prompt_side : !response_side) std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > kMaxInput) return 0;
  std::string_view text(reinterpret_cast<const char*>(data), size);
  const auto& reg = registry();
  std::vector<nlohmann::json> rows;
  try {
    rows = zlora::data::parse_json_rows(text, "fuzz/data.jsonl");
  } catch (const zlora::Error& e) {
    zlora::fuzz::refused(e);
    return 0;
  }
  for (const std::string& name : reg.names()) {
    const zlora::data::DatasetAttr& attr = reg.get(name);
    try {
      zlora::data::check_columns(attr, rows, "fuzz/data.jsonl");
    } catch (const zlora::Error& e) {
      // load_datasets stops at this file; the rows are still converted below, since convert_row must
      // survive any row whatever the columns say.
      zlora::fuzz::refused(e);
    }
    size_t converted = 0;
    for (size_t i = 0; i < rows.size(); ++i) {
      zlora::data::Conversation c;
      try {
        if (zlora::data::convert_row(attr, rows[i], c, "fuzz row " + std::to_string(i))) {
          check_conversation(c);
          ++converted;
        }
      } catch (const zlora::Error& e) {
        zlora::fuzz::refused(e);
      }
    }
    if (zlora::fuzz::verbose())
      std::fprintf(stderr, "%s: %zu of %zu rows converted\n", name.c_str(), converted, rows.size());
  }
  return 0;
}
