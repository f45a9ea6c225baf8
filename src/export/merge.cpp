// Streaming LoRA merge and Hugging Face model directory writer (see merge.h).
#include "zlora/export/merge.h"

#include <torch/torch.h>

#include <fcntl.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>
#include <memory>
#include <set>

#include "zlora/ckpt/run_descriptor.h"
#include "zlora/core/error.h"
#include "zlora/core/fs.h"
#include "zlora/core/log.h"
#include "zlora/core/text.h"
#include "zlora/data/json_file.h"
#include "zlora/data/template.h"
#include "zlora/data/tokenizer.h"
#include "zlora/export/chat_template.h"
#include "zlora/export/commands.h"
#include "zlora/export/modelfile.h"
#include "zlora/model/config.h"
#include "zlora/model/lora.h"
#include "zlora/model/safetensors.h"
#include "zlora/model/weights.h"

namespace zlora::exporter {

namespace stdfs = std::filesystem;
using ordered_json = nlohmann::ordered_json;

ExportOptions export_options(const config::ExportConfig& c) {
  ExportOptions o;
  o.base_dir = c.model.model_name_or_path;
  if (c.model.adapter_name_or_path)
    for (const auto& p : text::split(*c.model.adapter_name_or_path, ',')) {
      std::string s = text::trim(p);
      if (!s.empty()) o.adapters.emplace_back(s);
    }
  o.export_dir = c.export_dir;
  o.max_shard_bytes = uint64_t(c.export_size) * 1'000'000'000ull;
  o.dtype = c.export_dtype;
  // LLaMA-Factory exports in the dtype the model was loaded in (infer_dtype); export_dtype, when set, wins.
  if (o.dtype == "auto" && c.model.infer_dtype != "auto") o.dtype = c.model.infer_dtype;
  o.template_name = c.template_name;
  o.default_system = c.default_system;
  o.overwrite = c.overwrite;
  return o;
}

std::vector<std::vector<size_t>> plan_shards(const std::vector<PlannedTensor>& tensors, uint64_t max_shard_bytes) {
  if (max_shard_bytes == 0) fail("the largest shard size must be positive");
  std::vector<std::vector<size_t>> shards;
  std::vector<size_t> current;
  uint64_t current_bytes = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const uint64_t n = tensors[i].nbytes;
    if (n > max_shard_bytes) {  // too big for any shard: alone, placed before the shard being filled
      shards.push_back({i});
      continue;
    }
    if (current_bytes + n > max_shard_bytes) {
      shards.push_back(std::move(current));
      current.clear();
      current_bytes = 0;
    }
    current.push_back(i);
    current_bytes += n;
  }
  if (!current.empty()) shards.push_back(std::move(current));
  return shards;
}

std::string shard_file_name(size_t index, size_t count) {
  if (count == 1) return "model.safetensors";
  return fmt::format("model-{:05d}-of-{:05d}.safetensors", index + 1, count);
}

namespace {

// The user's path made absolute, without "." / ".." or a trailing separator (so "out/" + ".tmp-1"
// names a sibling, not a child).
stdfs::path clean_path(const stdfs::path& p) {
  stdfs::path a = stdfs::absolute(p).lexically_normal();
  if (!a.has_filename() && a.has_parent_path()) a = a.parent_path();
  return a;
}

bool is_within(const stdfs::path& child, const stdfs::path& parent) {
  auto c = child.begin(), p = parent.begin();
  for (; p != parent.end(); ++p, ++c)
    if (c == child.end() || *c != *p) return false;
  return true;
}

// Removes a directory tree at scope exit unless kept: a failed export leaves no partial directory.
class TempTree {
 public:
  explicit TempTree(stdfs::path p) : path_(std::move(p)) {}
  ~TempTree() {
    if (keep_) return;
    std::error_code ec;
    fs::remove_tree(path_, ec);
  }
  TempTree(const TempTree&) = delete;
  TempTree& operator=(const TempTree&) = delete;
  void keep() { keep_ = true; }
  const stdfs::path& path() const { return path_; }

