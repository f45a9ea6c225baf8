// `zlora generate`: templated prompt → KV-cache decoding → streamed text (see generate.h).
#include "zlora/export/generate.h"

#include <torch/torch.h>

#include <unistd.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <map>
#include <set>
#include <string>

#include "zlora/core/error.h"
#include "zlora/core/fs.h"
#include "zlora/core/log.h"
#include "zlora/core/text.h"
#include "zlora/data/template.h"
#include "zlora/data/tokenizer.h"
#include "zlora/export/commands.h"
#include "zlora/export/modelfile.h"
#include "zlora/model/safetensors.h"
#include "zlora/model/weights.h"

namespace zlora::exporter {

namespace stdfs = std::filesystem;

SamplingOptions sampling_options(const config::GenerateConfig& c) {
  SamplingOptions o;
  o.max_new_tokens = c.max_new_tokens;
  o.do_sample = c.do_sample;
  o.temperature = c.temperature;
  o.top_p = c.top_p;
  o.top_k = c.top_k;
  o.repetition_penalty = c.repetition_penalty;
  o.seed = uint64_t(c.seed);
  return o;
}

int64_t next_token(const at::Tensor& logits_in, const std::vector<int64_t>& context, const SamplingOptions& o,
                   at::Generator& generator) {
  at::NoGradGuard no_grad;
  at::Tensor scores = logits_in.reshape({-1}).to(at::kCPU, at::kFloat).clone();
  const int64_t vocab = scores.numel();
  if (o.repetition_penalty != 1.0 && !context.empty()) {
    // RepetitionPenaltyLogitsProcessor: a seen token's logit is divided by the penalty when positive,
    // multiplied when negative (so a penalty > 1 always makes it less likely).
    at::Tensor idx = at::tensor(context, at::TensorOptions().dtype(at::kLong));
    at::Tensor s = scores.gather(0, idx);
    s = at::where(s < 0, s * o.repetition_penalty, s / o.repetition_penalty);
    scores.scatter_(0, idx, s);
  }
  if (!o.do_sample) return scores.argmax().item<int64_t>();
  if (o.temperature != 1.0) scores = scores / o.temperature;
  const float neg_inf = -std::numeric_limits<float>::infinity();
  if (o.top_k > 0 && o.top_k < vocab) {  // TopKLogitsWarper: below the k-th largest value is removed
    at::Tensor kth = std::get<0>(scores.topk(o.top_k)).index({o.top_k - 1});
    scores = scores.masked_fill(scores < kth, neg_inf);
  }
  if (o.top_p < 1.0) {  // TopPLogitsWarper: drop the low tail whose mass is <= 1 - top_p, keep >= 1 token
    auto sorted = scores.sort(/*dim=*/0, /*descending=*/false);
    at::Tensor sorted_logits = std::get<0>(sorted), sorted_idx = std::get<1>(sorted);
    at::Tensor cum = sorted_logits.softmax(0).cumsum(0);
    at::Tensor remove = cum <= (1.0 - o.top_p);
    remove.index_put_({vocab - 1}, false);
    at::Tensor mask = at::zeros_like(remove).scatter(0, sorted_idx, remove);
    scores = scores.masked_fill(mask, neg_inf);
  }
  at::Tensor probs = scores.softmax(0);
  return at::multinomial(probs, 1, /*replacement=*/false, generator).item<int64_t>();
}

Generation generate(const model::Decoder& decoder, const std::vector<int64_t>& prompt, const SamplingOptions& o,
                    const std::vector<int64_t>& stop_ids, const std::function<void(int64_t)>& on_token) {
  if (prompt.empty()) fail("generate: the prompt has no tokens");
  const int64_t max_pos = decoder.config().max_position_embeddings;
  if (max_pos > 0 && int64_t(prompt.size()) >= max_pos)
    fail("the prompt has {} tokens, at least the model's max_position_embeddings {}", prompt.size(), max_pos);
  using clock = std::chrono::steady_clock;
  at::Generator gen = at::detail::createCPUGenerator(o.seed);
  const std::set<int64_t> stops(stop_ids.begin(), stop_ids.end());
  std::vector<int64_t> context = prompt;  // the repetition penalty sees prompt and output, as in HF
  model::KVCache cache;
  Generation g;
  auto t0 = clock::now();
  at::Tensor logits = decoder.decode(at::tensor(prompt, at::TensorOptions().dtype(at::kLong)), cache);
  at::Tensor last = logits[logits.size(0) - 1];
  auto t1 = clock::now();
  g.prefill_seconds = std::chrono::duration<double>(t1 - t0).count();
  for (int64_t step = 0; step < o.max_new_tokens; ++step) {
    const int64_t id = next_token(last, context, o, gen);
    g.ids.push_back(id);
    context.push_back(id);
    if (on_token) on_token(id);
    if (stops.count(id)) {
      g.stopped = true;
      break;
    }
    if (step + 1 == o.max_new_tokens) break;
    if (max_pos > 0 && cache.length + 1 >= max_pos) {
      log::warn("generation stopped at the model's max_position_embeddings ({})", max_pos);
      break;
    }
    last = decoder.decode(at::tensor(std::vector<int64_t>{id}, at::TensorOptions().dtype(at::kLong)), cache)[0];
  }
  g.decode_seconds = std::chrono::duration<double>(clock::now() - t1).count();
  return g;
}

LoadedModel::LoadedModel(const stdfs::path& base_dir, const std::vector<stdfs::path>& adapter_dirs, at::Device device,
                         at::ScalarType dtype) {
  config_ = model::load_model_config(base_dir);
  model::SafetensorsModel base(base_dir);
  for (const auto& dir : adapter_dirs) adapters_.push_back(model::LoraAdapter::load(dir, config_, device));
  if (adapters_.size() <= 1) {
    store_ = std::make_unique<model::ResidentWeightStore>(config_, base, device, dtype);
  } else {
    // All but the last adapter merged into the weights, tensor by tensor (fp32 accumulation).
    at::NoGradGuard no_grad;
    std::map<std::string, at::Tensor> tensors;
    for (int64_t u = 0; u < config_.num_units(); ++u)
      for (const auto& spec : model::unit_weight_specs(config_, u)) {
        if (tensors.count(spec.name)) continue;
        if (!base.contains(spec.name)) fail("{}: tensor '{}' is missing", base_dir.string(), spec.name);
        at::Tensor w = model::load_tensor(base, spec.name, at::TensorOptions().dtype(at::kFloat).device(device));
        for (size_t a = 0; a + 1 < adapters_.size(); ++a)
          for (const auto& m : adapters_[a].modules())
            if (m.module + ".weight" == spec.name) w.addmm_(m.B.detach(), m.A.detach(), 1.0, adapters_[a].scaling());
        tensors[spec.name] = w.to(dtype);
      }
    store_ = std::make_unique<model::ResidentWeightStore>(config_, tensors, device, dtype);
  }
  decoder_ = std::make_unique<model::Decoder>(*store_, adapters_.empty() ? nullptr : &adapters_.back());
}

namespace {

at::Device pick_device(const std::string& name) {
  const bool cuda = torch::cuda::is_available();
  if (name == "cuda") {
    if (!cuda) fail("--device cuda: no CUDA device is available to this build of zlora (use --device cpu)");
    return at::Device(at::kCUDA, 0);
  }
  if (name == "auto" && cuda) return at::Device(at::kCUDA, 0);
  return at::Device(at::kCPU);
}

// infer_dtype auto: the config's dtype on a GPU (transformers' torch_dtype="auto"); fp32 on the CPU,
// where half-precision matmuls are slow or missing.
at::ScalarType pick_dtype(const std::string& infer_dtype, const model::ModelConfig& cfg, at::Device device) {
  if (infer_dtype != "auto") return model::parse_compute_dtype(infer_dtype);
  if (device.is_cpu()) return at::kFloat;
  try {
    return model::parse_compute_dtype(cfg.torch_dtype);
  } catch (const Error&) {
    return at::kBFloat16;
  }
}

// Everything that ends a turn: the template's eos and stop words, config.json's and
// generation_config.json's eos ids.
std::vector<int64_t> stop_ids_for(const data::TemplateSpec& spec, const data::Tokenizer& tok,
                                  const model::ModelConfig& cfg, const stdfs::path& base_dir) {
  std::vector<int64_t> ids = stop_token_ids(spec, token_info(spec, tok));
  ids.insert(ids.end(), cfg.eos_token_ids.begin(), cfg.eos_token_ids.end());
  const stdfs::path gc = base_dir / "generation_config.json";
  if (stdfs::exists(gc)) {
    auto j = nlohmann::json::parse(fs::read_file(gc, size_t(16) << 20), nullptr, false);
    if (j.is_object() && j.contains("eos_token_id")) {
      const auto& e = j["eos_token_id"];
      if (e.is_number_integer()) ids.push_back(e.get<int64_t>());
      if (e.is_array())
        for (const auto& x : e)
          if (x.is_number_integer()) ids.push_back(x.get<int64_t>());
    }
  }
  std::sort(ids.begin(), ids.end());
  ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
  return ids;
}

// Streams decoded text: each call prints what the tokens so far add, holding back an incomplete UTF-8
// sequence (the decoder shows it as U+FFFD until its last byte arrives).
class TextStream {
 public:
  TextStream(const data::Tokenizer& tok, std::FILE* out) : tok_(tok), out_(out) {}
  void push(int64_t id) {
    ids_.push_back(int32_t(id));
    flush(false);
  }
  void flush(bool final) {
    std::string text = tok_.decode(ids_, /*skip_special_tokens=*/true);
    static const std::string kReplacement = "\xEF\xBF\xBD";
    if (!final && text::ends_with(text, kReplacement)) return;
    if (text.size() > printed_) {
      std::fwrite(text.data() + printed_, 1, text.size() - printed_, out_);
      std::fflush(out_);
      printed_ = text.size();
    }
    text_ = std::move(text);
  }
  const std::string& text() const { return text_; }

