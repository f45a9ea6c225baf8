#include "zlora/cli/commands.h"
#include "zlora/config/load.h"
#include "zlora/core/error.h"
#include "zlora/core/log.h"
#include "zlora/data/dataset.h"
#include "zlora/data/prepare.h"
#include "zlora/data/provenance.h"
#include "zlora/data/template.h"
#include "zlora/data/token_store.h"
#include "zlora/data/tokenizer.h"
#include "zlora/model/config.h"

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstdio>
#include <filesystem>

namespace zlora::cli {

namespace {

// Gathers each rank's vector on rank 0, in rank order (= source order, since rank r holds slice r).
template <typename T>
std::vector<T> gather(const std::vector<T>& mine, MPI_Datatype type, MPI_Comm comm, int rank, int size) {
  ZLORA_REQUIRE(mine.size() < size_t(INT_MAX), "a rank's share ({} elements) exceeds MPI's int counts; use more ranks",
                mine.size());
  int n = int(mine.size());
  std::vector<int> counts(static_cast<size_t>(size)), displs(static_cast<size_t>(size));
  MPI_Gather(&n, 1, MPI_INT, counts.data(), 1, MPI_INT, 0, comm);
  std::vector<T> all;
  if (rank == 0) {
    long long total = 0;
    for (int r = 0; r < size; ++r) {
      displs[size_t(r)] = int(total);
      total += counts[size_t(r)];
    }
    ZLORA_REQUIRE(total < INT_MAX, "the corpus ({} elements) exceeds MPI_Gatherv's int displacements", total);
    all.resize(size_t(total));
  }
  MPI_Gatherv(mine.data(), n, type, all.data(), counts.data(), displs.data(), type, 0, comm);
  return all;
}

// A model directory given as --tokenizer usually holds the model's config.json: samples longer than its
// max_position_embeddings are positions the model never saw. A config.json zlora cannot read is only a
// note here (the tokenizer is all `zlora prepare` needs); training reads it for real.
void warn_cutoff_beyond_positions(const config::PrepareConfig& cfg) {
  const std::filesystem::path config_json =
      data::tokenizer_files(cfg.tokenizer).tokenizer_json.parent_path() / "config.json";
  std::error_code ec;
  if (!std::filesystem::exists(config_json, ec)) return;
  try {
    const std::string warning =
        model::cutoff_len_warning(model::load_model_config(config_json), cfg.data.cutoff_len, config_json.string());
    if (!warning.empty()) log::warn("{}", warning);
  } catch (const Error& e) {
    log::warn("cannot check cutoff_len against the model's positions: {}", e.what());
  }
}

}  // namespace

int run_prepare(const Args& args, Session& session) {
  const auto& schema = config::prepare_schema();
  if (wants_help(args)) {
    std::fputs(
        config::help_text(schema, "usage: zlora prepare [CONFIG.yaml] [--option value | option=value ...]").c_str(),
        stdout);
    return kExitOk;
  }
  auto r = config::load_prepare_config(args);
  print_config_messages(r.warnings, r.notes);
  return prepare_store(r.cfg, session, data::kMadeByPrepare);
}

int prepare_store(const config::PrepareConfig& cfg, Session& session, const char* made_by) {
  ZLORA_REQUIRE(cfg.data.template_name.has_value(),
                "no template: `zlora prepare` needs --template (qwen, llama3, chatml, default, alpaca, empty)");
  std::error_code ec;
  ZLORA_REQUIRE(cfg.overwrite || !std::filesystem::exists(cfg.output, ec),
                "{} already exists; pass --overwrite true to replace it", cfg.output);
  const std::filesystem::path parent = std::filesystem::path(cfg.output).parent_path();
  ZLORA_REQUIRE(parent.empty() || std::filesystem::is_directory(parent, ec),
                "the folder of --output {} does not exist; create it first (zlora prepare does not create folders)",
                cfg.output);
  // Everything a rank could get wrong about its inputs is checked before MPI starts, on every rank alike.
  auto t0 = std::chrono::steady_clock::now();
  data::Tokenizer tok = data::Tokenizer::load(cfg.tokenizer);
  data::ChatTemplate tmpl(data::find_template(*cfg.data.template_name), tok, cfg.data.default_system);
  data::LoadedData loaded = data::load_datasets(cfg.data);

  dist::MpiRuntime& mpi = session.start_mpi();
  const int rank = mpi.rank(), size = mpi.size();
  if (rank == 0) warn_cutoff_beyond_positions(cfg);
  const size_t n = loaded.rows.size();
  const size_t begin = n * size_t(rank) / size_t(size), end = n * size_t(rank + 1) / size_t(size);
  data::SampleOptions opt;
  opt.cutoff_len = cfg.data.cutoff_len;
  opt.train_on_prompt = cfg.data.train_on_prompt;
  opt.mask_history = cfg.data.mask_history;
  opt.enable_thinking = cfg.data.enable_thinking;
  auto t1 = std::chrono::steady_clock::now();
  data::Shard shard = data::tokenize_rows(tmpl, loaded.rows, begin, end, opt);
  double my_secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count(), tok_secs = 0;
  MPI_Reduce(&my_secs, &tok_secs, 1, MPI_DOUBLE, MPI_MAX, 0, mpi.world());

  MPI_Comm comm = mpi.world();
  std::vector<int32_t> ids = gather(shard.input_ids, MPI_INT32_T, comm, rank, size);
  std::vector<int32_t> labels = gather(shard.labels, MPI_INT32_T, comm, rank, size);
  std::vector<int64_t> lengths = gather(shard.lengths, MPI_INT64_T, comm, rank, size);
  std::vector<int64_t> prompt = gather(shard.prompt_lengths, MPI_INT64_T, comm, rank, size);
  std::vector<int64_t> response = gather(shard.response_lengths, MPI_INT64_T, comm, rank, size);
  long long bytes = 0, my_bytes = shard.text_bytes;
  MPI_Reduce(&my_bytes, &bytes, 1, MPI_LONG_LONG, MPI_SUM, 0, comm);

  if (rank == 0) {
    std::vector<int64_t> offsets{0};
    for (int64_t l : lengths) offsets.push_back(offsets.back() + l);
    // The provenance a later run compares with (data/provenance.h): the options as describe_options
    // records them, the hashes of the tokenizer files actually read, the datasets as loaded.
    data::StoreMeta meta = data::describe_options(cfg.data);
    meta.tokenizer_sha256 = tok.sha256();
    meta.tokenizer_config_sha256 = tok.config_sha256();
    meta.vocab_size = int64_t(tok.vocab_size());
    meta.made_by = made_by;
    meta.sources = loaded.sources;
    for (const auto& s : loaded.sources) meta.num_dropped += s.invalid;
    data::write_token_store(cfg.output, ids, labels, offsets, meta);
    double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    int64_t label_tokens =
        std::count_if(labels.begin(), labels.end(), [](int32_t l) { return l != data::kIgnoreIndex; });
    int64_t read_rows = 0;
    for (const auto& s : loaded.sources) read_rows += s.rows;
    std::string out = fmt::format(
        "wrote {}\n  samples: {} kept, {} dropped (abnormal rows) of {} read from {} dataset(s)\n"
        "  tokens: {} ({} trained, {:.1f}%), template {}, cutoff_len {}\n"
        "  time: {:.2f} s in all; tokenizing {:.2f} MB of text took {:.2f} s on {} rank(s): {:.2f} MB/s\n",
        cfg.output, lengths.size(), meta.num_dropped, read_rows, loaded.sources.size(), ids.size(), label_tokens,
        ids.empty() ? 0.0 : 100.0 * double(label_tokens) / double(ids.size()), meta.template_name, meta.cutoff_len,
        secs, double(bytes) / 1e6, tok_secs, size, tok_secs > 0 ? double(bytes) / 1e6 / tok_secs : 0.0);
    out += data::length_histogram(prompt, "prompt tokens");
    out += data::length_histogram(response, "response tokens");
    std::fputs(out.c_str(), stdout);
  }
  MPI_Barrier(comm);
  return kExitOk;
}

}  // namespace zlora::cli