 private:
  stdfs::path path_;
  bool keep_ = false;
};

// One output shard written sequentially: header first (all offsets are known from the plan), then each
// tensor's bytes as it is produced; fsync'd and checked for length at the end.
class ShardWriter {
 public:
  ShardWriter(const stdfs::path& path, const std::string& header, uint64_t data_bytes)
      : path_(path), expected_(8 + header.size() + data_bytes) {
    fd_ = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd_ < 0) fail("cannot create '{}': {}", path.string(), std::strerror(errno));
    char len[8];
    const uint64_t n = header.size();
    for (int i = 0; i < 8; ++i) len[i] = static_cast<char>((n >> (8 * i)) & 0xff);
    write(len, 8);
    write(header.data(), header.size());
  }
  ~ShardWriter() {
    if (fd_ >= 0) ::close(fd_);
  }
  ShardWriter(const ShardWriter&) = delete;
  ShardWriter& operator=(const ShardWriter&) = delete;

  void write(const void* data, size_t size) {
    const char* p = static_cast<const char*>(data);
    while (size > 0) {
      ssize_t n = ::write(fd_, p, size);
      if (n < 0) {
        if (errno == EINTR) continue;
        fail("cannot write '{}': {} (is the disk full?)", path_.string(), std::strerror(errno));
      }
      p += n;
      size -= size_t(n);
      written_ += uint64_t(n);
    }
  }
  void finish() {
    if (written_ != expected_)
      fail("internal error: wrote {} bytes to '{}' but planned {}", written_, path_.string(), expected_);
    if (::fsync(fd_) != 0) fail("cannot sync '{}': {}", path_.string(), std::strerror(errno));
    if (::close(fd_) != 0) fail("cannot close '{}': {}", path_.string(), std::strerror(errno));
    fd_ = -1;
  }

 private:
  stdfs::path path_;
  int fd_ = -1;
  uint64_t expected_ = 0;
  uint64_t written_ = 0;
};

const char* hf_dtype_name(at::ScalarType s) {
  switch (s) {
    case at::kBFloat16:
      return "bfloat16";
    case at::kHalf:
      return "float16";
    case at::kFloat:
      return "float32";
    default:
      fail("export dtype {} is not one of bf16, fp16, fp32", c10::toString(s));
  }
}

at::ScalarType resolve_dtype(const std::string& requested, const model::ModelConfig& cfg, const std::string& origin) {
  if (requested != "auto") return model::parse_compute_dtype(requested);
  try {
    return model::parse_compute_dtype(cfg.torch_dtype);
  } catch (const Error&) {
    fail("{}: torch_dtype '{}' cannot be exported as is; pass --export_dtype bf16, fp16 or fp32", origin,
         cfg.torch_dtype);
  }
}

bool is_float(model::DType d) {
  return d == model::DType::kF16 || d == model::DType::kBF16 || d == model::DType::kF32 || d == model::DType::kF64;
}

// Everything checked before a byte is written: the base, the adapters against it, the export dir.
struct Inputs {
  stdfs::path base_dir, export_dir;
  model::ModelConfig config;
  std::unique_ptr<model::SafetensorsModel> base;
  std::vector<model::LoraAdapter> adapters;
  std::vector<stdfs::path> adapter_dirs;
  at::ScalarType dtype = at::kFloat;
  std::optional<data::TemplateSpec> spec;
};

void check_adapter_dir(const stdfs::path& dir) {
  if (!stdfs::is_directory(dir))
    fail(
        "adapter_name_or_path '{}' is not a directory; give the PEFT adapter directory (adapter_config.json + "
        "adapter_model.safetensors), several separated by commas",
        dir.string());
  if (!stdfs::exists(dir / "adapter_model.safetensors")) {
    if (stdfs::exists(dir / "adapter_model.bin"))
      fail(
          "{}: holds adapter_model.bin (pickle) but no adapter_model.safetensors; zlora never unpickles. Convert it "
          "once with python: `from safetensors.torch import save_file; import torch; "
          "save_file(torch.load('adapter_model.bin'), 'adapter_model.safetensors')`",
          dir.string());
    fail(
        "{}: adapter_model.safetensors not found; a PEFT adapter directory holds adapter_config.json and "
        "adapter_model.safetensors",
        dir.string());
  }
}

