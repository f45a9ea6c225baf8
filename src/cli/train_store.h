// The token store of a `zlora train` run (internal to the CLI): reused when its provenance matches the
// run's data settings, rebuilt when that is allowed, refused otherwise (docs/data-format.md, "Which
// store a run trains on").
#pragma once

#include "zlora/cli/commands.h"
#include "zlora/config/load.h"

namespace zlora::cli {

// Resolves r.cfg.data.tokenized_path (default <output_dir>/tokenized.h5, its origin recorded) and leaves
// there a store made from the run's data settings. Rank 0 decides, once, for all ranks: a missing store
// is prepared from --dataset; an existing one is compared with the run (data::compare_provenance: every
// data option when --dataset is given, else only the options set explicitly) and rebuilt when
// overwrite_cache is set or when `zlora train` made it at the default path, else refused naming the
// store, each differing field with both values, and the fixes. A refusal is thrown on every rank;
// a rebuild runs on all ranks (prepare_store). Call on every rank, after session.start_mpi().
// With eval_dataset, the same for the evaluation store (eval_store_path of tokenized_path), whose path is
// left in r.cfg.data.eval_tokenized_path.
void ensure_train_store(config::Resolved<config::TrainConfig>& r, Session& session);

// Where the eval_dataset store of a run training on `tokenized_path` lives: <stem>_eval.h5 beside it.
std::string eval_store_path(const std::string& tokenized_path);

}  // namespace zlora::cli
