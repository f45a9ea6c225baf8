// The typed configuration of every zlora command. Names follow LLaMA-Factory / HF TrainingArguments so
// that a seed user's YAML files and command lines work unchanged; defaults are theirs unless a comment
// says otherwise. Field semantics and help texts live in one place: src/config/args.cpp (the schemas).
#pragma once

#include <optional>
#include <string>
#include <vector>

namespace zlora::config {

struct ModelArgs {
  std::string model_name_or_path;                   // HF model directory (config.json + safetensors)
  std::optional<std::string> adapter_name_or_path;  // PEFT adapter directory to start from / merge
  bool trust_remote_code = false;                   // accepted; zlora never runs remote code
  std::string infer_dtype = "auto";                 // auto|bf16|fp16|fp32 for export/generate
};

struct DataArgs {
  std::vector<std::string> dataset;           // names in dataset_info.json, concatenated in order
  std::string dataset_dir = "data";           // folder holding dataset_info.json
  std::optional<std::string> tokenized_path;  // HDF5 token store (read, or written if missing)
  std::optional<std::string> template_name;   // "template": qwen, llama3, chatml, default, alpaca, empty
  std::optional<std::string> default_system;  // overrides the template's default system prompt
  long long cutoff_len = 2048;
  std::optional<long long> max_samples;  // per dataset: keep the first N rows
  bool train_on_prompt = false;
  bool mask_history = false;
  bool overwrite_cache = false;                        // rebuild the token store even if it exists
  std::optional<long long> preprocessing_num_workers;  // accepted; ranks tokenize in parallel instead
  bool streaming = false;                              // accepted only as false
  bool enable_thinking = true;                         // reasoning templates: an empty thought on answers without one
  // Evaluation data: a held-out fraction (or count) of `dataset`, or other datasets prepared alike.
  double val_size = 0;
  std::vector<std::string> eval_dataset;
  std::optional<std::string> eval_tokenized_path;  // resolved by `zlora train` (not an option)
};

struct LoraArgs {
  std::string stage = "sft";
  bool do_train = true;
  std::string finetuning_type = "lora";
  long long lora_rank = 8;
  std::optional<double> lora_alpha;  // unset: 2 * lora_rank (LLaMA-Factory)
  double lora_dropout = 0.0;
  std::vector<std::string> lora_target = {"all"};
  bool use_rslora = false;                    // scale alpha/sqrt(r) instead of alpha/r
  std::optional<double> neftune_noise_alpha;  // NEFTune noise on input embeddings (training only)
};

struct TrainingArgs {
  std::string output_dir = "trainer_output";
  bool overwrite_output_dir = false;
  double num_train_epochs = 3.0;
  long long max_steps = -1;  // > 0 overrides num_train_epochs
  long long per_device_train_batch_size = 8;
  long long gradient_accumulation_steps = 1;
  double learning_rate = 5e-5;
  double weight_decay = 0.0;
  double adam_beta1 = 0.9;
  double adam_beta2 = 0.999;
  double adam_epsilon = 1e-8;
  std::string optim = "adamw_torch";
  std::string lr_scheduler_type = "linear";
  double warmup_steps = 0;  // >= 1: steps; in (0,1): a ratio (transformers v5)
  double warmup_ratio = 0.0;
  std::string warmup_type = "log";  // ds_warmup_* schedules: log (DeepSpeed default) | linear
  double max_grad_norm = 1.0;
  double logging_steps = 500;           // < 1: a ratio of the total steps (HF)
  double save_steps = 500;              // < 1: a ratio of the total steps (HF)
  std::string save_strategy = "steps";  // steps | no
  std::optional<long long> save_total_limit;
  bool bf16 = false;
  bool fp16 = false;
  long long seed = 42;
  bool full_determinism = false;  // deterministic kernels and reductions
  bool plot_loss = false;
  std::optional<std::string> resume_from_checkpoint;  // path, or "latest"
  bool disable_shuffling = false;
  bool gradient_checkpointing = false;            // recompute each decoder layer in backward
  bool disable_gradient_checkpointing = false;    // LLaMA-Factory's switch (wins when set)
  std::string flash_attn = "auto";                // auto | disabled | sdpa | fa2
  long long ddp_timeout = 1800;                   // seconds a collective may wait before the job aborts
  std::vector<std::string> report_to = {"none"};  // none | tensorboard (| all); others are warned about
  std::optional<std::string> logging_dir;         // TensorBoard: unset = <output_dir>/runs/<time>_<host> (HF)
  bool report_to_tensorboard() const {            // HF: "all" is every installed integration; here TensorBoard
    for (const auto& r : report_to)
      if (r == "tensorboard" || r == "all") return true;
    return false;
  }
  bool print_config = false;    // print the resolved config and exit
  std::string device = "auto";  // auto | cpu | cuda
  bool use_cpu = false;         // transformers' name for device cpu
  // Evaluation (HF TrainingArguments): do_eval becomes true when eval_strategy is not "no", as in HF.
  bool do_eval = false;
  std::string eval_strategy = "no";  // no | steps | epoch
  std::optional<double> eval_steps;  // unset: logging_steps (HF); < 1: a ratio of the total steps
  long long per_device_eval_batch_size = 8;
};

struct DistArgs {
  std::optional<std::string> deepspeed;  // DeepSpeed JSON; mapped onto the fields below
  long long zero_stage = 0;
  std::optional<long long> train_batch_size;    // global batch; checked against the world size at start
  std::string offload_optimizer = "none";       // none | cpu
  std::string comm = "auto";                    // auto | nccl | mpi
  std::optional<std::string> ddp_backend;       // transformers' name for comm (nccl | mpi)
  long long reduce_bucket_size = 500000000;     // elements per gradient bucket (DeepSpeed's default)
  long long allgather_bucket_size = 500000000;  // elements per parameter all-gather bucket
  long long stage3_prefetch_layers = 1;         // ZeRO-3: decoder layers gathered ahead of use
  long long micro_batch_tokens = 0;             // packing budget per micro-batch; 0 = batch x cutoff_len
  long long profile_steps = 0;                  // steps timed phase by phase (device synchronised); 0 = off
  std::string cuda_graphs = "auto";             // auto | true | false: capture micro-batch steps as CUDA graphs
  // fp16 dynamic loss scaling (DeepSpeed's fp16 block); loss_scale 0 = dynamic.
  double loss_scale = 0;
  long long initial_scale_power = 16;
  long long loss_scale_window = 1000;
  long long hysteresis = 2;
  double min_loss_scale = 1;
};

struct TrainConfig {
  ModelArgs model;
  DataArgs data;
  LoraArgs lora;
  TrainingArgs training;
  DistArgs dist;
};

struct PrepareConfig {
  DataArgs data;
  std::string tokenizer;  // model dir or tokenizer.json
  std::string output = "data.h5";
  bool overwrite = false;
};

struct ExportConfig {
  ModelArgs model;
  std::optional<std::string> template_name;
  std::optional<std::string> default_system;
  std::string export_dir;
  long long export_size = 5;          // GB per shard
  std::string export_dtype = "auto";  // auto | bf16 | fp16 | fp32
  std::string export_device = "cpu";  // accepted: cpu | gpu | auto
  bool export_legacy_format = false;  // true would mean pickle .bin: refused
  bool overwrite = false;             // allow a non-empty export_dir
};

struct GenerateConfig {
  ModelArgs model;
  std::optional<std::string> template_name;
  std::optional<std::string> default_system;
  std::optional<std::string> prompt;  // unset: interactive on a terminal, else stdin
  long long max_new_tokens = 1024;
  bool do_sample = true;
  double temperature = 0.95;
  double top_p = 0.7;
  long long top_k = 50;
  double repetition_penalty = 1.0;
  long long seed = 42;
  std::string device = "auto";
};

}  // namespace zlora::config
