// config.json → ModelConfig. Every field is checked against bounds no real model exceeds, so a typo or a
// hostile file fails here, with the field's name, instead of as a huge allocation later.
#include "zlora/model/config.h"

#include <nlohmann/json.hpp>

#include <cmath>

#include "zlora/core/error.h"
#include "zlora/core/fs.h"
#include "zlora/core/text.h"

namespace zlora::model {
namespace {

using nlohmann::json;

struct Family {
  const char* model_type;
  const char* architecture;
};
constexpr Family kFamilies[] = {
    {"qwen2", "Qwen2ForCausalLM"}, {"llama", "LlamaForCausalLM"}, {"mistral", "MistralForCausalLM"}};

// A value of config.json quoted in an error: escaped and bounded (the file is untrusted).
std::string shown(const json& v) { return text::printable(v.dump(-1, ' ', false, json::error_handler_t::replace)); }

int64_t get_int(const json& j, const char* key, int64_t lo, int64_t hi, const std::string& origin) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) fail("{}: required field '{}' is missing", origin, key);
  int64_t v = 0;
  if (it->is_number_integer()) {
    v = it->get<int64_t>();
  } else if (it->is_number_float() && std::floor(it->get<double>()) == it->get<double>() &&
             std::fabs(it->get<double>()) < 9e15) {
    v = static_cast<int64_t>(it->get<double>());
  } else {
    fail("{}: '{}' must be an integer, got {}", origin, key, shown(*it));
  }
  if (v < lo || v > hi) fail("{}: '{}' = {} is outside the supported range [{}, {}]", origin, key, v, lo, hi);
  return v;
}

double get_double(const json& j, const char* key, double fallback, const std::string& origin) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  if (!it->is_number()) fail("{}: '{}' must be a number, got {}", origin, key, shown(*it));
  double v = it->get<double>();
  if (!std::isfinite(v)) fail("{}: '{}' must be finite", origin, key);
  return v;
}

bool get_bool(const json& j, const char* key, bool fallback, const std::string& origin) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  if (!it->is_boolean()) fail("{}: '{}' must be true or false, got {}", origin, key, shown(*it));
  return it->get<bool>();
}

// transformers 5 writes `rope_parameters` {rope_type, rope_theta, ...}; 4.x writes `rope_theta` and
// `rope_scaling` {type|rope_type, factor, ...} (null when unscaled). Both are accepted.
void parse_rope(const json& j, ModelConfig& c, const std::string& origin) {
  c.rope_theta = get_double(j, "rope_theta", 10000.0, origin);
  const json* scaling = nullptr;
  auto params = j.find("rope_parameters");
  if (params != j.end() && params->is_object()) {
    c.rope_theta = get_double(*params, "rope_theta", c.rope_theta, origin);
    scaling = &*params;
  }
  auto rs = j.find("rope_scaling");
  if (rs != j.end() && rs->is_object()) scaling = &*rs;
  if (!(c.rope_theta > 0)) fail("{}: rope_theta must be positive, got {}", origin, c.rope_theta);
  if (!scaling) return;
  std::string type = "default";
  for (const char* key : {"rope_type", "type"}) {
    auto t = scaling->find(key);
    if (t != scaling->end() && t->is_string()) {
      type = t->get<std::string>();
      break;
    }
  }
  if (type == "default") return;
  if (type != "llama3")
    fail("{}: rope scaling type '{}' is not supported; zlora implements 'default' (none) and 'llama3'", origin,
         text::printable(type));
  RopeScaling& r = c.rope_scaling;
  r.type = type;
  r.factor = get_double(*scaling, "factor", 0.0, origin);
  r.low_freq_factor = get_double(*scaling, "low_freq_factor", 1.0, origin);
  r.high_freq_factor = get_double(*scaling, "high_freq_factor", 4.0, origin);
  r.original_max_position_embeddings =
      get_int(*scaling, "original_max_position_embeddings", 1, int64_t(1) << 26, origin);
  if (!(r.factor >= 1.0)) fail("{}: llama3 rope scaling needs factor >= 1, got {}", origin, r.factor);
  if (!(r.high_freq_factor > r.low_freq_factor) || !(r.low_freq_factor > 0))
    fail("{}: llama3 rope scaling needs 0 < low_freq_factor < high_freq_factor, got {} and {}", origin,
         r.low_freq_factor, r.high_freq_factor);
}

