// Loading a command's configuration: an optional YAML/JSON file, then command-line overrides, then
// (for `train`) a DeepSpeed JSON, then one validation pass. LLaMA-Factory's forms are accepted:
//   zlora train cfg.yaml --cutoff_len 512 lora_rank=16 --bf16 --plot_loss True
// A repeated key takes its last value, as argparse does.
#pragma once

#include "zlora/config/args.h"
#include "zlora/config/schema.h"

#include <map>
#include <string>
#include <vector>

namespace zlora::config {

// One "key = value" from any source, before it is typed by a schema.
struct Assignment {
  std::string key;
  std::string value;
  bool from_sequence = false;  // a YAML/JSON list: only list-typed options take it
  Origin origin;
};

// A loaded configuration with, per key, where its value came from, and the warnings and notes to
// print once per job.
template <typename T>
struct Resolved {
  T cfg;
  std::map<std::string, Origin> origins;
  std::vector<std::string> warnings;
  std::vector<std::string> notes;  // info lines: LLaMA-Factory options accepted with no effect here
  std::string config_file;         // the YAML/JSON given as first argument, or ""
};

// Reads a YAML (or JSON) mapping of options. Errors name the file, line and column.
std::vector<Assignment> read_yaml_assignments(const std::string& path);
// The same for text already in memory; `name` is used in messages (fuzzing, tests).
std::vector<Assignment> parse_yaml_assignments(const std::string& text, const std::string& name);

// Splits argv into an optional config file and assignments. `is_bool(key)` tells which keys may be
// given without a value (`--bf16` alone means true).
struct ArgvParts {
  std::string config_file;
  std::vector<Assignment> assignments;
};
ArgvParts split_argv(const std::vector<std::string>& args, const std::function<bool(const std::string&)>& is_bool);

// Applies assignments through a schema; unknown keys are errors with a "did you mean" suggestion.
template <typename T>
void apply(const Schema<T>& schema, Resolved<T>& out, const std::vector<Assignment>& assignments);

// Parses file + flags for a command's schema (no validation).
template <typename T>
Resolved<T> parse(const Schema<T>& schema, const std::vector<std::string>& args);

// The schemas (built once, immutable).
const Schema<TrainConfig>& train_schema();
const Schema<PrepareConfig>& prepare_schema();
const Schema<ExportConfig>& export_schema();
const Schema<GenerateConfig>& generate_schema();

// Full loading with DeepSpeed JSON mapping and cross-field validation.
Resolved<TrainConfig> load_train_config(const std::vector<std::string>& args);
Resolved<PrepareConfig> load_prepare_config(const std::vector<std::string>& args);
Resolved<ExportConfig> load_export_config(const std::vector<std::string>& args);
Resolved<GenerateConfig> load_generate_config(const std::vector<std::string>& args);

// Validation of each command's config (called by the loaders; exposed for tests).
void validate(Resolved<TrainConfig>& r);
void validate(Resolved<PrepareConfig>& r);
void validate(Resolved<ExportConfig>& r);
void validate(Resolved<GenerateConfig>& r);

// Maps a DeepSpeed JSON onto `r` (zero stage, offload, precision, optimizer, scheduler, batch sizes).
// "auto" values keep zlora's; explicit values conflicting with a user-set option are errors.
void apply_deepspeed_json(Resolved<TrainConfig>& r, const std::string& path);
// The same for JSON text already in memory; `name` is used in messages.
void apply_deepspeed_json_text(Resolved<TrainConfig>& r, const std::string& text, const std::string& name);

// The resolved configuration as YAML, each value commented with its origin (--print_config).
template <typename T>
std::string render(const Schema<T>& schema, const Resolved<T>& r);

// `zlora <command> --help` text and the Markdown reference (docs/config-reference.md).
template <typename T>
std::string help_text(const Schema<T>& schema, const std::string& usage);
template <typename T>
std::string reference_markdown(const Schema<T>& schema);

}  // namespace zlora::config

#include "zlora/config/load_impl.h"