void check_export_dir(const Inputs& in, bool overwrite) {
  const stdfs::path& out = in.export_dir;
  std::vector<stdfs::path> protect = {in.base_dir};
  protect.insert(protect.end(), in.adapter_dirs.begin(), in.adapter_dirs.end());
  for (const auto& p : protect)
    if (is_within(p, out))
      fail("export_dir '{}' is or contains the input '{}'; writing there would destroy it. Choose another export_dir",
           out.string(), p.string());
  std::error_code ec;
  if (!stdfs::exists(out, ec)) return;
  if (!stdfs::is_directory(out, ec)) fail("export_dir '{}' exists and is not a directory", out.string());
  if (stdfs::is_empty(out, ec) || overwrite) return;
  std::vector<std::string> names;
  for (const auto& e : stdfs::directory_iterator(out)) {
    names.push_back(e.path().filename().string());
    if (names.size() == 3) break;
  }
  fail(
      "export_dir '{}' is not empty (holds {}{}); choose an empty or new directory, or pass --overwrite true to "
      "replace its contents",
      out.string(), text::join(names, ", "), names.size() == 3 ? ", ..." : "");
}

// The template of the run that trained `adapter`, from that run's record (ckpt/run_descriptor.h): in
// the adapter's directory (a run's output_dir) or, for a checkpoint-STEP adapter, the one above it.
// nullopt when neither holds one or it names no template.
std::optional<std::pair<std::string, stdfs::path>> trained_template(const stdfs::path& adapter) {
  std::vector<stdfs::path> dirs = {adapter};
  if (text::starts_with(adapter.filename().string(), "checkpoint-")) dirs.push_back(adapter.parent_path());
  for (const stdfs::path& dir : dirs) {
    const stdfs::path record = dir / ckpt::kRunDescriptorName;
    std::error_code ec;
    if (!stdfs::is_regular_file(record, ec)) continue;
    const ckpt::RunDescriptor run =
        ckpt::RunDescriptor::from_json(data::parse_json(fs::read_file(record, size_t(1) << 20), record.string()));
    if (run.template_name.empty()) return std::nullopt;
    return std::make_pair(run.template_name, record);
  }
  return std::nullopt;
}

// --template, else the template the adapters were trained with (LLaMA-Factory's export needs
// --template; zlora knows it from the run), else none: no Modelfile, said once.
std::optional<std::string> export_template(const ExportOptions& o, const std::vector<stdfs::path>& adapters) {
  if (o.template_name) return o.template_name;
  std::optional<std::pair<std::string, stdfs::path>> found;
  for (const stdfs::path& a : adapters) {
    const auto t = trained_template(a);
    if (!t) continue;
    if (found && found->first != t->first)
      fail(
          "the adapters were trained with different templates ('{}' in {}, '{}' in {}); pass --template to choose "
          "the one the Modelfile and the tokenizer files get",
          found->first, found->second.string(), t->first, t->second.string());
    if (!found) found = t;
  }
  if (found) {
    log::info("template '{}' from {}, the run that trained the adapter (--template overrides it)", found->first,
              found->second.string());
    return found->first;
  }
  log::warn(
      "no Modelfile is written and the tokenizer files keep their own stop tokens and chat_template: no --template "
      "was given and {} (pass --template NAME, the template the adapter was trained with)",
      adapters.empty() ? "there is no adapter" : "no adapter has a zlora run record naming one");
  return std::nullopt;
}