std::vector<int64_t> get_token_ids(const json& j, const char* key, const std::string& origin) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return {};
  std::vector<int64_t> ids;
  auto one = [&](const json& v) {
    if (!v.is_number_integer() || v.get<int64_t>() < 0)
      fail("{}: '{}' must hold token ids, got {}", origin, key, shown(v));
    ids.push_back(v.get<int64_t>());
  };
  if (it->is_array()) {
    for (const auto& v : *it) one(v);
  } else {
    one(*it);
  }
  return ids;
}

}  // namespace

ModelConfig parse_model_config(std::string_view json_text, const std::string& origin) {
  json j;
  try {
    // Copying or dumping a value recurses once per nesting level: a hostile "[[[[..." must stop here.
    constexpr int kMaxDepth = 64;
    j = json::parse(json_text.begin(), json_text.end(), [&](int depth, json::parse_event_t, json&) {
      if (depth > kMaxDepth) fail("{}: JSON nested deeper than {} levels", origin, kMaxDepth);
      return true;
    });
  } catch (const json::exception& e) {
    fail("{}: not valid JSON: {}", origin, e.what());
  }
  if (!j.is_object()) fail("{}: expected a JSON object", origin);
  ModelConfig c;
  std::vector<std::string> supported = supported_model_types();
  auto mt = j.find("model_type");
  if (mt == j.end() || !mt->is_string())
    fail("{}: no 'model_type'; zlora supports {}", origin, text::join(supported, ", "));
  c.model_type = mt->get<std::string>();
  const Family* family = nullptr;
  for (const auto& f : kFamilies)
    if (c.model_type == f.model_type) family = &f;
  if (!family)
    fail("{}: model_type '{}' is not supported; zlora supports {}{}", origin, text::printable(c.model_type),
         text::join(supported, ", "), text::did_you_mean(c.model_type, supported));
  c.architecture = family->architecture;
  auto arch = j.find("architectures");
  if (arch != j.end() && arch->is_array()) {
    for (const auto& a : *arch) {
      if (!a.is_string() || a.get<std::string>() != family->architecture)
        fail("{}: architecture {} is not supported for model_type '{}'; zlora supports {} (causal LM heads only)",
             origin, shown(a), family->model_type, family->architecture);
    }
  }
  const std::string act = j.contains("hidden_act") && j["hidden_act"].is_string() ? j["hidden_act"].get<std::string>()
                                                                                  : std::string("silu");
  if (act != "silu")
    fail("{}: hidden_act '{}' is not supported; these families use 'silu'", origin, text::printable(act));

  c.vocab_size = get_int(j, "vocab_size", 1, int64_t(1) << 22, origin);
  c.hidden_size = get_int(j, "hidden_size", 1, 65536, origin);
  c.intermediate_size = get_int(j, "intermediate_size", 1, int64_t(1) << 20, origin);
  c.num_hidden_layers = get_int(j, "num_hidden_layers", 1, 1024, origin);
  c.num_attention_heads = get_int(j, "num_attention_heads", 1, 1024, origin);
  c.num_key_value_heads = j.contains("num_key_value_heads") && !j["num_key_value_heads"].is_null()
                              ? get_int(j, "num_key_value_heads", 1, 1024, origin)
                              : c.num_attention_heads;  // HF's default: multi-head attention
  if (c.num_attention_heads % c.num_key_value_heads != 0)
    fail("{}: num_attention_heads ({}) must be a multiple of num_key_value_heads ({})", origin, c.num_attention_heads,
         c.num_key_value_heads);
  if (j.contains("head_dim") && !j["head_dim"].is_null()) {
    c.head_dim = get_int(j, "head_dim", 2, 1024, origin);
  } else {
    if (c.hidden_size % c.num_attention_heads != 0)
      fail("{}: hidden_size ({}) is not divisible by num_attention_heads ({}) and no head_dim is given", origin,
           c.hidden_size, c.num_attention_heads);
    c.head_dim = c.hidden_size / c.num_attention_heads;
  }
  if (c.head_dim % 2 != 0) fail("{}: head_dim must be even for rotary embeddings, got {}", origin, c.head_dim);
  c.max_position_embeddings =
      j.contains("max_position_embeddings") ? get_int(j, "max_position_embeddings", 1, int64_t(1) << 26, origin) : 4096;
  c.rms_norm_eps = get_double(j, "rms_norm_eps", 1e-6, origin);
  if (!(c.rms_norm_eps > 0 && c.rms_norm_eps < 1))
    fail("{}: rms_norm_eps must be in (0, 1), got {}", origin, c.rms_norm_eps);
  parse_rope(j, c, origin);
  // Qwen2Config, LlamaConfig and MistralConfig all default to untied.
  c.tie_word_embeddings = get_bool(j, "tie_word_embeddings", false, origin);
  if (c.model_type == "qwen2") {
    c.qkv_bias = true;  // Qwen2Attention: q/k/v with bias, o_proj without
    if (get_bool(j, "use_sliding_window", false, origin))
      fail(
          "{}: use_sliding_window true is not supported (Qwen2 sliding-window attention); zlora implements full "
          "attention",
          origin);
  } else if (c.model_type == "llama") {
    c.qkv_bias = c.o_bias = get_bool(j, "attention_bias", false, origin);
    c.mlp_bias = get_bool(j, "mlp_bias", false, origin);
  } else {  // mistral: no biases; an attention window when sliding_window is set
    auto sw = j.find("sliding_window");
    if (sw != j.end() && !sw->is_null()) c.sliding_window = get_int(j, "sliding_window", 1, int64_t(1) << 26, origin);
  }
  for (const char* key : {"dtype", "torch_dtype"}) {
    auto d = j.find(key);
    if (d != j.end() && d->is_string()) {
      c.torch_dtype = d->get<std::string>();
      break;
    }
  }
  auto bos = get_token_ids(j, "bos_token_id", origin);
  if (!bos.empty()) c.bos_token_id = bos.front();
  c.eos_token_ids = get_token_ids(j, "eos_token_id", origin);
  // Bound the largest single weight (embeddings or an MLP matrix) to 2^34 elements: far above any model
  // zlora targets, far below an int64 overflow in shape arithmetic.
  const double biggest = std::max({double(c.vocab_size) * c.hidden_size, double(c.intermediate_size) * c.hidden_size,
                                   double(c.q_dim()) * c.hidden_size});
  if (biggest > double(int64_t(1) << 34)) fail("{}: the model's dimensions are implausibly large", origin);
  return c;
}

ModelConfig load_model_config(const std::filesystem::path& model_dir_or_file) {
  std::filesystem::path p = model_dir_or_file;
  if (std::filesystem::is_directory(p)) p /= "config.json";
  if (!std::filesystem::exists(p))
    fail("{}: not found; the model directory must hold a Hugging Face config.json", p.string());
  return parse_model_config(fs::read_file(p, size_t(16) << 20), p.string());
}

std::string cutoff_len_warning(const ModelConfig& config, int64_t cutoff_len, const std::string& origin) {
  if (cutoff_len <= config.max_position_embeddings) return "";
  return fmt::format(
      "cutoff_len {} is longer than the {} positions the model supports (max_position_embeddings in {}): samples "
      "that long train on positions it never saw, which usually degrades it; lower --cutoff_len to at most {}, "
      "or use a model with a longer context",
      cutoff_len, config.max_position_embeddings, origin, config.max_position_embeddings);
}

}  // namespace zlora::model
