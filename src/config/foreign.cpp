// The decisions for LLaMA-Factory / transformers options that no zlora schema binds (foreign.h).
// Names come from LLaMA-Factory's hparams/{model,data,finetuning,generating,training}_args.py and
// transformers' TrainingArguments / Seq2SeqTrainingArguments.
#include "zlora/config/foreign.h"

#include "zlora/core/error.h"
#include "zlora/core/text.h"

#include <sstream>

namespace zlora::config {

namespace {

constexpr ForeignKind I = ForeignKind::Ignored;
constexpr ForeignKind U = ForeignKind::Unsupported;

// Reasons shared by several names, written once.
constexpr std::string_view kLoader =
    "zlora reads batches from its prepared HDF5 token store on the training thread; there are no "
    "data-loader workers";
constexpr std::string_view kHub = "downloading from or uploading to a model hub; zlora reads and writes local files";
constexpr std::string_view kMultimodal = "multimodal (image, video, audio) inputs; zlora trains text decoders";
constexpr std::string_view kQuant = "quantized base weights (QLoRA, GPTQ, AWQ, bitsandbytes)";
constexpr std::string_view kPref = "preference and RL stages (rm, ppo, dpo, kto); zlora does supervised fine-tuning";
constexpr std::string_view kOptim = "an optimizer other than AdamW; zlora trains LoRA with AdamW";
constexpr std::string_view kFreeze = "freeze (partial full-parameter) tuning; zlora trains LoRA adapters";
constexpr std::string_view kInfer =
    "an inference engine's setting; `zlora generate` runs zlora's own decoder (export the merged model to use "
    "vLLM or SGLang)";
constexpr std::string_view kKt = "KTransformers CPU/GPU hybrid MoE training";
constexpr std::string_view kSwanlab = "SwanLab logging; zlora logs to stdout, trainer_log.jsonl and TensorBoard";
constexpr std::string_view kLogging =
    "zlora logs every logging_steps to stdout and <output_dir>/trainer_log.jsonl, from rank 0 only";
constexpr std::string_view kProfiler = "torch.profiler traces; zlora's profile_steps times each phase of a step";
constexpr std::string_view kMegatron = "Megatron-Core / MCA / hyper-parallel training; zlora parallelises with ZeRO";
constexpr std::string_view kEvalCmd =
    "`llamafactory-cli eval` (MMLU, C-Eval, CMMLU benchmarks); zlora evaluates the loss on eval_dataset/val_size";
constexpr std::string_view kFsdp = "FSDP sharding; zlora shards with ZeRO (zero_stage, deepspeed)";
constexpr std::string_view kTokens = "changing the tokenizer's vocabulary (new tokens resize the embeddings)";
constexpr std::string_view kDdp =
    "PyTorch DDP's tuning; zlora reduces LoRA gradients in reduce_bucket_size buckets through its own communicator";

const std::vector<ForeignOption> kTable = {
    // ---- model_args.py
    {"adapter_folder", U, "", "loading several adapters from a folder; give adapter_name_or_path"},
    {"cache_dir", I, "", "models and datasets are read from local paths; nothing is downloaded or cached"},
    {"use_fast_tokenizer", I, "", "zlora's own tokenizer reads tokenizer.json (the fast tokenizer's file)"},
    {"resize_vocab", U, "", kTokens},
    {"split_special_tokens", U, "", "tokenizing special tokens' text as ordinary text"},
    {"add_tokens", U, "", kTokens},
    {"add_special_tokens", U, "", kTokens},
    {"new_special_tokens_config", U, "", kTokens},
    {"init_special_tokens", U, "noise_init", kTokens},
    {"model_revision", U, "main", kHub},
    {"low_cpu_mem_usage", I, "", "zlora memory-maps safetensors shards and loads one tensor at a time"},
    {"rope_scaling", U, "", "overriding the model's RoPE scaling; zlora applies the rope_scaling of config.json"},
    {"shift_attn", U, "", "LongLoRA's shifted sparse attention"},
    {"mixture_of_depths", U, "", "Mixture-of-Depths conversion"},
    {"use_unsloth", U, "", "Unsloth's patched kernels; zlora has its own fused LoRA kernels"},
    {"use_unsloth_gc", U, "", "Unsloth's gradient checkpointing; use gradient_checkpointing"},
    {"enable_liger_kernel", I, "", "zlora's fused kernels (RMSNorm, SwiGLU, chunked cross-entropy) are always on"},
    {"use_liger_kernel", I, "", "zlora's fused kernels (RMSNorm, SwiGLU, chunked cross-entropy) are always on"},
    {"moe_aux_loss_coef", I, "", "zlora trains dense models, which have no router loss"},
    {"use_reentrant_gc", I, "", "zlora's gradient checkpointing recomputes each layer in its own backward"},
    {"upcast_layernorm", I, "", "zlora computes RMSNorm in fp32 already"},
    {"upcast_lmhead_output", I, "", "zlora's loss upcasts the logits to fp32 chunk by chunk already"},
    {"train_from_scratch", U, "", "training from randomly initialised weights; zlora fine-tunes a model"},
    {"infer_backend", U, "huggingface,hf", kInfer},
    {"offload_folder", U, "offload", "offloading weights to disk; zlora offloads the optimizer with offload_optimizer"},
    {"use_kv_cache", I, "", "`zlora generate` always decodes with a KV cache"},
    {"use_v1_kernels", U, "", "LLaMA-Factory v1's kernel plugins"},
    {"hf_hub_token", I, "", kHub},
    {"ms_hub_token", I, "", kHub},
    {"om_hub_token", I, "", kHub},
    {"print_param_status", I, "", "zlora logs the trainable and total parameter counts at start"},
    {"quantization_method", U, "bnb,bitsandbytes", kQuant},
    {"quantization_bit", U, "", kQuant},
    {"quantization_type", U, "nf4", kQuant},
    {"double_quantization", U, "true", kQuant},  // LLaMA-Factory's default true only matters with quantization_bit
    {"quantization_device_map", U, "", kQuant},
    {"image_max_pixels", U, "", kMultimodal},
    {"image_min_pixels", U, "", kMultimodal},
    {"image_do_pan_and_scan", U, "", kMultimodal},
    {"crop_to_patches", U, "", kMultimodal},
    {"video_max_pixels", U, "", kMultimodal},
    {"video_min_pixels", U, "", kMultimodal},
    {"video_fps", U, "", kMultimodal},
    {"video_maxlen", U, "", kMultimodal},
    {"use_audio_in_video", U, "", kMultimodal},
    {"audio_sampling_rate", U, "", kMultimodal},
    {"media_dir", U, "", kMultimodal},
    {"freeze_vision_tower", U, "true", kMultimodal},
    {"freeze_multi_modal_projector", U, "true", kMultimodal},
    {"freeze_language_model", U, "", kMultimodal},
    {"export_quantization_bit", U, "", kQuant},
    {"export_quantization_dataset", U, "", kQuant},
    {"export_quantization_nsamples", U, "", kQuant},
    {"export_quantization_maxlen", U, "", kQuant},
    {"export_hub_model_id", U, "", kHub},
    {"vllm_maxlen", I, "", kInfer},
    {"vllm_gpu_util", I, "", kInfer},
    {"vllm_enforce_eager", I, "", kInfer},
    {"vllm_max_lora_rank", I, "", kInfer},
    {"vllm_config", I, "", kInfer},
    {"sglang_maxlen", I, "", kInfer},
    {"sglang_mem_fraction", I, "", kInfer},
    {"sglang_tp_size", I, "", kInfer},
    {"sglang_config", I, "", kInfer},
    {"sglang_lora_backend", I, "", kInfer},
    {"use_kt", U, "", kKt},
    {"kt_cpu_activation", U, "", kKt},
    {"kt_weight_path", U, "", kKt},
    {"kt_non_expert_weight_path", U, "", kKt},
    {"kt_expert_checkpoint_path", U, "", kKt},
    {"kt_use_lora_experts", U, "", kKt},
    {"kt_lora_expert_num", U, "", kKt},
    {"kt_lora_expert_intermediate_size", U, "", kKt},
    {"kt_config", U, "", kKt},
    {"device_map", I, "", "each rank uses the GPU of its local rank (or the CPU); zlora places the model itself"},
    {"model_max_length", I, "", "zlora truncates samples to cutoff_len"},
    {"block_diag_attn", I, "", "zlora's packed micro-batches always attend within each sample only"},
    // ---- data_args.py
    {"buffer_size", I, "", "it sizes the shuffle buffer of streaming datasets, and zlora never streams"},
    {"mix_strategy", U, "concat", "interleaving datasets; zlora concatenates them in the order given"},
    {"interleave_probs", U, "", "interleaving datasets; zlora concatenates them in the order given"},
    {"preprocessing_batch_size", I, "", "zlora tokenizes sample by sample; the batch size changes nothing"},
    {"eval_num_beams", U, "1", "beam search; zlora's predictions decode greedily or by sampling"},
    {"ignore_pad_token_for_loss", I, "", "padding never enters zlora's loss: micro-batches are packed, not padded"},
    {"eval_on_each_dataset", U, "", "one evaluation per eval dataset; zlora evaluates their concatenation"},
    {"packing", U, "",
     "LLaMA-Factory's packing (samples concatenated into cutoff_len rows that attend across "
     "samples). zlora always packs micro-batches with attention kept within each sample, so its "
     "loss equals the unpacked one"},
    {"neat_packing", I, "", "zlora's packed micro-batches always attend within each sample only (neat packing)"},
    {"tool_format", U, "", "function-calling tool formats"},
    {"preserve_thinking", U, "", "keeping earlier turns' <think> blocks"},
    {"data_shared_file_system", I, "", "each rank reads the one HDF5 store; rank 0 alone prepares it"},
    // ---- finetuning_args.py
    {"freeze_trainable_layers", I, "", kFreeze},
    {"freeze_trainable_modules", I, "", kFreeze},
    {"freeze_extra_modules", U, "", kFreeze},
    {"additional_target", U, "", "training modules besides the LoRA adapters (modules_to_save)"},
    {"loraplus_lr_ratio", U, "", "LoRA+ (a larger learning rate for the B matrices)"},
    {"loraplus_lr_embedding", I, "", "it applies to LoRA+ only, which zlora does not implement"},
    {"use_dora", U, "", "DoRA (weight-decomposed LoRA)"},
    {"pissa_init", U, "", "PiSSA initialisation of the adapters"},
    {"pissa_iter", I, "", "it applies to PiSSA only, which zlora does not implement"},
    {"pissa_convert", U, "", "PiSSA initialisation of the adapters"},
    {"create_new_adapter", U, "", "stacking a new adapter on a loaded one; zlora continues adapter_name_or_path"},
    {"module_dropout", U, "", "OFT adapters"},
    {"oft_rank", I, "", "it applies to OFT adapters only (finetuning_type oft)"},
    {"oft_block_size", I, "", "it applies to OFT adapters only (finetuning_type oft)"},
    {"oft_target", I, "", "it applies to OFT adapters only (finetuning_type oft)"},
    {"pref_beta", I, "", "it applies to the preference stages only (dpo, kto, orpo, simpo)"},
    {"pref_ftx", I, "", "it applies to the preference stages only (dpo, kto, orpo, simpo)"},
    {"pref_bco_weight", I, "", "it applies to the preference stages only (dpo, kto, orpo, simpo)"},
    {"pref_loss", I, "", "it applies to the preference stages only (dpo, kto, orpo, simpo)"},
    {"dpo_label_smoothing", I, "", "it applies to stage dpo only"},
    {"kto_chosen_weight", I, "", "it applies to stage kto only"},
    {"kto_rejected_weight", I, "", "it applies to stage kto only"},
    {"simpo_gamma", I, "", "it applies to the simpo preference loss only"},
    {"ppo_buffer_size", I, "", "it applies to stage ppo only"},
    {"ppo_epochs", I, "", "it applies to stage ppo only"},
    {"ppo_score_norm", I, "", "it applies to stage ppo only"},
    {"ppo_target", I, "", "it applies to stage ppo only"},
    {"ppo_whiten_rewards", I, "", "it applies to stage ppo only"},
    {"ref_model", U, "", kPref},
    {"ref_model_adapters", U, "", kPref},
    {"ref_model_quantization_bit", U, "", kPref},
    {"reward_model", U, "", kPref},
    {"reward_model_adapters", U, "", kPref},
    {"reward_model_quantization_bit", U, "", kPref},
    {"reward_model_type", I, "", "it applies to stage ppo only"},
    {"ld_alpha", U, "", "LD-DPO"},
    {"use_galore", U, "", "GaLore (gradient low-rank projection)"},
    {"galore_target", I, "", "it applies to GaLore only (use_galore)"},
    {"galore_rank", I, "", "it applies to GaLore only (use_galore)"},
    {"galore_update_interval", I, "", "it applies to GaLore only (use_galore)"},
    {"galore_scale", I, "", "it applies to GaLore only (use_galore)"},
    {"galore_proj_type", I, "", "it applies to GaLore only (use_galore)"},
    {"galore_layerwise", I, "", "it applies to GaLore only (use_galore)"},
    {"use_apollo", U, "", "APOLLO"},
    {"apollo_target", I, "", "it applies to APOLLO only (use_apollo)"},
    {"apollo_rank", I, "", "it applies to APOLLO only (use_apollo)"},
    {"apollo_update_interval", I, "", "it applies to APOLLO only (use_apollo)"},
    {"apollo_scale", I, "", "it applies to APOLLO only (use_apollo)"},
    {"apollo_proj", I, "", "it applies to APOLLO only (use_apollo)"},
    {"apollo_proj_type", I, "", "it applies to APOLLO only (use_apollo)"},
    {"apollo_scale_type", I, "", "it applies to APOLLO only (use_apollo)"},
    {"apollo_layerwise", I, "", "it applies to APOLLO only (use_apollo)"},
    {"apollo_scale_front", I, "", "it applies to APOLLO only (use_apollo)"},
    {"use_badam", U, "", "BAdam (block-wise full-parameter tuning)"},
    {"badam_mode", I, "", "it applies to BAdam only (use_badam)"},
    {"badam_start_block", I, "", "it applies to BAdam only (use_badam)"},
    {"badam_switch_mode", I, "", "it applies to BAdam only (use_badam)"},
    {"badam_switch_interval", I, "", "it applies to BAdam only (use_badam)"},
    {"badam_update_ratio", I, "", "it applies to BAdam only (use_badam)"},
    {"badam_mask_mode", I, "", "it applies to BAdam only (use_badam)"},
    {"badam_verbose", I, "", "it applies to BAdam only (use_badam)"},
    {"use_swanlab", U, "", kSwanlab},
    {"swanlab_project", I, "", kSwanlab},
    {"swanlab_workspace", I, "", kSwanlab},
    {"swanlab_run_name", I, "", kSwanlab},
    {"swanlab_mode", I, "", kSwanlab},
    {"swanlab_api_key", I, "", kSwanlab},
    {"swanlab_logdir", I, "", kSwanlab},
    {"swanlab_lark_webhook_url", I, "", kSwanlab},
    {"swanlab_lark_secret", I, "", kSwanlab},
    {"pure_bf16", U, "", "pure bf16 training (no fp32 master weights); zlora keeps fp32 LoRA master weights"},
    {"use_llama_pro", U, "", "LLaMA Pro block expansion"},
    {"use_adam_mini", U, "", kOptim},
    {"use_muon", U, "", kOptim},
    {"use_mca", U, "", kMegatron},
    {"use_megatron_bridge", U, "", kMegatron},
    {"megatron_bridge_args", U, "", kMegatron},
    {"use_hyper_parallel", U, "", kMegatron},
    {"hyper_parallel_args", U, "", kMegatron},
    {"hyper_parallel_cp_size", U, "1", kMegatron},
    {"use_dft_loss", U, "", "DFT (dynamic fine-tuning) loss; zlora's loss is LLaMA-Factory's default cross-entropy"},
    {"use_asft_loss", U, "", "ASFT loss; zlora's loss is LLaMA-Factory's default cross-entropy"},
    {"asft_alpha", I, "", "it applies to the ASFT loss only (use_asft_loss)"},
    {"use_eaft_loss", U, "", "EAFT loss; zlora's loss is LLaMA-Factory's default cross-entropy"},
    {"eaft_alpha", I, "", "it applies to the EAFT loss only (use_eaft_loss)"},
    {"compute_accuracy", U, "", "token accuracy metrics in evaluation; zlora reports eval_loss"},
    {"early_stopping_steps", U, "", "early stopping on the eval loss"},
    {"include_effective_tokens_per_second", I, "", "zlora logs tokens/s of loss tokens and of all tokens always"},
    // ---- generating_args.py
    {"num_beams", U, "1", "beam search; zlora decodes greedily or by sampling (do_sample)"},
    {"max_length", I, "", "zlora bounds generation by max_new_tokens and the model's context"},
    {"length_penalty", I, "", "it applies to beam search only, which zlora does not implement"},
    {"skip_special_tokens", I, "", "zlora stops at the template's stop words and prints the text before them"},
    // ---- training_args.py (LLaMA-Factory's additions)
    {"ray_num_workers", U, "1", "Ray-launched training; launch zlora with mpirun or srun"},
    {"ray_init_kwargs", U, "", "Ray-launched training; launch zlora with mpirun or srun"},
    {"master_addr", I, "", "zlora bootstraps its communicators from MPI, not from a rendezvous address"},
    {"master_port", I, "", "zlora bootstraps its communicators from MPI, not from a rendezvous address"},
    {"enable_torch_profiler", U, "", kProfiler},
    {"profiler_output_dir", I, "", kProfiler},
    {"profiler_wait_steps", I, "", kProfiler},
    {"profiler_warmup_steps", I, "", kProfiler},
    {"profiler_active_steps", I, "", kProfiler},
    {"profiler_repeat", I, "", kProfiler},
    {"profiler_record_shapes", I, "", kProfiler},
    {"profiler_profile_memory", I, "", kProfiler},
    {"profiler_with_stack", I, "", kProfiler},
    {"profile_modules", I, "", kProfiler},
    {"fp8", U, "", "FP8 training through Transformer Engine / torchao"},
    {"fp8_backend", I, "", "it applies to fp8 training only"},
    {"fp8_enable_fsdp_float8_all_gather", I, "", "it applies to fp8 training only"},
    // ---- evaluation_args.py (`llamafactory-cli eval`)
    {"task", U, "", kEvalCmd},
    {"task_dir", U, "", kEvalCmd},
    {"n_shot", U, "", kEvalCmd},
    {"lang", U, "", kEvalCmd},
    {"save_dir", U, "", kEvalCmd},
    {"download_mode", U, "", kEvalCmd},
    // ---- transformers TrainingArguments / Seq2SeqTrainingArguments
    {"evaluation_strategy", U, "no", "a name transformers removed; use eval_strategy"},
    {"do_predict", U, "", "batch prediction over eval_dataset (generated_predictions.jsonl); use `zlora generate`"},
    {"predict_with_generate", U, "",
     "batch prediction over eval_dataset (generated_predictions.jsonl); use "
     "`zlora generate`"},
    {"prediction_loss_only", I, "", "zlora's evaluation computes the loss only; predictions come from do_predict"},
    {"per_gpu_train_batch_size", U, "", "a name transformers removed; use per_device_train_batch_size"},
    {"per_gpu_eval_batch_size", U, "", "a name transformers removed; use per_device_eval_batch_size"},
    {"eval_accumulation_steps", I, "", "zlora reduces eval losses as sums on each rank, never holding outputs"},
    {"eval_delay", U, "0", "delaying the first evaluation; use eval_steps"},
    {"torch_empty_cache_steps", I, "", "zlora allocates its step buffers once and reuses them"},
    {"lr_scheduler_kwargs", U, "", "scheduler arguments; zlora's schedules take warmup and min lr from their options"},
    {"log_level", I, "", kLogging},
    {"log_level_replica", I, "", kLogging},
    {"log_on_each_node", I, "", kLogging},
    {"logging_strategy", U, "steps", "logging per epoch or not at all; zlora logs every logging_steps"},
    {"logging_first_step", I, "", kLogging},
    {"logging_nan_inf_filter", I, "", "zlora logs the loss as computed and stops on a non-finite loss"},
    {"save_safetensors", U, "true", "pickle checkpoints; zlora writes safetensors only"},
    {"save_on_each_node", I, "", "each rank writes its own checkpoint shard into output_dir, which must be shared"},
    {"save_only_model", U, "",
     "checkpoints without optimizer state; zlora's checkpoints always carry it so a job can "
     "resume"},
    {"restore_callback_states_from_checkpoint", I, "", "zlora has no callbacks"},
    {"no_cuda", U, "", "a name transformers removed; use device cpu"},
    {"use_mps_device", U, "", "Apple MPS devices"},
    {"data_seed", I, "", "zlora shuffles with seed"},
    {"jit_mode_eval", U, "", "TorchScript evaluation"},
    {"use_ipex", U, "", "Intel Extension for PyTorch"},
    {"fp16_opt_level", I, "", "it is for NVIDIA apex, which zlora does not use"},
    {"half_precision_backend", I, "", "zlora implements mixed precision itself"},
    {"fp16_backend", I, "", "zlora implements mixed precision itself"},
    {"bf16_full_eval", I, "", "zlora evaluates in the training precision"},
    {"fp16_full_eval", I, "", "zlora evaluates in the training precision"},
    {"tf32", I, "", "zlora's matrix products run in bf16/fp16 on GPU (fp32 on CPU)"},
    {"local_rank", I, "", "zlora takes its rank from MPI (mpirun, srun)"},
    {"local_process_index", I, "", "zlora takes its rank from MPI (mpirun, srun)"},
    {"tpu_num_cores", U, "", "TPUs"},
    {"tpu_metrics_debug", U, "", "TPUs"},
    {"debug", U, "", "transformers' underflow/overflow debug hooks"},
    {"dataloader_drop_last", U, "", "dropping the last incomplete batch; zlora's last step of an epoch takes the rest"},
    {"dataloader_num_workers", I, "", kLoader},
    {"dataloader_prefetch_factor", I, "", kLoader},
    {"dataloader_pin_memory", I, "", kLoader},
    {"dataloader_persistent_workers", I, "", kLoader},
    {"past_index", U, "-1", "models with mems (Transformer-XL, XLNet)"},
    {"run_name", I, "", "it names runs in wandb/mlflow, which zlora does not log to"},
    {"disable_tqdm", I, "", "zlora prints log lines, not progress bars"},
    {"remove_unused_columns", I, "", "the HDF5 token store holds only ids and labels"},
    {"label_names", I, "", "the HDF5 token store holds only ids and labels"},
    {"load_best_model_at_end", U, "", "keeping the checkpoint with the best eval metric"},
    {"metric_for_best_model", I, "", "it applies to load_best_model_at_end only"},
    {"greater_is_better", I, "", "it applies to load_best_model_at_end only"},
    {"ignore_data_skip", U, "", "resuming without skipping the batches already seen; zlora resumes exactly"},
    {"fsdp", U, "", kFsdp},
    {"fsdp_config", U, "", kFsdp},
    {"fsdp_min_num_params", U, "0", kFsdp},
    {"fsdp_transformer_layer_cls_to_wrap", U, "", kFsdp},
    {"accelerator_config", I, "", "zlora does not use Accelerate"},
    {"label_smoothing_factor", U, "0.0", "label smoothing; zlora's loss is plain cross-entropy"},
    {"optim_args", U, "", kOptim},
    {"optim_target_modules", U, "", kOptim},
    {"adafactor", U, "", kOptim},
    {"group_by_length", U, "", "grouping samples of similar length into batches"},
    {"length_column_name", I, "", "it applies to group_by_length only"},
    {"ddp_find_unused_parameters", I, "", kDdp},
    {"ddp_bucket_cap_mb", I, "", kDdp},
    {"ddp_broadcast_buffers", I, "", kDdp},
    {"skip_memory_metrics", I, "", "zlora logs peak device memory at the end regardless"},
    {"use_legacy_prediction_loop", I, "", "zlora has one evaluation loop"},
    {"push_to_hub", U, "", kHub},
    {"hub_model_id", I, "", kHub},
    {"hub_strategy", I, "", kHub},
    {"hub_token", I, "", kHub},
    {"hub_private_repo", I, "", kHub},
    {"hub_always_push", I, "", kHub},
    {"hub_revision", I, "", kHub},
    {"push_to_hub_model_id", I, "", kHub},
    {"push_to_hub_organization", I, "", kHub},
    {"push_to_hub_token", I, "", kHub},
    {"gradient_checkpointing_kwargs", I, "", "zlora's gradient checkpointing takes no arguments"},
    {"include_inputs_for_metrics", I, "", "zlora computes no custom metrics"},
    {"include_for_metrics", I, "", "zlora computes no custom metrics"},
    {"eval_do_concat_batches", I, "", "zlora reduces eval losses as sums, never concatenating outputs"},
    {"mp_parameters", I, "", "it is for SageMaker model parallelism"},
    {"auto_find_batch_size", U, "",
     "retrying with smaller batches after an out-of-memory error; `zlora train` "
     "prints a memory plan at start instead"},
    {"full_determinism_seed", I, "", "zlora seeds with seed"},
    {"torchdynamo", U, "", "torch.compile; zlora replays CUDA graphs of its own kernels (cuda_graphs)"},
    {"ray_scope", I, "", "it is for Ray Tune hyperparameter search"},
    {"torch_compile", U, "", "torch.compile; zlora replays CUDA graphs of its own kernels (cuda_graphs)"},
    {"torch_compile_backend", I, "", "it applies to torch_compile only"},
    {"torch_compile_mode", I, "", "it applies to torch_compile only"},
    {"include_tokens_per_second", I, "", "zlora logs tokens/s always"},
    {"include_num_input_tokens_seen", I, "", "zlora logs the tokens seen always"},
    {"batch_eval_metrics", I, "", "zlora computes no custom metrics"},
    {"eval_on_start", U, "", "evaluating before the first step; zlora evaluates every eval_steps and at the end"},
    {"liger_kernel_config", I, "", "zlora's fused kernels are always on"},
    {"eval_use_gather_object", I, "", "zlora reduces eval losses as sums"},
    {"average_tokens_across_devices", I, "", "zlora's loss is always the mean over the loss tokens of all ranks"},
    {"dispatch_batches", I, "", "each rank reads its own batches from the HDF5 store"},
    {"split_batches", I, "", "each rank reads its own batches from the HDF5 store"},
    {"parallelism_config", U, "", "Accelerate's parallelism config; zlora parallelises with ZeRO"},
    {"project", I, "", "it names the trackio project, which zlora does not log to"},
    {"trackio_space_id", I, "", "it is for trackio, which zlora does not log to"},
    {"sortish_sampler", U, "", "sorting samples by length; zlora shuffles (or keeps order: disable_shuffling)"},
    {"generation_max_length", I, "", "zlora bounds predictions by max_new_tokens"},
    {"generation_num_beams", U, "1", "beam search; zlora decodes greedily or by sampling (do_sample)"},
    {"generation_config", U, "",
     "a GenerationConfig file; zlora takes do_sample, temperature, top_p, top_k and "
     "max_new_tokens as options"},
};

bool is_off(const std::string& v) {
  std::string s = text::lower(text::trim(v));
  return s.empty() || s == "null" || s == "none" || s == "~" || s == "false" || s == "no" || s == "0" || s == "0.0";
}

}  // namespace

const std::vector<ForeignOption>& foreign_options() { return kTable; }

const ForeignOption* find_foreign_option(std::string_view name) {
  for (const auto& o : kTable)
    if (o.name == name) return &o;
  return nullptr;
}

std::string foreign_option_note(const ForeignOption& opt, const std::string& value, const std::string& where) {
  if (opt.kind == ForeignKind::Ignored)
    return fmt::format("option '{}' ({}) is accepted and has no effect: {}", opt.name, where, opt.why);
  if (is_off(value)) return "";
  const std::string lowered = text::lower(text::trim(value));
  for (const auto& ok : text::split(std::string(opt.off_values), ','))
    if (!ok.empty() && text::lower(ok) == lowered) return "";
  std::string accepted = "null/false";
  if (!opt.off_values.empty()) accepted += " or " + text::join(text::split(std::string(opt.off_values), ','), ", ");
  fail(
      "option '{}' ({}) is {}: {} is a LLaMA-Factory feature zlora does not support. Remove the option (or set "
      "it to {}).",
      opt.name, where, text::printable(value), opt.why, accepted);
}

std::string foreign_options_markdown() {
  std::ostringstream os;
  os << "| option | zlora | why |\n| --- | --- | --- |\n";
  for (const auto& o : kTable) {
    std::string what = o.kind == ForeignKind::Ignored ? "accepted, no effect (one info line)" : "refused unless off";
    if (o.kind == ForeignKind::Unsupported && !o.off_values.empty())
      what += " (off: null, false, " + text::join(text::split(std::string(o.off_values), ','), ", ") + ")";
    os << "| `" << o.name << "` | " << what << " | " << o.why << " |\n";
  }
  return os.str();
}

}  // namespace zlora::config