 private:
  const data::Tokenizer& tok_;
  std::FILE* out_;
  std::vector<int32_t> ids_;
  size_t printed_ = 0;
  std::string text_;
};

bool read_line(std::FILE* in, std::string& line) {
  line.clear();
  int c;
  while ((c = std::fgetc(in)) != EOF && c != '\n') line.push_back(char(c));
  return c != EOF || !line.empty();
}

}  // namespace

int generate_command(const config::GenerateConfig& cfg, std::FILE* in, std::FILE* out) {
  const stdfs::path base_dir = cfg.model.model_name_or_path;
  if (!stdfs::is_directory(base_dir))
    fail(
        "model_name_or_path '{}' is not a directory; give a Hugging Face model directory (config.json, "
        "*.safetensors, tokenizer.json)",
        base_dir.string());
  std::vector<stdfs::path> adapters;
  if (cfg.model.adapter_name_or_path)
    for (const auto& p : text::split(*cfg.model.adapter_name_or_path, ',')) {
      const std::string s = text::trim(p);
      if (s.empty()) continue;
      if (!stdfs::exists(stdfs::path(s) / "adapter_model.safetensors"))
        fail(
            "adapter_name_or_path '{}': adapter_model.safetensors not found (a PEFT adapter directory holds "
            "adapter_config.json and adapter_model.safetensors)",
            s);
      adapters.emplace_back(s);
    }
  // The base's tokenizer; LLaMA-Factory also saves one beside the adapter, used when the base has none.
  stdfs::path tokenizer_dir = base_dir;
  if (!stdfs::exists(base_dir / "tokenizer.json"))
    for (const auto& a : adapters)
      if (stdfs::exists(a / "tokenizer.json")) {
        tokenizer_dir = a;
        break;
      }
  data::Tokenizer tok = data::Tokenizer::load(tokenizer_dir);
  std::string template_name = cfg.template_name.value_or("");
  if (template_name.empty()) {
    log::warn(
        "no --template given: the prompt is fed as is (template 'empty'); pass the template the model was "
        "trained with (e.g. --template qwen)");
    template_name = "empty";
  }
  const data::TemplateSpec& spec = data::find_template(template_name);
  data::ChatTemplate chat(spec, tok, cfg.default_system);
  const model::ModelConfig mcfg = model::load_model_config(base_dir);
  const at::Device device = pick_device(cfg.device);
  const at::ScalarType dtype = pick_dtype(cfg.model.infer_dtype, mcfg, device);
  auto t0 = std::chrono::steady_clock::now();
  LoadedModel lm(base_dir, adapters, device, dtype);
  std::fprintf(stderr, "loaded %s on %s (%s) in %.1f s\n", base_dir.string().c_str(), device.str().c_str(),
               c10::toString(dtype), std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  const std::vector<int64_t> stops = stop_ids_for(spec, tok, mcfg, base_dir);
  const SamplingOptions opts = sampling_options(cfg);
  data::BpeCache cache;

  // One answer: the conversation so far plus the new user turn, rendered as LLaMA-Factory's
  // encode_oneturn does (every source and target except the empty final answer).
  auto answer = [&](std::vector<data::Message>& history, const std::string& user) {
    data::Conversation conv;
    conv.messages = history;
    conv.messages.push_back({data::Role::User, user});
    conv.messages.push_back({data::Role::Assistant, ""});
    const std::vector<int32_t> prompt_ids = chat.encode_oneturn(conv, cache).first;
    const std::vector<int64_t> prompt(prompt_ids.begin(), prompt_ids.end());
    TextStream stream(tok, out);
    Generation g = generate(lm.decoder(), prompt, opts, stops, [&](int64_t id) {
      if (!std::binary_search(stops.begin(), stops.end(), id)) stream.push(id);
    });
    stream.flush(true);
    std::fputc('\n', out);
    std::fflush(out);
    const size_t n = g.ids.size();
    std::fprintf(stderr, "[%zu prompt tokens in %.2f s; %zu new tokens in %.2f s, %.2f tokens/s%s]\n", prompt.size(),
                 g.prefill_seconds, n, g.decode_seconds, g.decode_seconds > 0 ? double(n) / g.decode_seconds : 0.0,
                 g.stopped ? "" : "; max_new_tokens reached");
    history.push_back({data::Role::User, user});
    history.push_back({data::Role::Assistant, stream.text()});
  };

  std::vector<data::Message> history;
  if (cfg.prompt) {
    answer(history, *cfg.prompt);
    return 0;
  }
  const bool terminal = ::isatty(::fileno(in)) && ::isatty(::fileno(out));
  if (terminal)
    std::fputs(
        "Welcome to the CLI application, use `clear` to remove the history, use `exit` to exit the "
        "application.\n",
        out);
  std::string line;
  while (true) {
    if (terminal) {
      std::fputs("\nUser: ", out);
      std::fflush(out);
    }
    if (!read_line(in, line)) break;
    if (text::trim(line).empty()) continue;
    if (terminal) {
      const std::string cmd = text::trim(line);
      if (cmd == "exit") break;
      if (cmd == "clear") {
        history.clear();
        std::fputs("History has been removed.\n", out);
        continue;
      }
      std::fputs("Assistant: ", out);
    } else {
      history.clear();  // piped input: each line is its own conversation
    }
    answer(history, line);
  }
  return 0;
}

}  // namespace zlora::exporter
