// Safetensors ↔ LibTorch, the resident weight store, and LoRA adapters (creation, PEFT files).
#include "zlora/model/weights.h"

#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include <cmath>
#include <cstring>
#include <regex>
#include <set>

#include "zlora/core/error.h"
#include "zlora/core/fs.h"
#include "zlora/core/text.h"
#include "zlora/model/lora.h"

namespace zlora::model {

// ---- safetensors ↔ LibTorch -------------------------------------------------------------------

at::ScalarType to_scalar_type(DType d) {
  switch (d) {
    case DType::kBool:
      return at::kBool;
    case DType::kU8:
      return at::kByte;
    case DType::kI8:
      return at::kChar;
    case DType::kI16:
      return at::kShort;
    case DType::kF16:
      return at::kHalf;
    case DType::kBF16:
      return at::kBFloat16;
    case DType::kI32:
      return at::kInt;
    case DType::kF32:
      return at::kFloat;
    case DType::kF64:
      return at::kDouble;
    case DType::kI64:
      return at::kLong;
    default:
      fail("safetensors dtype {} has no LibTorch equivalent zlora reads", dtype_name(d));
  }
}

DType to_safetensors_dtype(at::ScalarType s) {
  switch (s) {
    case at::kBool:
      return DType::kBool;
    case at::kByte:
      return DType::kU8;
    case at::kChar:
      return DType::kI8;
    case at::kShort:
      return DType::kI16;
    case at::kHalf:
      return DType::kF16;
    case at::kBFloat16:
      return DType::kBF16;
    case at::kInt:
      return DType::kI32;
    case at::kFloat:
      return DType::kF32;
    case at::kDouble:
      return DType::kF64;
    case at::kLong:
      return DType::kI64;
    default:
      fail("tensor dtype {} cannot be written to safetensors", c10::toString(s));
  }
}

at::ScalarType parse_compute_dtype(const std::string& name) {
  const std::string n = text::lower(name);
  if (n == "bfloat16" || n == "bf16") return at::kBFloat16;
  if (n == "float16" || n == "fp16" || n == "half") return at::kHalf;
  if (n == "float32" || n == "fp32" || n == "float") return at::kFloat;
  fail("compute dtype '{}' is not supported; use bfloat16, float16 or float32", name);
}

at::Tensor load_flat_range(const SafetensorsModel& model, const std::string& name, int64_t begin, int64_t end,
                           const at::TensorOptions& options) {
  const TensorInfo& info = model.info(name);
  if (options.dtype_opt() && at::isFloatingType(options.dtype().toScalarType())) require_float_weight(model, name);
  const int64_t numel = info.numel();
  if (begin < 0 || end < begin || end > numel)
    fail("{}: element range [{}, {}) is outside tensor '{}' of {} elements", model.origin(), begin, end, name, numel);
  const size_t esize = dtype_size(info.dtype);
  const uint8_t* src = model.data(name) + size_t(begin) * esize;
  const at::ScalarType st = to_scalar_type(info.dtype);
  // The map is read-only and offsets need not be aligned: copy into an owned host tensor first, then
  // convert (one extra host copy, negligible next to the device transfer).
  at::Tensor host = at::empty({end - begin}, at::TensorOptions().dtype(st));
  if (end > begin) std::memcpy(host.data_ptr(), src, size_t(end - begin) * esize);
  return host.to(options.device_opt().value_or(at::kCPU), options.dtype_opt() ? options.dtype().toScalarType() : st);
}

at::Tensor load_tensor(const SafetensorsModel& model, const std::string& name, const at::TensorOptions& options) {
  const TensorInfo& info = model.info(name);
  return load_flat_range(model, name, 0, info.numel(), options).reshape(info.shape);
}

at::Tensor load_rows(const SafetensorsModel& model, const std::string& name, int64_t row_begin, int64_t row_end,
                     const at::TensorOptions& options) {
  const TensorInfo& info = model.info(name);
  if (info.shape.empty()) fail("{}: tensor '{}' is a scalar and has no rows", model.origin(), name);
  if (row_begin < 0 || row_end < row_begin || row_end > info.shape[0])
    fail("{}: rows [{}, {}) are outside tensor '{}' with {} rows", model.origin(), row_begin, row_end, name,
         info.shape[0]);
  const int64_t row = info.shape[0] == 0 ? 0 : info.numel() / info.shape[0];
  std::vector<int64_t> shape = info.shape;
  shape[0] = row_end - row_begin;
  return load_flat_range(model, name, row_begin * row, row_end * row, options).reshape(shape);
}

std::map<std::string, at::Tensor> load_tensors(const SafetensorsModel& model, const std::vector<std::string>& names,
                                               const at::TensorOptions& options) {
  std::map<std::string, at::Tensor> out;
  for (const auto& n : names) out[n] = load_tensor(model, n, options);
  return out;
}

void save_tensors(const std::filesystem::path& path, const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                  const std::map<std::string, std::string>& metadata) {
  std::vector<at::Tensor> host;  // keeps the contiguous host copies alive while serialising
  std::vector<TensorBytes> bytes;
  for (const auto& [name, t] : tensors) {
    if (!t.defined()) fail("{}: tensor '{}' is undefined", path.string(), name);
    host.push_back(t.detach().to(at::kCPU).contiguous());
    const at::Tensor& h = host.back();
    bytes.push_back({name, to_safetensors_dtype(h.scalar_type()), h.sizes().vec(), h.data_ptr(),
                     uint64_t(h.numel()) * h.element_size()});
  }
  write_safetensors(path, bytes, metadata);
}

// ---- units ---------------------------------------------------------------------------------

std::string lm_head_weight_name(const ModelConfig& c) {
  return c.tie_word_embeddings ? "model.embed_tokens.weight" : "lm_head.weight";
}

std::vector<WeightSpec> unit_weight_specs(const ModelConfig& c, int64_t unit) {
  if (unit < 0 || unit >= c.num_units()) fail("weight unit {} does not exist (the model has {})", unit, c.num_units());
  const int64_t d = c.hidden_size;
  if (unit == 0) return {{"model.embed_tokens.weight", {c.vocab_size, d}}};
  if (unit == c.num_hidden_layers + 1) return {{"model.norm.weight", {d}}, {lm_head_weight_name(c), {c.vocab_size, d}}};
  const std::string p = fmt::format("model.layers.{}.", unit - 1);
  std::vector<WeightSpec> s = {{p + "input_layernorm.weight", {d}}, {p + "post_attention_layernorm.weight", {d}}};
  for (const auto& local : block_linear_modules()) {
    auto [in, out] = linear_shape(c, local);
    s.push_back({p + local + ".weight", {out, in}});
    const bool attn_qkv = local == "self_attn.q_proj" || local == "self_attn.k_proj" || local == "self_attn.v_proj";
    const bool bias = attn_qkv ? c.qkv_bias : local == "self_attn.o_proj" ? c.o_bias : c.mlp_bias;
    if (bias) s.push_back({p + local + ".bias", {out}});
  }
  return s;
}

const at::Tensor& UnitWeights::get(const std::string& name) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end()) fail("weight '{}' is not part of this unit", name);
  return it->second;
}

