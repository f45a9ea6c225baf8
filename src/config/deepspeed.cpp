// Mapping a DeepSpeed JSON (as passed to HF Trainer with --deepspeed) onto zlora's options.
//
// HF semantics are kept: "auto" takes the value from the other arguments; an explicit value fills an
// option the user did not set, and conflicts with one the user did set are errors (HF raises a
// "mismatch" ValueError). A scheduler block replaces lr_scheduler_type, as it does under HF Trainer.
// Every key is either mapped, known to match zlora's fixed behaviour, or reported once as a warning.
#include "zlora/config/load.h"

#include "zlora/core/error.h"
#include "zlora/core/fs.h"
#include "zlora/core/text.h"

#include <nlohmann/json.hpp>

#include <filesystem>
#include <set>

namespace zlora::config {

namespace {

using json = nlohmann::json;

// A JSON value quoted in an error: escaped and bounded (the file is untrusted).
std::string shown(const json& v) { return text::printable(v.dump(-1, ' ', false, json::error_handler_t::replace)); }

struct DsContext {
  Resolved<TrainConfig>& r;
  std::string path;
  std::set<std::string> warned;

  void warn(const std::string& key, const std::string& what) {
    if (warned.insert(key).second) r.warnings.push_back(fmt::format("{}: '{}' {}", path, text::printable(key), what));
  }

  static bool is_auto(const json& v) { return v.is_string() && v.get<std::string>() == "auto"; }

  static std::string scalar(const json& v) {
    if (v.is_string()) return v.get<std::string>();
    if (v.is_boolean()) return v.get<bool>() ? "true" : "false";
    return v.dump();
  }

  // Sets option `key` from DeepSpeed key `ds_key` unless the value is "auto".
  void map(const std::string& ds_key, const json& v, const std::string& key) {
    if (is_auto(v)) return;
    if (!v.is_primitive() || v.is_null())
      fail("{}: '{}' must be a number, boolean, string or \"auto\", got {}", path, ds_key, shown(v));
    set(ds_key, scalar(v), key);
  }

