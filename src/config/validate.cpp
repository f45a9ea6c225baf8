// Cross-option validation, in one place per command, and the loaders that end with it.
#include "zlora/config/load.h"

#include "zlora/core/error.h"
#include "zlora/core/text.h"

#include <cmath>

namespace zlora::config {

namespace {

template <typename T>
bool was_set(const Resolved<T>& r, const std::string& key) {
  return r.origins.count(key) > 0;
}

template <typename T>
std::string origin_of(const Resolved<T>& r, const std::string& key) {
  auto it = r.origins.find(key);
  return it == r.origins.end() ? std::string("default") : it->second.where;
}

void validate_model(const ModelArgs& m, const char* command) {
  if (m.model_name_or_path.empty())
    fail("model_name_or_path is not set: `zlora {}` needs --model_name_or_path <HF model directory>", command);
}

void validate_template(const std::optional<std::string>& t) {
  if (t && t->empty()) fail("option 'template' is empty; name a template such as qwen, llama3, chatml or default");
}

}  // namespace

void validate(Resolved<TrainConfig>& r) {
  TrainConfig& c = r.cfg;
  validate_model(c.model, "train");
  validate_template(c.data.template_name);
  if (!c.lora.do_train)
    fail("do_train is false ({}), but `zlora train` only trains; drop the option or set it to true",
         origin_of(r, "do_train"));
  if (c.training.bf16 && c.training.fp16)
    fail("bf16 ({}) and fp16 ({}) are both true; choose one precision", origin_of(r, "bf16"), origin_of(r, "fp16"));
  if (c.training.fp16) {
    // DeepSpeed's fp16 block (zero/loss_scaler.h); checked here so the message names where a value came from.
    const auto& d = c.dist;
    if (!(d.loss_scale >= 0) || !std::isfinite(d.loss_scale))
      fail("loss_scale {} ({}) must be 0 (dynamic loss scaling) or a positive static scale",
           format_double(d.loss_scale), origin_of(r, "loss_scale"));
    if (d.loss_scale == 0) {
      if (d.initial_scale_power < 0 || d.initial_scale_power > 64)
        fail("initial_scale_power {} ({}) must be in 0..64: the first loss scale is 2^N (DeepSpeed's default 16)",
             d.initial_scale_power, origin_of(r, "initial_scale_power"));
      if (d.loss_scale_window < 1)
        fail("loss_scale_window {} ({}) must be at least 1 step", d.loss_scale_window,
             origin_of(r, "loss_scale_window"));
      if (d.hysteresis < 1)
        fail("hysteresis {} ({}) must be at least 1 (1 halves the scale at the first overflow)", d.hysteresis,
             origin_of(r, "hysteresis"));
      if (!(d.min_loss_scale > 0) || !std::isfinite(d.min_loss_scale))
        fail("min_loss_scale {} ({}) must be positive", format_double(d.min_loss_scale),
             origin_of(r, "min_loss_scale"));
      if (std::ldexp(1.0, static_cast<int>(d.initial_scale_power)) < d.min_loss_scale)
        fail("the initial loss scale 2^{} ({}) is below min_loss_scale {} ({})", d.initial_scale_power,
             origin_of(r, "initial_scale_power"), format_double(d.min_loss_scale), origin_of(r, "min_loss_scale"));
    }
  }
  if (c.data.dataset.empty() && !c.data.tokenized_path)
    fail(
        "no training data: set --dataset (names in <dataset_dir>/dataset_info.json) or --tokenized_path "
        "(an HDF5 store from `zlora prepare`)");
  if (c.data.streaming)
    fail("streaming is true ({}), but zlora reads a prepared HDF5 token store; set it to false",
         origin_of(r, "streaming"));
  if (c.lora.lora_target.empty()) fail("lora_target is empty; name modules (e.g. q_proj,v_proj) or `all`");
  for (const auto& t : c.lora.lora_target)
    if (t == "all" && c.lora.lora_target.size() > 1)
      fail("lora_target mixes `all` with module names ({}); use one or the other",
           join_option_list(c.lora.lora_target));
  if (!c.lora.lora_alpha) c.lora.lora_alpha = 2.0 * static_cast<double>(c.lora.lora_rank);
  // The schema's range [0, 1] lets 0 through: AdamW divides by sqrt(v) + epsilon, and a parameter whose
  // gradients are all 0 then divides 0 by 0 (NaN, reported later as a diverged loss).
  if (!(c.training.adam_epsilon > 0))
    fail(
        "adam_epsilon {} ({}) must be above 0 and at most 1 (the range is (0, 1]; the default is 1e-08): AdamW "
        "divides by sqrt(v) + epsilon, so 0 divides by zero where a gradient is 0",
        format_double(c.training.adam_epsilon), origin_of(r, "adam_epsilon"));
  if (c.training.max_steps <= 0 && c.training.num_train_epochs <= 0)
    fail("nothing to train: max_steps is {} and num_train_epochs is {}; set one of them above 0", c.training.max_steps,
         format_double(c.training.num_train_epochs));
  if (c.training.warmup_steps > 0 && c.training.warmup_steps < 1 && c.training.warmup_ratio > 0)
    fail("warmup_steps {} is a ratio (< 1) and warmup_ratio {} is set too; give one of them",
         format_double(c.training.warmup_steps), format_double(c.training.warmup_ratio));
  if (c.training.warmup_steps >= 1 && c.training.warmup_steps != std::floor(c.training.warmup_steps))
    fail("warmup_steps {} ({}) must be a whole number of steps, or a ratio below 1",
         format_double(c.training.warmup_steps), origin_of(r, "warmup_steps"));
  for (const auto& rt : c.training.report_to)
    if (rt != "none" && rt != "tensorboard" && rt != "all")
      r.warnings.push_back(
          fmt::format("report_to {} is not supported and is ignored: zlora logs to stdout and "
                      "<output_dir>/trainer_log.jsonl, and to TensorBoard with report_to tensorboard",
                      rt));
  if (c.training.logging_dir && !c.training.report_to_tensorboard())
    r.notes.push_back(fmt::format("logging_dir {} ({}) is used by report_to tensorboard only, which is not set",
                                  *c.training.logging_dir, origin_of(r, "logging_dir")));
  if (c.model.trust_remote_code)
    r.warnings.push_back(
        "trust_remote_code is accepted but has no effect: zlora never runs code from a model "
        "directory");
  if (c.dist.offload_optimizer != "none" && c.dist.zero_stage == 0)
    fail("offload_optimizer {} ({}) needs zero_stage 1, 2 or 3 (it is 0, {})", c.dist.offload_optimizer,
         origin_of(r, "offload_optimizer"), origin_of(r, "zero_stage"));
  if (c.training.disable_gradient_checkpointing) c.training.gradient_checkpointing = false;
  // Evaluation: LLaMA-Factory's and HF's rules.
  const bool has_eval_data = c.data.val_size > 0 || !c.data.eval_dataset.empty();
  if (c.data.val_size > 0 && !c.data.eval_dataset.empty())
    fail(
        "val_size {} ({}) and eval_dataset {} ({}) are both set; LLaMA-Factory allows one of them: hold out part "
        "of dataset, or evaluate on other datasets",
        format_double(c.data.val_size), origin_of(r, "val_size"), join_option_list(c.data.eval_dataset),
        origin_of(r, "eval_dataset"));
  if (c.data.val_size > 1 && c.data.val_size != std::floor(c.data.val_size))
    fail("val_size {} ({}) must be a fraction of the samples (at most 1) or a whole number of samples",
         format_double(c.data.val_size), origin_of(r, "val_size"));
  if (c.training.eval_strategy != "no") c.training.do_eval = true;  // HF TrainingArguments.__post_init__
  if (c.training.do_eval && !has_eval_data)
    fail("{} but there is no evaluation data: set val_size (a held-out part of dataset) or eval_dataset",
         c.training.eval_strategy != "no"
             ? fmt::format("eval_strategy is {} ({})", c.training.eval_strategy, origin_of(r, "eval_strategy"))
             : fmt::format("do_eval is true ({})", origin_of(r, "do_eval")));
  if (has_eval_data && !c.training.do_eval)
    r.warnings.push_back(fmt::format(
        "{} is set but nothing evaluates on it: set eval_strategy steps (or epoch) to evaluate during training, or "
        "do_eval true to evaluate once at the end",
        c.data.val_size > 0 ? "val_size" : "eval_dataset"));
  if (c.training.use_cpu) {
    if (c.training.device == "cuda")
      fail("use_cpu is true ({}) but device is cuda ({}); drop one of them", origin_of(r, "use_cpu"),
           origin_of(r, "device"));
    c.training.device = "cpu";
  }
  if (c.dist.ddp_backend) {
    if (was_set(r, "comm") && c.dist.comm != "auto" && c.dist.comm != *c.dist.ddp_backend)
      fail("ddp_backend {} ({}) and comm {} ({}) disagree; set one of them", *c.dist.ddp_backend,
           origin_of(r, "ddp_backend"), c.dist.comm, origin_of(r, "comm"));
    c.dist.comm = *c.dist.ddp_backend;
  }
  if (c.training.output_dir.empty()) fail("output_dir is empty; name a directory for logs and checkpoints");
}

void validate(Resolved<PrepareConfig>& r) {
  PrepareConfig& c = r.cfg;
  validate_template(c.data.template_name);
  if (c.data.dataset.empty())
    fail("no dataset: `zlora prepare` needs --dataset NAME[,NAME...] defined in <dataset_dir>/dataset_info.json");
  if (c.tokenizer.empty()) fail("no tokenizer: `zlora prepare` needs --tokenizer <model directory or tokenizer.json>");
  if (c.output.empty()) fail("output is empty; name the HDF5 file to write (e.g. --output data.h5)");
  if (c.data.streaming) fail("streaming must be false for `zlora prepare`");
}

void validate(Resolved<ExportConfig>& r) {
  ExportConfig& c = r.cfg;
  validate_model(c.model, "export");
  validate_template(c.template_name);
  if (c.export_dir.empty()) fail("Please specify `export_dir` to save model (--export_dir DIR).");
  if (c.export_legacy_format)
    fail(
        "export_legacy_format is true ({}): that would write pickle .bin files, which zlora never writes; set it "
        "to false for safetensors",
        origin_of(r, "export_legacy_format"));
  if (c.model.trust_remote_code)
    r.warnings.push_back(
        "trust_remote_code is accepted but has no effect: zlora never runs code from a model "
        "directory");
  if (c.export_device != "cpu")
    r.warnings.push_back(
        fmt::format("export_device {}: zlora merges one shard at a time on the CPU; the setting "
                    "changes nothing",
                    c.export_device));
}

void validate(Resolved<GenerateConfig>& r) {
  validate_model(r.cfg.model, "generate");
  validate_template(r.cfg.template_name);
}

Resolved<TrainConfig> load_train_config(const std::vector<std::string>& args) {
  Resolved<TrainConfig> r = parse(train_schema(), args);
  if (r.cfg.dist.deepspeed) apply_deepspeed_json(r, *r.cfg.dist.deepspeed);
  validate(r);
  return r;
}

Resolved<PrepareConfig> load_prepare_config(const std::vector<std::string>& args) {
  Resolved<PrepareConfig> r = parse(prepare_schema(), args);
  validate(r);
  return r;
}

Resolved<ExportConfig> load_export_config(const std::vector<std::string>& args) {
  Resolved<ExportConfig> r = parse(export_schema(), args);
  validate(r);
  return r;
}

Resolved<GenerateConfig> load_generate_config(const std::vector<std::string>& args) {
  Resolved<GenerateConfig> r = parse(generate_schema(), args);
  validate(r);
  return r;
}

}  // namespace zlora::config