at::Tensor UnitWeights::get_optional(const std::string& name) const {
  auto it = tensors_.find(name);
  return it == tensors_.end() ? at::Tensor() : it->second;
}

ResidentWeightStore::ResidentWeightStore(const ModelConfig& config, const SafetensorsModel& model, at::Device device,
                                         at::ScalarType dtype)
    : config_(config), device_(device), dtype_(dtype) {
  {
    // The config.json beside the weights, as the messages name it.
    std::error_code ec;
    const std::filesystem::path origin = model.origin();
    require_declared_layers(
        model, config.num_hidden_layers,
        ((std::filesystem::is_directory(origin, ec) ? origin : origin.parent_path()) / "config.json").string());
  }
  std::map<std::string, at::Tensor> tensors;
  std::vector<std::string> missing;
  for (int64_t u = 0; u < config.num_units(); ++u) {
    for (const auto& spec : unit_weight_specs(config, u)) {
      if (tensors.count(spec.name)) continue;
      if (!model.contains(spec.name)) {
        missing.push_back(spec.name);
        continue;
      }
      const TensorInfo& info = model.info(spec.name);
      if (info.shape != spec.shape)
        fail("{}: '{}' has shape [{}] but config.json implies [{}]", model.origin(), spec.name,
             fmt::join(info.shape, ", "), fmt::join(spec.shape, ", "));
      tensors[spec.name] = load_tensor(model, spec.name, at::TensorOptions().device(device).dtype(dtype));
    }
  }
  if (!missing.empty())
    fail("{}: {} tensor(s) config.json needs are missing, e.g. {}{}", model.origin(), missing.size(), missing.front(),
         missing.front() == "lm_head.weight" ? " (config.json says tie_word_embeddings false)" : "");
  init(tensors, model.origin());
}

