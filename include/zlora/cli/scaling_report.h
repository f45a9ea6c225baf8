// The scaling report of benchmarks/scaling_sweep.sh (`zlora scaling-report DIR`): one row per run
// directory DIR/runs/*, read from what the run left there, and the table (Markdown, JSON, CSV) and plot
// (SVG, PNG where libpng is built in) of throughput and scaling efficiency against the node count.
//
// Per run directory (every file optional; what is missing is reported as "n/a", never an error):
//   sweep_run.json      what the sweep launched: nodes, ranks_per_node, zero_stage, offload, launcher,
//                       exit_code, status ("ok"/"failed"), reason, wall_time_s. Without it the
//                       directory name n{N}-r{R}-z{S}-{offload} is parsed.
//   all_results.json    train_runtime, train_samples_per_second, train_tokens_per_second,
//                       comm_bytes_per_step(_model), peak_host_memory_gib, peak_device_memory_gib,
//                       world_size, num_nodes (train_results.json when all_results.json is absent).
//   trainer_log.jsonl   tokens_per_second / total_tokens / vram_allocated of the logged steps: the
//                       fallback for tokens/s (total_tokens of the last line / train_runtime) and memory.
//   topology.json       num_nodes, world_size, backend, nodes[].host: the hosts column, and a check that
//                       the run really spanned the nodes it was launched on.
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace zlora::cli::scaling {

struct RunRow {
  std::string name;  // the run directory's name
  int nodes = 0;
  int ranks_per_node = 0;
  int zero_stage = 0;
  std::string offload = "none";
  std::string launcher;
  std::string status = "ok";  // "ok" or "failed"
  std::string reason;         // why it failed, or notes ("ran on 1 node, launched on 2")
  std::optional<int> world_size;
  std::optional<double> wall_time_s;  // the launch, start to end (sweep_run.json)
  std::optional<double> train_runtime_s;
  std::optional<double> samples_per_s;
  std::optional<double> tokens_per_s;
  std::string tokens_source;  // "all_results", "trainer_log total_tokens", "trainer_log window"
  std::optional<double> efficiency;
  std::optional<double> peak_device_gib;
  std::optional<double> peak_host_gib;
  std::optional<double> comm_bytes_per_step;
  std::optional<double> comm_bytes_per_step_model;
  std::string backend;
  std::string hosts;  // "zt1,zt2" from topology.json
};

// Reads one run directory (never throws for a missing or unreadable file: the row says why).
RunRow read_run(const std::filesystem::path& run_dir);

// Every directory under sweep_dir/runs (or sweep_dir itself holding run directories when it has no
// runs/), sorted by (ranks_per_node, stage, offload, nodes), with efficiency filled in. Throws
// zlora::Error when sweep_dir does not exist or holds no run directory.
std::vector<RunRow> read_sweep(const std::filesystem::path& sweep_dir);

// Scaling efficiency = tokens/s at N nodes / (N x tokens/s at 1 node, same ranks per node, stage and
// offload); n/a without an ok one-node row or without tokens/s.
void fill_efficiency(std::vector<RunRow>& rows);

std::string render_markdown(const std::vector<RunRow>& rows, const std::string& title);
std::string render_json(const std::vector<RunRow>& rows);
std::string render_csv(const std::vector<RunRow>& rows);

// One series per (ranks per node, stage, offload) of the ok rows: tokens/s (left panel) and
// efficiency (right panel) against nodes.
std::string render_svg(const std::vector<RunRow>& rows, const std::string& title);
struct Raster {
  int width = 0, height = 0;
  std::vector<unsigned char> rgb;
};
Raster render_raster(const std::vector<RunRow>& rows, const std::string& title);

struct ReportFiles {
  std::vector<std::filesystem::path> written;
  bool png = false;
};
// Writes sweep_dir/scaling.{md,json,csv,svg} and scaling.png (where PNG is supported), each atomically.
ReportFiles write_report(const std::filesystem::path& sweep_dir, std::vector<RunRow>& rows);

}  // namespace zlora::cli::scaling