  void set(const std::string& ds_key, const std::string& value, const std::string& key) {
    const Field<TrainConfig>* f = train_schema().find(key);
    Origin origin{fmt::format("{}: {}", path, ds_key)};
    auto it = r.origins.find(key);
    if (it != r.origins.end()) {
      TrainConfig probe = r.cfg;
      f->apply(probe, value, origin);
      if (f->get(probe) != f->get(r.cfg))
        fail("{} sets {} = {}, but {} was set to {} ({}); make them agree or write \"auto\" in the JSON", path, ds_key,
             text::printable(value), key, text::printable(f->get(r.cfg)), it->second.where);
      return;
    }
    f->apply(r.cfg, value, origin);
    r.origins[key] = origin;
  }
};

json parse_json(const std::string& body, const std::string& path) {
  try {
    return json::parse(body);
  } catch (const json::parse_error& e) {
    size_t byte = e.byte == 0 ? 0 : e.byte - 1;
    size_t line = 1, col = 1;
    for (size_t i = 0; i < byte && i < body.size(); ++i) {
      if (body[i] == '\n')
        ++line, col = 1;
      else
        ++col;
    }
    fail("DeepSpeed config {}:{}:{}: malformed JSON ({})", path, line, col, text::printable(e.what(), 240));
  } catch (const json::exception& e) {  // e.g. a number beyond double's range (found by fuzzing)
    fail("DeepSpeed config {}: invalid JSON ({})", path, text::printable(e.what(), 240));
  }
}

void expect_object(const json& v, const std::string& path, const std::string& key) {
  if (!v.is_object()) fail("{}: '{}' must be a JSON object, got {}", path, key, shown(v));
}

// obj[key] as a string, `fallback` when absent; anything but a string is an error naming the key.
std::string string_field(const json& obj, const char* key, const std::string& fallback, const std::string& path,
                         const std::string& where) {
  auto it = obj.find(key);
  if (it == obj.end()) return fallback;
  if (!it->is_string()) fail("{}: '{}.{}' must be a string, got {}", path, where, key, shown(*it));
  return it->get<std::string>();
}

void map_precision(DsContext& ds, const json& root) {
  if (root.contains("fp16")) {
    const json& fp16 = root["fp16"];
    expect_object(fp16, ds.path, "fp16");
    for (auto& [k, v] : fp16.items()) {
      if (k == "enabled")
        ds.map("fp16.enabled", v, "fp16");
      else if (k == "loss_scale")
        ds.map("fp16.loss_scale", v, "loss_scale");
      else if (k == "loss_scale_window")
        ds.map("fp16.loss_scale_window", v, "loss_scale_window");
      else if (k == "initial_scale_power")
        ds.map("fp16.initial_scale_power", v, "initial_scale_power");
      else if (k == "hysteresis")
        ds.map("fp16.hysteresis", v, "hysteresis");
      else if (k == "min_loss_scale")
        ds.map("fp16.min_loss_scale", v, "min_loss_scale");
      else
        ds.warn("fp16." + k, "is not implemented and is ignored");
    }
  }
  if (root.contains("bf16")) {
    const json& bf16 = root["bf16"];
    expect_object(bf16, ds.path, "bf16");
    for (auto& [k, v] : bf16.items()) {
      if (k == "enabled")
        ds.map("bf16.enabled", v, "bf16");
      else
        ds.warn("bf16." + k, "is not implemented and is ignored");
    }
  }
}

void map_optimizer(DsContext& ds, const json& opt) {
  expect_object(opt, ds.path, "optimizer");
  std::string type = string_field(opt, "type", "AdamW", ds.path, "optimizer");
  std::string t = text::lower(type);
  if (t != "adamw" && t != "adam")
    fail("{}: optimizer type '{}' is not supported; zlora trains LoRA with AdamW (type \"AdamW\")", ds.path,
         text::printable(type));
  if (!opt.contains("params")) return;
  const json& p = opt["params"];
  expect_object(p, ds.path, "optimizer.params");
  for (auto& [k, v] : p.items()) {
    if (k == "lr")
      ds.map("optimizer.params.lr", v, "learning_rate");
    else if (k == "eps")
      ds.map("optimizer.params.eps", v, "adam_epsilon");
    else if (k == "weight_decay")
      ds.map("optimizer.params.weight_decay", v, "weight_decay");
    else if (k == "betas") {
      if (DsContext::is_auto(v)) continue;
      if (!v.is_array() || v.size() != 2)
        fail("{}: 'optimizer.params.betas' must be [beta1, beta2] or \"auto\", got {}", ds.path, shown(v));
      ds.map("optimizer.params.betas[0]", v[0], "adam_beta1");
      ds.map("optimizer.params.betas[1]", v[1], "adam_beta2");
    } else if (k == "adam_w_mode" || k == "torch_adam") {
      if (k == "adam_w_mode" && v.is_boolean() && !v.get<bool>())
        fail("{}: optimizer.params.adam_w_mode false (L2-regularised Adam) is not supported; zlora uses AdamW",
             ds.path);
    } else {
      ds.warn("optimizer.params." + k, "is not implemented and is ignored");
    }
  }
}

void map_scheduler(DsContext& ds, const json& sched) {
  expect_object(sched, ds.path, "scheduler");
  std::string type = string_field(sched, "type", "", ds.path, "scheduler");
  std::string mapped;
  if (type == "WarmupLR")
    mapped = "ds_warmup_lr";
  else if (type == "WarmupDecayLR")
    mapped = "ds_warmup_decay_lr";
  else
    fail(
        "{}: scheduler type '{}' is not supported; use WarmupLR or WarmupDecayLR, or drop the block to use "
        "lr_scheduler_type",
        ds.path, text::printable(type));
  // Under HF Trainer the DeepSpeed scheduler replaces --lr_scheduler_type; say so when they differ.
  auto it = ds.r.origins.find("lr_scheduler_type");
  if (it != ds.r.origins.end() && ds.r.cfg.training.lr_scheduler_type != mapped)
    ds.r.warnings.push_back(fmt::format(
        "{}: scheduler {} replaces lr_scheduler_type {} ({}), as under HF Trainer with DeepSpeed; drop the "
        "JSON's scheduler block to use {}",
        ds.path, type, ds.r.cfg.training.lr_scheduler_type, it->second.where, ds.r.cfg.training.lr_scheduler_type));
  ds.r.cfg.training.lr_scheduler_type = mapped;
  ds.r.origins["lr_scheduler_type"] = Origin{ds.path + ": scheduler.type " + type};
  if (!sched.contains("params")) return;
  const json& p = sched["params"];
  expect_object(p, ds.path, "scheduler.params");
  for (auto& [k, v] : p.items()) {
    if (k == "warmup_num_steps")
      ds.map("scheduler.params.warmup_num_steps", v, "warmup_steps");
    else if (k == "warmup_max_lr")
      ds.map("scheduler.params.warmup_max_lr", v, "learning_rate");
    else if (k == "warmup_type")
      ds.map("scheduler.params.warmup_type", v, "warmup_type");
    else if (k == "warmup_min_lr") {
      if (!DsContext::is_auto(v) && !(v.is_number() && v.get<double>() == 0.0))
        fail(
            "{}: scheduler.params.warmup_min_lr {} is not supported (zlora warms up from 0); set it to 0 or "
            "\"auto\"",
            ds.path, shown(v));
    } else if (k == "total_num_steps") {
      if (!DsContext::is_auto(v)) ds.map("scheduler.params.total_num_steps", v, "max_steps");
    } else {
      ds.warn("scheduler.params." + k, "is not implemented and is ignored");
    }
  }
}

void map_zero(DsContext& ds, const json& z) {
  expect_object(z, ds.path, "zero_optimization");
  // Keys whose DeepSpeed meaning zlora always has, so there is nothing to map or warn about.
  static const std::set<std::string> always = {"overlap_comm",
                                               "contiguous_gradients",
                                               "reduce_scatter",
                                               "allgather_partitions",
                                               "stage3_gather_16bit_weights_on_model_save",
                                               "gather_16bit_weights_on_model_save",
                                               "stage3_param_persistence_threshold",
                                               "use_multi_rank_bucket_allreduce"};
  for (auto& [k, v] : z.items()) {
    if (k == "stage")
      ds.map("zero_optimization.stage", v, "zero_stage");
    else if (k == "reduce_bucket_size")
      ds.map("zero_optimization.reduce_bucket_size", v, "reduce_bucket_size");
    else if (k == "allgather_bucket_size")
      ds.map("zero_optimization.allgather_bucket_size", v, "allgather_bucket_size");
    else if (k == "offload_optimizer") {
      expect_object(v, ds.path, "zero_optimization.offload_optimizer");
      for (auto& [ok, ov] : v.items()) {
        if (ok == "device") {
          std::string dev = DsContext::scalar(ov);
          if (dev == "nvme")
            fail("{}: zero_optimization.offload_optimizer.device nvme is not supported; use cpu or none", ds.path);
          ds.map("zero_optimization.offload_optimizer.device", ov, "offload_optimizer");
        } else if (ok == "pin_memory") {
          // zlora always pins offloaded optimizer memory.
        } else {
          ds.warn("zero_optimization.offload_optimizer." + ok, "is not implemented and is ignored");
        }
      }
    } else if (k == "offload_param") {
      expect_object(v, ds.path, "zero_optimization.offload_param");
      std::string dev = v.contains("device") ? DsContext::scalar(v["device"]) : "none";
      if (dev != "none")
        ds.warn("zero_optimization.offload_param",
                "device " + dev + " is not implemented: ZeRO-3 parameter shards stay in GPU memory");
    } else if (always.count(k)) {
      // Matches zlora's fixed behaviour: flat contiguous buckets, overlapped communication, adapters
      // saved whole, small tensors (norms, LoRA) kept resident under ZeRO-3.
    } else if (k == "stage3_prefetch_bucket_size") {
      if (!DsContext::is_auto(v))
        ds.warn("zero_optimization.stage3_prefetch_bucket_size",
                "is replaced by stage3_prefetch_layers (whole decoder layers are prefetched)");
    } else {
      ds.warn("zero_optimization." + k, "is not implemented and is ignored");
    }
  }
}

}  // namespace

void apply_deepspeed_json(Resolved<TrainConfig>& r, const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec))
    fail("DeepSpeed config '{}' (deepspeed option) does not exist or is not a file", path);
  apply_deepspeed_json_text(r, fs::read_file(path, 16u << 20), path);
}

