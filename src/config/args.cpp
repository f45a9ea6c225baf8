// The option schemas: every option's name, group, type, range and help text, written once.
#include "zlora/config/load.h"

namespace zlora::config {

namespace {

constexpr double kBig = 1e15;

template <typename Root, typename Get>
void add_model_fields(Schema<Root>& s, Get model) {
  const char* g = "model";
  s.add(
      "model_name_or_path", g, [model](Root & r) -> auto& { return model(r).model_name_or_path; },
      "Hugging Face model directory: config.json + *.safetensors (+ tokenizer.json).");
  s.add(
      "adapter_name_or_path", g, [model](Root & r) -> auto& { return model(r).adapter_name_or_path; },
      "PEFT-format LoRA adapter directory (adapter_config.json + adapter_model.safetensors) to continue "
      "training from, merge, or load.");
  s.add(
       "trust_remote_code", g, [model](Root & r) -> auto& { return model(r).trust_remote_code; },
       "Accepted for LLaMA-Factory compatibility; zlora never runs code from a model directory.")
      .compat();
  s.add(
       "infer_dtype", g, [model](Root & r) -> auto& { return model(r).infer_dtype; },
       "Dtype to run the base model in outside training (auto: the config's torch_dtype).")
      .one_of({"auto", "bf16", "fp16", "fp32", "bfloat16", "float16", "float32"});
}

template <typename Root, typename Get>
void add_template_fields(Schema<Root>& s, Get tmpl, const char* group) {
  s.add(
      "template", group, [tmpl](Root & r) -> auto& { return tmpl(r).template_name; },
      "Chat template (LLaMA-Factory's names: qwen, qwen3, llama3, llama2, mistral, gemma, ...; `zlora templates` "
      "lists all 49).");
  s.add(
      "default_system", group, [tmpl](Root & r) -> auto& { return tmpl(r).default_system; },
      "Replaces the template's default system prompt.");
}

template <typename Root, typename Get>
void add_data_fields(Schema<Root>& s, Get data) {
  const char* g = "data";
  s.add(
      "dataset", g, [data](Root & r) -> auto& { return data(r).dataset; },
      "Comma-separated dataset names defined in <dataset_dir>/dataset_info.json, concatenated in order.");
  s.add(
      "dataset_dir", g, [data](Root & r) -> auto& { return data(r).dataset_dir; },
      "Folder holding dataset_info.json and the data files.");
  add_template_fields(s, data, g);
  s.add(
       "cutoff_len", g, [data](Root & r) -> auto& { return data(r).cutoff_len; },
       "Token budget per sample (prompt + response), split between them as LLaMA-Factory does.")
      .range(2, 1 << 24);
  s.add(
       "max_samples", g, [data](Root & r) -> auto& { return data(r).max_samples; },
       "Keep only the first N rows of each dataset.")
      .range(1, kBig);
  s.add(
      "train_on_prompt", g, [data](Root & r) -> auto& { return data(r).train_on_prompt; },
      "Also compute the loss on prompt tokens.");
  s.add(
      "mask_history", g, [data](Root & r) -> auto& { return data(r).mask_history; },
      "Train on the last turn only (the others are masked from the loss).");
  s.add(
      "overwrite_cache", g, [data](Root & r) -> auto& { return data(r).overwrite_cache; },
      "Rebuild the HDF5 token store even when one exists (`zlora train`: also one made from other data settings, "
      "which is otherwise refused unless zlora train made it at its default path; docs/data-format.md).");
  s.add(
       "preprocessing_num_workers", g, [data](Root & r) -> auto& { return data(r).preprocessing_num_workers; },
       "Accepted for compatibility; zlora tokenizes with all MPI ranks instead.")
      .range(1, 4096)
      .compat();
  s.add(
      "enable_thinking", g, [data](Root & r) -> auto& { return data(r).enable_thinking; },
      "Reasoning templates (qwen3, deepseekr1, ...): give answers without a <think> block an empty one, as "
      "LLaMA-Factory does; false trains them without (docs/data-format.md, \"Chat templates\").");
  s.add(
       "streaming", g, [data](Root & r) -> auto& { return data(r).streaming; },
       "Accepted only as false: zlora reads from its HDF5 token store, which is never streamed.")
      .compat();
}

Schema<TrainConfig> make_train_schema() {
  using R = TrainConfig;
  Schema<R> s("train");
  add_model_fields(s, [](R& r) -> ModelArgs& { return r.model; });
  add_data_fields(s, [](R& r) -> DataArgs& { return r.data; });
  s.add(
       "val_size", "data", [](R & r) -> auto& { return r.data.val_size; },
       "Hold out this fraction (<= 1) or number (> 1) of the training samples for evaluation, the same ones "
       "LLaMA-Factory holds out (datasets' train_test_split with seed).")
      .range(0, kBig);
  s.add(
      "eval_dataset", "data", [](R & r) -> auto& { return r.data.eval_dataset; },
      "Datasets (names in dataset_info.json) to evaluate on, prepared like `dataset` into <tokenized_path "
      "stem>_eval.h5; not together with val_size.");
  s.add(
      "tokenized_path", "data", [](R & r) -> auto& { return r.data.tokenized_path; },
      "HDF5 token store made by `zlora prepare`. If it does not exist and `dataset` is set, it is prepared "
      "there first (default: <output_dir>/tokenized.h5). An existing store made from other data settings than "
      "the run's is refused naming what differs, or rebuilt (docs/data-format.md, \"Which store a run trains "
      "on\").");

  const char* m = "method";
  s.add(
       "stage", m, [](R & r) -> auto& { return r.lora.stage; }, "Training stage; zlora does supervised fine-tuning.")
      .one_of({"sft"})
      .refuses({"pt", "rm", "ppo", "dpo", "kto"},
               "pre-training, reward modelling and the preference/RL stages (LLaMA-Factory's pt, rm, ppo, dpo, kto)");
  s.add(
      "do_train", m, [](R & r) -> auto& { return r.lora.do_train; }, "Must be true for `zlora train`.");
  s.add(
       "finetuning_type", m, [](R & r) -> auto& { return r.lora.finetuning_type; }, "Fine-tuning method.")
      .one_of({"lora"})
      .refuses({"full", "freeze", "oft"}, "full-parameter, freeze and OFT tuning");
  s.add(
       "lora_rank", m, [](R & r) -> auto& { return r.lora.lora_rank; }, "LoRA rank r.")
      .range(1, 65536);
  s.add(
       "lora_alpha", m, [](R & r) -> auto& { return r.lora.lora_alpha; },
       "LoRA alpha; the update is scaled by alpha/r. Unset: 2 x lora_rank.")
      .range(1e-6, kBig);
  s.add(
       "lora_dropout", m, [](R & r) -> auto& { return r.lora.lora_dropout; },
       "Dropout on the LoRA input during training.")
      .range(0, 0.999);
  s.add(
      "lora_target", m, [](R & r) -> auto& { return r.lora.lora_target; },
      "Comma-separated module names to adapt (q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj) or "
      "`all` for every linear layer of the decoder blocks.");
  s.add(
      "use_rslora", m, [](R & r) -> auto& { return r.lora.use_rslora; },
      "Rank-stabilised LoRA: scale by alpha/sqrt(r).");
  s.add(
       "neftune_noise_alpha", m, [](R & r) -> auto& { return r.lora.neftune_noise_alpha; },
       "NEFTune: uniform noise of magnitude alpha/sqrt(L*d) added to the input embeddings while training "
       "(L: sample length, d: hidden size). 0 or unset: off.")
      .range(0, kBig);

  const char* t = "training";
  s.add(
      "output_dir", t, [](R & r) -> auto& { return r.training.output_dir; },
      "Where logs, checkpoints and the final adapter are written.");
  s.add(
      "overwrite_output_dir", t, [](R & r) -> auto& { return r.training.overwrite_output_dir; },
      "Start afresh in an output_dir that holds another run (its checkpoints are removed).");
  s.add(
       "num_train_epochs", t, [](R & r) -> auto& { return r.training.num_train_epochs; },
       "Epochs over the data (fractions allowed); ignored when max_steps > 0.")
      .range(0, kBig);
  s.add(
       "max_steps", t, [](R & r) -> auto& { return r.training.max_steps; },
       "Total optimizer steps; -1: derived from num_train_epochs.")
      .range(-1, kBig);
  s.add(
       "per_device_train_batch_size", t, [](R & r) -> auto& { return r.training.per_device_train_batch_size; },
       "Samples per rank per micro-batch.")
      .range(1, 1 << 20);
  s.add(
       "gradient_accumulation_steps", t, [](R & r) -> auto& { return r.training.gradient_accumulation_steps; },
       "Micro-batches per optimizer step.")
      .range(1, 1 << 20);
  s.add(
       "learning_rate", t, [](R & r) -> auto& { return r.training.learning_rate; }, "Peak AdamW learning rate.")
      .range(0, 10);
  s.add(
       "weight_decay", t, [](R & r) -> auto& { return r.training.weight_decay; }, "AdamW weight decay.")
      .range(0, 10);
  s.add(
       "adam_beta1", t, [](R & r) -> auto& { return r.training.adam_beta1; }, "AdamW beta1.")
      .range(0, 0.999999);
  s.add(
       "adam_beta2", t, [](R & r) -> auto& { return r.training.adam_beta2; }, "AdamW beta2.")
      .range(0, 0.999999);
  s.add(
       "adam_epsilon", t, [](R & r) -> auto& { return r.training.adam_epsilon; },
       "AdamW epsilon, added to the denominator; must be above 0.")
      .range(0, 1);
  s.add(
       "optim", t, [](R & r) -> auto& { return r.training.optim; },
       "Optimizer; all accepted names are decoupled AdamW (HF's adamw_torch).")
      .one_of({"adamw_torch", "adamw_torch_fused", "adamw_hf", "adamw"});
  s.add(
       "lr_scheduler_type", t, [](R & r) -> auto& { return r.training.lr_scheduler_type; },
       "Learning-rate schedule after warmup. ds_warmup_lr / ds_warmup_decay_lr are DeepSpeed's WarmupLR / "
       "WarmupDecayLR (log warmup), chosen by a DeepSpeed JSON's scheduler block as under HF Trainer.")
      .one_of({"linear", "cosine", "constant", "constant_with_warmup", "ds_warmup_lr", "ds_warmup_decay_lr"});
  s.add(
       "warmup_steps", t, [](R & r) -> auto& { return r.training.warmup_steps; },
       "Linear warmup steps (a value in (0,1) is a ratio of the total steps, as in transformers v5).")
      .range(0, kBig);
  s.add(
       "warmup_ratio", t, [](R & r) -> auto& { return r.training.warmup_ratio; },
       "Warmup as a fraction of the total steps (used when warmup_steps is 0).")
      .range(0, 1);
  s.add(
       "warmup_type", t, [](R & r) -> auto& { return r.training.warmup_type; },
       "Warmup shape of the ds_warmup_* schedules: log (DeepSpeed's default) or linear.")
      .one_of({"log", "linear"});
  s.add(
       "max_grad_norm", t, [](R & r) -> auto& { return r.training.max_grad_norm; },
       "Clip the global gradient norm (across all ranks' shards) to this; 0: no clipping.")
      .range(0, kBig);
  s.add(
       "logging_steps", t, [](R & r) -> auto& { return r.training.logging_steps; },
       "Log every N optimizer steps (a value < 1 is a ratio of the total steps).")
      .range(1e-9, kBig);
  s.add(
       "save_steps", t, [](R & r) -> auto& { return r.training.save_steps; },
       "Checkpoint every N optimizer steps (a value < 1 is a ratio of the total steps).")
      .range(1e-9, kBig);
  s.add(
       "save_strategy", t, [](R & r) -> auto& { return r.training.save_strategy; },
       "When to checkpoint: every save_steps, or never (the final adapter is always written).")
      .one_of({"steps", "no"});
  s.add(
       "save_total_limit", t, [](R & r) -> auto& { return r.training.save_total_limit; },
       "Keep at most this many checkpoints (the oldest are removed).")
      .range(1, kBig);
  s.add(
      "do_eval", t, [](R & r) -> auto& { return r.training.do_eval; },
      "Evaluate after training (eval_results.json); true by itself when eval_strategy is not no, as in HF.");
  s.add(
       "eval_strategy", t, [](R & r) -> auto& { return r.training.eval_strategy; },
       "When to evaluate during training: every eval_steps, at the end of each epoch, or never.")
      .one_of({"no", "steps", "epoch"});
  s.add(
       "eval_steps", t, [](R & r) -> auto& { return r.training.eval_steps; },
       "Evaluate every N optimizer steps with eval_strategy steps (a value < 1 is a ratio of the total steps); "
       "unset: logging_steps.")
      .range(1e-9, kBig);
  s.add(
       "per_device_eval_batch_size", t, [](R & r) -> auto& { return r.training.per_device_eval_batch_size; },
       "Samples per rank per evaluation forward pass.")
      .range(1, 1 << 20);
  s.add(
      "bf16", t, [](R & r) -> auto& { return r.training.bf16; }, "Compute in bfloat16 (LoRA master weights fp32).");
  s.add(
      "fp16", t, [](R & r) -> auto& { return r.training.fp16; },
      "Compute in float16 with dynamic loss scaling (LoRA master weights fp32); GPU only with LibTorch 1.13.");
  s.add(
       "seed", t, [](R & r) -> auto& { return r.training.seed; },
       "Seed for LoRA initialisation, dropout, NEFTune and data shuffling.")
      .range(0, 4294967295.0);
  s.add(
      "full_determinism", t, [](R & r) -> auto& { return r.training.full_determinism; },
      "Deterministic kernels and reduction order (bit-identical reruns; slower on GPU).");
  s.add(
      "plot_loss", t, [](R & r) -> auto& { return r.training.plot_loss; },
      "Write training_loss.svg (and .png) at the end.");
  s.add(
      "resume_from_checkpoint", t, [](R & r) -> auto& { return r.training.resume_from_checkpoint; },
      "Checkpoint directory to resume from, or `latest` (the newest complete one in output_dir).");
  s.add(
      "disable_shuffling", t, [](R & r) -> auto& { return r.training.disable_shuffling; },
      "Keep the file order of samples instead of shuffling each epoch.");
  s.add(
      "gradient_checkpointing", t, [](R & r) -> auto& { return r.training.gradient_checkpointing; },
      "Recompute each decoder layer's activations in the backward pass (less memory, ~30% more compute).");
  s.add(
      "disable_gradient_checkpointing", t, [](R & r) -> auto& { return r.training.disable_gradient_checkpointing; },
      "LLaMA-Factory's switch; true turns gradient checkpointing off.");
  s.add(
       "flash_attn", t, [](R & r) -> auto& { return r.training.flash_attn; },
       "Attention kernel: auto picks variable-length flash attention on GPU and exact math on CPU.")
      .one_of({"auto", "disabled", "sdpa", "fa2"});
  s.add(
       "ddp_timeout", t, [](R & r) -> auto& { return r.training.ddp_timeout; },
       "Seconds a collective may wait for the other ranks before the job aborts with a message.")
      .range(1, kBig);
  s.add(
      "report_to", t, [](R & r) -> auto& { return r.training.report_to; },
      "tensorboard (or all): also write TensorBoard event files to logging_dir. zlora always logs to stdout and "
      "trainer_log.jsonl; other integrations (wandb, mlflow, swanlab, ...) are warned about and ignored.");
  s.add(
      "logging_dir", t, [](R & r) -> auto& { return r.training.logging_dir; },
      "TensorBoard directory (report_to tensorboard); unset: <output_dir>/runs/<Mon DD_HH-MM-SS>_<host>, as HF.");
  s.add(
      "print_config", t, [](R & r) -> auto& { return r.training.print_config; },
      "Print the resolved configuration (with where each value came from) and exit.");
  s.add(
       "device", t, [](R & r) -> auto& { return r.training.device; },
       "Compute device: auto (CUDA when built with it and a GPU is visible), cpu or cuda.")
      .one_of({"auto", "cpu", "cuda"});
  s.add(
      "use_cpu", t, [](R & r) -> auto& { return r.training.use_cpu; },
      "transformers' name for device cpu: true trains on the CPU even where a GPU is visible.");

  const char* d = "distributed";
  s.add(
      "deepspeed", d, [](R & r) -> auto& { return r.dist.deepspeed; },
      "DeepSpeed JSON (e.g. ds_config_zero2.json); its stage, offload, precision, optimizer, scheduler and "
      "batch settings are mapped onto these options.");
  s.add(
       "zero_stage", d, [](R & r) -> auto& { return r.dist.zero_stage; },
       "ZeRO stage: 0 data parallel, 1 partitioned optimizer state, 2 + partitioned gradients, 3 + "
       "partitioned parameters (base weights too).")
      .range(0, 3);
  s.add(
       "train_batch_size", d, [](R & r) -> auto& { return r.dist.train_batch_size; },
       "Global batch in samples; when set it must equal per_device_train_batch_size x "
       "gradient_accumulation_steps x world size (checked at start, as DeepSpeed does).")
      .range(1, kBig);
  s.add(
       "offload_optimizer", d, [](R & r) -> auto& { return r.dist.offload_optimizer; },
       "Keep fp32 master LoRA weights and AdamW moments in host memory and step them on the CPU (stage >= 1).")
      .one_of({"none", "cpu"});
  s.add(
       "comm", d, [](R & r) -> auto& { return r.dist.comm; },
       "Communicator backend: nccl (GPU), mpi (CPU, or GPU staged through host memory), auto.")
      .one_of({"auto", "nccl", "mpi"});
  s.add(
       "ddp_backend", d, [](R & r) -> auto& { return r.dist.ddp_backend; },
       "transformers' name for the communicator backend; nccl or mpi set `comm` to the same.")
      .one_of({"nccl", "mpi"})
      .refuses({"gloo", "ccl", "hccl", "cncl", "mccl"}, "PyTorch's gloo, ccl, hccl, cncl and mccl backends");
  s.add(
       "reduce_bucket_size", d, [](R & r) -> auto& { return r.dist.reduce_bucket_size; },
       "Elements per gradient reduction bucket.")
      .range(1024, kBig);
  s.add(
       "allgather_bucket_size", d, [](R & r) -> auto& { return r.dist.allgather_bucket_size; },
       "Elements per parameter all-gather bucket.")
      .range(1024, kBig);
  s.add(
       "stage3_prefetch_layers", d, [](R & r) -> auto& { return r.dist.stage3_prefetch_layers; },
       "ZeRO-3: decoder layers whose weights are gathered ahead of use while the current one computes.")
      .range(0, 64);
  s.add(
       "micro_batch_tokens", d, [](R & r) -> auto& { return r.dist.micro_batch_tokens; },
       "Token budget of a packed micro-batch; 0: per_device_train_batch_size x cutoff_len.")
      .range(0, kBig);
  s.add(
       "profile_steps", d, [](R & r) -> auto& { return r.dist.profile_steps; },
       "Time the last N steps phase by phase (data, forward, backward, communication, optimizer) with the "
       "device synchronised between phases, and print the breakdown at the end; 0 = off. Synchronising "
       "slows those steps: benchmarks profile in a separate run.")
      .range(0, kBig);
  s.add(
       "cuda_graphs", d, [](R & r) -> auto& { return r.dist.cuda_graphs; },
       "Capture each micro-batch's forward and backward as a CUDA graph per padded size (tokens rounded up "
       "to 64, loss rows to 256) and replay it: removes the CPU's per-kernel launch cost. auto: on where "
       "supported (CUDA, flash attention, ZeRO 0-2, no NEFTune, no gradient checkpointing), with the reason "
       "logged where not; true: required; false: off.")
      .one_of({"auto", "true", "false"});
  s.add(
       "loss_scale", d, [](R & r) -> auto& { return r.dist.loss_scale; },
       "fp16: static loss scale; 0 = dynamic loss scaling.")
      .range(0, kBig);
  s.add(
       "initial_scale_power", d, [](R & r) -> auto& { return r.dist.initial_scale_power; },
       "fp16 dynamic scaling: initial scale 2^N.")
      .range(0, 64);
  s.add(
       "loss_scale_window", d, [](R & r) -> auto& { return r.dist.loss_scale_window; },
       "fp16 dynamic scaling: steps without overflow before the scale doubles.")
      .range(1, kBig);
  s.add(
       "hysteresis", d, [](R & r) -> auto& { return r.dist.hysteresis; },
       "fp16 dynamic scaling: overflows tolerated before the scale halves.")
      .range(1, kBig);
  s.add(
       "min_loss_scale", d, [](R & r) -> auto& { return r.dist.min_loss_scale; },
       "fp16 dynamic scaling: lower bound of the scale.")
      .range(0, kBig);
  return s;
}

Schema<PrepareConfig> make_prepare_schema() {
  using R = PrepareConfig;
  Schema<R> s("prepare");
  add_data_fields(s, [](R& r) -> DataArgs& { return r.data; });
  const char* o = "output";
  s.add(
      "tokenizer", o, [](R & r) -> auto& { return r.tokenizer; },
      "Model directory holding tokenizer.json, or the tokenizer.json file itself.");
  s.add(
      "output", o, [](R & r) -> auto& { return r.output; }, "HDF5 token store to write.");
  s.add(
      "overwrite", o, [](R & r) -> auto& { return r.overwrite; }, "Replace an existing output file.");
  return s;
}

Schema<ExportConfig> make_export_schema() {
  using R = ExportConfig;
  Schema<R> s("export");
  add_model_fields(s, [](R& r) -> ModelArgs& { return r.model; });
  add_template_fields(
      s, [](R& r) -> R& { return r; }, "model");
  const char* e = "export";
  s.add(
      "export_dir", e, [](R & r) -> auto& { return r.export_dir; }, "Directory to write the merged model into.");
  s.add(
       "export_size", e, [](R & r) -> auto& { return r.export_size; }, "Largest safetensors shard, in GB.")
      .range(1, 1 << 20);
  s.add(
       "export_dtype", e, [](R & r) -> auto& { return r.export_dtype; },
       "Dtype of the merged weights (auto: the base model's).")
      .one_of({"auto", "bf16", "fp16", "fp32"});
  s.add(
       "export_device", e, [](R & r) -> auto& { return r.export_device; },
       "Accepted for compatibility; merging streams one shard at a time on the CPU.")
      .one_of({"cpu", "gpu", "cuda", "auto"})
      .compat();
  s.add(
      "export_legacy_format", e, [](R & r) -> auto& { return r.export_legacy_format; },
      "Must be false: zlora writes safetensors only, never pickle .bin files.");
  s.add(
      "overwrite", e, [](R & r) -> auto& { return r.overwrite; }, "Allow writing into a non-empty export_dir.");
  return s;
}

Schema<GenerateConfig> make_generate_schema() {
  using R = GenerateConfig;
  Schema<R> s("generate");
  add_model_fields(s, [](R& r) -> ModelArgs& { return r.model; });
  add_template_fields(
      s, [](R& r) -> R& { return r; }, "model");
  const char* g = "generation";
  s.add(
      "prompt", g, [](R & r) -> auto& { return r.prompt; },
      "User message to answer; unset: interactive on a terminal, else one message per stdin line.");
  s.add(
       "max_new_tokens", g, [](R & r) -> auto& { return r.max_new_tokens; }, "Most tokens to generate.")
      .range(1, 1 << 24);
  s.add(
      "do_sample", g, [](R & r) -> auto& { return r.do_sample; }, "Sample (true) or greedy decoding (false).");
  s.add(
       "temperature", g, [](R & r) -> auto& { return r.temperature; }, "Sampling temperature.")
      .range(1e-6, 100);
  s.add(
       "top_p", g, [](R & r) -> auto& { return r.top_p; }, "Nucleus sampling mass.")
      .range(1e-9, 1);
  s.add(
       "top_k", g, [](R & r) -> auto& { return r.top_k; }, "Sample among the k most likely tokens (0: all).")
      .range(0, 1 << 24);
  s.add(
       "repetition_penalty", g, [](R & r) -> auto& { return r.repetition_penalty; },
       "Penalty on tokens already present (1.0: none).")
      .range(1e-6, 100);
  s.add(
       "seed", g, [](R & r) -> auto& { return r.seed; }, "Sampling seed.")
      .range(0, 4294967295.0);
  s.add(
       "device", g, [](R & r) -> auto& { return r.device; }, "auto, cpu or cuda.")
      .one_of({"auto", "cpu", "cuda"});
  return s;
}

}  // namespace

const Schema<TrainConfig>& train_schema() {
  static const Schema<TrainConfig> s = make_train_schema();
  return s;
}
const Schema<PrepareConfig>& prepare_schema() {
  static const Schema<PrepareConfig> s = make_prepare_schema();
  return s;
}
const Schema<ExportConfig>& export_schema() {
  static const Schema<ExportConfig> s = make_export_schema();
  return s;
}
const Schema<GenerateConfig>& generate_schema() {
  static const Schema<GenerateConfig> s = make_generate_schema();
  return s;
}

}  // namespace zlora::config
