// The dataset registry: LLaMA-Factory's `dataset_info.json` and its local data files (a JSON array or
// JSON Lines), converted to conversations the way data/converter.py does for `alpaca` and `sharegpt`.
#pragma once

#include "zlora/config/args.h"
#include "zlora/data/token_store.h"

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
  std::string entry;                           // the entry as canonical JSON (sorted keys, compact): provenance
};

struct LoadedData {
  std::vector<Conversation> rows;    // valid rows of every dataset, in --dataset order then file order
  std::vector<StoreSource> sources;  // where each dataset came from: recorded in the token store
};

class DatasetRegistry {
 public:
  // Reads `<dataset_dir>/dataset_info.json`.
  static DatasetRegistry load(const std::filesystem::path& dataset_dir);
  // From the text of a dataset_info.json (`origin` names it in errors); files resolve under `dataset_dir`.
  static DatasetRegistry from_json(std::string_view text, const std::filesystem::path& dataset_dir,
                                   const std::string& origin);
  // The named entry, validated now (an entry no run names is never checked): an unknown name is an
  // error listing the defined ones; an entry zlora cannot read says why.
  DatasetAttr get(const std::string& name) const;
  std::vector<std::string> names() const;
  const std::filesystem::path& info_path() const { return info_path_; }

 private:
  std::filesystem::path dir_;
  std::filesystem::path info_path_;
  DatasetAttr parse_entry(const std::string& name, const nlohmann::json& entry) const;

  std::map<std::string, nlohmann::json> entries_;  // as written; parsed by get()
  friend LoadedData load_datasets(const config::DataArgs& args);
  friend std::vector<StoreSource> describe_sources(const config::DataArgs& args, const StoreMeta* known);
};

// Loads and converts every dataset of `args.dataset` (max_samples applied per dataset). Errors: an
// undefined dataset, a missing or malformed file, a missing column; no valid row at all.
LoadedData load_datasets(const config::DataArgs& args);

// What load_datasets would record for `args.dataset` (rows and invalid left 0), without parsing the data
// files: each dataset's entry and files, with each file's size, mtime and SHA-256. A file whose size and
// mtime equal those `known` records for the same dataset and file name keeps `known`'s hash unread
// (the store's provenance check at every start would otherwise re-hash gigabytes); any other is hashed.
std::vector<StoreSource> describe_sources(const config::DataArgs& args, const StoreMeta* known = nullptr);

// Refuses rows of one data file (`file` names it) in which no row has a column the mapping names.
void check_columns(const DatasetAttr& attr, const std::vector<nlohmann::json>& rows, const std::string& file);

// Converts one raw row (exposed for tests). Returns false for an abnormal row (LLaMA-Factory skips it).
bool convert_row(const DatasetAttr& attr, const nlohmann::json& row, Conversation& out, const std::string& where);

}  // namespace zlora::data
