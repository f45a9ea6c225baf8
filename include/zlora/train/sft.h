// The LoRA SFT recipe: everything `zlora train` does on one rank, from the resolved configuration to
// the final adapter. The modules it composes (data, model, dist, zero, ckpt, train) each do one thing;
// this file is the place where the order of the steps is visible, llm.c style.
#pragma once

#include "zlora/config/args.h"
#include "zlora/config/load.h"

namespace zlora::dist {
class MpiRuntime;
}

namespace zlora::train {

// Runs the training job on this rank. Returns the process exit code: 0, or ckpt::kExitPreempted after a
// preemption checkpoint. Throws zlora::Error for anything the user must fix.
int run_sft(const config::Resolved<config::TrainConfig>& resolved, dist::MpiRuntime& mpi);

}  // namespace zlora::train
