// The LoRA SFT training loop, llm.c style: every phase of a run is one visible call. The phases
// themselves (setup, resume, step, log, save, finish) are SftRecipe's (recipe.h).
#include "zlora/train/sft.h"

#include "recipe.h"

#include "zlora/ckpt/preempt.h"

namespace zlora::train {

int run_sft(const config::Resolved<config::TrainConfig>& resolved, dist::MpiRuntime& mpi) {
  // First of all: a SIGTERM/SIGUSR1 during setup is remembered (and acted on before the first step).
  ckpt::PreemptionGuard signals;
  SftRecipe recipe(resolved, mpi);  // communicator, token store, base weights, LoRA, ZeRO optimizer, plan
  recipe.resume();                  // --resume_from_checkpoint: optimizer, sampler, RNG, logs
  // A resumed run whose checkpoint step lost its evaluation to a preemption evaluates it first.
  if (recipe.eval_pending() && !recipe.evaluate()) return recipe.stop_preempted(/*abandoned_step=*/false);
  while (!recipe.done()) {
    // forward -> backward per micro-batch -> reduce -> clip -> update; abandoned when a rank is signalled
    const StepResult step = recipe.train_step();
    if (step.abandoned) return recipe.stop_preempted(/*abandoned_step=*/true);  // keeps the last finished step
    recipe.log(step);
    // eval_strategy: before the boundary agreement, so that a checkpoint of this step holds its eval_loss
    if (recipe.eval_due() && !recipe.evaluate()) return recipe.stop_preempted(/*abandoned_step=*/false);
    if (recipe.preempted_at_boundary()) return recipe.stop_preempted(/*abandoned_step=*/false);
    if (recipe.save_due()) recipe.save();
  }
  recipe.finish();  // the final adapter, train_results.json, the loss plots, do_eval's eval_results.json
  return 0;
}

}  // namespace zlora::train
