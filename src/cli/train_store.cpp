#include "train_store.h"

#include "zlora/core/error.h"
#include "zlora/core/log.h"
#include "zlora/core/text.h"
#include "zlora/data/provenance.h"
#include "zlora/data/token_store.h"

#include <filesystem>
#include <set>

namespace zlora::cli {

namespace {

namespace stdfs = std::filesystem;
using Run = config::Resolved<config::TrainConfig>;

// Rank 0's decision, as decide_on_root carries it: "use", or "build" + the info line that says why.
constexpr const char* kUse = "use";
constexpr const char* kBuild = "build";

std::string who_made(const data::StoreMeta& m) {
  if (m.made_by.empty())
    return fmt::format("an older zlora ({}, store format {}, which did not record who made it)",
                       text::printable(m.zlora_version), m.format_version);
  return "`" + text::printable(m.made_by) + "`";
}

// Where the run's value of each compared option came from, for the messages.
std::map<std::string, std::string> run_origins(const Run& r) {
  std::map<std::string, std::string> out;
  for (const std::string& option : data::provenance_options()) {
    const std::string key = option == "tokenizer" ? "model_name_or_path" : option;
    auto it = r.origins.find(key);
    if (it == r.origins.end()) continue;
    out[option] =
        option == "tokenizer" ? "tokenizer.json of model_name_or_path, " + it->second.where : it->second.where;
  }
  return out;
}

std::string decide(const Run& r, bool default_path) {
  const config::DataArgs& data = r.cfg.data;
  const std::string& path = *data.tokenized_path;
  const bool named = !data.dataset.empty();
  const std::string datasets = text::join(data.dataset, ",");
  std::error_code ec;
  if (!stdfs::exists(path, ec)) {
    ZLORA_REQUIRE(named, "tokenized_path {} does not exist and no --dataset is given to prepare it from", path);
    return fmt::format("{}preparing the token store {} from dataset {}", kBuild, path, datasets);
  }
  if (data.overwrite_cache) {
    ZLORA_REQUIRE(named,
                  "overwrite_cache is true but no --dataset is given to rebuild {} from; name the datasets with "
                  "--dataset, or drop overwrite_cache to train on the store as it is",
                  path);
    return fmt::format("{}rebuilding the token store {} from dataset {} (overwrite_cache true)", kBuild, path,
                       datasets);
  }
  const data::StoreMeta store = data::TokenStore(path).meta();
  // Without --dataset the run describes no data of its own (LLaMA-Factory then loads tokenized_path as
  // it is): only what the user set explicitly can contradict the store. The tokenizer is always the
  // model's.
  std::set<std::string> options;
  if (!named)
    for (const std::string& option : data::provenance_options())
      if (option == "tokenizer" || r.origins.count(option)) options.insert(option);
  const data::StoreMeta run = data::describe_data(data, r.cfg.model.model_name_or_path, &store);
  const std::vector<data::ProvenanceDiff> diffs = data::compare_provenance(store, run, options);
  if (diffs.empty()) return kUse;
  const std::string what = data::describe_diffs(diffs, run_origins(r));
  if (named && default_path && store.made_by == data::kMadeByTrain)
    return fmt::format("{}the token store {} was made by zlora train from other data settings ({}); rebuilding it",
                       kBuild, path, what);
  if (!named)
    fail(
        "the token store {} was made with other data settings than this run sets: {}. Without --dataset it "
        "cannot be rebuilt: drop those options to train on the store as it is, pass --dataset (with "
        "--overwrite_cache true) to rebuild it from the datasets, or name another store with --tokenized_path",
        path, what);
  fail(
      "the token store {} was made from other data settings than this run's: {}. It was made by {}{}, so zlora "
      "train does not replace it (it rebuilds only a store it made itself at its default path, "
      "<output_dir>/tokenized.h5). Pass --overwrite_cache true to rebuild it from this run's settings, or name "
      "another store with --tokenized_path (a missing one is prepared there)",
      path, what, who_made(store), default_path ? "" : " and is named by tokenized_path");
}

// Leaves at r.cfg.data.tokenized_path a store made from r's data settings (decide(), then a rebuild on
// every rank when rank 0 says so).
void ensure_store(const Run& r, bool default_path, Session& session) {
  dist::MpiRuntime& mpi = session.start_mpi();
  const std::string decision = dist::decide_on_root(mpi.world(), [&] { return decide(r, default_path); });
  if (decision == kUse) return;
  log::info("{}", decision.substr(std::string(kBuild).size()));
  // Prepared as LLaMA-Factory tokenizes before training: by all ranks in parallel.
  config::PrepareConfig prep;
  prep.data = r.cfg.data;
  prep.tokenizer = r.cfg.model.model_name_or_path;
  prep.output = *r.cfg.data.tokenized_path;
  prep.overwrite = true;
  stdfs::create_directories(stdfs::path(prep.output).parent_path());
  prepare_store(prep, session, data::kMadeByTrain);
}

}  // namespace

std::string eval_store_path(const std::string& tokenized_path) {
  const stdfs::path p(tokenized_path);
  return (p.parent_path() / (p.stem().string() + "_eval" + (p.has_extension() ? p.extension().string() : ".h5")))
      .string();
}

void ensure_train_store(Run& r, Session& session) {
  auto& data = r.cfg.data;
  const bool default_path = !data.tokenized_path;
  if (default_path) {
    data.tokenized_path = (stdfs::path(r.cfg.training.output_dir) / "tokenized.h5").string();
    r.origins["tokenized_path"] = config::Origin{"default: <output_dir>/tokenized.h5"};
  }
  ensure_store(r, default_path, session);
  if (data.eval_dataset.empty()) return;
  // eval_dataset: a second store beside the training one, from the same data settings (LLaMA-Factory
  // preprocesses both the same way, max_samples included).
  Run eval = r;
  eval.cfg.data.dataset = data.eval_dataset;
  eval.cfg.data.tokenized_path = eval_store_path(*data.tokenized_path);
  ensure_store(eval, default_path, session);
  data.eval_tokenized_path = eval.cfg.data.tokenized_path;
}

}  // namespace zlora::cli
