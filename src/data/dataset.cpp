// dataset_info.json and data files, following LLaMA-Factory's data/parser.py and data/converter.py.
#include "zlora/data/dataset.h"

#include "zlora/core/error.h"
#include "zlora/core/fs.h"
#include "zlora/core/log.h"
#include "zlora/core/sha256.h"
#include "zlora/core/text.h"
#include "zlora/data/json_file.h"

#include <algorithm>

namespace zlora::data {

using nlohmann::json;
namespace stdfs = std::filesystem;

const char* role_name(Role r) {
  switch (r) {
    case Role::User:
      return "user";
    case Role::Assistant:
      return "assistant";
    case Role::Observation:
      return "observation";
    case Role::Function:
      return "function";
    case Role::System:
      return "system";
  }
  return "?";
}

namespace {

// LLaMA-Factory's defaults (data/parser.py DatasetAttr).
const std::map<std::string, std::string> kAlpacaColumns = {
    {"prompt", "instruction"}, {"query", "input"}, {"response", "output"}};
const std::map<std::string, std::string> kSharegptColumns = {{"messages", "conversations"}};
const std::map<std::string, std::string> kSharegptTags = {
    {"role_tag", "from"},     {"content_tag", "value"},           {"user_tag", "human"},
    {"assistant_tag", "gpt"}, {"observation_tag", "observation"}, {"function_tag", "function_call"},
    {"system_tag", "system"}};
const std::vector<std::string> kAlpacaColumnKeys = {"prompt", "query", "response", "system", "history"};
const std::vector<std::string> kSharegptColumnKeys = {"messages", "system"};

std::string describe_mapping(const DatasetAttr& a) {
  std::vector<std::string> parts;
  for (const auto& [k, v] : a.columns) parts.push_back(k + "=" + v);
  for (const auto& [k, v] : a.tags) parts.push_back(k + "=" + v);
  return text::printable(a.formatting + " {" + text::join(parts, ", ") + "}", 400);  // names read from files
}

// A JSON value as LLaMA-Factory would see it in a text slot: strings as they are, null as "".
std::string as_text(const json& v, const std::string& where, const std::string& what) {
  if (v.is_null()) return "";
  ZLORA_REQUIRE(v.is_string(), "{}: {} must be a string, got {}", where, what, v.type_name());
  return v.get<std::string>();
}

const json* field(const json& row, const std::string& key) {
  if (!row.is_object()) return nullptr;
  auto it = row.find(key);
  return it == row.end() ? nullptr : &*it;
}

}  // namespace

DatasetRegistry DatasetRegistry::load(const stdfs::path& dataset_dir) {
  stdfs::path info_path = dataset_dir / "dataset_info.json";
  std::error_code ec;
  ZLORA_REQUIRE(stdfs::exists(info_path, ec),
                "cannot open {}: no such file (--dataset_dir must be the folder holding dataset_info.json)",
                info_path.string());
  // A registry is a few KB; the cap keeps a mistaken path (a data file, a device) from being slurped.
  return from_json(fs::read_file(info_path, size_t(64) << 20), dataset_dir, info_path.string());
}

DatasetRegistry DatasetRegistry::from_json(std::string_view text, const stdfs::path& dataset_dir,
                                           const std::string& origin) {
  DatasetRegistry reg;
  reg.dir_ = dataset_dir;
  reg.info_path_ = origin;
  json info = parse_json(text, origin);
  ZLORA_REQUIRE(info.is_object(), "{}: must be a JSON object of dataset names to entries", origin);
  // Only the entries a run names are validated (get()): LLaMA-Factory's own data/dataset_info.json
  // defines hub datasets, preference sets and formats zlora does not read, which must not block the
  // local ones beside them.
  for (auto& [name, e] : info.items()) reg.entries_[name] = std::move(e);
  return reg;
}

DatasetAttr DatasetRegistry::parse_entry(const std::string& name, const json& e) const {
  const stdfs::path& dataset_dir = dir_;
  std::string where = info_path_.string() + ": dataset '" + text::printable(name) + "'";
  ZLORA_REQUIRE(e.is_object(), "{}: entry must be an object", where);
  DatasetAttr a;
  a.name = name;
  a.entry = e.dump();  // nlohmann's objects keep keys sorted: the same entry always dumps the same
  for (const char* hub : {"hf_hub_url", "ms_hub_url", "om_hub_url", "script_url", "cloud_file_name"})
    ZLORA_REQUIRE(!e.contains(hub),
                  "{}: '{}' sources (downloaded from a hub) are a LLaMA-Factory feature zlora does not support; "
                  "download the files and name them with \"file_name\" under dataset_dir",
                  where, hub);
  ZLORA_REQUIRE(e.contains("file_name") && e["file_name"].is_string(),
                "{}: needs \"file_name\" (a JSON or JSONL file, or a folder of them, under {})", where,
                dataset_dir.string());
  a.file_name = e["file_name"].get<std::string>();
  if (e.contains("formatting")) {
    ZLORA_REQUIRE(e["formatting"].is_string(), "{}: \"formatting\" must be a string (alpaca or sharegpt)", where);
    a.formatting = e["formatting"].get<std::string>();
  }
  ZLORA_REQUIRE(a.formatting == "alpaca" || a.formatting == "sharegpt",
                "{}: formatting '{}' is not supported (supported: alpaca, sharegpt)", where,
                text::printable(a.formatting));
  if (e.contains("ranking") && !e["ranking"].is_null()) {
    ZLORA_REQUIRE(e["ranking"].is_boolean(), "{}: \"ranking\" must be true or false", where);
    ZLORA_REQUIRE(!e["ranking"].get<bool>(), "{}: ranking datasets are for preference training, not SFT", where);
  }
  ZLORA_REQUIRE(!e.contains("num_samples"), "{}: num_samples (random resampling) is not supported; use --max_samples",
                where);
  bool alpaca = a.formatting == "alpaca";
  a.columns = alpaca ? kAlpacaColumns : kSharegptColumns;
  if (!alpaca) a.tags = kSharegptTags;
  const auto& allowed = alpaca ? kAlpacaColumnKeys : kSharegptColumnKeys;
  if (e.contains("columns")) {
    ZLORA_REQUIRE(e["columns"].is_object(), "{}: \"columns\" must be an object", where);
    for (auto& [k, v] : e["columns"].items()) {
      ZLORA_REQUIRE(std::find(allowed.begin(), allowed.end(), k) != allowed.end(),
                    "{}: column role '{}' is not supported for {} (supported: {})", where, text::printable(k),
                    a.formatting, text::join(allowed, ", "));
      ZLORA_REQUIRE(v.is_string() || v.is_null(), "{}: columns.{} must be a column name", where, text::printable(k));
      if (v.is_null())
        a.columns.erase(k);
      else
        a.columns[k] = v.get<std::string>();
      if (k == "query") a.explicit_query = true;
    }
  }
  if (e.contains("tags")) {
    ZLORA_REQUIRE(!alpaca, "{}: \"tags\" apply to sharegpt datasets only", where);
    ZLORA_REQUIRE(e["tags"].is_object(), "{}: \"tags\" must be an object", where);
    for (auto& [k, v] : e["tags"].items()) {
      ZLORA_REQUIRE(kSharegptTags.count(k),
                    "{}: tag '{}' is not supported (supported: role_tag, content_tag, "
                    "user_tag, assistant_tag, observation_tag, function_tag, system_tag)",
                    where, text::printable(k));
      ZLORA_REQUIRE(v.is_string(), "{}: tags.{} must be a string", where, text::printable(k));
      a.tags[k] = v.get<std::string>();
    }
  }
  return a;
}

std::vector<std::string> DatasetRegistry::names() const {
  std::vector<std::string> n;
  for (const auto& [k, v] : entries_) n.push_back(k);
  return n;
}

DatasetAttr DatasetRegistry::get(const std::string& name) const {
  auto it = entries_.find(name);
  if (it == entries_.end()) {
    auto defined = names();
    fail(
        "undefined dataset '{}' in {}{} (defined: {}). Add an entry {{\"{}\": {{\"file_name\": \"<file>.json\"}}}} "
        "there, or pass --dataset_dir pointing at the folder whose dataset_info.json defines it",
        text::printable(name), info_path_.string(), text::printable(text::did_you_mean(name, defined)),
        defined.empty() ? "none" : text::printable(text::join(defined, ", "), 400), text::printable(name));
  }
  return parse_entry(it->first, it->second);
}

bool convert_row(const DatasetAttr& a, const json& row, Conversation& out, const std::string& where) {
  ZLORA_REQUIRE(row.is_object(), "{}: a row must be a JSON object, got {}", where, row.type_name());
  out = Conversation{};
  auto col = [&](const std::string& key) -> std::string {
    auto it = a.columns.find(key);
    return it == a.columns.end() ? "" : it->second;
  };
  if (a.formatting == "alpaca") {
    if (auto h = col("history"); !h.empty()) {
      if (const json* hv = field(row, h); hv && hv->is_array()) {
        for (const json& pair : *hv) {
          ZLORA_REQUIRE(pair.is_array() && pair.size() == 2, "{}: history entries must be [query, response] pairs",
                        where);
          out.messages.push_back({Role::User, as_text(pair[0], where, "history query")});
          out.messages.push_back({Role::Assistant, as_text(pair[1], where, "history response")});
        }
      }
    }
    std::vector<std::string> query;
    for (const char* key : {"prompt", "query"}) {
      auto c = col(key);
      const json* v = c.empty() ? nullptr : field(row, c);
      if (v) {
        std::string s = as_text(*v, where, "column '" + text::printable(c) + "'");
        if (!s.empty()) query.push_back(s);
      }
    }
    out.messages.push_back({Role::User, text::join(query, "\n")});
    if (auto s = col("system"); !s.empty())
      if (const json* v = field(row, s)) out.system = as_text(*v, where, "column '" + text::printable(s) + "'");
    const json* r = field(row, col("response"));
    if (!r || !r->is_string()) return false;  // no response: LLaMA-Factory drops the row
    out.messages.push_back({Role::Assistant, r->get<std::string>()});
    return true;
  }
  // sharegpt
  const json* msgs = field(row, col("messages"));
  ZLORA_REQUIRE(msgs && msgs->is_array(), "{}: column '{}' must be a list of messages (mapping in use: {})", where,
                text::printable(col("messages")), describe_mapping(a));
  const auto& t = a.tags;
  const std::string& role_tag = t.at("role_tag");
  const std::string& content_tag = t.at("content_tag");
  size_t start = 0;
  auto role_of = [&](const json& m, size_t k) -> std::string {
    ZLORA_REQUIRE(m.is_object() && m.contains(role_tag) && m.contains(content_tag),
                  "{}: message {} has no '{}'/'{}' keys (mapping in use: {}); set \"tags\" in dataset_info.json", where,
                  k, text::printable(role_tag), text::printable(content_tag), describe_mapping(a));
    return m[role_tag].is_string() ? m[role_tag].get<std::string>() : "";
  };
  if (!msgs->empty() && role_of((*msgs)[0], 0) == t.at("system_tag")) {
    out.system = as_text((*msgs)[0][content_tag], where, "system message");
    start = 1;
  } else if (auto s = col("system"); !s.empty()) {
    if (const json* v = field(row, s)) out.system = as_text(*v, where, "column '" + text::printable(s) + "'");
  }
  for (size_t k = start; k < msgs->size(); ++k) {
    std::string role = role_of((*msgs)[k], k);
    bool odd = (k - start) % 2 == 0;  // LLaMA-Factory counts turns from 0: user turns sit at even indices
    Role r;
    if (odd && role == t.at("user_tag"))
      r = Role::User;
    else if (odd && role == t.at("observation_tag"))
      r = Role::Observation;
    else if (!odd && role == t.at("assistant_tag"))
      r = Role::Assistant;
    else if (!odd && role == t.at("function_tag"))
      r = Role::Function;
    else
      return false;  // "Invalid role tag"
    out.messages.push_back({r, as_text((*msgs)[k][content_tag], where, "message content")});
  }
  return !out.messages.empty() && out.messages.size() % 2 == 0;  // else "Invalid message count"
}

namespace {

// A data file of a dataset: where it is, and its name as the entry names it (file_name, or
// "file_name/<file>" for a folder's files), which the store records so that a moved dataset_dir still
// matches.
struct DataFile {
  stdfs::path path;
  std::string name;
};

std::vector<DataFile> data_files(const stdfs::path& dir, const DatasetAttr& a, const std::string& info) {
  stdfs::path p = dir / a.file_name;
  std::error_code ec;
  ZLORA_REQUIRE(stdfs::exists(p, ec), "dataset '{}': file {} not found (file_name '{}' in {} is resolved under {})",
                a.name, p.string(), text::printable(a.file_name), info, dir.string());
  std::vector<DataFile> files;
  if (stdfs::is_directory(p, ec)) {
    for (const auto& e : stdfs::directory_iterator(p))
      if (e.is_regular_file()) files.push_back({e.path(), (stdfs::path(a.file_name) / e.path().filename()).string()});
    std::sort(files.begin(), files.end(), [](const DataFile& x, const DataFile& y) { return x.path < y.path; });
  } else {
    files.push_back({p, a.file_name});
  }
  ZLORA_REQUIRE(!files.empty(), "dataset '{}': folder {} holds no files", a.name, p.string());
  for (const auto& f : files) {
    std::string ext = text::lower(f.path.extension().string());
    ZLORA_REQUIRE(ext == ".json" || ext == ".jsonl",
                  "dataset '{}': {} has type '{}'; allowed file types: json, jsonl (csv, parquet, arrow and txt are "
                  "not supported by zlora)",
                  a.name, f.path.string(), text::printable(ext));
  }
  return files;
}

// The source record of one dataset without its files.
StoreSource source_of(const DatasetAttr& a) {
  StoreSource src;
  src.name = a.name;
  src.dataset_info = a.entry;
  return src;
}

void add_file(StoreSource& src, const DataFile& f, const fs::FileStamp& stamp, std::string sha256) {
  src.files.push_back(f.name);
  src.sha256s.push_back(std::move(sha256));
  src.sizes.push_back(int64_t(stamp.size));
  src.mtimes_ns.push_back(stamp.mtime_ns);
}

}  // namespace

// A column named by the mapping that no row has is a configuration error, not an empty value.
void check_columns(const DatasetAttr& a, const std::vector<json>& rows, const std::string& file) {
  for (const auto& entry : a.columns) {
    // Not a structured binding: lambdas may not capture those before C++20 (clang refuses).
    const std::string& key = entry.first;
    const std::string& column = entry.second;
    if (key == "query" && !a.explicit_query) continue;  // the default "input" may be absent
    bool any =
        std::any_of(rows.begin(), rows.end(), [&](const json& r) { return r.is_object() && r.contains(column); });
    if (!any) {
      std::vector<std::string> seen;
      if (!rows.empty() && rows[0].is_object())
        for (auto& [k, v] : rows[0].items()) seen.push_back(k);
      fail(
          "dataset '{}': column '{}' ({}) is missing from {} (its rows have: {}; mapping in use: {}). Set "
          "\"columns\": {{\"{}\": \"<column>\"}} in dataset_info.json",
          text::printable(a.name), text::printable(column), key, file,
          seen.empty() ? "nothing" : text::printable(text::join(seen, ", "), 400), describe_mapping(a), key);
    }
  }
}

LoadedData load_datasets(const config::DataArgs& args) {
  ZLORA_REQUIRE(!args.dataset.empty(), "no dataset given: set --dataset to names defined in {}/dataset_info.json",
                args.dataset_dir);
  DatasetRegistry reg = DatasetRegistry::load(args.dataset_dir);
  LoadedData out;
  for (const std::string& name : args.dataset) {
    const DatasetAttr& a = reg.get(name);
    StoreSource src = source_of(a);
    std::vector<json> rows;
    for (const auto& f : data_files(reg.dir_, a, reg.info_path_.string())) {
      // Stamped before the read: a file changed after it gets a newer mtime, so a later run re-hashes it.
      const fs::FileStamp stamp = fs::file_stamp(f.path);
      std::string body = fs::read_file(f.path);
      std::vector<json> part = parse_json_rows(body, f.path.string());
      check_columns(a, part, f.path.string());
      add_file(src, f, stamp, sha256_hex(body));
      for (auto& r : part) rows.push_back(std::move(r));
    }
    if (args.max_samples && *args.max_samples >= 0 && rows.size() > size_t(*args.max_samples))
      rows.resize(size_t(*args.max_samples));
    src.rows = int64_t(rows.size());
    for (size_t i = 0; i < rows.size(); ++i) {
      Conversation c;
      if (convert_row(a, rows[i], c, fmt::format("dataset '{}' row {}", name, i)))
        out.rows.push_back(std::move(c));
      else
        ++src.invalid;
    }
    if (src.invalid)
      log::warn("dataset '{}': skipped {} abnormal row(s) of {} (invalid role order or message count, or no response)",
                name, src.invalid, src.rows);
    out.sources.push_back(std::move(src));
  }
  ZLORA_REQUIRE(!out.rows.empty(),
                "cannot find valid samples in dataset(s) {}: every row was empty or abnormal; check the data format "
                "(alpaca: instruction/input/output; sharegpt: conversations with alternating turns)",
                text::join(args.dataset, ", "));
  return out;
}

std::vector<StoreSource> describe_sources(const config::DataArgs& args, const StoreMeta* known) {
  std::vector<StoreSource> out;
  if (args.dataset.empty()) return out;
  DatasetRegistry reg = DatasetRegistry::load(args.dataset_dir);
  for (const std::string& name : args.dataset) {
    const DatasetAttr& a = reg.get(name);
    StoreSource src = source_of(a);
    const StoreSource* old = nullptr;
    if (known && known->provenance_known())
      for (const auto& s : known->sources)
        if (s.name == name) old = &s;
    for (const auto& f : data_files(reg.dir_, a, reg.info_path_.string())) {
      const fs::FileStamp stamp = fs::file_stamp(f.path);
      std::string sha;
      for (size_t i = 0; old && sha.empty() && i < old->files.size(); ++i)
        if (old->files[i] == f.name && old->sizes[i] == int64_t(stamp.size) && old->mtimes_ns[i] == stamp.mtime_ns)
          sha = old->sha256s[i];
      if (sha.empty()) sha = sha256_file(f.path.string());
      add_file(src, f, stamp, std::move(sha));
    }
    out.push_back(std::move(src));
  }
  return out;
}

}  // namespace zlora::data
