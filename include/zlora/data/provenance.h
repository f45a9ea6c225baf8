// What a token store was made from, and the comparison of a run's data settings with it. A store records
// its provenance (token_store.h's StoreMeta: the datasets in order with their dataset_info.json entries
// and files, the template, default_system, the tokenizer's hashes and every option that changes the
// tokens; docs/data-format.md lists which options those are and why). `zlora train` describes its own
// data settings the same way and compares field by field before it reuses a store.
#pragma once

#include "zlora/config/args.h"
#include "zlora/data/token_store.h"

#include <filesystem>
#include <map>
#include <set>
#include <string>
#include <vector>

namespace zlora::data {

// The options a store's provenance covers, by the name the user sets them with ("tokenizer" is the
// tokenizer of --model_name_or_path / --tokenizer). compare_provenance filters on these.
const std::vector<std::string>& provenance_options();

// The provenance a store made now from `data` (the options only: no datasets, no tokenizer).
StoreMeta describe_options(const config::DataArgs& data);

// The tokenizer hashes a store made with the tokenizer at `path` would record (tokenizer.json and
// tokenizer_config.json beside it; "" for a file that does not exist).
void describe_tokenizer(const std::filesystem::path& path, StoreMeta& meta);

// Everything a store made now from `data` with the tokenizer at `tokenizer` would record, counts
// aside: describe_options, describe_tokenizer and describe_sources (files hashed unless `known` has
// their hash for the same size and mtime). Reads dataset_info.json when `data.dataset` is non-empty.
StoreMeta describe_data(const config::DataArgs& data, const std::filesystem::path& tokenizer,
                        const StoreMeta* known = nullptr);

// One field in which a run's data settings differ from a store's provenance.
struct ProvenanceDiff {
  std::string option;       // the option it belongs to (one of provenance_options())
  std::string field;        // what differs, e.g. "cutoff_len" or "dataset 'hh': file hh.json"
  std::string store_value;  // printable, bounded (file contents are escaped)
  std::string run_value;
};

// Every field of the options in `options` (empty: all of provenance_options()) in which `run` (from
// describe_data) differs from `store`, in a fixed order: dataset (names, then each dataset's entry,
// file list and files), template, default_system, tokenizer, cutoff_len, max_samples, train_on_prompt,
// mask_history. An empty run template or tokenizer hash means "not known for this run" and is not
// compared. A format-1 store did not record default_system, max_samples, the tokenizer config or the
// datasets' entries and files: each of those the filter asks about is a difference with the value
// "unknown (format-1 store)".
std::vector<ProvenanceDiff> compare_provenance(const StoreMeta& store, const StoreMeta& run,
                                               const std::set<std::string>& options = {});

// "field is A in the store but B in this run (origin)" for each diff, joined by "; ". `origins` maps an
// option to where the run's value came from ("flag --cutoff_len", "a.yaml:3:1"); options without one are
// shown without.
std::string describe_diffs(const std::vector<ProvenanceDiff>& diffs,
                           const std::map<std::string, std::string>& origins = {});

}  // namespace zlora::data