ResidentWeightStore::ResidentWeightStore(const ModelConfig& config, const std::map<std::string, at::Tensor>& tensors,
                                         at::Device device, at::ScalarType dtype)
    : config_(config), device_(device), dtype_(dtype) {
  std::map<std::string, at::Tensor> converted;
  for (const auto& [n, t] : tensors) converted[n] = t.detach().to(device, dtype);
  init(converted, "weights");
}

void ResidentWeightStore::init(const std::map<std::string, at::Tensor>& tensors, const std::string& origin) {
  for (int64_t u = 0; u < config_.num_units(); ++u) {
    UnitWeights w;
    for (const auto& spec : unit_weight_specs(config_, u)) {
      auto it = tensors.find(spec.name);
      if (it == tensors.end()) fail("{}: tensor '{}' is missing", origin, spec.name);
      if (it->second.sizes().vec() != spec.shape)
        fail("{}: '{}' has shape {} but config.json implies [{}]", origin, spec.name, c10::str(it->second.sizes()),
             fmt::join(spec.shape, ", "));
      w.set(spec.name, it->second);
    }
    units_.push_back(std::move(w));
  }
  acquired_.assign(units_.size(), 0);
  held_.assign(units_.size(), 0);
}

UnitWeights ResidentWeightStore::acquire(int64_t unit) {
  if (unit < 0 || unit >= int64_t(units_.size())) fail("weight unit {} does not exist", unit);
  ++acquired_[unit];
  ++held_[unit];
  return units_[unit];
}

void ResidentWeightStore::release(int64_t unit) {
  if (unit < 0 || unit >= int64_t(units_.size()) || held_[unit] <= 0)
    fail("weight unit {} released more often than acquired", unit);
  --held_[unit];
}

// ---- LoRA ------------------------------------------------------------------------------------

double LoraConfig::scaling() const { return use_rslora ? alpha / std::sqrt(double(r)) : alpha / double(r); }

const std::vector<std::string>& block_linear_modules() {
  static const std::vector<std::string> kModules = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                                    "self_attn.o_proj", "mlp.gate_proj",    "mlp.up_proj",
                                                    "mlp.down_proj"};
  return kModules;
}

std::pair<int64_t, int64_t> linear_shape(const ModelConfig& c, const std::string& local) {
  if (local == "self_attn.q_proj") return {c.hidden_size, c.q_dim()};
  if (local == "self_attn.k_proj" || local == "self_attn.v_proj") return {c.hidden_size, c.kv_dim()};
  if (local == "self_attn.o_proj") return {c.q_dim(), c.hidden_size};
  if (local == "mlp.gate_proj" || local == "mlp.up_proj") return {c.hidden_size, c.intermediate_size};
  if (local == "mlp.down_proj") return {c.intermediate_size, c.hidden_size};
  fail("'{}' is not a linear module of a decoder block", local);
}