Inputs check_inputs(const ExportOptions& o) {
  Inputs in;
  if (o.base_dir.empty()) fail("model_name_or_path is not set");
  in.base_dir = clean_path(o.base_dir);
  in.export_dir = clean_path(o.export_dir);
  if (o.export_dir.empty()) fail("Please specify `export_dir` to save model (--export_dir DIR).");
  if (!stdfs::is_directory(in.base_dir))
    fail(
        "model_name_or_path '{}' is not a directory; give a Hugging Face model directory (config.json + "
        "*.safetensors)",
        o.base_dir.string());
  in.config = model::load_model_config(in.base_dir);
  in.base = std::make_unique<model::SafetensorsModel>(in.base_dir);
  // Every tensor the architecture needs, with its shape: an export the decoder (and transformers)
  // cannot load is refused before anything is written.
  for (int64_t u = 0; u < in.config.num_units(); ++u)
    for (const auto& spec : model::unit_weight_specs(in.config, u)) {
      if (!in.base->contains(spec.name))
        fail("{}: tensor '{}' that config.json implies is missing{}", in.base_dir.string(), spec.name,
             spec.name == "lm_head.weight" ? " (config.json says tie_word_embeddings false)" : "");
      const auto& info = in.base->info(spec.name);
      if (info.shape != spec.shape)
        fail("{}: '{}' has shape [{}] but config.json implies [{}]", in.base_dir.string(), spec.name,
             fmt::join(info.shape, ", "), fmt::join(spec.shape, ", "));
      model::require_float_weight(*in.base, spec.name);
    }
  model::require_declared_layers(*in.base, in.config.num_hidden_layers, (in.base_dir / "config.json").string());
  if (o.adapters.empty()) log::warn("no adapter_name_or_path given: the export is a re-saved copy of the base model");
  for (const auto& a : o.adapters) {
    const stdfs::path dir = clean_path(a);
    check_adapter_dir(dir);
    // Rank, alpha, rsLoRA come from adapter_config.json; module names and A/B shapes are checked against
    // this base there (an adapter trained on another model is refused by name).
    in.adapters.push_back(model::LoraAdapter::load(dir, in.config));
    in.adapter_dirs.push_back(dir);
  }
  in.dtype = resolve_dtype(o.dtype, in.config, (in.base_dir / "config.json").string());
  if (const std::optional<std::string> name = export_template(o, in.adapter_dirs)) {
    in.spec = data::find_template(*name);
    if (o.default_system) in.spec->default_system = *o.default_system;
  }
  check_export_dir(in, o.overwrite);
  return in;
}

struct Item {
  std::string name;
  model::DType out_dtype;
  std::vector<int64_t> shape;
  uint64_t nbytes = 0;
  std::vector<std::pair<double, const model::LoraModule*>> loras;  // (scaling, module), in merge order
};

std::vector<Item> plan_items(const Inputs& in, int64_t& merged) {
  // Base order (file, then offset) keeps the reads of a memory-mapped shard sequential.
  std::vector<std::string> names = in.base->names();
  std::stable_sort(names.begin(), names.end(), [&](const std::string& a, const std::string& b) {
    const auto &fa = in.base->file_of(a), &fb = in.base->file_of(b);
    return fa != fb ? fa < fb : in.base->info(a).begin < in.base->info(b).begin;
  });
  std::map<std::string, std::vector<std::pair<double, const model::LoraModule*>>> by_weight;
  for (const auto& a : in.adapters)
    for (const auto& m : a.modules()) by_weight[m.module + ".weight"].emplace_back(a.scaling(), &m);
  const model::DType out_float = model::to_safetensors_dtype(in.dtype);
  std::vector<Item> items;
  merged = 0;
  for (const auto& name : names) {
    // transformers saves a tied lm_head once, under the embedding's name; a second copy would be a
    // second name for one storage.
    if (in.config.tie_word_embeddings && name == "lm_head.weight") {
      log::info("tie_word_embeddings: '{}' is not written (it is model.embed_tokens.weight)", name);
      continue;
    }
    const auto& info = in.base->info(name);
    Item it;
    it.name = name;
    it.shape = info.shape;
    it.out_dtype = is_float(info.dtype) ? out_float : info.dtype;
    it.nbytes = uint64_t(info.numel()) * model::dtype_size(it.out_dtype);
    auto lw = by_weight.find(name);
    if (lw != by_weight.end()) {
      it.loras = lw->second;
      ++merged;
      by_weight.erase(lw);
    }
    items.push_back(std::move(it));
  }
  if (!by_weight.empty())  // LoraAdapter::load checked the names against config.json; the base must agree
    fail("{}: adapter module '{}' has no base weight in the model files", in.base_dir.string(),
         by_weight.begin()->first);
  return items;
}

