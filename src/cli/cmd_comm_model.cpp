// `zlora comm-model`: the communication model of zero/comm_model.h for a model's config.json at chosen
// ZeRO stages and world sizes, without weights or a launch: the bytes each rank sends per optimizer
// step, and (given link bandwidths and a measured single-GPU step time) the projected step time and
// throughput of a job of N nodes. docs/benchmarks.md's projection is this command's output. The same
// model is printed at the start of every `zlora train` and checked there against the communicator's
// counters (tests/train/test_comm_model.cpp), so a projection prices exactly what a run would send.
#include "zlora/cli/commands.h"
#include "zlora/core/error.h"
#include "zlora/dist/traffic.h"
#include "zlora/model/config.h"
#include "zlora/model/lora.h"
#include "zlora/model/weights.h"
#include "zlora/zero/comm_model.h"
#include "zlora/zero/partition.h"

#include <fmt/format.h>
#include <boost/program_options.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <iostream>
#include <sstream>

namespace zlora::cli {

namespace po = boost::program_options;

int run_comm_model(const Args& args, Session&);

namespace {

std::vector<int> int_list(const std::string& text, const char* flag, int lo, int hi) {
  std::vector<int> out;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    int v = 0;
    try {
      size_t used = 0;
      v = std::stoi(item, &used);
      if (used != item.size()) throw std::invalid_argument(item);
    } catch (const std::exception&) {
      fail("zlora comm-model: --{} takes comma-separated integers, got '{}'", flag, text);
    }
    if (v < lo || v > hi) fail("zlora comm-model: --{} values must be in [{}, {}], got {}", flag, lo, hi, v);
    out.push_back(v);
  }
  if (out.empty()) fail("zlora comm-model: --{} is empty", flag);
  return out;
}

}  // namespace