namespace {

std::string short_name(const std::string& local) { return local.substr(local.find('.') + 1); }

bool suffix_match(const std::string& module, const std::string& target) {
  return module == target || text::ends_with(module, "." + target);
}

std::string module_name(int64_t layer, const std::string& local) {
  return fmt::format("model.layers.{}.{}", layer, local);
}

std::vector<std::string> existing_names() {
  std::vector<std::string> names;
  for (const auto& l : block_linear_modules()) names.push_back(short_name(l));
  return names;
}

LoraModule make_module(const std::string& module, const ModelConfig& model) {
  LoraModule m;
  m.module = module;
  // module = model.layers.N.<local>
  const std::string rest = module.substr(std::string("model.layers.").size());
  const size_t dot = rest.find('.');
  m.layer = std::stoll(rest.substr(0, dot));
  m.local = rest.substr(dot + 1);
  return m;
}

}  // namespace

std::string peft_param_name(const std::string& module, char which) {
  return fmt::format("base_model.model.{}.lora_{}.weight", module, which);
}

std::vector<std::string> resolve_lora_targets(const ModelConfig& config, const std::vector<std::string>& targets) {
  std::vector<std::string> all;
  for (int64_t l = 0; l < config.num_hidden_layers; ++l)
    for (const auto& local : block_linear_modules()) all.push_back(module_name(l, local));
  std::vector<std::string> cleaned;
  for (const auto& t : targets) {
    const std::string s = text::trim(t);
    if (!s.empty()) cleaned.push_back(s);
  }
  if (cleaned.empty())
    fail("lora_target is empty; use 'all' or a comma list of {}", text::join(existing_names(), ", "));
  if (cleaned.size() == 1 && cleaned[0] == "all") return all;
  std::set<std::string> chosen;
  for (const auto& t : cleaned) {
    if (t == "all") fail("lora_target 'all' cannot be combined with other names");
    bool any = false;
    for (const auto& m : all)
      if (suffix_match(m, t)) {
        chosen.insert(m);
        any = true;
      }
    if (!any)
      fail("lora_target '{}' matches no module of this {} model; its linear modules are {} (or use 'all'){}", t,
           config.model_type, text::join(existing_names(), ", "), text::did_you_mean(t, existing_names()));
  }
  return {chosen.begin(), chosen.end()};
}

LoraAdapter LoraAdapter::create(const ModelConfig& model, const LoraConfig& config, at::Device device) {
  if (config.r < 1 || config.r > 4096) fail("lora_rank must be in [1, 4096], got {}", config.r);
  if (!(config.alpha > 0) || !std::isfinite(config.alpha)) fail("lora_alpha must be positive, got {}", config.alpha);
  if (!(config.dropout >= 0 && config.dropout < 1)) fail("lora_dropout must be in [0, 1), got {}", config.dropout);
  LoraAdapter a;
  a.config_ = config;
  at::Generator gen = at::detail::createCPUGenerator(config.seed);
  const auto f32 = at::TensorOptions().dtype(at::kFloat);
  for (const auto& name : resolve_lora_targets(model, config.targets)) {
    LoraModule m = make_module(name, model);
    auto [in, out] = linear_shape(model, m.local);
    // kaiming_uniform_(a=sqrt(5)): gain sqrt(2/(1+5)), bound gain*sqrt(3/in) = 1/sqrt(in).
    const double bound = 1.0 / std::sqrt(double(in));
    at::Tensor A = at::empty({config.r, in}, f32).uniform_(-bound, bound, gen);
    m.A = A.to(device).set_requires_grad(true);
    m.B = at::zeros({out, config.r}, f32.device(device)).set_requires_grad(true);
    a.modules_.push_back(std::move(m));
  }
  return a;
}

const LoraModule* LoraAdapter::find(int64_t layer, const std::string& local) const {
  for (const auto& m : modules_)
    if (m.layer == layer && m.local == local) return &m;
  return nullptr;
}

std::vector<std::pair<std::string, at::Tensor>> LoraAdapter::named_parameters() const {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (const auto& m : modules_) {
    out.emplace_back(peft_param_name(m.module, 'A'), m.A);
    out.emplace_back(peft_param_name(m.module, 'B'), m.B);
  }
  std::sort(out.begin(), out.end(), [](const auto& x, const auto& y) { return x.first < y.first; });
  return out;
}