// One output tensor: read, merged in fp32 (adapters in turn, as merge_and_unload does one after the
// other), cast to the export dtype, checked.
at::Tensor produce(const model::SafetensorsModel& base, const Item& it) {
  at::NoGradGuard no_grad;
  const at::ScalarType out = model::to_scalar_type(it.out_dtype);
  at::Tensor t;
  if (it.loras.empty()) {
    t = model::load_tensor(base, it.name, at::TensorOptions().dtype(out));
  } else {
    at::Tensor w = model::load_tensor(base, it.name, at::TensorOptions().dtype(at::kFloat));
    for (const auto& [scaling, m] : it.loras)
      w.addmm_(m->B.detach().to(at::kFloat), m->A.detach().to(at::kFloat), 1.0, scaling);
    t = w.to(out);
  }
  t = t.contiguous();
  if (at::isFloatingType(out) && !at::isfinite(t).all().item<bool>())
    fail(
        "'{}' has non-finite values after {}conversion to {}: its values exceed the range of {}; export with "
        "--export_dtype bf16 or fp32",
        it.name, it.loras.empty() ? "" : "merging and ", model::dtype_name(it.out_dtype),
        model::dtype_name(it.out_dtype));
  return t;
}

std::string shard_header(const std::vector<Item>& items, const std::vector<size_t>& idx, uint64_t& data_bytes) {
  ordered_json h;
  h["__metadata__"] = {{"format", "pt"}};
  uint64_t off = 0;
  for (size_t i : idx) {
    const Item& it = items[i];
    h[it.name] = {
        {"dtype", model::dtype_name(it.out_dtype)}, {"shape", it.shape}, {"data_offsets", {off, off + it.nbytes}}};
    off += it.nbytes;
  }
  data_bytes = off;
  std::string s = h.dump();
  s.append((8 - s.size() % 8) % 8, ' ');  // aligned data, as the Python writer pads
  return s;
}

std::string read_text(const stdfs::path& p) { return fs::read_file(p, size_t(256) << 20); }

ordered_json parse_json(const std::string& text, const stdfs::path& origin) {
  try {
    return ordered_json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    fail("{}: not valid JSON: {}", origin.string(), e.what());
  }
}

void write_text(const stdfs::path& p, const std::string& s) { fs::write_file_atomic(p, s); }

std::vector<int64_t> json_ids(const ordered_json& v) {
  std::vector<int64_t> out;
  if (v.is_number_integer()) out.push_back(v.get<int64_t>());
  if (v.is_array())
    for (const auto& x : v)
      if (x.is_number_integer()) out.push_back(x.get<int64_t>());
  return out;
}

// The tokenizer facts the Modelfile and generation_config.json need, or nullopt without a template.
std::optional<TokenInfo> load_token_info(const Inputs& in) {
  if (!in.spec) return std::nullopt;
  const stdfs::path tj = in.base_dir / "tokenizer.json", tc = in.base_dir / "tokenizer_config.json";
  if (stdfs::exists(tj)) {
    try {
      data::Tokenizer tok = data::Tokenizer::load(in.base_dir);
      for (const auto& w : in.spec->stop_words)
        if (!tok.token_to_id(w))
          log::warn("template '{}': stop word '{}' is not a token of {}; it is left out of the stop tokens",
                    in.spec->name, w, tj.string());
      return token_info(*in.spec, tok);
    } catch (const Error& e) {
      log::warn("{}: cannot be read ({}); the Modelfile's stop tokens are ordered without token ids", tj.string(),
                e.what());
    }
  }
  return token_info_without_vocab(*in.spec, stdfs::exists(tc) ? read_text(tc) : "");
}

void write_config(const Inputs& in, const stdfs::path& dir) {
  const stdfs::path src = in.base_dir / "config.json";
  ordered_json j = parse_json(read_text(src), src);
  const char* name = hf_dtype_name(in.dtype);
  j["torch_dtype"] = name;
  if (j.contains("dtype")) j["dtype"] = name;  // transformers 5 spelling
  write_text(dir / "config.json", j.dump(2) + "\n");
}

