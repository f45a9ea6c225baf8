// `zlora export` and `zlora generate` on a tiny random Qwen2-shaped model written by the test:
// the merged export's logits equal base + adapter through the decoder; shards and index agree; the
// directory is refused when non-empty and never left half-written; greedy KV-cache generation equals
// argmax over full recomputes.
#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <regex>
#include <set>

#include "test_data_util.h"
#include "zlora/ckpt/run_descriptor.h"
#include "zlora/core/error.h"
#include "zlora/data/template.h"
#include "zlora/data/tokenizer.h"
#include "zlora/export/chat_template.h"
#include "zlora/export/generate.h"
#include "zlora/export/merge.h"
#include "zlora/export/modelfile.h"
#include "zlora/model/decoder.h"

namespace zm = zlora::model;
namespace ze = zlora::exporter;
namespace stdfs = std::filesystem;
using json = nlohmann::json;
using zlora::test::expect_error;
using zlora::test::TempDir;

namespace {

double rel_err(const at::Tensor& a, const at::Tensor& b) {
  at::Tensor x = a.detach().to(at::kDouble), y = b.detach().to(at::kDouble);
  EXPECT_EQ(x.sizes(), y.sizes());
  return (x - y).norm().item<double>() / std::max(y.norm().item<double>(), 1e-300);
}

constexpr int64_t kVocab = 260;  // 256 bytes + <|endoftext|> <|im_start|> <|im_end|> + 1 spare
constexpr int64_t kImEnd = 258;

json tiny_config(bool tie, int64_t layers = 2, int64_t hidden = 32) {
  return {{"architectures", {"Qwen2ForCausalLM"}},
          {"model_type", "qwen2"},
          {"vocab_size", kVocab},
          {"hidden_size", hidden},
          {"intermediate_size", 64},
          {"num_hidden_layers", layers},
          {"num_attention_heads", 4},
          {"num_key_value_heads", 2},
          {"max_position_embeddings", 128},
          {"rms_norm_eps", 1e-6},
          {"rope_theta", 10000.0},
          {"tie_word_embeddings", tie},
          {"torch_dtype", "float32"},
          {"bos_token_id", 256},
          {"eos_token_id", kImEnd}};
}

// A random model in `dir`: config.json + two base shards with an index (so the export streams over
// several input files). `extra` tensors are added to the second shard.
zm::ModelConfig write_tiny_model(const stdfs::path& dir, bool tie, uint64_t seed,
                                 std::vector<std::pair<std::string, at::Tensor>> extra = {}, int64_t layers = 2,
                                 int64_t hidden = 32) {
  stdfs::create_directories(dir);
  zlora::test::write_file(dir / "config.json", tiny_config(tie, layers, hidden).dump(2));
  zm::ModelConfig cfg = zm::load_model_config(dir);
  at::Generator gen = at::detail::createCPUGenerator(seed);
  std::vector<std::pair<std::string, at::Tensor>> first, second;
  std::set<std::string> seen;
  for (int64_t u = 0; u < cfg.num_units(); ++u)
    for (const auto& spec : zm::unit_weight_specs(cfg, u)) {
      if (!seen.insert(spec.name).second) continue;
      at::Tensor t = at::randn(spec.shape, gen, at::TensorOptions().dtype(at::kFloat));
      const bool norm = spec.name.find("norm") != std::string::npos;
      t = norm ? 1.0 + 0.1 * t : t * (spec.shape.size() == 2 ? 1.0 / std::sqrt(double(spec.shape[1])) : 0.1);
      (u <= 1 ? first : second).emplace_back(spec.name, t);
    }
  second.insert(second.end(), extra.begin(), extra.end());
  zm::save_tensors(dir / "model-00001-of-00002.safetensors", first, {{"format", "pt"}});
  zm::save_tensors(dir / "model-00002-of-00002.safetensors", second, {{"format", "pt"}});
  json index;
  index["metadata"] = {{"total_size", 0}};
  for (auto& [n, t] : first) index["weight_map"][n] = "model-00001-of-00002.safetensors";
  for (auto& [n, t] : second) index["weight_map"][n] = "model-00002-of-00002.safetensors";
  zlora::test::write_file(dir / "model.safetensors.index.json", index.dump(2));
  return cfg;
}

// A LoRA adapter with random non-zero A and B, saved in PEFT's layout.
zm::LoraAdapter write_adapter(const stdfs::path& dir, const zm::ModelConfig& cfg, int64_t r, double alpha,
                              std::vector<std::string> targets, uint64_t seed) {
  zm::LoraConfig lc;
  lc.r = r;
  lc.alpha = alpha;
  lc.targets = std::move(targets);
  lc.seed = seed;
  zm::LoraAdapter a = zm::LoraAdapter::create(cfg, lc);
  at::Generator gen = at::detail::createCPUGenerator(seed + 1);
  at::NoGradGuard no_grad;
  for (const auto& m : a.modules()) m.B.detach().normal_(0.0, 0.2, gen);  // shares storage with the adapter
  a.save(dir, "tiny");
  return a;
}

zm::PackedBatch batch_of(const std::vector<int64_t>& ids) {
  return zm::PackedBatch::from_samples({ids}, {std::vector<int64_t>(ids.size(), -100)});
}

std::vector<int64_t> test_ids() {
  std::vector<int64_t> ids;
  for (int64_t i = 0; i < 24; ++i) ids.push_back((i * 37 + 11) % kVocab);
  return ids;
}

// Logits of the model in `dir` (no adapter) through the decoder, fp32.
at::Tensor logits_of(const stdfs::path& dir, const std::vector<int64_t>& ids) {
  zm::ModelConfig cfg = zm::load_model_config(dir);
  zm::SafetensorsModel st(dir);
  zm::ResidentWeightStore store(cfg, st, at::kCPU, at::kFloat);
  zm::Decoder dec(store);
  return dec.logits(batch_of(ids));
}

at::Tensor logits_with(const stdfs::path& base, const zm::LoraAdapter* adapter, const std::vector<int64_t>& ids) {
  zm::ModelConfig cfg = zm::load_model_config(base);
  zm::SafetensorsModel st(base);
  zm::ResidentWeightStore store(cfg, st, at::kCPU, at::kFloat);
  zm::Decoder dec(store, adapter);
  return dec.logits(batch_of(ids));
}

ze::ExportOptions options(const stdfs::path& base, std::vector<stdfs::path> adapters, const stdfs::path& out) {
  ze::ExportOptions o;
  o.base_dir = base;
  o.adapters = std::move(adapters);
  o.export_dir = out;
  o.template_name = "qwen";
  return o;
}

std::vector<std::string> dir_entries(const stdfs::path& dir) {
  std::vector<std::string> names;
  for (const auto& e : stdfs::directory_iterator(dir)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

// A byte-level tokenizer (no merges) with Qwen's chat tokens, and its tokenizer_config.json.
void write_tiny_tokenizer(const stdfs::path& dir) {
  zlora::test::write_file(dir / "tokenizer.json",
                          zlora::test::byte_level_tokenizer_json({"<|endoftext|>", "<|im_start|>", "<|im_end|>"}));
  zlora::test::write_file(dir / "tokenizer_config.json", json({{"eos_token", "<|endoftext|>"},
                                                               {"pad_token", "<|endoftext|>"},
                                                               {"padding_side", "right"},
                                                               {"model_max_length", 128}})
                                                             .dump(2));
}

// Every tensor of the .safetensors files in `dir`: name → file; `data_bytes` sums their data sections.
std::map<std::string, std::string> tensors_by_file(const stdfs::path& dir, uint64_t& data_bytes) {
  std::map<std::string, std::string> out;
  data_bytes = 0;
  for (const auto& name : dir_entries(dir)) {
    if (name.size() < 12 || name.substr(name.size() - 12) != ".safetensors") continue;
    zm::SafetensorsFile f(dir / name);
    for (const auto& t : f.header().tensors) {
      EXPECT_TRUE(out.emplace(t.name, name).second) << t.name << " is in two files";
      data_bytes += t.nbytes();
    }
  }
  return out;
}

}  // namespace

// ---- export ------------------------------------------------------------------------------------

TEST(Export, MergedLogitsEqualBasePlusAdapter) {
  TempDir tmp;
  auto cfg = write_tiny_model(tmp / "base", /*tie=*/false, 1);
  auto adapter = write_adapter(tmp / "adapter", cfg, 4, 8.0, {"all"}, 7);
  auto s = ze::export_merged(options(tmp / "base", {tmp / "adapter"}, tmp / "out"));
  EXPECT_EQ(s.shard_files, std::vector<std::string>{"model.safetensors"});
  EXPECT_EQ(s.merged_weights, cfg.num_hidden_layers * 7);
  EXPECT_EQ(s.dtype, "float32");

  const auto ids = test_ids();
  at::Tensor merged = logits_of(tmp / "out", ids);
  at::Tensor reference = logits_with(tmp / "base", &adapter, ids);
  at::Tensor base = logits_of(tmp / "base", ids);
  EXPECT_LE(rel_err(merged, reference), 1e-5);
  EXPECT_GT(rel_err(base, reference), 1e-3) << "the adapter must change the logits for the test to mean anything";

  // One file, no index; config.json with torch_dtype; generation_config with the template's stop token.
  auto files = dir_entries(tmp / "out");
  EXPECT_EQ(files,
            (std::vector<std::string>{"Modelfile", "config.json", "generation_config.json", "model.safetensors"}));
  auto config = json::parse(zlora::test::read_file(tmp / "out/config.json"));
  EXPECT_EQ(config["torch_dtype"], "float32");
  EXPECT_EQ(config["hidden_size"], 32);
  auto gen = json::parse(zlora::test::read_file(tmp / "out/generation_config.json"));
  EXPECT_EQ(gen["eos_token_id"], kImEnd);
  EXPECT_EQ(gen["bos_token_id"], 256);
  // No temporary sibling left.
  EXPECT_EQ(dir_entries(tmp.path()), (std::vector<std::string>{"adapter", "base", "out"}));
}

// Without --template, the export takes the template from the record of the run that trained the adapter
// (output_dir/zlora_run.json, also for one of its checkpoint-STEP adapters); with neither, it writes no
// Modelfile and says so; adapters trained with different templates need --template. The tokenizer's
// chat_template (it has none) is the one generated from that same template, or left as is without one.
TEST(Export, TemplateComesFromTheTrainingRunWhenNotGiven) {
  TempDir tmp;
  auto cfg = write_tiny_model(tmp / "base", /*tie=*/false, 1);
  write_tiny_tokenizer(tmp / "base");
  auto chat_template = [&](const std::string& dir) {
    return json::parse(zlora::test::read_file(tmp / dir / "tokenizer_config.json")).value("chat_template", "");
  };
  write_adapter(tmp / "run/checkpoint-2", cfg, 4, 8.0, {"all"}, 7);
  write_adapter(tmp / "plain", cfg, 4, 8.0, {"all"}, 8);
  zlora::ckpt::RunDescriptor run;
  run.model_path = (tmp / "base").string();
  run.template_name = "llama3";
  zlora::test::write_file(tmp / "run" / zlora::ckpt::kRunDescriptorName, run.to_json().dump());

  ze::ExportOptions o = options(tmp / "base", {tmp / "run/checkpoint-2"}, tmp / "out");
  o.template_name.reset();
  ze::export_merged(o);
  const std::string modelfile = zlora::test::read_file(tmp / "out/Modelfile");
  EXPECT_NE(modelfile.find("<|start_header_id|>"), std::string::npos) << modelfile;          // llama3's, not qwen's
  EXPECT_EQ(chat_template("out").rfind("{% if messages[0]['role'] == 'system' %}", 0), 0u);  // no bos, no default
  EXPECT_NE(chat_template("out").find("'<|start_header_id|>user<|end_header_id|>\n\n' + content"), std::string::npos);
  o.template_name = "qwen";  // --template wins
  o.export_dir = tmp / "out-qwen";
  ze::export_merged(o);
  EXPECT_NE(zlora::test::read_file(tmp / "out-qwen/Modelfile").find("<|im_start|>"), std::string::npos);
  EXPECT_EQ(chat_template("out-qwen").rfind("{% set system_message = 'You are Qwen, created by Alibaba Cloud.", 0), 0u);

  o = options(tmp / "base", {tmp / "plain"}, tmp / "out-plain");
  o.template_name.reset();
  ze::export_merged(o);
  EXPECT_FALSE(stdfs::exists(tmp / "out-plain/Modelfile"));
  EXPECT_TRUE(stdfs::exists(tmp / "out-plain/config.json"));
  EXPECT_FALSE(json::parse(zlora::test::read_file(tmp / "out-plain/tokenizer_config.json")).contains("chat_template"));

  write_adapter(tmp / "other/a", cfg, 4, 8.0, {"all"}, 9);
  run.template_name = "qwen";
  zlora::test::write_file(tmp / "other/a" / zlora::ckpt::kRunDescriptorName, run.to_json().dump());
  o = options(tmp / "base", {tmp / "run/checkpoint-2", tmp / "other/a"}, tmp / "out-two");
  o.template_name.reset();
  expect_error([&] { ze::export_merged(o); }, {"the adapters were trained with different templates ('llama3' in"});
  EXPECT_FALSE(stdfs::exists(tmp / "out-two"));
}

TEST(Export, ShardsAndIndexAreConsistent) {
  TempDir tmp;
  auto cfg = write_tiny_model(tmp / "base", false, 2);
  auto adapter = write_adapter(tmp / "adapter", cfg, 4, 16.0, {"q_proj", "v_proj", "down_proj"}, 3);
  auto o = options(tmp / "base", {tmp / "adapter"}, tmp / "out");
  o.max_shard_bytes = 20000;  // embed (260x32 fp32 = 33 KB) alone, then several shards of <= 20 KB
  auto s = ze::export_merged(o);
  ASSERT_GT(s.shard_files.size(), 2u);
  EXPECT_EQ(s.merged_weights, cfg.num_hidden_layers * 3);
  const std::regex name_re("model-(\\d{5})-of-(\\d{5})\\.safetensors");
  for (size_t i = 0; i < s.shard_files.size(); ++i) {
    std::smatch m;
    ASSERT_TRUE(std::regex_match(s.shard_files[i], m, name_re)) << s.shard_files[i];
    EXPECT_EQ(std::stoul(m[1]), i + 1);
    EXPECT_EQ(std::stoul(m[2]), s.shard_files.size());
    zm::SafetensorsFile f(tmp / "out" / s.shard_files[i]);
    uint64_t bytes = 0;
    for (const auto& t : f.header().tensors) bytes += t.nbytes();
    EXPECT_TRUE(bytes <= o.max_shard_bytes || f.header().tensors.size() == 1) << s.shard_files[i];
    EXPECT_EQ(f.header().metadata.at("format"), "pt");
  }
  EXPECT_FALSE(stdfs::exists(tmp / "out/model.safetensors"));
  auto index = json::parse(zlora::test::read_file(tmp / "out/model.safetensors.index.json"));
  uint64_t data_bytes = 0;
  auto where = tensors_by_file(tmp / "out", data_bytes);
  EXPECT_EQ(index["metadata"]["total_size"].get<uint64_t>(), data_bytes);
  EXPECT_EQ(data_bytes, s.total_size);
  std::map<std::string, std::string> weight_map = index["weight_map"];
  EXPECT_EQ(weight_map, where);
  EXPECT_EQ(int64_t(where.size()), s.num_tensors);

  const auto ids = test_ids();
  EXPECT_LE(rel_err(logits_of(tmp / "out", ids), logits_with(tmp / "base", &adapter, ids)), 1e-5);
}

TEST(Export, AdaptersMergedInTurnAndTiedEmbeddings) {
  TempDir tmp;
  // Tied model whose files also hold an lm_head copy: the export writes the embedding once.
  at::Tensor stray = at::zeros({kVocab, 32});
  auto cfg = write_tiny_model(tmp / "base", /*tie=*/true, 4, {{"lm_head.weight", stray}});
  auto a1 = write_adapter(tmp / "a1", cfg, 4, 8.0, {"all"}, 11);
  auto a2 = write_adapter(tmp / "a2", cfg, 2, 6.0, {"q_proj", "up_proj"}, 12);
  auto s = ze::export_merged(options(tmp / "base", {tmp / "a1", tmp / "a2"}, tmp / "out"));
  uint64_t bytes = 0;
  auto where = tensors_by_file(tmp / "out", bytes);
  EXPECT_EQ(where.count("lm_head.weight"), 0u);
  EXPECT_EQ(where.count("model.embed_tokens.weight"), 1u);

  // Reference: one adapter of rank r1 + r2 and scaling 1 whose B·A = s1·B1·A1 + s2·B2·A2.
  zm::LoraConfig lc;
  lc.r = 6;
  lc.alpha = 6.0;
  zm::LoraAdapter sum = zm::LoraAdapter::create(cfg, lc);
  {
    at::NoGradGuard no_grad;
    for (const auto& m : sum.modules()) {
      m.A.detach().zero_();
      m.B.detach().zero_();
      if (auto* p = a1.find(m.layer, m.local)) {
        m.A.detach().slice(0, 0, 4).copy_(p->A);
        m.B.detach().slice(1, 0, 4).copy_(p->B * a1.scaling());
      }
      if (auto* p = a2.find(m.layer, m.local)) {
        m.A.detach().slice(0, 4, 6).copy_(p->A);
        m.B.detach().slice(1, 4, 6).copy_(p->B * a2.scaling());
      }
    }
  }
  const auto ids = test_ids();
  at::Tensor reference = logits_with(tmp / "base", &sum, ids);
  EXPECT_LE(rel_err(logits_of(tmp / "out", ids), reference), 1e-5);
  EXPECT_GT(rel_err(logits_with(tmp / "base", &a1, ids), reference), 1e-4) << "the second adapter must matter";
}

TEST(Export, Bf16ExportAndPeftAdapterFromAnotherTool) {
  TempDir tmp;
  auto cfg = write_tiny_model(tmp / "base", false, 5);
  // An adapter as PEFT / LLaMA-Factory write it: extra config keys, rsLoRA, target_modules in any order.
  const int64_t r = 4;
  const double alpha = 8;
  at::Generator gen = at::detail::createCPUGenerator(99);
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  std::map<std::string, std::pair<at::Tensor, at::Tensor>> ab;
  for (int64_t l = 0; l < cfg.num_hidden_layers; ++l)
    for (std::string local : {"self_attn.k_proj", "mlp.gate_proj"}) {
      auto [in, out] = zm::linear_shape(cfg, local);
      const std::string module = "model.layers." + std::to_string(l) + "." + local;
      at::Tensor A = at::randn({r, in}, gen) * 0.2, B = at::randn({out, r}, gen) * 0.2;
      tensors.emplace_back(zm::peft_param_name(module, 'A'), A);
      tensors.emplace_back(zm::peft_param_name(module, 'B'), B);
      ab[module + ".weight"] = {A, B};
    }
  stdfs::create_directories(tmp / "peft");
  zm::save_tensors(tmp / "peft/adapter_model.safetensors", tensors, {{"format", "pt"}});
  zlora::test::write_file(tmp / "peft/adapter_config.json", R"({
  "alpha_pattern": {}, "auto_mapping": null, "base_model_name_or_path": "Qwen/Qwen2.5-7B-Instruct", "bias": "none",
  "corda_config": null, "eva_config": null, "exclude_modules": null, "fan_in_fan_out": false, "inference_mode": true,
  "init_lora_weights": true, "layer_replication": null, "layers_pattern": null, "layers_to_transform": null,
  "loftq_config": {}, "lora_alpha": 8, "lora_bias": false, "lora_dropout": 0.05, "megatron_config": null,
  "megatron_core": "megatron.core", "modules_to_save": null, "peft_type": "LORA", "r": 4, "rank_pattern": {},
  "revision": null, "target_modules": ["gate_proj", "k_proj"], "task_type": "CAUSAL_LM", "trainable_token_indices": null,
  "use_dora": false, "use_rslora": true
})");
  auto o = options(tmp / "base", {tmp / "peft"}, tmp / "out");
  o.dtype = "bf16";
  auto s = ze::export_merged(o);
  EXPECT_EQ(s.dtype, "bfloat16");
  EXPECT_EQ(json::parse(zlora::test::read_file(tmp / "out/config.json"))["torch_dtype"], "bfloat16");
  zm::SafetensorsModel out(tmp / "out"), base(tmp / "base");
  const double scaling = alpha / std::sqrt(double(r));  // rsLoRA, from adapter_config.json
  for (const auto& name : out.names()) {
    EXPECT_EQ(out.info(name).dtype, zm::DType::kBF16) << name;
    at::Tensor w = zm::load_tensor(base, name, at::TensorOptions().dtype(at::kFloat));
    auto it = ab.find(name);
    if (it != ab.end()) w = w + scaling * it->second.second.matmul(it->second.first);
    at::Tensor got = zm::load_tensor(out, name, at::TensorOptions().dtype(at::kFloat));
    EXPECT_TRUE(at::equal(got, w.to(at::kBFloat16).to(at::kFloat))) << name << " is not W + scaling*B*A in bf16";
  }
}

TEST(Export, RefusesNonEmptyDirUnlessOverwrite) {
  TempDir tmp;
  auto cfg = write_tiny_model(tmp / "base", false, 6);
  write_adapter(tmp / "adapter", cfg, 2, 4.0, {"all"}, 1);
  zlora::test::write_file(tmp / "out/notes.txt", "keep me");
  auto o = options(tmp / "base", {tmp / "adapter"}, tmp / "out");
  expect_error([&] { ze::export_merged(o); }, {"not empty", "notes.txt", "--overwrite"});
  EXPECT_EQ(zlora::test::read_file(tmp / "out/notes.txt"), "keep me");
  EXPECT_EQ(dir_entries(tmp.path()), (std::vector<std::string>{"adapter", "base", "out"}));
  o.overwrite = true;
  ze::export_merged(o);
  EXPECT_FALSE(stdfs::exists(tmp / "out/notes.txt"));  // replaced, not mixed with old files
  EXPECT_TRUE(stdfs::exists(tmp / "out/model.safetensors"));
  EXPECT_EQ(dir_entries(tmp.path()), (std::vector<std::string>{"adapter", "base", "out"}));
  // An empty directory is fine without --overwrite; the base itself never is.
  stdfs::create_directories(tmp / "empty");
  ze::export_merged(options(tmp / "base", {tmp / "adapter"}, tmp / "empty"));
  EXPECT_TRUE(stdfs::exists(tmp / "empty/config.json"));
  auto into_base = options(tmp / "base", {tmp / "adapter"}, tmp / "base");
  into_base.overwrite = true;
  expect_error([&] { ze::export_merged(into_base); }, {"would destroy"});
  auto above_base = options(tmp / "base", {tmp / "adapter"}, tmp.path());
  above_base.overwrite = true;
  expect_error([&] { ze::export_merged(above_base); }, {"would destroy"});
  EXPECT_TRUE(stdfs::exists(tmp / "base/config.json"));
}

TEST(Export, FailureMidwayLeavesNoDirectory) {
  TempDir tmp;
  // A weight in the last base shard overflows fp16: the export fails after writing earlier shards.
  auto cfg = write_tiny_model(tmp / "base", false, 7, {{"model.extra_scale", at::full({4}, 1e6)}});
  write_adapter(tmp / "adapter", cfg, 2, 4.0, {"all"}, 1);
  auto o = options(tmp / "base", {tmp / "adapter"}, tmp / "out");
  o.dtype = "fp16";
  o.max_shard_bytes = 8000;
  expect_error([&] { ze::export_merged(o); }, {"model.extra_scale", "non-finite", "F16"});
  EXPECT_EQ(dir_entries(tmp.path()), (std::vector<std::string>{"adapter", "base"}));
}

TEST(Export, ClearErrorsForBadInputs) {
  TempDir tmp;
  auto cfg = write_tiny_model(tmp / "base", false, 8);
  auto out = tmp / "out";
  expect_error([&] { ze::export_merged(options(tmp / "nowhere", {}, out)); }, {"nowhere", "not a directory"});
  expect_error([&] { ze::export_merged(options(tmp / "base", {tmp / "missing"}, out)); },
               {"missing", "not a directory", "PEFT"});
  stdfs::create_directories(tmp / "pickled");
  zlora::test::write_file(tmp / "pickled/adapter_model.bin", "x");
  expect_error([&] { ze::export_merged(options(tmp / "base", {tmp / "pickled"}, out)); },
               {"adapter_model.bin", "safetensors"});
  // An adapter trained on a deeper model: its layer 2 does not exist in this base.
  auto deep = write_tiny_model(tmp / "deep", false, 9, {}, /*layers=*/3);
  write_adapter(tmp / "deep_adapter", deep, 2, 4.0, {"q_proj"}, 1);
  expect_error([&] { ze::export_merged(options(tmp / "base", {tmp / "deep_adapter"}, out)); },
               {"model.layers.2.self_attn.q_proj"});
  // An adapter of a wider model: shapes do not match.
  auto wide = write_tiny_model(tmp / "wide", false, 10, {}, 2, /*hidden=*/48);
  write_adapter(tmp / "wide_adapter", wide, 2, 4.0, {"q_proj"}, 1);
  expect_error([&] { ze::export_merged(options(tmp / "base", {tmp / "wide_adapter"}, out)); }, {"lora_A", "r=2"});
  // rank in adapter_config.json disagreeing with the tensors.
  write_adapter(tmp / "bad_rank", cfg, 2, 4.0, {"q_proj"}, 1);
  auto j = json::parse(zlora::test::read_file(tmp / "bad_rank/adapter_config.json"));
  j["r"] = 3;
  zlora::test::write_file(tmp / "bad_rank/adapter_config.json", j.dump());
  expect_error([&] { ze::export_merged(options(tmp / "base", {tmp / "bad_rank"}, out)); }, {"r=3"});
  // A base missing a tensor config.json implies.
  stdfs::copy(tmp / "base", tmp / "broken", stdfs::copy_options::recursive);
  auto idx = json::parse(zlora::test::read_file(tmp / "broken/model.safetensors.index.json"));
  idx["weight_map"].erase("model.norm.weight");
  zlora::test::write_file(tmp / "broken/model.safetensors.index.json", idx.dump());
  expect_error([&] { ze::export_merged(options(tmp / "broken", {}, out)); }, {"model.norm.weight", "missing"});
  EXPECT_FALSE(stdfs::exists(out));
}

TEST(Export, CopiesTokenizerFilesAndFixesEos) {
  TempDir tmp;
  auto cfg = write_tiny_model(tmp / "base", false, 12);
  write_tiny_tokenizer(tmp / "base");
  zlora::test::write_file(tmp / "base/generation_config.json",
                          R"({"bos_token_id": 256, "eos_token_id": [256], "do_sample": true, "top_p": 0.8})");
  write_adapter(tmp / "adapter", cfg, 2, 4.0, {"all"}, 1);
  ze::export_merged(options(tmp / "base", {tmp / "adapter"}, tmp / "out"));
  EXPECT_EQ(zlora::test::read_file(tmp / "out/tokenizer.json"), zlora::test::read_file(tmp / "base/tokenizer.json"));
  auto tc = json::parse(zlora::test::read_file(tmp / "out/tokenizer_config.json"));
  EXPECT_EQ(tc["eos_token"], "<|im_end|>");  // qwen: replace_eos
  EXPECT_EQ(tc["padding_side"], "left");
  EXPECT_EQ(tc["model_max_length"], 128);
  EXPECT_EQ(tc["pad_token"], "<|endoftext|>");
  EXPECT_EQ(tc.size(), 5u);  // the four keys of the base, and the chat_template
  // The tokenizer had no chat_template: LLaMA-Factory's, generated from qwen (test_chat_template.cpp has its text).
  const auto& qwen = zlora::data::find_template("qwen");
  EXPECT_EQ(tc["chat_template"],
            ze::jinja_chat_template(
                qwen, ze::jinja_tokens(qwen, ze::token_info(qwen, zlora::data::Tokenizer::load(tmp / "base")))));
  auto gen = json::parse(zlora::test::read_file(tmp / "out/generation_config.json"));
  EXPECT_EQ(gen["eos_token_id"], json({256, kImEnd}));  // the copied eos, plus the template's stop token
  EXPECT_EQ(gen["top_p"], 0.8);
  // The exported tokenizer loads and knows its eos.
  auto tok = zlora::data::Tokenizer::load(tmp / "out");
  EXPECT_EQ(tok.config_token("eos_token").value_or(""), "<|im_end|>");
}

// ---- CLI ---------------------------------------------------------------------------------------

TEST(ExportCli, SeedYamlWorksWhenItsPathsExist) {
  ZLORA_SKIP_WITHOUT_SHARED("seed/llama3_lora_sft_qwen.yaml",
                            "this test runs the seed's own export YAML and compares with the seed's reference notes");
  ZLORA_SKIP_WITHOUT_SHARED("reference/llamafactory.md", "the Modelfile is compared with the seed's reference notes");
  TempDir tmp;
  auto cfg = write_tiny_model(tmp / "base", false, 13);
  write_tiny_tokenizer(tmp / "base");
  auto adapter = write_adapter(tmp / "adapter", cfg, 4, 8.0, {"all"}, 5);
  // The seed's export config with its paths pointed at the tiny model; every other line as written.
  std::string yaml = zlora::test::read_file(zlora::test::shared_dir() / "seed/llama3_lora_sft_qwen.yaml");
  ASSERT_NE(yaml.find("export_device: gpu"), std::string::npos);
  auto replace_value = [&](const std::string& key, const std::string& value) {
    const size_t at = yaml.find("\n" + key + ":");
    ASSERT_NE(at, std::string::npos) << key;
    const size_t end = yaml.find('\n', at + 1);
    yaml.replace(at + 1, end - at - 1, key + ": " + value);
  };
  replace_value("model_name_or_path", (tmp / "base").string());
  replace_value("adapter_name_or_path", (tmp / "adapter").string() + "/");
  replace_value("export_dir", (tmp / "out").string());
  zlora::test::write_file(tmp / "export.yaml", yaml);
  auto r = zlora::test::run_zlora("export " + (tmp / "export.yaml").string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("trust_remote_code"), std::string::npos) << r.output;  // noted, never run
  r = zlora::test::run_zlora("export " + (tmp / "export.yaml").string());
  EXPECT_NE(r.exit_code, 0);  // now non-empty
  EXPECT_NE(r.output.find("--overwrite"), std::string::npos) << r.output;
  EXPECT_LE(rel_err(logits_of(tmp / "out", test_ids()), logits_with(tmp / "base", &adapter, test_ids())), 1e-5);
  // The Modelfile for qwen with the tokenizer's real ids is LLaMA-Factory's text, but for the first line,
  // which names zlora instead of llamafactory.
  const std::string md = zlora::test::read_file(zlora::test::shared_dir() / "reference/llamafactory.md");
  const size_t open = md.find("```\n", md.find("For **qwen**")) + 4;
  std::string theirs = md.substr(open, md.find("```", open) - open);
  const std::string header = "# ollama modelfile auto-generated by llamafactory\n";
  ASSERT_EQ(theirs.rfind(header, 0), 0u) << theirs;
  theirs.replace(0, header.size(), "# ollama modelfile auto-generated by zlora\n");
  EXPECT_EQ(zlora::test::read_file(tmp / "out/Modelfile"), theirs);
  for (const char* f : {"tokenizer.json", "tokenizer_config.json", "config.json", "generation_config.json"})
    EXPECT_TRUE(stdfs::exists(tmp / "out" / f)) << f;
}

// ---- generation --------------------------------------------------------------------------------

TEST(Generate, GreedyKvCacheEqualsArgmaxOfFullRecompute) {
  TempDir tmp;
  auto cfg = write_tiny_model(tmp / "base", false, 21);
  auto adapter = write_adapter(tmp / "adapter", cfg, 4, 8.0, {"all"}, 2);
  zm::SafetensorsModel st(tmp / "base");
  zm::ResidentWeightStore store(cfg, st, at::kCPU, at::kFloat);
  zm::Decoder dec(store, &adapter);
  ze::SamplingOptions o;
  o.do_sample = false;
  o.max_new_tokens = 12;
  const std::vector<int64_t> prompt = {5, 17, 200, 3, 99, 42};
  auto g1 = ze::generate(dec, prompt, o, {});
  auto g2 = ze::generate(dec, prompt, o, {});
  ASSERT_EQ(g1.ids.size(), 12u);
  EXPECT_EQ(g1.ids, g2.ids);
  EXPECT_FALSE(g1.stopped);

  std::vector<int64_t> seq = prompt;
  zm::KVCache cache;
  at::Tensor cached = dec.decode(at::tensor(prompt), cache);
  for (size_t i = 0; i < g1.ids.size(); ++i) {
    at::Tensor full = dec.logits(batch_of(seq));
    // The KV-cache path equals the full recompute (all prompt rows at first, then the new row).
    if (i == 0)
      EXPECT_LE(rel_err(cached, full), 1e-5);
    else
      EXPECT_LE(rel_err(cached[0], full[full.size(0) - 1]), 1e-5) << "step " << i;
    const int64_t next = full[full.size(0) - 1].argmax().item<int64_t>();
    EXPECT_EQ(next, g1.ids[i]) << "step " << i;
    seq.push_back(next);
    cached = dec.decode(at::tensor(std::vector<int64_t>{next}), cache);
  }
  // A stop token ends generation at its first occurrence and is the last id.
  const int64_t stop = g1.ids.back();
  const size_t first = size_t(std::find(g1.ids.begin(), g1.ids.end(), stop) - g1.ids.begin());
  auto g3 = ze::generate(dec, prompt, o, {stop});
  EXPECT_TRUE(g3.stopped);
  EXPECT_EQ(g3.ids, std::vector<int64_t>(g1.ids.begin(), g1.ids.begin() + first + 1));
}

TEST(Generate, SamplingFollowsTransformersProcessors) {
  at::Generator gen = at::detail::createCPUGenerator(0);
  ze::SamplingOptions greedy;
  greedy.do_sample = false;
  // Repetition penalty: a seen positive logit is divided, a seen negative one multiplied.
  at::Tensor logits = at::tensor(std::vector<float>{1.0f, 3.0f, 2.9f, -1.0f, 0.0f});
  EXPECT_EQ(ze::next_token(logits, {}, greedy, gen), 1);
  greedy.repetition_penalty = 2.0;
  EXPECT_EQ(ze::next_token(logits, {1}, greedy, gen), 2);
  at::Tensor negative = at::tensor(std::vector<float>{-1.0f, -1.5f, -3.0f});
  EXPECT_EQ(ze::next_token(negative, {0}, greedy, gen), 1);  // -1 * 2 = -2 < -1.5

  // top_k = 1 and a tiny top_p both leave only the argmax.
  ze::SamplingOptions s;
  s.temperature = 1.0;
  s.top_p = 1.0;
  s.top_k = 1;
  for (int i = 0; i < 20; ++i) EXPECT_EQ(ze::next_token(logits, {}, s, gen), 1);
  s.top_k = 0;
  s.top_p = 1e-6;
  for (int i = 0; i < 20; ++i) EXPECT_EQ(ze::next_token(logits, {}, s, gen), 1);

  // Plain sampling draws from softmax(logits / temperature); top_p 0.75 drops the 0.2 tail of
  // (0.5, 0.3, 0.2) and renormalises to (0.625, 0.375).
  at::Tensor probs = at::tensor(std::vector<float>{0.5f, 0.3f, 0.2f});
  s.top_p = 1.0;
  s.temperature = 0.5;
  std::vector<int> counts(3, 0);
  const int n = 4000;
  for (int i = 0; i < n; ++i) ++counts[ze::next_token(probs.log(), {}, s, gen)];
  at::Tensor expected = (probs.log() / 0.5).softmax(0);
  for (int k = 0; k < 3; ++k) EXPECT_NEAR(double(counts[k]) / n, expected[k].item<double>(), 0.03) << k;
  s.temperature = 1.0;
  s.top_p = 0.75;
  counts.assign(3, 0);
  for (int i = 0; i < n; ++i) ++counts[ze::next_token(probs.log(), {}, s, gen)];
  EXPECT_EQ(counts[2], 0);
  EXPECT_NEAR(double(counts[0]) / n, 0.625, 0.03);

  // Seeded: the same seed gives the same sampled sequence.
  TempDir tmp;
  auto cfg = write_tiny_model(tmp / "base", false, 22);
  ze::LoadedModel lm(tmp / "base", {}, at::kCPU, at::kFloat);
  ze::SamplingOptions d;
  d.max_new_tokens = 10;
  d.seed = 7;
  auto a = ze::generate(lm.decoder(), {1, 2, 3}, d, {});
  auto b = ze::generate(lm.decoder(), {1, 2, 3}, d, {});
  EXPECT_EQ(a.ids, b.ids);
}

TEST(Generate, SeveralAdaptersMatchTheMergedExport) {
  TempDir tmp;
  auto cfg = write_tiny_model(tmp / "base", false, 23);
  write_adapter(tmp / "a1", cfg, 2, 4.0, {"all"}, 31);
  write_adapter(tmp / "a2", cfg, 2, 4.0, {"q_proj", "o_proj"}, 32);
  ze::export_merged(options(tmp / "base", {tmp / "a1", tmp / "a2"}, tmp / "out"));
  ze::LoadedModel stacked(tmp / "base", {tmp / "a1", tmp / "a2"}, at::kCPU, at::kFloat);
  ze::LoadedModel merged(tmp / "out", {}, at::kCPU, at::kFloat);
  const auto ids = test_ids();
  EXPECT_LE(rel_err(stacked.decoder().logits(batch_of(ids)), merged.decoder().logits(batch_of(ids))), 1e-5);
}

TEST(GenerateCli, PromptAndStdinThroughTheTemplate) {
  TempDir tmp;
  write_tiny_model(tmp / "base", false, 24);
  write_tiny_tokenizer(tmp / "base");
  const std::string model = "--model_name_or_path " + (tmp / "base").string() + " --template qwen";
  // Through a script: stdin piped in, stderr kept apart from stdout.
  auto run = [&](const std::string& args, const std::string& input = "") {
    const std::string script = (input.empty() ? std::string() : "printf '" + input + "' | ") +
                               zlora::test::zlora_bin().string() + " generate " + model + " " + args + " 2>" +
                               (tmp / "err.txt").string() + "\n";
    zlora::test::write_file(tmp / "run.sh", script);
    auto r = zlora::test::run_command("sh " + (tmp / "run.sh").string());
    return std::make_pair(r, zlora::test::read_file(tmp / "err.txt"));
  };
  auto [r1, err1] = run("--prompt 'Hello there' --do_sample false --max_new_tokens 6");
  ASSERT_EQ(r1.exit_code, 0) << r1.output << err1;
  EXPECT_NE(err1.find("tokens/s"), std::string::npos) << err1;
  auto [r2, err2] = run("--prompt 'Hello there' --do_sample false --max_new_tokens 6");
  EXPECT_EQ(r1.output, r2.output);

  // The same answer computed in-process: the qwen prompt, greedy ids, decoded without special tokens.
  auto tok = zlora::data::Tokenizer::load(tmp / "base");
  zlora::data::ChatTemplate chat(zlora::data::find_template("qwen"), tok);
  zlora::data::BpeCache cache;
  zlora::data::Conversation conv;
  conv.messages = {{zlora::data::Role::User, "Hello there"}, {zlora::data::Role::Assistant, ""}};
  auto pairs = chat.encode_multiturn(conv, cache);
  std::vector<int64_t> prompt(pairs[0].first.begin(), pairs[0].first.end());
  ze::LoadedModel lm(tmp / "base", {}, at::kCPU, at::kFloat);
  ze::SamplingOptions o;
  o.do_sample = false;
  o.max_new_tokens = 6;
  auto g = ze::generate(lm.decoder(), prompt, o, {kImEnd});
  std::vector<int32_t> ids;
  for (int64_t id : g.ids)
    if (id != kImEnd) ids.push_back(int32_t(id));
  EXPECT_EQ(r1.output, tok.decode(ids, true) + "\n");

  // stdin: one answer per line, each its own conversation.
  auto [r3, err3] = run("--do_sample false --max_new_tokens 6", "Hello there\\n\\nHello there\\n");
  ASSERT_EQ(r3.exit_code, 0) << r3.output << err3;
  EXPECT_EQ(r3.output, r1.output + r1.output);
  // A missing adapter is a clear error.
  auto [r4, err4] = run("--prompt hi --adapter_name_or_path " + (tmp / "nope").string());
  EXPECT_NE(r4.exit_code, 0);
  EXPECT_NE(err4.find("adapter_model.safetensors"), std::string::npos) << err4;
}