std::vector<at::Tensor> LoraAdapter::parameters() const {
  std::vector<at::Tensor> out;
  for (auto& [n, t] : named_parameters()) out.push_back(t);
  return out;
}

void LoraAdapter::save(const std::filesystem::path& dir, const std::string& base_model_name_or_path) const {
  std::filesystem::create_directories(dir);
  std::set<std::string> targets;
  for (const auto& m : modules_) targets.insert(short_name(m.local));
  nlohmann::ordered_json j;
  // The fields PEFT's LoraConfig reads (unknown ones are ignored by PEFT; absent ones take defaults).
  j["alpha_pattern"] = nlohmann::json::object();
  j["auto_mapping"] = nullptr;
  j["base_model_name_or_path"] = base_model_name_or_path;
  j["bias"] = "none";
  j["fan_in_fan_out"] = false;
  j["inference_mode"] = true;
  j["init_lora_weights"] = true;
  j["layers_pattern"] = nullptr;
  j["layers_to_transform"] = nullptr;
  if (std::floor(config_.alpha) == config_.alpha)
    j["lora_alpha"] = int64_t(config_.alpha);
  else
    j["lora_alpha"] = config_.alpha;
  j["lora_dropout"] = config_.dropout;
  j["modules_to_save"] = nullptr;
  j["peft_type"] = "LORA";
  j["r"] = config_.r;
  j["rank_pattern"] = nlohmann::json::object();
  j["revision"] = nullptr;
  j["target_modules"] = std::vector<std::string>(targets.begin(), targets.end());
  j["task_type"] = "CAUSAL_LM";
  j["use_dora"] = false;
  j["use_rslora"] = config_.use_rslora;
  save_tensors(dir / "adapter_model.safetensors",
               [&] {
                 std::vector<std::pair<std::string, at::Tensor>> ts;
                 for (auto& [n, t] : named_parameters()) ts.emplace_back(n, t.detach().to(at::kFloat));
                 return ts;
               }(),
               {{"format", "pt"}});
  fs::write_file_atomic(dir / "adapter_config.json", j.dump(2) + "\n");
}

