// `zlora init-model`: a Hugging Face model directory with random weights for any supported config.json
// (tiny shapes for the demo and tests, 7B shapes for benchmarks without downloads). Weights follow HF's
// init: normal(0, initializer_range) for matrices, ones for norms, zeros for biases; one safetensors
// shard per ~`shard_gb` with model.safetensors.index.json, like save_pretrained.
#include "zlora/cli/commands.h"
#include "zlora/cli/options.h"
#include "zlora/core/error.h"
#include "zlora/core/fs.h"
#include "zlora/core/log.h"
#include "zlora/model/config.h"
#include "zlora/model/weights.h"

#include <torch/torch.h>
#include <boost/program_options.hpp>
#include <nlohmann/json.hpp>

#include <unistd.h>
#include <filesystem>
#include <iostream>
#include <set>

namespace zlora::cli {

namespace po = boost::program_options;
namespace stdfs = std::filesystem;

int run_init_model(const Args& args, Session&) {
  po::options_description opts(
      "usage: zlora init-model --config CONFIG.json --output DIR [--tokenizer DIR|tokenizer.json] [--seed N]\n"
      "Writes a model directory with random weights (HF initialisation) for benchmarks, tests and the demo.\n"
      "options");
  opts.add_options()("help,h", "show this help")("config", po::value<std::string>(), "HF config.json of the model")(
      "output", po::value<std::string>(), "directory to create (must not exist, unless --overwrite)")(
      "tokenizer", po::value<std::string>(), "copy tokenizer.json (and tokenizer_config.json) from this dir or file")(
      "seed", po::value<long long>()->default_value(0), "random seed")(
      "dtype", po::value<std::string>()->default_value("auto"), "auto (config torch_dtype), bf16, fp16, fp32")(
      "shard_gb", po::value<double>()->default_value(5.0), "largest shard in GB")(
      "overwrite", po::bool_switch(), "replace an existing output directory");
  if (wants_help(args)) {
    std::cout << opts;
    return kExitOk;
  }
  po::variables_map vm = parse_options("init-model", opts, args);
  if (!vm.count("config") || !vm.count("output")) fail("init-model needs --config CONFIG.json and --output DIR");
  const stdfs::path out = vm["output"].as<std::string>();
  const bool overwrite = vm["overwrite"].as<bool>();
  if (stdfs::exists(out) && !overwrite)
    fail("init-model: '{}' exists; choose another --output or pass --overwrite", out.string());

  const std::string config_text = fs::read_file(vm["config"].as<std::string>(), 1u << 20);
  model::ModelConfig cfg = model::parse_model_config(config_text, vm["config"].as<std::string>());
  nlohmann::json raw = nlohmann::json::parse(config_text);
  const double init_std = raw.value("initializer_range", 0.02);
  std::string dtype_name = vm["dtype"].as<std::string>();
  if (dtype_name == "auto") dtype_name = cfg.torch_dtype;
  const at::ScalarType dtype = model::parse_compute_dtype(dtype_name);
  const double shard_bytes = vm["shard_gb"].as<double>() * 1e9;

  // Build into a temporary sibling, rename at the end: an interrupted run leaves no directory that
  // looks like a complete model.
  const stdfs::path tmp = out.string() + ".tmp-" + std::to_string(::getpid());
  fs::remove_tree(tmp);
  stdfs::create_directories(tmp);
  at::manual_seed(static_cast<uint64_t>(vm["seed"].as<long long>()));

  std::vector<std::vector<std::pair<std::string, at::Tensor>>> shards(1);
  double shard_size = 0;
  int64_t total_bytes = 0, total_params = 0;
  std::set<std::string> seen;
  for (int64_t unit = 0; unit < cfg.num_units(); ++unit) {
    for (const auto& spec : model::unit_weight_specs(cfg, unit)) {
      if (!seen.insert(spec.name).second) continue;  // tied lm_head: stored once
      at::Tensor t;
      const bool is_norm = spec.name.find("norm") != std::string::npos;
      const bool is_bias = spec.name.size() > 5 && spec.name.substr(spec.name.size() - 5) == ".bias";
      if (is_norm)
        t = at::ones(spec.shape, at::kFloat);
      else if (is_bias)
        t = at::zeros(spec.shape, at::kFloat);
      else
        t = at::randn(spec.shape, at::kFloat) * init_std;
      t = t.to(dtype);
      const double bytes = double(t.numel()) * double(t.element_size());
      if (shard_size > 0 && shard_size + bytes > shard_bytes) {
        shards.emplace_back();
        shard_size = 0;
      }
      shards.back().emplace_back(spec.name, t);
      shard_size += bytes;
      total_bytes += static_cast<int64_t>(bytes);
      total_params += t.numel();
    }
  }
  nlohmann::json weight_map = nlohmann::json::object();
  for (size_t s = 0; s < shards.size(); ++s) {
    const std::string name = shards.size() == 1
                                 ? std::string("model.safetensors")
                                 : fmt::format("model-{:05d}-of-{:05d}.safetensors", s + 1, shards.size());
    model::save_tensors(tmp / name, shards[s], {{"format", "pt"}});
    for (const auto& [tensor, _] : shards[s]) weight_map[tensor] = name;
    shards[s].clear();  // free as we go: a 7B model is written one shard at a time
  }
  if (shards.size() > 1) {
    nlohmann::json index = {{"metadata", {{"total_size", total_bytes}}}, {"weight_map", weight_map}};
    fs::write_file_atomic(tmp / "model.safetensors.index.json", index.dump(2));
  }
  raw["torch_dtype"] = dtype == at::kBFloat16 ? "bfloat16" : dtype == at::kHalf ? "float16" : "float32";
  fs::write_file_atomic(tmp / "config.json", raw.dump(2));
  if (vm.count("tokenizer")) {
    stdfs::path src = vm["tokenizer"].as<std::string>();
    stdfs::path dir = stdfs::is_directory(src) ? src : src.parent_path();
    stdfs::path tok = stdfs::is_directory(src) ? src / "tokenizer.json" : src;
    if (!stdfs::exists(tok)) fail("init-model: no tokenizer.json at '{}'", tok.string());
    stdfs::copy_file(tok, tmp / "tokenizer.json");
    if (stdfs::exists(dir / "tokenizer_config.json"))
      stdfs::copy_file(dir / "tokenizer_config.json", tmp / "tokenizer_config.json");
  }
  if (stdfs::exists(out)) fs::remove_tree(out);
  fs::rename_durable(tmp, out);
  log::info("wrote {}: {} parameters ({:.2f} GB, {}) in {} shard(s)", out.string(), total_params, total_bytes / 1e9,
            c10::toString(dtype), shards.size());
  return kExitOk;
}

}  // namespace zlora::cli