void write_generation_config(const Inputs& in, const std::optional<TokenInfo>& tokens, const stdfs::path& dir) {
  const stdfs::path src = in.base_dir / "generation_config.json";
  ordered_json g;
  if (stdfs::exists(src)) {
    g = parse_json(read_text(src), src);
  } else {
    g["_from_model_config"] = true;
    if (in.config.bos_token_id) g["bos_token_id"] = *in.config.bos_token_id;
  }
  std::vector<int64_t> eos = g.contains("eos_token_id") ? json_ids(g["eos_token_id"]) : in.config.eos_token_ids;
  // generate() and vLLM stop on generation_config's eos ids: the template's stop tokens belong there,
  // or a model trained to end turns with <|im_end|> would run on.
  if (tokens && tokens->has_ids)
    for (int64_t id : stop_token_ids(*in.spec, *tokens))
      if (std::find(eos.begin(), eos.end(), id) == eos.end()) eos.push_back(id);
  if (eos.size() == 1)
    g["eos_token_id"] = eos[0];
  else if (!eos.empty())
    g["eos_token_id"] = eos;
  write_text(dir / "generation_config.json", g.dump(2) + "\n");
}

// Whether the base tokenizer has a chat template of its own, as transformers loads it: tokenizer_config.json's
// chat_template (a string or a list of named templates; null is none) or a chat_template.jinja file.
bool has_own_chat_template(const Inputs& in) {
  if (stdfs::exists(in.base_dir / "chat_template.jinja")) return true;
  const stdfs::path tc = in.base_dir / "tokenizer_config.json";
  if (!stdfs::exists(tc)) return false;
  const ordered_json j = parse_json(read_text(tc), tc);
  return j.is_object() && j.contains("chat_template") && !j["chat_template"].is_null();
}

// Copies the tokenizer files the base has. LLaMA-Factory saves the tokenizer with padding_side "left"
// and, for replace_eos templates, the first stop word as eos_token; the JSON files get the same edits.
// The chat_template is LLaMA-Factory's fix_jinja_template (chat_template.h): the Jinja generated from the
// template when the tokenizer has none or the template replaces it, else the tokenizer's own. Every other
// key of tokenizer_config.json keeps its value and place.
void copy_tokenizer(const Inputs& in, const std::optional<TokenInfo>& tokens, const stdfs::path& dir) {
  static const char* kFiles[] = {
      "tokenizer.json",    "tokenizer_config.json", "special_tokens_map.json", "vocab.json",        "merges.txt",
      "added_tokens.json", "tokenizer.model",       "chat_template.jinja",     "chat_template.json"};
  const std::optional<std::string> replaced = in.spec ? data::replaced_eos(*in.spec) : std::nullopt;
  auto set_eos = [&](ordered_json& j) {
    if (!replaced) return;
    if (j.contains("eos_token") && j["eos_token"].is_object())
      j["eos_token"]["content"] = *replaced;
    else
      j["eos_token"] = *replaced;
  };
  bool has_files = false;
  for (const char* f : kFiles) has_files = has_files || stdfs::exists(in.base_dir / f);
  if (!has_files) {
    log::warn("{}: no tokenizer files to copy (tokenizer.json, ...){}", in.base_dir.string(),
              in.spec ? "; no chat_template is written either" : "");
    return;
  }
  std::optional<ChatTemplateFix> fix;
  if (in.spec && tokens) {
    fix = fix_chat_template(*in.spec, jinja_tokens(*in.spec, *tokens), has_own_chat_template(in));
    log::info("{}", fix->reason);
  }
  const bool write_jinja = fix && fix->write;
  for (const char* f : kFiles) {
    const stdfs::path src = in.base_dir / f;
    if (!stdfs::exists(src)) continue;
    const std::string name = f;
    if (name == "tokenizer_config.json" || name == "special_tokens_map.json") {
      ordered_json j = parse_json(read_text(src), src);
      if (name == "tokenizer_config.json") {
        j["padding_side"] = "left";
        if (write_jinja) j["chat_template"] = fix->jinja;  // in place when the key exists, else last
      }
      set_eos(j);
      write_text(dir / f, j.dump(2) + "\n");
    } else if (name == "chat_template.jinja" && write_jinja) {
      // transformers prefers this file to tokenizer_config.json's key: it gets the same template.
      write_text(dir / f, fix->jinja);
    } else {
      stdfs::copy_file(src, dir / f);
      fs::fsync_path(dir / f);
    }
  }
  if (write_jinja && !stdfs::exists(in.base_dir / "tokenizer_config.json")) {
    // save_pretrained would write a tokenizer_config.json: one with what this export decides.
    ordered_json j;
    j["chat_template"] = fix->jinja;
    set_eos(j);
    j["padding_side"] = "left";
    write_text(dir / "tokenizer_config.json", j.dump(2) + "\n");
  }
}

