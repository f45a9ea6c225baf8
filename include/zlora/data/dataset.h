// The dataset registry: LLaMA-Factory's `dataset_info.json` and its local data files (a JSON array or
// JSON Lines), converted to conversations the way data/converter.py does for `alpaca` and `sharegpt`.
#pragma once

#include "zlora/config/args.h"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace zlora::data {

enum class Role { User, Assistant, Observation, Function, System };
const char* role_name(Role r);

struct Message {
  Role role;
  std::string content;
};

// One row after conversion: LLaMA-Factory's `_system`, `_prompt` (odd count, ends with a user or
// observation turn) and `_response` (one assistant turn), prompt and response joined in `messages`.
struct Conversation {
  std::string system;
  std::vector<Message> messages;
};

// One `dataset_info.json` entry that zlora can read.
struct DatasetAttr {
  std::string name;
  std::string file_name;
  std::string formatting = "alpaca";           // alpaca | sharegpt
  std::map<std::string, std::string> columns;  // role (prompt, query, ...) -> column name in the file
  std::map<std::string, std::string> tags;     // sharegpt tags (role_tag, user_tag, ...)
  bool explicit_query = false;                 // `columns.query` was written (else "input" may be absent)
};

// Where each dataset came from: recorded in the token store.
struct SourceInfo {
  std::string name;
  std::vector<std::string> files;    // resolved paths, in load order
  std::vector<std::string> sha256s;  // of each file
  int64_t rows = 0;                  // rows read (after max_samples)
  int64_t invalid = 0;               // rows dropped as abnormal (LLaMA-Factory's "Skipping this abnormal example")
};

struct LoadedData {
  std::vector<Conversation> rows;  // valid rows of every dataset, in --dataset order then file order
  std::vector<SourceInfo> sources;
};

class DatasetRegistry {
 public:
  // Reads `<dataset_dir>/dataset_info.json`.
  static DatasetRegistry load(const std::filesystem::path& dataset_dir);
  // From the text of a dataset_info.json (`origin` names it in errors); files resolve under `dataset_dir`.
  static DatasetRegistry from_json(std::string_view text, const std::filesystem::path& dataset_dir,
                                   const std::string& origin);
  const DatasetAttr& get(const std::string& name) const;  // unknown name: error listing the defined ones
  std::vector<std::string> names() const;
  const std::filesystem::path& info_path() const { return info_path_; }

 private:
  std::filesystem::path dir_;
  std::filesystem::path info_path_;
  std::map<std::string, DatasetAttr> entries_;
  friend LoadedData load_datasets(const config::DataArgs& args);
};

// Loads and converts every dataset of `args.dataset` (max_samples applied per dataset). Errors: an
// undefined dataset, a missing or malformed file, a missing column; no valid row at all.
LoadedData load_datasets(const config::DataArgs& args);

// Refuses rows of one data file (`file` names it) in which no row has a column the mapping names.
void check_columns(const DatasetAttr& attr, const std::vector<nlohmann::json>& rows, const std::string& file);

// Converts one raw row (exposed for tests). Returns false for an abnormal row (LLaMA-Factory skips it).
bool convert_row(const DatasetAttr& attr, const nlohmann::json& row, Conversation& out, const std::string& where);

}  // namespace zlora::data
