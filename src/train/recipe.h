// The LoRA SFT recipe as phases, in the spirit of torchtune's recipe interface: setup (the constructor),
// resume, one optimizer step, log, save, finish. run_sft (sft.cpp) calls them in a loop short enough to
// read at a glance; this class owns everything a rank holds for the run, in the order it is built:
//   device, precision, communicators -> token store -> frozen base weights (ZeRO-3: this rank's shards)
//   -> LoRA adapter -> ZeRO optimizer -> step plan and schedule -> output_dir checks
// Every phase is collective unless it says otherwise: all ranks call it in the same order.
#pragma once

#include "zlora/config/args.h"
#include "zlora/config/load.h"
#include "zlora/data/token_store.h"
#include "zlora/dist/communicator.h"
#include "zlora/dist/host_group.h"
#include "zlora/dist/topology.h"
#include "zlora/model/config.h"
#include "zlora/model/decoder.h"
#include "zlora/model/lora.h"
#include "zlora/model/safetensors.h"
#include "zlora/model/weights.h"
#include "zlora/train/metrics.h"
#include "zlora/train/run_logger.h"
#include "zlora/train/schedule.h"
#include "zlora/train/step_graphs.h"
#include "zlora/train/step_plan.h"
#include "zlora/zero/comm_model.h"
#include "zlora/zero/loss_scaler.h"
#include "zlora/zero/zero_optimizer.h"

#include "phase_profile.h"

#include <ATen/core/Generator.h>

#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace zlora::dist {
class MpiRuntime;
}

namespace zlora::train {

// What one call of train_step() did.
struct StepResult {
  // A rank was signalled (SIGTERM/SIGUSR1) before the step could finish: every rank stopped at the same
  // point, nothing was updated, and the state is still the last finished step's.
  bool abandoned = false;
  StepStats stats;  // the finished step's loss, lr, grad norm, tokens, samples, FLOPs
};

class SftRecipe {
 public:
  SftRecipe(const config::Resolved<config::TrainConfig>& resolved, dist::MpiRuntime& mpi);
  ~SftRecipe();
  SftRecipe(const SftRecipe&) = delete;
  SftRecipe& operator=(const SftRecipe&) = delete;

  // Restores optimizer, sampler, RNG, loss scaler and logs from --resume_from_checkpoint (saved at any
  // world size and ZeRO stage), then starts the run's logger. Without a checkpoint: only the logger.
  void resume();

  bool done() const { return global_step_ >= counts_.total_steps; }

  // One optimizer step: forward -> backward for each of this rank's micro-batches, then reduce -> clip
  // -> update in the ZeRO optimizer, and the step's loss summed over ranks. Before each micro-batch the
  // ranks agree whether any was signalled; if so the step is abandoned there. Before the update they
  // agree whether every rank's micro-batches ran whole (eager ZeRO 0-2 leave one at an interruption point
  // when signalled): if so the step is finished and the boundary agreement then checkpoints it.
  StepResult train_step();

  // After a finished step: rank 0 logs it (trainer_log.jsonl, console); every rank refuses a loss that
  // is no longer finite.
  void log(const StepResult& step);

  // Evaluation (eval_strategy): whether the step just finished is an evaluation point.
  bool eval_due() const;
  // Whether the checkpoint this run resumed from lost its step's evaluation to a preemption.
  bool eval_pending() const { return eval_pending_; }
  // Evaluates the adapter as it is on the eval samples and logs eval_loss (rank 0). Returns false when a
  // rank was signalled meanwhile: the evaluation is dropped (a resumed run redoes it) and the caller stops.
  bool evaluate();

  // At a step boundary: whether any rank was signalled (the agreement is the fault point step_boundary).
  bool preempted_at_boundary();
  bool save_due() const;
  // checkpoint-<step> of the last finished step (nothing when it is already saved).
  void save();
  // A signal arrived: saves the last finished step when it is not saved yet, says so, and returns the
  // exit code (ckpt::kExitPreempted).
  int stop_preempted(bool abandoned_step);

  // The profile, the final adapter, train_results.json and the loss plot (rank 0), then with do_eval the
  // final evaluation (eval_results.json; not interrupted by signals: the adapter is already saved).
  void finish();

 private:
  bool agree_preempted(bool at_step_boundary);
  std::vector<model::PackedBatch> read_step(const StepPlan& plan) const;
  // Collective: eval_loss over the eval samples, all ranks; nullopt when `interruptible` and a rank was
  // signalled meanwhile (the ranks agree before each round).
  std::optional<EvalResults> run_eval(bool interruptible);
  void run_micro_batch(const MicroBatch& mb, const model::PackedBatch& batch, double weight, at::Tensor& loss_acc);
  double update(double lr);  // reduce -> clip -> AdamW; the gradient norm to log
  // The communication model for this run with `micro_batches_per_step` micro-batches in each step.
  zero::CommModel comm_model(double micro_batches_per_step) const;
  // Collective: rank 0's extra facts for train_results.json (peak memory over ranks, traffic, topology).
  nlohmann::json run_facts();

