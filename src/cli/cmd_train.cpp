#include "train_store.h"

#include "zlora/ckpt/output_lock.h"
#include "zlora/cli/commands.h"
#include "zlora/config/load.h"
#include "zlora/core/error.h"
#include "zlora/core/log.h"
#include "zlora/train/sft.h"

#include <cstdio>
#include <optional>

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
  print_config_messages(r.warnings, r.notes);
  if (r.cfg.training.print_config) {
    if (dist::launcher_rank() == 0) std::fputs(config::render(schema, r).c_str(), stdout);
    return kExitOk;
  }

  // One run owns output_dir, from before anything is written there (the token store below may be
  // rebuilt in it) to this function's end, whatever the way out (ckpt/output_lock.h).
  dist::MpiRuntime& mpi = session.start_mpi();
  const std::optional<ckpt::OutputDirLock> lock = ckpt::lock_output_dir(r.cfg.training.output_dir, mpi.world());
  if (lock && !lock->took_over().empty()) log::warn("{}", lock->took_over());
  ensure_train_store(r, session);
  return train::run_sft(r, mpi);
}

}  // namespace zlora::cli