void apply_deepspeed_json_text(Resolved<TrainConfig>& r, const std::string& text, const std::string& path) {
  json root = parse_json(text, path);
  if (!root.is_object()) fail("DeepSpeed config '{}' must be a JSON object", path);
  DsContext ds{r, path, {}};
  map_precision(ds, root);
  for (auto& [k, v] : root.items()) {
    if (k == "fp16" || k == "bf16") continue;
    if (k == "optimizer")
      map_optimizer(ds, v);
    else if (k == "scheduler")
      map_scheduler(ds, v);
    else if (k == "zero_optimization")
      map_zero(ds, v);
    else if (k == "gradient_accumulation_steps")
      ds.map(k, v, "gradient_accumulation_steps");
    else if (k == "train_micro_batch_size_per_gpu")
      ds.map(k, v, "per_device_train_batch_size");
    else if (k == "gradient_clipping")
      ds.map(k, v, "max_grad_norm");
    else if (k == "train_batch_size")
      ds.map(k, v, "train_batch_size");
    else if (k == "zero_allow_untested_optimizer" || k == "zero_force_ds_cpu_optimizer") {
      // zlora's AdamW is the only optimizer; nothing to allow or force.
    } else if (k == "steps_per_print") {
      ds.warn(k, "is ignored: zlora logs every logging_steps");
    } else if (k == "wall_clock_breakdown") {
      if (v.is_boolean() && v.get<bool>())
        ds.warn(k, "is ignored: the benchmark's profile prints the per-phase breakdown");
    } else {
      ds.warn(k, "is not implemented and is ignored");
    }
  }
}

}  // namespace zlora::config