  const config::TrainConfig& c_;
  dist::MpiRuntime& mpi_;
  const int rank_, world_;
  const std::filesystem::path output_dir_;

  // 1. device, precision, communicators
  at::Device device_;
  at::ScalarType dtype_;
  dist::Topology topology_;                   // where every rank runs; names a lost rank on a timeout
  std::unique_ptr<dist::HostGroup> host_;     // agreements and checkpoint traffic (MPI, host memory)
  std::unique_ptr<dist::Communicator> comm_;  // ZeRO's collectives (NCCL or MPI)
  // 2-4. data, frozen weights, LoRA
  std::unique_ptr<data::TokenStore> store_;
  // The training samples: planner sample k is store sample train_index_[k] (val_size holds some out;
  // empty: every sample, k itself). lengths_ is indexed by k.
  std::vector<int64_t> train_index_;
  std::vector<int64_t> lengths_;
  // Evaluation samples (val_size: held out of store_; eval_dataset: eval_store_), in evaluation order.
  std::unique_ptr<data::TokenStore> eval_store_;
  const data::TokenStore* eval_source_ = nullptr;
  std::vector<int64_t> eval_index_;
  long long eval_steps_ = 0;              // eval_strategy steps: every N steps; 0: not by steps
  bool eval_each_epoch_ = false;          // eval_strategy epoch
  bool eval_pending_ = false;             // resumed at a step whose evaluation did not finish
  std::optional<EvalResults> last_eval_;  // the newest evaluation (rank 0 logs it; reused at the end)
  model::ModelConfig mcfg_;
  std::unique_ptr<model::SafetensorsModel> st_;
  std::unique_ptr<model::WeightStore> weights_;
  std::vector<int64_t> zero3_unit_numel_;  // ZeRO-3: each unit's gathered length (the comm model)
  std::unique_ptr<model::LoraAdapter> lora_;
  std::unique_ptr<model::Decoder> decoder_;
  // 5. ZeRO optimizer, fp16 loss scaling
  std::unique_ptr<zero::ZeroOptimizer> optimizer_;
  std::optional<zero::LossScaler> scaler_;
  // Steps skipped on fp16 overflow: they count as steps (max_steps, the logs, the sample order) but do not
  // advance the LR schedule, as in DeepSpeed's engine (its scheduler steps only when the optimizer did).
  long long skipped_steps_ = 0;
  double last_grad_norm_ = 0;  // logged for a skipped step, as DeepSpeed keeps the previous norm
  // 6. steps, schedule, plan
  StepCounts counts_;
  std::unique_ptr<Schedule> schedule_;
  long long logging_steps_ = 0, save_steps_ = 0;
  std::unique_ptr<StepPlanner> planner_;
  bool shuffle_ = true;
  long long seed_ = 0;
  // 7. the loop's state
  at::Generator gen_;
  std::string gen_at_boundary_;  // the generator's state at the last step boundary (what a checkpoint keeps)
  SamplerPosition position_;
  long long global_step_ = 0;
  long long saved_step_ = -1;  // the step the newest checkpoint holds (resumed from or written); -1: none
  bool first_step_ = true;     // this process has not run a step yet
  std::unique_ptr<RunLogger> logger_;
  FlopsModel flops_;
  std::optional<double> peak_flops_;
  model::ForwardOptions fwd_;
  // While set (eager micro-batches under ZeRO 0-2), a signal ends the micro-batch at the forward's next
  // interruption point. Under ZeRO-3 each layer is an all-gather the other ranks wait in, and a CUDA
  // graph capture must not be cut short, so it stays clear there.
  bool interruptible_ = false;
  bool step_cut_short_ = false;  // a micro-batch of this step ended at an interruption point
  std::unique_ptr<StepGraphs> graphs_;
  at::Tensor loss_acc_;
  model::PackedBatch dummy_;  // ZeRO-3: what a rank without work for a micro-batch runs
  std::optional<std::pair<StepPlan, std::vector<model::PackedBatch>>> next_;  // the prefetched next step
  PhaseProfile profile_;
  long long profile_from_ = 0;
  long long micro_batches_run_ = 0;  // this process's, for the comm model's ZeRO-3 gathers
  long long steps_run_ = 0;
};

}  // namespace zlora::train