int run_comm_model(const Args& args, Session&) {
  std::string model, target, stages_s, worlds_s, offload, dtype;
  int rank = 8, gpus_per_node = 8;
  int64_t micro_batches = 4, prefetch = 1;
  double intra_gbs = 0, inter_gbs = 0, compute_s = 0, samples_per_rank = 0;
  po::options_description opts(
      "usage: zlora comm-model --model_name_or_path DIR [options]\nThe bytes each rank sends per optimizer step "
      "(zero/comm_model.h, ring algorithms) at each ZeRO stage and world size, from DIR/config.json alone. "
      "With --intra_node_gbs/--inter_node_gbs and --compute_step_s it projects step time and samples/s "
      "(a projection: no overlap of communication with compute as the upper bound, full overlap as the "
      "lower).\noptions");
  opts.add_options()("help,h", "show this help")("model_name_or_path", po::value(&model)->required(),
                                                 "a Hugging Face model directory (or its config.json)")(
      "lora_rank", po::value(&rank)->default_value(8), "LoRA rank")(
      "lora_target", po::value(&target)->default_value("all"), "LoRA targets, as `zlora train` takes them")(
      "zero_stage", po::value(&stages_s)->default_value("0,1,2,3"), "ZeRO stages, comma-separated")(
      "offload_optimizer", po::value(&offload)->default_value("none"), "none | cpu (adds the PCIe copies)")(
      "world", po::value(&worlds_s)->default_value("1,2,4,8"), "world sizes (ranks), comma-separated")(
      "gpus_per_node", po::value(&gpus_per_node)->default_value(8), "ranks per node (whole nodes)")(
      "micro_batches", po::value(&micro_batches)->default_value(4),
      "micro-batches per optimizer step (ZeRO-3 gathers the base weights in each)")(
      "json", "one JSON row per world size x stage (raw byte counts) instead of the Markdown table")(
      "bf16", "base weights in bfloat16 (the default)")("fp32", "base weights in float32")(
      "stage3_prefetch_layers", po::value(&prefetch)->default_value(1), "as `zlora train`")(
      "intra_node_gbs", po::value(&intra_gbs)->default_value(0),
      "effective per-rank bandwidth inside a node, GB/s (NVLink)")(
      "inter_node_gbs", po::value(&inter_gbs)->default_value(0),
      "effective per-rank bandwidth across nodes, GB/s (the NIC of each GPU)")(
      "compute_step_s", po::value(&compute_s)->default_value(0), "measured seconds per optimizer step on one GPU")(
      "samples_per_step_per_rank", po::value(&samples_per_rank)->default_value(0),
      "samples per optimizer step per rank (per_device_train_batch_size x gradient_accumulation_steps)");
  if (wants_help(args)) {
    std::cout << opts;
    return kExitOk;
  }
  po::variables_map vm;
  try {
    po::store(po::command_line_parser(args).options(opts).run(), vm);
    po::notify(vm);
  } catch (const po::error& e) {
    fail("zlora comm-model: {} (zlora comm-model --help lists the options)", e.what());
  }
  if (offload != "none" && offload != "cpu")
    fail("zlora comm-model: --offload_optimizer must be none or cpu, got '{}'", offload);
  if (vm.count("fp32") && vm.count("bf16")) fail("zlora comm-model: --bf16 and --fp32 exclude each other");
  if (rank < 1) fail("zlora comm-model: --lora_rank must be >= 1, got {}", rank);
  if (gpus_per_node < 1) fail("zlora comm-model: --gpus_per_node must be >= 1, got {}", gpus_per_node);
  if (micro_batches < 1) fail("zlora comm-model: --micro_batches must be >= 1, got {}", micro_batches);
  const bool project = compute_s > 0;
  if (project && (intra_gbs <= 0 || samples_per_rank <= 0))
    fail(
        "zlora comm-model: a projection (--compute_step_s) needs --intra_node_gbs and --samples_per_step_per_rank "
        "(and --inter_node_gbs for more than one node)");
  const std::vector<int> stages = int_list(stages_s, "zero_stage", 0, 3);
  const std::vector<int> worlds = int_list(worlds_s, "world", 1, 1 << 20);

  const model::ModelConfig cfg = model::load_model_config(model);
  std::vector<std::string> targets;
  {
    std::stringstream ss(target);
    std::string t;
    while (std::getline(ss, t, ',')) targets.push_back(t);
  }
  int64_t lora_numel = 0;
  for (const std::string& name : model::resolve_lora_targets(cfg, targets)) {
    const std::string local = name.substr(name.find('.', name.find("layers.") + 7) + 1);
    const auto [in, out] = model::linear_shape(cfg, local);
    lora_numel += int64_t(rank) * (in + out);
  }
  std::vector<int64_t> units;
  for (int64_t u = 0; u < cfg.num_hidden_layers + 2; ++u) {
    int64_t n = 0;
    for (const model::WeightSpec& w : model::unit_weight_specs(cfg, u)) {
      int64_t k = 1;
      for (int64_t d : w.shape) k *= d;
      n += k;
    }
    units.push_back(n);
  }
  const int64_t elem = vm.count("fp32") ? 4 : 2;
  const bool as_json = vm.count("json") > 0;
  nlohmann::json rows = nlohmann::json::array();
  if (!as_json) {
    std::cout << fmt::format("# {}: {} LoRA parameters (r={}, {}), {} base-weight units; {} micro-batch(es) per step\n",
                             model, lora_numel, rank, target, units.size(), micro_batches);
    std::cout << "\n| world | nodes | ZeRO | offload | sent per rank per step | once per run";
    if (project) std::cout << " | link GB/s | comm s/step | step s (overlap .. none) | samples/s (none .. overlap)";
    std::cout << " |\n| ---: | ---: | ---: | --- | ---: | ---:";
    if (project) std::cout << " | ---: | ---: | --- | ---";
    std::cout << " |\n";
  }
  for (int world : worlds) {
    const int nodes = (world + gpus_per_node - 1) / gpus_per_node;
    for (int stage : stages) {
      zero::CommModelInput in;
      in.world = world;
      in.stage = stage;
      in.offload = offload == "cpu";
      in.lora_padded_numel = zero::padded_flat_numel(lora_numel, world);
      in.micro_batches_per_step = micro_batches;
      // Gathered lengths as the ZeRO-3 store pads them (zero/partition.h).
      for (int64_t n : units) in.zero3_unit_numel.push_back(zero::padded_flat_numel(n, world));
      in.zero3_elem_bytes = elem;
      in.zero3_prefetch = prefetch;
      const zero::CommModel m = zero::model_step_traffic(in);
      const double bytes = world > 1 ? m.bytes_per_step() : 0.0;
      const double once = world > 1 ? m.bytes_once_per_run : 0.0;
      nlohmann::json row = {{"world", world},
                            {"nodes", nodes},
                            {"zero_stage", stage},
                            {"offload_optimizer", offload},
                            {"micro_batches", micro_batches},
                            {"lora_numel", lora_numel},
                            {"bytes_per_step", bytes},
                            {"bytes_once_per_run", once},
                            {"offload_bytes_per_step", m.offload_bytes_per_step}};
      std::string line = fmt::format("| {} | {} | {} | {} | {} | {}", world, nodes, stage, offload,
                                     dist::format_bytes(bytes), dist::format_bytes(once));
      if (project) {
        const double gbs = nodes > 1 ? inter_gbs : intra_gbs;
        if (nodes > 1 && gbs <= 0)
          fail("zlora comm-model: world {} spans {} nodes: give --inter_node_gbs", world, nodes);
        const double comm = world > 1 ? bytes / (gbs * 1e9) : 0.0;
        const double lo = std::max(compute_s, comm), hi = compute_s + comm;
        const double samples = samples_per_rank * world;
        line += fmt::format(" | {} | {:.3f} | {:.3f} .. {:.3f} | {:.0f} .. {:.0f}", world > 1 ? gbs : 0.0, comm, lo, hi,
                            samples / hi, samples / lo);
        row["link_gbs"] = world > 1 ? gbs : 0.0;
        row["comm_s_per_step"] = comm;
        row["step_s_overlapped"] = lo;
        row["step_s_serial"] = hi;
      }
      if (as_json)
        rows.push_back(row);
      else
        std::cout << line << " |\n";
    }
  }
  if (as_json) std::cout << rows.dump(2) << "\n";
  return kExitOk;
}

}  // namespace zlora::cli
