#include "train_store.h"

#include "zlora/cli/commands.h"
#include "zlora/config/load.h"
#include "zlora/core/error.h"
#include "zlora/core/log.h"
#include "zlora/train/sft.h"

#include <cstdio>

namespace zlora::cli {

int run_train(const Args& args, Session& session) {
  const auto& schema = config::train_schema();
  if (wants_help(args)) {
    std::fputs(config::help_text(schema,
                                 "usage: zlora train [CONFIG.yaml] [--option value | option=value ...]\n"
                                 "       mpirun -np N zlora train CONFIG.yaml ...\n"
                                 "LoRA SFT with LLaMA-Factory's options; a DeepSpeed JSON may be given with "
                                 "--deepspeed.")
                   .c_str(),
               stdout);
    return kExitOk;
  }
  config::Resolved<config::TrainConfig> r = config::load_train_config(args);
  for (const auto& w : r.warnings) log::warn("{}", w);
  if (r.cfg.training.print_config) {
    std::fputs(config::render(schema, r).c_str(), stdout);
    return kExitOk;
  }

  dist::MpiRuntime& mpi = session.start_mpi();
  ensure_train_store(r, session);
  return train::run_sft(r, mpi);
}

}  // namespace zlora::cli