// Puts the finished temporary directory in place of export_dir (replacing its old contents when
// overwriting: old moved aside, new renamed in, old removed).
void publish(const stdfs::path& tmp, const stdfs::path& out) {
  fs::fsync_path(tmp);
  std::error_code ec;
  if (!stdfs::exists(out, ec)) {
    stdfs::create_directories(out.parent_path());
    fs::rename_durable(tmp, out);
    return;
  }
  if (stdfs::is_empty(out, ec)) {
    stdfs::remove(out);
    fs::rename_durable(tmp, out);
    return;
  }
  const stdfs::path old = out.parent_path() / (out.filename().string() + ".old-" + std::to_string(::getpid()));
  fs::rename_durable(out, old);
  try {
    fs::rename_durable(tmp, out);
  } catch (const Error&) {
    fs::rename_durable(old, out);  // put the previous export back
    throw;
  }
  fs::remove_tree(old, ec);
}

}  // namespace

ExportSummary export_merged(const ExportOptions& o) {
  Inputs in = check_inputs(o);
  ExportSummary summary;
  summary.dtype = hf_dtype_name(in.dtype);
  std::vector<Item> items = plan_items(in, summary.merged_weights);
  std::vector<PlannedTensor> planned;
  for (const auto& it : items) planned.push_back({it.name, it.nbytes});
  const auto shards = plan_shards(planned, o.max_shard_bytes);
  const std::optional<TokenInfo> tokens = load_token_info(in);

  stdfs::create_directories(in.export_dir.parent_path());
  TempTree tmp(in.export_dir.parent_path() /
               (in.export_dir.filename().string() + ".tmp-" + std::to_string(::getpid())));
  {
    std::error_code ec;
    fs::remove_tree(tmp.path(), ec);  // a leftover of an earlier process with our pid
  }
  stdfs::create_directory(tmp.path());

  std::map<std::string, std::string> weight_map;
  for (size_t s = 0; s < shards.size(); ++s) {
    const std::string file = shard_file_name(s, shards.size());
    uint64_t data_bytes = 0;
    const std::string header = shard_header(items, shards[s], data_bytes);
    ShardWriter w(tmp.path() / file, header, data_bytes);
    for (size_t i : shards[s]) {
      at::Tensor t = produce(*in.base, items[i]);
      w.write(t.data_ptr(), size_t(t.numel()) * t.element_size());
      weight_map[items[i].name] = file;
    }
    w.finish();
    summary.shard_files.push_back(file);
    summary.total_size += data_bytes;
    log::info("export: wrote {} ({} tensors, {:.1f} MB)", file, shards[s].size(), double(data_bytes) / 1e6);
  }
  summary.num_tensors = int64_t(items.size());
  if (shards.size() > 1) {
    // transformers' layout: keys sorted, indent 2, trailing newline.
    nlohmann::json index;
    index["metadata"] = {{"total_size", summary.total_size}};
    index["weight_map"] = weight_map;  // std::map: sorted by name
    write_text(tmp.path() / "model.safetensors.index.json", index.dump(2) + "\n");
  }
  write_config(in, tmp.path());
  write_generation_config(in, tokens, tmp.path());
  copy_tokenizer(in, tokens, tmp.path());
  if (in.spec) write_text(tmp.path() / "Modelfile", ollama_modelfile(*in.spec, *tokens));
  publish(tmp.path(), in.export_dir);
  tmp.keep();
  log::info("export: {} tensors ({} merged with {} adapter(s)) in {} shard(s), {}, into {}", summary.num_tensors,
            summary.merged_weights, in.adapters.size(), shards.size(), summary.dtype, in.export_dir.string());
  return summary;
}

void export_command(const config::ExportConfig& cfg) {
  ExportSummary s = export_merged(export_options(cfg));
  std::printf("exported %lld tensors (%lld merged) to %s: %zu shard(s), %.1f MB, %s\n", (long long)s.num_tensors,
              (long long)s.merged_weights, cfg.export_dir.c_str(), s.shard_files.size(), double(s.total_size) / 1e6,
              s.dtype.c_str());
}

}  // namespace zlora::exporter