LoraAdapter LoraAdapter::load(const std::filesystem::path& dir, const ModelConfig& model, at::Device device) {
  const auto cfg_path = dir / "adapter_config.json";
  if (!std::filesystem::exists(cfg_path))
    fail("{}: not found; a PEFT adapter directory holds adapter_config.json and adapter_model.safetensors",
         cfg_path.string());
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(fs::read_file(cfg_path, size_t(16) << 20));
  } catch (const nlohmann::json::exception& e) {
    fail("{}: not valid JSON: {}", cfg_path.string(), e.what());
  }
  const std::string origin = cfg_path.string();
  if (!j.is_object()) fail("{}: expected a JSON object", origin);
  auto str = [&](const char* k, const std::string& def) {
    return j.contains(k) && j[k].is_string() ? j[k].get<std::string>() : def;
  };
  if (str("peft_type", "") != "LORA")
    fail("{}: peft_type must be LORA, got {}", origin, j.contains("peft_type") ? j["peft_type"].dump() : "nothing");
  // null counts as absent (PEFT writes null for unset options); a wrong type is an error, not an exception.
  auto flag = [&](const char* k) {
    if (!j.contains(k) || j[k].is_null()) return false;
    if (!j[k].is_boolean()) fail("{}: '{}' must be true or false, got {}", origin, k, j[k].dump());
    return j[k].get<bool>();
  };
  if (flag("use_dora")) fail("{}: DoRA adapters (use_dora true) are not supported", origin);
  if (str("bias", "none") != "none") fail("{}: bias '{}' is not supported (only 'none')", origin, str("bias", ""));
  if (flag("fan_in_fan_out")) fail("{}: fan_in_fan_out true is not supported (Conv1D models)", origin);
  if (j.contains("modules_to_save") && !j["modules_to_save"].is_null() && !j["modules_to_save"].empty())
    fail("{}: modules_to_save {} is not supported (fully trained extra modules)", origin, j["modules_to_save"].dump());
  for (const char* k : {"rank_pattern", "alpha_pattern"})
    if (j.contains(k) && !j[k].is_null() && !j[k].empty())
      fail("{}: {} {} is not supported (one rank and alpha for all modules)", origin, k, j[k].dump());
  LoraConfig c;
  if (!j.contains("r") || !j["r"].is_number_integer()) fail("{}: 'r' (the rank) must be an integer", origin);
  c.r = j["r"].get<int64_t>();
  if (!j.contains("lora_alpha") || !j["lora_alpha"].is_number()) fail("{}: 'lora_alpha' must be a number", origin);
  c.alpha = j["lora_alpha"].get<double>();
  c.dropout = j.contains("lora_dropout") && j["lora_dropout"].is_number() ? j["lora_dropout"].get<double>() : 0.0;
  c.use_rslora = flag("use_rslora");
  c.targets.clear();
  if (j.contains("target_modules") && j["target_modules"].is_array())
    for (const auto& t : j["target_modules"])
      if (t.is_string()) c.targets.push_back(t.get<std::string>());

  // The tensors are the authority on which modules are adapted (a string target_modules is a regex).
  SafetensorsModel st(dir / "adapter_model.safetensors");
  std::set<std::string> known;
  for (int64_t l = 0; l < model.num_hidden_layers; ++l)
    for (const auto& local : block_linear_modules()) known.insert(module_name(l, local));
  std::map<std::string, std::pair<bool, bool>> seen;
  for (const auto& name : st.names()) {
    const std::string pre = "base_model.model.";
    std::string rest = text::starts_with(name, pre) ? name.substr(pre.size()) : "";
    std::string module;
    char which = 0;
    for (char w : {'A', 'B'}) {
      const std::string suf = fmt::format(".lora_{}.weight", w);
      if (text::ends_with(rest, suf)) {
        module = rest.substr(0, rest.size() - suf.size());
        which = w;
      }
    }
    if (module.empty() || !known.count(module))
      fail("{}: tensor '{}' is not a LoRA weight of a decoder-block linear of this {} model (expected names like {})",
           st.origin(), name, model.model_type, peft_param_name("model.layers.0.self_attn.q_proj", 'A'));
    (which == 'A' ? seen[module].first : seen[module].second) = true;
  }
  if (seen.empty()) fail("{}: holds no LoRA tensors", st.origin());
  LoraAdapter a;
  a.config_ = c;
  if (c.r < 1) fail("{}: r must be >= 1", origin);
  const auto f32 = at::TensorOptions().dtype(at::kFloat).device(device);
  for (const auto& [module, ab] : seen) {
    if (!ab.first || !ab.second)
      fail("{}: module {} has lora_{} but not lora_{}", st.origin(), module, ab.first ? 'A' : 'B',
           ab.first ? 'B' : 'A');
    LoraModule m = make_module(module, model);
    auto [in, out] = linear_shape(model, m.local);
    m.A = load_tensor(st, peft_param_name(module, 'A'), f32);
    m.B = load_tensor(st, peft_param_name(module, 'B'), f32);
    if (m.A.sizes().vec() != std::vector<int64_t>{c.r, in} || m.B.sizes().vec() != std::vector<int64_t>{out, c.r})
      fail("{}: {} has lora_A {} and lora_B {}; with r={} this model needs [{}, {}] and [{}, {}]", st.origin(), module,
           c10::str(m.A.sizes()), c10::str(m.B.sizes()), c.r, c.r, in, out, c.r);
    m.A.set_requires_grad(true);
    m.B.set_requires_grad(true);
    a.modules_.push_back(std::move(m));
  }
  if (c.targets.empty())
    for (const auto& m : a.modules_) c.targets.push_back(short_name(m.local));
  a.config_.targets = c.targets;
  return a;
}

}  // namespace zlora::model
