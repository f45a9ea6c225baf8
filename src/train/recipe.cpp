#include "recipe.h"

#include "device.h"
#include "model_setup.h"
#include "store_batches.h"
#include "zero3_weights.h"

#include "zlora/ckpt/checkpoint.h"
#include "zlora/ckpt/preempt.h"
#include "zlora/ckpt/run_descriptor.h"
#include "zlora/core/error.h"
#include "zlora/core/fs.h"
#include "zlora/core/log.h"
#include "zlora/core/sha256.h"
#include "zlora/data/split.h"
#include "zlora/dist/mpi_runtime.h"
#include "zlora/train/checkpoint_state.h"
#include "zlora/train/sampler.h"
#include "zlora/zero/memory_plan.h"

#include <torch/torch.h>
#include <torch/version.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <exception>

namespace zlora::train {

namespace {

namespace stdfs = std::filesystem;

// Thrown at a forward's interruption point after a signal; caught around the micro-batch.
struct StepInterrupted : std::exception {
  const char* what() const noexcept override { return "micro-batch interrupted by a preemption signal"; }
};

double now_s() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

std::string signal_origin() {
  // Only the signalled rank knows the signal; the others learnt of it in the agreement.
  const int sig = ckpt::preempt_signal();
  return sig != 0 ? fmt::format("signal {}", sig) : std::string("another rank was signalled");
}

}  // namespace

// ---- setup -------------------------------------------------------------------------------------

SftRecipe::SftRecipe(const config::Resolved<config::TrainConfig>& resolved, dist::MpiRuntime& mpi)
    : c_(resolved.cfg),
      mpi_(mpi),
      rank_(mpi.rank()),
      world_(mpi.size()),
      output_dir_(resolved.cfg.training.output_dir),
      device_(resolve_device(resolved.cfg.training.device, mpi.local_rank())),
      dtype_(compute_dtype(resolved.cfg)),
      topology_(dist::Topology::gather(mpi.world(), mpi.local_rank(), mpi.local_size(), device_.str())),
      profile_(device_) {
  const config::TrainConfig& c = c_;
  // ---- 1. device, precision, communicator
  if (c.training.fp16 && device_.is_cpu())
    if (auto why = cpu_half_unsupported())
      fail(
          "fp16 needs float16 kernels, which this LibTorch ({}) lacks on the CPU ({}); on the CPU train in fp32 "
          "(drop --fp16), or run fp16/bf16 on a GPU",
          TORCH_VERSION, *why);
  // NCCL moves GPU tensors only: a CPU run takes the MPI backend whatever `auto` would pick.
  std::string comm_kind = c.dist.comm;
  if (device_.is_cpu()) {
    if (comm_kind == "nccl") fail("comm nccl needs the CUDA device; this run is on the CPU (use --comm mpi or auto)");
    comm_kind = "mpi";
  }
  const double timeout_s = static_cast<double>(c.training.ddp_timeout);
  host_ = std::make_unique<dist::HostGroup>(mpi, timeout_s, &topology_);
  comm_ = dist::make_communicator(mpi, {comm_kind, timeout_s, &topology_});
  log::info("world size {} ({}), device {} ({}), compute {}, ZeRO stage {}{}", world_, comm_->backend(), device_.str(),
            device_name(device_), c10::toString(dtype_), c.dist.zero_stage,
            c.dist.offload_optimizer == "cpu" ? " + CPU optimizer offload" : "");
  if (rank_ == 0) {
    log::info("{}", topology_.describe());
    log::info("collectives: {}; step agreements and checkpoint traffic over MPI in host memory, timeout {} s",
              collective_transport(comm_->backend(), device_), timeout_s);
  }
  if (c.training.full_determinism) at::globalContext().setDeterministicAlgorithms(true, false);

  // ---- 2. the token store
  if (!c.data.tokenized_path) fail("internal: the token store path was not resolved before training");
  store_ = std::make_unique<data::TokenStore>(*c.data.tokenized_path);
  const int64_t n_stored = static_cast<int64_t>(store_->size());
  ZLORA_REQUIRE(n_stored > 0, "the token store {} holds no samples", store_->path().string());
  const std::vector<int64_t> stored_lengths = store_->lengths();
  std::vector<int64_t> loss_tokens = count_loss_tokens(*store_);
  if (c.data.val_size > 0) {
    // LLaMA-Factory's split: the same held-out samples, the rest trained on in the split's order.
    data::TrainTestSplit split =
        data::train_test_split(n_stored, c.data.val_size, static_cast<uint64_t>(c.training.seed));
    train_index_ = std::move(split.train);
    eval_index_ = std::move(split.test);
    eval_source_ = store_.get();
    std::vector<int64_t> kept;
    for (int64_t i : train_index_) {
      lengths_.push_back(stored_lengths[static_cast<size_t>(i)]);
      kept.push_back(loss_tokens[static_cast<size_t>(i)]);
    }
    loss_tokens = std::move(kept);
    log::info("val_size {}: {} samples held out for evaluation, {} to train on", c.data.val_size, eval_index_.size(),
              train_index_.size());
  } else {
    lengths_ = stored_lengths;
  }
  if (c.data.eval_tokenized_path) {
    eval_store_ = std::make_unique<data::TokenStore>(*c.data.eval_tokenized_path);
    ZLORA_REQUIRE(eval_store_->size() > 0, "the evaluation store {} (eval_dataset) holds no samples",
                  eval_store_->path().string());
    eval_index_.resize(eval_store_->size());
    for (size_t i = 0; i < eval_index_.size(); ++i) eval_index_[i] = static_cast<int64_t>(i);
    eval_source_ = eval_store_.get();
    log::info("eval_dataset: {} samples in {}", eval_index_.size(), eval_store_->path().string());
  }
  const int64_t n_samples = static_cast<int64_t>(lengths_.size());

  // ---- 3. frozen base weights
  const stdfs::path model_dir = c.model.model_name_or_path;
  mcfg_ = model::load_model_config(model_dir);
  if (const std::string w = model::cutoff_len_warning(mcfg_, c.data.cutoff_len, (model_dir / "config.json").string());
      !w.empty())
    log::warn("{}", w);
  if (stdfs::exists(model_dir / "tokenizer.json")) {
    const std::string tokenizer_sha = sha256_file((model_dir / "tokenizer.json").string());
    for (const data::TokenStore* s : {store_.get(), eval_store_.get()})
      if (s) s->require_compatible(tokenizer_sha, c.data.template_name.value_or(s->meta().template_name));
  } else {
    log::warn("{} has no tokenizer.json: cannot check that the token store was made with the model's tokenizer",
              model_dir.string());
  }
  const int64_t micro_batch_tokens =
      resolve_micro_batch_tokens(c.dist.micro_batch_tokens, c.training.per_device_train_batch_size, c.data.cutoff_len);
  {
    const zero::MemoryPlanInput plan_in = memory_plan_input(mcfg_, c, dtype_, world_, device_, micro_batch_tokens);
    log::info("memory plan per rank:\n{}", zero::plan_memory(plan_in).describe());
    zero::require_fits(plan_in);
  }
  st_ = std::make_unique<model::SafetensorsModel>(model_dir);
  if (c.dist.zero_stage == 3) {
    // The resident store checks this itself; ZeRO-3 reads shards of the same files.
    model::require_declared_layers(*st_, mcfg_.num_hidden_layers, (model_dir / "config.json").string());
    auto z3 = std::make_unique<Zero3WeightStore>(mcfg_, *st_, *comm_, device_, dtype_, c.dist.stage3_prefetch_layers);
    log::info("ZeRO-3: this rank keeps {} base-model elements (its shard)", z3->local_numel());
    zero3_unit_numel_ = z3->gathered_unit_numels();
    weights_ = std::move(z3);
  } else {
    weights_ = std::make_unique<model::ResidentWeightStore>(mcfg_, *st_, device_, dtype_);
  }

  // ---- 4. LoRA
  if (c.model.adapter_name_or_path) {
    log::info("continuing training of the adapter in {}", *c.model.adapter_name_or_path);
    lora_ =
        std::make_unique<model::LoraAdapter>(model::LoraAdapter::load(*c.model.adapter_name_or_path, mcfg_, device_));
  } else {
    model::LoraConfig lc;
    lc.r = c.lora.lora_rank;
    lc.alpha = *c.lora.lora_alpha;
    lc.dropout = c.lora.lora_dropout;
    lc.targets = c.lora.lora_target;
    lc.use_rslora = c.lora.use_rslora;
    lc.seed = static_cast<uint64_t>(c.training.seed);
    lora_ = std::make_unique<model::LoraAdapter>(model::LoraAdapter::create(mcfg_, lc, device_));
  }
  decoder_ = std::make_unique<model::Decoder>(*weights_, lora_.get());

  // ---- 5. ZeRO optimizer over the LoRA parameters
  zero::ZeroOptions zo;
  zo.stage = static_cast<int>(c.dist.zero_stage);
  zo.offload = c.dist.offload_optimizer == "cpu";
  zo.reduce_bucket_size = c.dist.reduce_bucket_size;
  zo.allgather_bucket_size = c.dist.allgather_bucket_size;
  zo.max_grad_norm = c.training.max_grad_norm;
  zo.adam = {c.training.adam_beta1, c.training.adam_beta2, c.training.adam_epsilon, c.training.weight_decay};
  optimizer_ = std::make_unique<zero::ZeroOptimizer>(lora_->named_parameters(), *comm_, zo);
  if (rank_ == 0)
    log::info(
        "communication model (bytes each rank sends per optimizer step, ring algorithms, at {} micro-batches "
        "per step: packing into micro_batch_tokens may run fewer, and ZeRO-3's gathers scale with them; the end "
        "of the run compares the counters with the micro-batches it ran; docs/benchmarks.md):{}",
        c.training.gradient_accumulation_steps,
        comm_model(static_cast<double>(c.training.gradient_accumulation_steps)).describe());
  // fp16: DeepSpeed's loss scaling (zero/loss_scaler.h). The LoRA masters and AdamW stay fp32; only the
  // frozen base and the activations are float16.
  if (c.training.fp16) {
    zero::LossScalerOptions so;
    so.static_scale = c.dist.loss_scale;
    so.initial_scale_power = c.dist.initial_scale_power;
    so.scale_window = c.dist.loss_scale_window;
    so.hysteresis = c.dist.hysteresis;
    so.min_scale = c.dist.min_loss_scale;
    scaler_.emplace(so);
    if (scaler_->dynamic())
      log::info("fp16 dynamic loss scaling: initial scale {:g}, window {}, hysteresis {}, min scale {:g}",
                scaler_->scale(), so.scale_window, so.hysteresis, so.min_scale);
    else
      log::info("fp16 static loss scale {:g}", scaler_->scale());
  }

  // ---- 6. step counting, schedule, plan
  counts_ = count_steps(n_samples, c.training.per_device_train_batch_size, c.training.gradient_accumulation_steps,
                        world_, c.training.num_train_epochs, c.training.max_steps);
  if (c.dist.train_batch_size && *c.dist.train_batch_size != counts_.global_batch)
    fail(
        "train_batch_size {} must equal per_device_train_batch_size x gradient_accumulation_steps x world size "
        "= {} x {} x {} = {}",
        *c.dist.train_batch_size, c.training.per_device_train_batch_size, c.training.gradient_accumulation_steps,
        world_, counts_.global_batch);
  schedule_ = std::make_unique<Schedule>(make_schedule(c.training.lr_scheduler_type, c.training.learning_rate,
                                                       c.training.warmup_steps, c.training.warmup_ratio,
                                                       c.training.warmup_type, counts_.total_steps));
  logging_steps_ = resolve_interval(c.training.logging_steps, counts_.total_steps, "logging_steps");
  save_steps_ =
      c.training.save_strategy == "no" ? 0 : resolve_interval(c.training.save_steps, counts_.total_steps, "save_steps");
  PlanOptions po;
  po.per_device_batch = c.training.per_device_train_batch_size;
  po.grad_accum = c.training.gradient_accumulation_steps;
  po.world_size = world_;
  po.rank = rank_;
  po.micro_batch_tokens = micro_batch_tokens;
  po.steps_per_epoch = counts_.steps_per_epoch;
  shuffle_ = !c.training.disable_shuffling;
  seed_ = c.training.seed;
  planner_ = std::make_unique<StepPlanner>(lengths_, std::move(loss_tokens), po,
                                           [n_samples, seed = seed_, shuffle = shuffle_](long long epoch) {
                                             return epoch_order(n_samples, seed, epoch, shuffle);
                                           });
  log::info("{} samples, {} optimizer steps ({} per epoch), global batch {}, micro-batch budget {} tokens", n_samples,
            counts_.total_steps, counts_.steps_per_epoch, counts_.global_batch, po.micro_batch_tokens);
  if (c.training.eval_strategy == "steps")
    eval_steps_ =
        resolve_interval(c.training.eval_steps.value_or(c.training.logging_steps), counts_.total_steps, "eval_steps");
  eval_each_epoch_ = c.training.eval_strategy == "epoch";

  // ---- 7. output dir: what it holds must be this run's (rank 0 checks, all wait)
  if (rank_ == 0) {
    ckpt::RunDescriptor run;
    run.model_path = stdfs::absolute(model_dir).lexically_normal().string();
    run.model_config_sha256 = sha256_file((model_dir / "config.json").string());
    run.lora_rank = lora_->config().r;
    run.lora_alpha = lora_->config().alpha;
    run.lora_target = c.lora.lora_target;
    run.use_rslora = lora_->config().use_rslora;
    run.data_hash = data_hash(*store_);
    run.template_name = store_->meta().template_name;
    for (const auto& p : ckpt::clean_stale(output_dir_))
      log::warn("removed {}, left by an interrupted save", p.string());
    auto od = ckpt::prepare_output_dir(output_dir_, run, c.training.overwrite_output_dir,
                                       c.training.resume_from_checkpoint.has_value());
    for (const auto& note : od.notes) log::info("{}", note);
    if (!od.warning.empty()) log::warn("{}", od.warning);
    fs::write_file_atomic(
        output_dir_ / "topology.json",
        topology_.to_json(comm_->backend(), {{"training collectives", collective_transport(comm_->backend(), device_)},
                                             {"agreements and checkpoints", "mpi (host memory)"}}));
  }
  comm_->barrier()->wait();

  // ---- 8. the loop's state
  // RNG for LoRA dropout and NEFTune: per rank, so ranks draw different masks for different samples.
  gen_ = make_generator(device_, static_cast<uint64_t>(seed_) * 1000003ull + rank_ + 1);
  gen_at_boundary_ = generator_state(gen_);
  flops_ = flops_model(mcfg_, *lora_);
  peak_flops_ = device_.is_cuda() ? peak_flops(device_name(device_), dtype_ != at::kFloat) : std::nullopt;
  fwd_.training = true;
  fwd_.neftune_alpha = c.lora.neftune_noise_alpha.value_or(0.0);
  fwd_.generator = gen_;
  fwd_.attention = attention_kernel(c.training.flash_attn);
  fwd_.gradient_checkpointing = c.training.gradient_checkpointing;
  fwd_.interruption_point = [this] {
    if (interruptible_ && ckpt::preempt_requested()) throw StepInterrupted();
  };
  loss_acc_ = at::zeros({1}, at::TensorOptions().dtype(at::kDouble).device(device_));
  // cuda_graphs: each micro-batch padded to a bucket and replayed as a CUDA graph (train/step_graphs.h).
  if (c.dist.cuda_graphs != "false") {
    const std::optional<std::string> why =
        StepGraphs::unsupported(fwd_, device_, decoder_->uses_flash(fwd_), static_cast<int>(c.dist.zero_stage));
    if (!why) {
      StepGraphOptions go;
      go.max_seqlen = *std::max_element(lengths_.begin(), lengths_.end());
      graphs_ = std::make_unique<StepGraphs>(*decoder_, fwd_, device_, go);
      log::info("cuda_graphs: micro-batches run as CUDA graphs (tokens padded to multiples of {}, loss rows of {})",
                go.token_granularity, go.row_granularity);
    } else if (c.dist.cuda_graphs == "true") {
      fail("cuda_graphs=true: {}; use cuda_graphs=auto or false", *why);
    } else if (device_.is_cuda()) {
      log::info("cuda_graphs: off ({})", *why);
    }
  }
  dummy_ = model::PackedBatch::from_samples({{0, 0}}, {{-100, -100}});

  profile_from_ = counts_.total_steps - c.dist.profile_steps;
}

SftRecipe::~SftRecipe() = default;

// ---- resume ------------------------------------------------------------------------------------

void SftRecipe::resume() {
  std::optional<TrainerState> resumed_state;
  std::string resumed_logger;
  if (c_.training.resume_from_checkpoint) {
    const ckpt::CheckpointInfo info =
        ckpt::resolve_resume(output_dir_, *c_.training.resume_from_checkpoint, mpi_.world());
    const bool same_world = info.world_size() == world_;
    // The state is saved as slices of each rank's partition. A rank needs every file when its range
    // spans other ranks' partitions: at another world size, and at ZeRO-0, where every rank steps the
    // whole buffer. Otherwise its own file holds exactly its partition.
    std::vector<int> from_ranks;
    if (same_world && c_.dist.zero_stage != 0)
      from_ranks.push_back(rank_);
    else
      for (int r = 0; r < info.world_size(); ++r) from_ranks.push_back(r);
    zero::OptimizerState merged;
    for (size_t i = 0; i < from_ranks.size(); ++i) {
      const int from = from_ranks[i];
      const std::string origin = (info.dir / ckpt::rank_file_name(from)).string();
      RankCheckpoint rc = decode_rank_checkpoint(ckpt::read_rank_file(info, from), origin);
      ZLORA_REQUIRE(i == 0 || rc.optimizer.step == merged.step,
                    "{}: its AdamW step count {} differs from {}'s {}; the checkpoint mixes files of different steps",
                    origin, rc.optimizer.step, ckpt::rank_file_name(from_ranks[0]), merged.step);
      merged.step = rc.optimizer.step;
      for (auto& s : rc.optimizer.slices) merged.slices.push_back(std::move(s));
      if (i == 0) {
        position_ = planner_->decode(rc.sampler, seed_, shuffle_);
        if (rc.scaler) {
          skipped_steps_ = rc.scaler->skipped_steps;
          last_grad_norm_ = rc.scaler->last_grad_norm;
          if (scaler_) scaler_->set_state(rc.scaler->state);
        } else if (scaler_) {
          log::warn("{} holds no fp16 loss scaler state (saved by a bf16/fp32 run): the scale starts at {:g}", origin,
                    scaler_->scale());
        }
      }
      // Dropout masks continue bit for bit only where each rank gets back its own generator.
      if (same_world && from == rank_ && !rc.rng.empty()) set_generator_state(gen_, rc.rng);
      if (from == 0) resumed_logger = std::move(rc.logger);
    }
    optimizer_->import_state(merged);
    gen_at_boundary_ = generator_state(gen_);
    resumed_state = TrainerState::read(info.dir / ckpt::kTrainerStateName);
    global_step_ = saved_step_ = resumed_state->global_step;
    // A preemption during the evaluation of this step saved it without the evaluation: redo it first.
    if (eval_due()) {
      bool logged = false;
      for (const auto& entry : resumed_state->log_history)
        logged = logged || (entry.contains("eval_loss") && entry.value("step", -1LL) == global_step_);
      eval_pending_ = !logged;
    }
    log::info("resumed from {} at step {} (saved at world size {}, now {})", info.dir.string(), info.step(),
              info.world_size(), world_);
  }
  if (rank_ == 0) {
    RunLoggerOptions lo;
    lo.output_dir = output_dir_;
    lo.total_steps = counts_.total_steps;
    lo.steps_per_epoch = counts_.steps_per_epoch;
    lo.logging_steps = logging_steps_;
    lo.save_steps = save_steps_;
    lo.per_device_batch = c_.training.per_device_train_batch_size;
    lo.num_train_epochs = counts_.num_train_epochs;
    lo.world_size = world_;
    lo.peak_flops = peak_flops_;
    lo.plot_loss = c_.training.plot_loss;
    if (c_.training.report_to_tensorboard())
      lo.tensorboard_dir =
          c_.training.logging_dir ? stdfs::path(*c_.training.logging_dir) : default_logging_dir(output_dir_);
    logger_ = std::make_unique<RunLogger>(lo, now_s(), resumed_state ? &*resumed_state : nullptr, resumed_logger);
  }
}

// ---- one optimizer step ------------------------------------------------------------------------

bool SftRecipe::agree_preempted(bool at_step_boundary) { return ckpt::agree_preempt(host_.get(), at_step_boundary); }

std::vector<model::PackedBatch> SftRecipe::read_step(const StepPlan& plan) const {
  // Empty micro-batches stay empty: ZeRO-3 runs `dummy_` for them.
  std::vector<model::PackedBatch> out(plan.micro_batches.size());
  for (size_t i = 0; i < out.size(); ++i) {
    const std::vector<int64_t>& samples = plan.micro_batches[i].samples;
    if (samples.empty()) continue;
    if (train_index_.empty()) {
      out[i] = read_batch(*store_, samples);
    } else {
      std::vector<int64_t> stored;
      for (int64_t k : samples) stored.push_back(train_index_[static_cast<size_t>(k)]);
      out[i] = read_batch(*store_, stored);
    }
  }
  return out;
}

void SftRecipe::run_micro_batch(const MicroBatch& mb, const model::PackedBatch& batch, double weight,
                                at::Tensor& loss_acc) {
  if (graphs_ && !mb.empty()) {
    graphs_->run(batch, weight, loss_acc);
    profile_.lap(Phase::kGraph);
    return;
  }
  // A signal may end this micro-batch at an interruption point of its forward (between layers, between
  // loss chunks): its partial gradients are left behind, since the step is abandoned at the next agreement.
  interruptible_ = c_.dist.zero_stage != 3;
  try {
    // ZeRO-3 gathers every layer in forward and backward on every rank: a rank without real work still
    // runs a 2-token batch with weight 0 so the collectives line up.
    model::LossResult out = decoder_->loss(mb.empty() ? dummy_ : batch, fwd_);
    profile_.lap(Phase::kForward);
    (out.sum * (mb.empty() ? 0.0 : weight)).backward();
    if (!mb.empty()) loss_acc += out.sum.detach().to(at::kDouble);
    profile_.lap(Phase::kBackward);
  } catch (const StepInterrupted&) {
    step_cut_short_ = true;
  }
  interruptible_ = false;
}

double SftRecipe::update(double lr) {
  if (!scaler_) return optimizer_->step(lr);
  // Every rank sees the same overflow verdict (the norm is all-reduced), so all skip together.
  const zero::ZeroOptimizer::StepResult r = optimizer_->step_scaled(lr, scaler_->scale());
  const zero::LossScaleUpdate u = scaler_->update(r.overflow);
  if (r.overflow) {
    ++skipped_steps_;
    log::info("step {}: fp16 gradient overflow (inf/NaN), skipping step; {}", global_step_ + 1, u.describe());
    return last_grad_norm_;
  }
  if (u.new_scale != u.old_scale) log::info("step {}: {}", global_step_ + 1, u.describe());
  return last_grad_norm_ = r.grad_norm;
}

StepResult SftRecipe::train_step() {
  const bool profiling = c_.dist.profile_steps > 0 && global_step_ >= profile_from_;
  optimizer_->set_profiling(profiling);
  profile_.begin_step(profiling);
  StepPlan plan;
  std::vector<model::PackedBatch> batches;
  if (next_) {
    plan = std::move(next_->first);
    batches = std::move(next_->second);
    next_.reset();
  } else {
    plan = planner_->plan(position_);
    batches = read_step(plan);
  }
  profile_.lap(Phase::kData);
  const double bytes_before = comm_->traffic().total_bytes();
  optimizer_->zero_grad();
  loss_acc_.zero_();
  // The loss is the mean over every unmasked target of the global batch: each micro-batch adds
  // sum / (global target count), so the gradients summed over ranks are the global gradient. fp16: the
  // backward runs on loss x scale so that small gradients stay representable.
  const double inv_targets = 1.0 / static_cast<double>(std::max<long long>(plan.global_loss_tokens, 1));
  const double weight = scaler_ ? inv_targets * scaler_->scale() : inv_targets;
  step_cut_short_ = false;
  for (size_t i = 0; i < plan.micro_batches.size(); ++i) {
    // Every rank has the same number of micro-batches, so every rank meets each agreement. The one
    // before micro-batch 0 is the previous step's boundary, except for a process's first step (a signal
    // that arrived during setup or resume).
    if ((i > 0 || first_step_) && agree_preempted(false)) return {true, {}};
    const MicroBatch& mb = plan.micro_batches[i];
    if (mb.empty() && c_.dist.zero_stage != 3) continue;
    run_micro_batch(mb, batches[i], weight, loss_acc_);
    ++micro_batches_run_;
  }
  first_step_ = false;
  // Every micro-batch ran: a signal that came meanwhile costs only the update, after which the boundary
  // agreement saves this step; a micro-batch cut short on any rank leaves a partial gradient, so the
  // step is abandoned and the previous one is what gets saved.
  if (ckpt::agree_step_end(host_.get(), !step_cut_short_) == ckpt::StepAgreement::kAbandonStep) return {true, {}};
  // The device is still working through this step: read the next step's samples meanwhile.
  if (global_step_ + 1 < counts_.total_steps) {
    StepPlan next_plan = planner_->plan(planner_->next(position_));
    std::vector<model::PackedBatch> next_batches = read_step(next_plan);
    next_.emplace(std::move(next_plan), std::move(next_batches));
  }
  profile_.lap(Phase::kData);
  const double lr = schedule_->lr(global_step_ - skipped_steps_);
  StepResult r;
  r.stats.grad_norm = update(lr);
  profile_.add_optimizer(optimizer_->last_step_times());
  comm_->all_reduce(loss_acc_, dist::ReduceOp::kSum)->wait();
  r.stats.loss = loss_acc_.item<double>() * inv_targets;
  profile_.lap(Phase::kComm);
  ++global_step_;
  position_ = planner_->next(position_);
  gen_at_boundary_ = generator_state(gen_);
  if (!std::isfinite(r.stats.loss))
    fail("the loss became {} at step {} (lr {:.3g}, grad norm {:.3g}); lower learning_rate or check the data{}",
         r.stats.loss, global_step_, lr, r.stats.grad_norm,
         scaler_ ? "; in fp16 the forward pass can overflow float16's range (65504), which loss scaling cannot "
                   "fix: use bf16"
                 : "");
  r.stats.lr = schedule_->lr(global_step_ - skipped_steps_);  // HF logs the rate after the scheduler's step
  r.stats.tokens = plan.global_tokens;
  r.stats.samples = static_cast<long long>(plan.step_samples.size());
  r.stats.comm_bytes = comm_->traffic().total_bytes() - bytes_before;
  ++steps_run_;
  for (int64_t i : plan.step_samples) r.stats.flops += flops_.sample_flops(lengths_[static_cast<size_t>(i)]);
  return r;
}

// ---- evaluate ----------------------------------------------------------------------------------

bool SftRecipe::eval_due() const {
  if (global_step_ == 0 || !eval_source_) return false;
  if (eval_steps_ > 0 && global_step_ % eval_steps_ == 0) return true;
  return eval_each_epoch_ && (global_step_ % counts_.steps_per_epoch == 0 || global_step_ == counts_.total_steps);
}

std::optional<EvalResults> SftRecipe::run_eval(bool interruptible) {
  const double t0 = now_s();
  // Round r takes samples [r*W*B, (r+1)*W*B) of the eval order, B per rank: every rank runs the same
  // number of rounds (ZeRO-3 gathers each layer in every forward, so a rank without samples runs the
  // 2-token dummy batch; the other stages skip it).
  const int64_t n = static_cast<int64_t>(eval_index_.size());
  const int64_t per_rank = c_.training.per_device_eval_batch_size;
  const int64_t per_round = per_rank * world_;
  const int64_t rounds = (n + per_round - 1) / per_round;
  model::ForwardOptions fo;  // no dropout, no NEFTune: the adapter as it is
  fo.training = false;
  fo.attention = fwd_.attention;
  fo.loss_chunk_tokens = fwd_.loss_chunk_tokens;
  // [sum of target cross-entropies, number of targets] on this rank, then over all ranks.
  at::Tensor acc = at::zeros({2}, at::TensorOptions().dtype(at::kDouble).device(device_));
  if (rank_ == 0)
    log::info("eval at step {}: evaluating {} samples, {} per rank per forward pass", global_step_, n, per_rank);
  {
    at::NoGradGuard no_grad;
    for (int64_t round = 0; round < rounds; ++round) {
      // A signal during a long evaluation should not wait for its end (a grace period may be short).
      if (interruptible && agree_preempted(false)) return std::nullopt;
      const int64_t begin = std::min(n, round * per_round + rank_ * per_rank);
      const int64_t end = std::min(n, begin + per_rank);
      if (begin == end) {
        if (c_.dist.zero_stage == 3) (void)decoder_->loss(dummy_, fo);
        continue;
      }
      const std::vector<int64_t> samples(eval_index_.begin() + begin, eval_index_.begin() + end);
      const model::LossResult out = decoder_->loss(read_batch(*eval_source_, samples), fo);
      acc[0] += out.sum.to(at::kDouble);
      acc[1] += static_cast<double>(out.count);
    }
  }
  comm_->all_reduce(acc, dist::ReduceOp::kSum)->wait();
  const at::Tensor host = acc.cpu();
  const double sum = host[0].item<double>(), count = host[1].item<double>();
  ZLORA_REQUIRE(count > 0,
                "the {} evaluation samples have no loss tokens (every label is masked); evaluation needs samples "
                "with responses",
                n);
  EvalResults e;
  e.eval_loss = sum / count;
  e.eval_runtime = now_s() - t0;
  e.num_samples = n;
  e.num_steps = rounds;
  e.loss_tokens = static_cast<long long>(count);
  e.step = global_step_;
  e.epoch = double(global_step_) / double(counts_.steps_per_epoch);
  return e;
}

bool SftRecipe::evaluate() {
  std::optional<EvalResults> e = run_eval(/*interruptible=*/true);
  if (!e) {
    log::warn("evaluation at step {} stopped by a preemption signal; a resumed run redoes it", global_step_);
    return false;
  }
  eval_pending_ = false;
  if (rank_ == 0) logger_->on_eval(*e, now_s());
  last_eval_ = e;
  return true;
}

// ---- log, save ---------------------------------------------------------------------------------

void SftRecipe::log(const StepResult& step) {
  if (rank_ == 0) logger_->on_step(step.stats, now_s(), peak_vram_gib(device_));
  profile_.lap(Phase::kOther);
  profile_.end_step();
}

bool SftRecipe::preempted_at_boundary() { return agree_preempted(true); }

bool SftRecipe::save_due() const { return save_steps_ > 0 && global_step_ % save_steps_ == 0; }

void SftRecipe::save() {
  if (saved_step_ == global_step_) return;
  RankCheckpoint rc;
  rc.optimizer = optimizer_->export_state();
  rc.sampler = planner_->encode(position_, seed_, shuffle_);
  rc.rng = gen_at_boundary_;
  if (rank_ == 0) rc.logger = logger_->logger_state();
  if (scaler_ || skipped_steps_ > 0)
    rc.scaler = ScalerCheckpoint{scaler_ ? scaler_->state() : zero::LossScalerState{}, skipped_steps_, last_grad_norm_};
  const std::string payload = encode_rank_checkpoint(rc);
  ckpt::SaveRequest req;
  req.step = global_step_;
  req.payload = payload;
  req.rank0_files = [&](const stdfs::path& dir) { lora_->save(dir, c_.model.model_name_or_path); };
  if (rank_ == 0) req.trainer_state_json = logger_->trainer_state_json();
  req.save_total_limit = c_.training.save_total_limit;
  const stdfs::path dir = ckpt::save_checkpoint(output_dir_, req, host_.get());
  saved_step_ = global_step_;
  log::info("saved {}", dir.string());
}

int SftRecipe::stop_preempted(bool abandoned_step) {
  const std::string during =
      abandoned_step ? fmt::format(" during step {}, which was abandoned", global_step_ + 1) : std::string();
  if (global_step_ > 0) {
    save();  // a no-op when this step is saved already
    log::warn("preempted ({}){}: {} written; exiting with code {}, resume with --resume_from_checkpoint latest",
              signal_origin(), during, ckpt::checkpoint_dir_name(global_step_), ckpt::kExitPreempted);
  } else {
    log::warn(
        "preempted ({}){} before any step finished: nothing to save; exiting with code {} (a restart starts "
        "over)",
        signal_origin(), during, ckpt::kExitPreempted);
  }
  comm_->barrier()->wait();
  return ckpt::kExitPreempted;
}

// ---- finish ------------------------------------------------------------------------------------

zero::CommModel SftRecipe::comm_model(double micro_batches_per_step) const {
  zero::CommModelInput in;
  in.world = world_;
  in.stage = static_cast<int>(c_.dist.zero_stage);
  in.offload = c_.dist.offload_optimizer == "cpu";
  in.lora_padded_numel = optimizer_->padded_numel();
  in.micro_batches_per_step = micro_batches_per_step;
  in.zero3_unit_numel = zero3_unit_numel_;
  in.zero3_elem_bytes = static_cast<int64_t>(c10::elementSize(dtype_));
  in.zero3_prefetch = c_.dist.stage3_prefetch_layers;
  return zero::model_step_traffic(in);
}

nlohmann::json SftRecipe::run_facts() {
  // Collective: the peaks of every rank (rank 0 alone is not the job's peak under ZeRO-3 or offload).
  const long long host_kib = host_->all_reduce_max(peak_host_rss_kib(), "gathering peak memory");
  const std::optional<double> vram = peak_vram_gib(device_);
  const long long device_mib =
      host_->all_reduce_max(vram ? static_cast<long long>(*vram * 1024) : -1, "gathering peak memory");
  nlohmann::json j;
  j["world_size"] = world_;
  j["num_nodes"] = topology_.num_nodes();
  j["peak_host_memory_gib"] = std::round(double(host_kib) / (1024.0 * 1024.0) * 1000) / 1000;
  if (device_mib >= 0) j["peak_device_memory_gib"] = std::round(double(device_mib) / 1024.0 * 1000) / 1000;
  if (steps_run_ > 0) {
    const zero::CommModel model = comm_model(double(micro_batches_run_) / double(steps_run_));
    j["comm_bytes_per_step_model"] = std::round(model.mean_bytes_per_step(steps_run_));
    if (model.offload_bytes_per_step > 0) j["offload_bytes_per_step_model"] = std::round(model.offload_bytes_per_step);
  }
  return j;
}

void SftRecipe::finish() {
  if (rank_ == 0 && profile_.steps() > 0) profile_.report(output_dir_ / "profile.json");
  if (graphs_) {
    const StepGraphStats& gs = graphs_->stats();
    log::info("cuda_graphs: {} graphs captured, {} replays, {} eager micro-batches, {} graphs evicted", gs.captures,
              gs.replays, gs.eager, gs.evictions);
  }
  nlohmann::json facts = run_facts();
  if (rank_ == 0) {
    lora_->save(output_dir_, c_.model.model_name_or_path);
    TrainResults res = logger_->finish(now_s(), facts);
    if (res.run_facts.contains("comm_bytes_per_step") && res.run_facts.contains("comm_bytes_per_step_model")) {
      const double counted = res.run_facts["comm_bytes_per_step"].get<double>();
      const double modelled = res.run_facts["comm_bytes_per_step_model"].get<double>();
      log::info("communication: {} sent per step by rank 0 (counted), {} by the model{}", dist::format_bytes(counted),
                dist::format_bytes(modelled),
                modelled > 0 ? fmt::format(" ({:+.2f} %)", (counted - modelled) / modelled * 100) : std::string());
    }
    log::info("done: {} steps, train_loss {:.4f}, {:.1f} s; adapter in {}", global_step_, res.train_loss,
              res.train_runtime, output_dir_.string());
  }
  // do_eval: LLaMA-Factory evaluates after saving the model and plotting. An evaluation of this very step
  // (eval_strategy) already measured the final adapter.
  if (c_.training.do_eval && eval_source_) {
    // Not stopped by a signal: the adapter is saved and the job ends right after it.
    const bool reuse = last_eval_ && last_eval_->step == global_step_;
    const std::optional<EvalResults> e = reuse ? last_eval_ : run_eval(/*interruptible=*/false);
    if (rank_ == 0) {
      if (!reuse) logger_->on_eval(*e, now_s());
      logger_->write_eval_results(*e);
      log::info("eval_loss {:.4f} ({} samples); eval_results.json in {}", e->eval_loss, e->num_samples,
                output_dir_.string());
    }
  }
  comm_->barrier()->wait();
}

}  // namespace zlora::train
