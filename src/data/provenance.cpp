// A run's data settings described as a store records them, and the field-by-field comparison.
#include "zlora/data/provenance.h"

#include "zlora/core/sha256.h"
#include "zlora/core/text.h"
#include "zlora/data/dataset.h"
#include "zlora/data/tokenizer.h"

#include <fmt/format.h>

#include <algorithm>

namespace zlora::data {

namespace {

constexpr const char* kUnknown = "unknown (format-1 store: made before stores recorded it)";

std::string quoted(const std::optional<std::string>& s) {
  return s ? "\"" + text::printable(*s) + "\"" : std::string("unset");
}

std::string number(const std::optional<int64_t>& v) { return v ? std::to_string(*v) : std::string("unset"); }

std::string boolean(bool b) { return b ? "true" : "false"; }

std::string names_of(const std::vector<StoreSource>& sources) {
  std::vector<std::string> names;
  for (const auto& s : sources) names.push_back(text::printable(s.name));
  return names.empty() ? std::string("none") : text::join(names, ",");
}

std::string file_list(const StoreSource& s) {
  std::vector<std::string> names;
  for (const auto& f : s.files) names.push_back(text::printable(f));
  return "[" + text::join(names, ", ") + "]";
}

std::string file_value(const StoreSource& s, size_t i) {
  return fmt::format("{} bytes, sha256 {}", s.sizes.at(i), s.sha256s.at(i));
}

}  // namespace

const std::vector<std::string>& provenance_options() {
  static const std::vector<std::string> kOptions = {"dataset",         "template",     "default_system",
                                                    "tokenizer",       "cutoff_len",   "max_samples",
                                                    "train_on_prompt", "mask_history", "enable_thinking"};
  return kOptions;
}

StoreMeta describe_options(const config::DataArgs& data) {
  StoreMeta m;
  m.zlora_version = ZLORA_VERSION;
  m.template_name = data.template_name.value_or("");
  m.default_system = data.default_system;
  m.cutoff_len = data.cutoff_len;
  if (data.max_samples) m.max_samples = *data.max_samples;
  m.train_on_prompt = data.train_on_prompt;
  m.mask_history = data.mask_history;
  m.enable_thinking = data.enable_thinking;
  std::error_code ec;
  const std::filesystem::path dir = std::filesystem::absolute(data.dataset_dir, ec);
  m.dataset_dir = (ec ? std::filesystem::path(data.dataset_dir) : dir).lexically_normal().string();
  return m;
}

void describe_tokenizer(const std::filesystem::path& path, StoreMeta& meta) {
  const TokenizerFiles files = tokenizer_files(path);
  std::error_code ec;
  meta.tokenizer_sha256 =
      std::filesystem::exists(files.tokenizer_json, ec) ? sha256_file(files.tokenizer_json.string()) : "";
  meta.tokenizer_config_sha256 =
      std::filesystem::exists(files.config_json, ec) ? sha256_file(files.config_json.string()) : "";
}

StoreMeta describe_data(const config::DataArgs& data, const std::filesystem::path& tokenizer, const StoreMeta* known) {
  StoreMeta m = describe_options(data);
  describe_tokenizer(tokenizer, m);
  m.sources = describe_sources(data, known);
  return m;
}

std::vector<ProvenanceDiff> compare_provenance(const StoreMeta& store, const StoreMeta& run,
                                               const std::set<std::string>& options) {
  std::vector<ProvenanceDiff> out;
  auto wanted = [&](const char* option) { return options.empty() || options.count(option) > 0; };
  const bool known = store.provenance_known();
  auto add = [&](const char* option, std::string field, std::string in_store, std::string in_run) {
    out.push_back({option, std::move(field), std::move(in_store), std::move(in_run)});
  };
  auto check = [&](const char* option, const char* field, const std::string& in_store, const std::string& in_run) {
    if (in_store != in_run) add(option, field, in_store, in_run);
  };

  if (wanted("dataset")) {
    if (!known) {
      add("dataset", "dataset", kUnknown, names_of(run.sources));
    } else if (!std::equal(store.sources.begin(), store.sources.end(), run.sources.begin(), run.sources.end(),
                           [](const StoreSource& a, const StoreSource& b) { return a.name == b.name; })) {
      add("dataset", "dataset", names_of(store.sources), names_of(run.sources));
    } else {
      for (size_t d = 0; d < store.sources.size(); ++d) {
        const StoreSource& a = store.sources[d];
        const StoreSource& b = run.sources[d];
        const std::string where = "dataset '" + text::printable(a.name) + "'";
        if (a.dataset_info != b.dataset_info)
          add("dataset", where + ": its dataset_info.json entry", text::printable(a.dataset_info),
              text::printable(b.dataset_info));
        if (a.files != b.files) {
          add("dataset", where + ": files", file_list(a), file_list(b));
          continue;
        }
        for (size_t i = 0; i < a.files.size(); ++i)
          if (a.sizes.at(i) != b.sizes.at(i) || a.sha256s.at(i) != b.sha256s.at(i))
            add("dataset", where + ": file " + text::printable(a.files[i]), file_value(a, i), file_value(b, i));
      }
    }
  }
  if (wanted("template") && !run.template_name.empty())
    check("template", "template", text::printable(store.template_name), text::printable(run.template_name));
  if (wanted("default_system")) {
    if (!known)
      add("default_system", "default_system", kUnknown, quoted(run.default_system));
    else
      check("default_system", "default_system", quoted(store.default_system), quoted(run.default_system));
  }
  if (wanted("tokenizer") && !run.tokenizer_sha256.empty()) {
    check("tokenizer", "tokenizer (tokenizer.json sha256)", store.tokenizer_sha256, run.tokenizer_sha256);
    auto config = [](const std::string& sha) { return sha.empty() ? std::string("none") : sha; };
    if (!known)
      add("tokenizer", "tokenizer (tokenizer_config.json sha256)", kUnknown, config(run.tokenizer_config_sha256));
    else
      check("tokenizer", "tokenizer (tokenizer_config.json sha256)", config(store.tokenizer_config_sha256),
            config(run.tokenizer_config_sha256));
  }
  if (wanted("cutoff_len"))
    check("cutoff_len", "cutoff_len", std::to_string(store.cutoff_len), std::to_string(run.cutoff_len));
  if (wanted("max_samples")) {
    if (!known)
      add("max_samples", "max_samples", kUnknown, number(run.max_samples));
    else
      check("max_samples", "max_samples", number(store.max_samples), number(run.max_samples));
  }
  if (wanted("train_on_prompt"))
    check("train_on_prompt", "train_on_prompt", boolean(store.train_on_prompt), boolean(run.train_on_prompt));
  if (wanted("mask_history"))
    check("mask_history", "mask_history", boolean(store.mask_history), boolean(run.mask_history));
  if (wanted("enable_thinking"))
    check("enable_thinking", "enable_thinking", boolean(store.enable_thinking), boolean(run.enable_thinking));
  return out;
}

std::string describe_diffs(const std::vector<ProvenanceDiff>& diffs,
                           const std::map<std::string, std::string>& origins) {
  std::vector<std::string> parts;
  for (const auto& d : diffs) {
    auto it = origins.find(d.option);
    parts.push_back(fmt::format("{} is {} in the store but {} in this run{}", d.field, d.store_value, d.run_value,
                                it == origins.end() ? std::string() : " (" + it->second + ")"));
  }
  return text::join(parts, "; ");
}

}  // namespace zlora::data
