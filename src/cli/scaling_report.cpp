// Reading a scaling sweep's run directories and writing its table (see zlora/cli/scaling_report.h).
#include "zlora/cli/scaling_report.h"

#include "zlora/core/error.h"
#include "zlora/core/fs.h"
#include "zlora/train/plot.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <map>
#include <regex>
#include <tuple>

namespace zlora::cli::scaling {

namespace stdfs = std::filesystem;
using nlohmann::json;

namespace {

// A JSON object from a file, or nullopt (missing, unreadable, not an object).
std::optional<json> read_json(const stdfs::path& path) {
  std::error_code ec;
  if (!stdfs::is_regular_file(path, ec)) return std::nullopt;
  try {
    json j = json::parse(fs::read_file(path, size_t(64) << 20), nullptr, false);
    if (j.is_object()) return j;
  } catch (const Error&) {
  }
  return std::nullopt;
}

std::optional<double> number(const json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_number()) return std::nullopt;
  return it->get<double>();
}

std::string string_field(const json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
}

void add_note(RunRow& r, const std::string& note) { r.reason += (r.reason.empty() ? "" : "; ") + note; }

// What the sweep launched: sweep_run.json, else the directory name n{N}-r{R}-z{S}-{offload}.
void read_launch(const stdfs::path& dir, RunRow& r) {
  if (auto j = read_json(dir / "sweep_run.json")) {
    r.nodes = int(number(*j, "nodes").value_or(0));
    r.ranks_per_node = int(number(*j, "ranks_per_node").value_or(0));
    r.zero_stage = int(number(*j, "zero_stage").value_or(0));
    if (auto o = string_field(*j, "offload"); !o.empty()) r.offload = o;
    r.launcher = string_field(*j, "launcher");
    r.wall_time_s = number(*j, "wall_time_s");
    std::string status = string_field(*j, "status");
    if (status == "failed") {
      r.status = "failed";
      std::string why = string_field(*j, "reason");
      auto rc = number(*j, "exit_code");
      add_note(r, why.empty() ? fmt::format("exit code {}", rc ? int(*rc) : -1) : why);
    }
    return;
  }
  static const std::regex name_re(R"(n(\d+)-r(\d+)-z(\d)-([a-z]+))");
  std::smatch m;
  std::string name = dir.filename().string();
  if (std::regex_match(name, m, name_re)) {
    r.nodes = std::stoi(m[1]);
    r.ranks_per_node = std::stoi(m[2]);
    r.zero_stage = std::stoi(m[3]);
    r.offload = m[4];
    add_note(r, "no sweep_run.json (launch read from the directory name)");
  } else {
    r.status = "failed";
    add_note(r, "no sweep_run.json and the name is not n{N}-r{R}-z{S}-{offload}");
  }
}

// all_results.json (or train_results.json): the run's own summary.
void read_results(const stdfs::path& dir, RunRow& r) {
  auto j = read_json(dir / "all_results.json");
  if (!j) j = read_json(dir / "train_results.json");
  if (!j) {
    if (r.status == "ok") {
      r.status = "failed";
      add_note(r, "no all_results.json or train_results.json (the run did not finish)");
    }
    return;
  }
  r.train_runtime_s = number(*j, "train_runtime");
  r.samples_per_s = number(*j, "train_samples_per_second");
  if ((r.tokens_per_s = number(*j, "train_tokens_per_second"))) r.tokens_source = "all_results";
  r.comm_bytes_per_step = number(*j, "comm_bytes_per_step");
  r.comm_bytes_per_step_model = number(*j, "comm_bytes_per_step_model");
  r.peak_host_gib = number(*j, "peak_host_memory_gib");
  r.peak_device_gib = number(*j, "peak_device_memory_gib");
  if (auto w = number(*j, "world_size")) r.world_size = int(*w);
  if (auto n = number(*j, "num_nodes"); n && r.nodes > 0 && int(*n) != r.nodes)
    add_note(r, fmt::format("ran on {} node(s), launched on {}", int(*n), r.nodes));
}

// trainer_log.jsonl: the fallbacks for tokens/s and device memory.
void read_trainer_log(const stdfs::path& dir, RunRow& r) {
  std::error_code ec;
  auto path = dir / "trainer_log.jsonl";
  if (!stdfs::is_regular_file(path, ec)) return;
  std::string text;
  try {
    text = fs::read_file(path, size_t(256) << 20);
  } catch (const Error&) {
    return;
  }
  std::optional<double> total_tokens, vram;
  double window_sum = 0;
  int windows = 0;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    std::string line = text.substr(pos, end == std::string::npos ? std::string::npos : end - pos);
    pos = end == std::string::npos ? text.size() : end + 1;
    json j = json::parse(line, nullptr, false);
    if (!j.is_object()) continue;
    if (auto t = number(j, "total_tokens")) total_tokens = t;
    if (auto t = number(j, "tokens_per_second"); t && *t > 0) window_sum += *t, ++windows;
    if (auto v = number(j, "vram_allocated")) vram = std::max(vram.value_or(0.0), *v);
  }
  if (!r.tokens_per_s && total_tokens && r.train_runtime_s && *r.train_runtime_s > 0) {
    r.tokens_per_s = *total_tokens / *r.train_runtime_s;
    r.tokens_source = "trainer_log total_tokens";
  } else if (!r.tokens_per_s && windows > 0) {
    r.tokens_per_s = window_sum / windows;
    r.tokens_source = "trainer_log window";
  }
  if (!r.peak_device_gib && vram) r.peak_device_gib = vram;
}

void read_topology(const stdfs::path& dir, RunRow& r) {
  auto j = read_json(dir / "topology.json");
  if (!j) return;
  r.backend = string_field(*j, "backend");
  if (!r.world_size)
    if (auto w = number(*j, "world_size")) r.world_size = int(*w);
  auto nodes = j->find("nodes");
  if (nodes != j->end() && nodes->is_array()) {
    std::vector<std::string> hosts;
    for (const auto& n : *nodes)
      if (n.is_object()) hosts.push_back(string_field(n, "host"));
    r.hosts = fmt::format("{}", fmt::join(hosts, ","));
    if (r.status == "ok" && r.nodes > 0 && int(hosts.size()) != r.nodes && r.reason.find("ran on") == std::string::npos)
      add_note(r, fmt::format("topology.json lists {} host(s), launched on {}", hosts.size(), r.nodes));
  }
}

std::string fmt_opt(const std::optional<double>& v, int decimals) {
  return v ? fmt::format("{:.{}f}", *v, decimals) : std::string("n/a");
}

std::string fmt_int(const std::optional<double>& v) { return v ? fmt::format("{:.0f}", *v) : std::string("n/a"); }

std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\n") == std::string::npos) return s;
  std::string out = "\"";
  for (char c : s) out += c == '"' ? std::string("\"\"") : std::string(1, c);
  return out + "\"";
}

// A Markdown table cell: '|' would end the cell, a newline the row.
std::string md_cell(const std::string& s) {
  std::string out;
  for (char c : s) out += c == '|' ? std::string("\\|") : c == '\n' ? std::string(" ") : std::string(1, c);
  return out;
}

json opt_json(const std::optional<double>& v) { return v ? json(*v) : json(nullptr); }

}  // namespace

RunRow read_run(const stdfs::path& run_dir) {
  RunRow r;
  r.name = run_dir.filename().string();
  read_launch(run_dir, r);
  read_results(run_dir, r);
  read_trainer_log(run_dir, r);
  read_topology(run_dir, r);
  if (!r.world_size && r.nodes > 0 && r.ranks_per_node > 0) r.world_size = r.nodes * r.ranks_per_node;
  return r;
}

void fill_efficiency(std::vector<RunRow>& rows) {
  std::map<std::tuple<int, int, std::string>, double> base;
  for (const auto& r : rows)
    if (r.status == "ok" && r.nodes == 1 && r.tokens_per_s && *r.tokens_per_s > 0)
      base[{r.ranks_per_node, r.zero_stage, r.offload}] = *r.tokens_per_s;
  for (auto& r : rows) {
    r.efficiency.reset();
    auto it = base.find({r.ranks_per_node, r.zero_stage, r.offload});
    if (r.status == "ok" && r.tokens_per_s && r.nodes > 0 && it != base.end())
      r.efficiency = *r.tokens_per_s / (double(r.nodes) * it->second);
  }
}

std::vector<RunRow> read_sweep(const stdfs::path& sweep_dir) {
  std::error_code ec;
  ZLORA_REQUIRE(stdfs::is_directory(sweep_dir, ec), "sweep directory '{}' does not exist", sweep_dir.string());
  stdfs::path runs = stdfs::is_directory(sweep_dir / "runs", ec) ? sweep_dir / "runs" : sweep_dir;
  std::vector<RunRow> rows;
  for (const auto& e : stdfs::directory_iterator(runs, ec))
    if (e.is_directory(ec)) rows.push_back(read_run(e.path()));
  ZLORA_REQUIRE(!rows.empty(),
                "no run directories in '{}' (benchmarks/scaling_sweep.sh writes one per run under "
                "OUT/runs/)",
                runs.string());
  std::sort(rows.begin(), rows.end(), [](const RunRow& a, const RunRow& b) {
    return std::tie(a.ranks_per_node, a.zero_stage, a.offload, a.nodes, a.name) <
           std::tie(b.ranks_per_node, b.zero_stage, b.offload, b.nodes, b.name);
  });
  fill_efficiency(rows);
  return rows;
}

std::string render_markdown(const std::vector<RunRow>& rows, const std::string& title) {
  std::string s = fmt::format("# {}\n\n", title);
  s += "Scaling efficiency = tokens/s at N nodes / (N x tokens/s at 1 node with the same ranks per node, "
       "ZeRO stage and offload). n/a: not measured by this build or run.\n\n";
  s += "| run | nodes | ranks/node | world | ZeRO | offload | status | time (s) | samples/s | tokens/s | "
       "efficiency | peak device GiB | peak host GiB | comm bytes/step | comm bytes/step (model) | hosts | "
       "notes |\n";
  s += "|";
  for (int i = 0; i < 17; ++i) s += " --- |";
  s += "\n";
  for (const auto& r : rows) {
    s += fmt::format("| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
                     md_cell(r.name), r.nodes, r.ranks_per_node, r.world_size ? std::to_string(*r.world_size) : "n/a",
                     r.zero_stage, r.offload, r.status, fmt_opt(r.train_runtime_s, 3), fmt_opt(r.samples_per_s, 3),
                     fmt_opt(r.tokens_per_s, 1), r.efficiency ? fmt::format("{:.1f} %", *r.efficiency * 100) : "n/a",
                     fmt_opt(r.peak_device_gib, 2), fmt_opt(r.peak_host_gib, 2), fmt_int(r.comm_bytes_per_step),
                     fmt_int(r.comm_bytes_per_step_model), r.hosts.empty() ? "n/a" : md_cell(r.hosts),
                     md_cell(r.reason));
  }
  return s;
}

std::string render_json(const std::vector<RunRow>& rows) {
  json runs = json::array();
  for (const auto& r : rows) {
    runs.push_back({{"run", r.name},
                    {"nodes", r.nodes},
                    {"ranks_per_node", r.ranks_per_node},
                    {"world_size", r.world_size ? json(*r.world_size) : json(nullptr)},
                    {"zero_stage", r.zero_stage},
                    {"offload", r.offload},
                    {"launcher", r.launcher},
                    {"status", r.status},
                    {"reason", r.reason},
                    {"wall_time_s", opt_json(r.wall_time_s)},
                    {"train_runtime_s", opt_json(r.train_runtime_s)},
                    {"samples_per_second", opt_json(r.samples_per_s)},
                    {"tokens_per_second", opt_json(r.tokens_per_s)},
                    {"tokens_per_second_source", r.tokens_source},
                    {"scaling_efficiency", opt_json(r.efficiency)},
                    {"peak_device_memory_gib", opt_json(r.peak_device_gib)},
                    {"peak_host_memory_gib", opt_json(r.peak_host_gib)},
                    {"comm_bytes_per_step", opt_json(r.comm_bytes_per_step)},
                    {"comm_bytes_per_step_model", opt_json(r.comm_bytes_per_step_model)},
                    {"backend", r.backend},
                    {"hosts", r.hosts}});
  }
  json j = {{"efficiency_baseline", "1 node, same ranks_per_node, zero_stage and offload"}, {"runs", runs}};
  return j.dump(2) + "\n";
}

std::string render_csv(const std::vector<RunRow>& rows) {
  std::string s =
      "run,nodes,ranks_per_node,world_size,zero_stage,offload,status,train_runtime_s,samples_per_second,"
      "tokens_per_second,scaling_efficiency,peak_device_memory_gib,peak_host_memory_gib,comm_bytes_per_step,"
      "comm_bytes_per_step_model,wall_time_s,hosts,reason\n";
  for (const auto& r : rows) {
    s += fmt::format("{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}\n", csv_field(r.name), r.nodes,
                     r.ranks_per_node, r.world_size ? std::to_string(*r.world_size) : "n/a", r.zero_stage,
                     csv_field(r.offload), r.status, fmt_opt(r.train_runtime_s, 4), fmt_opt(r.samples_per_s, 3),
                     fmt_opt(r.tokens_per_s, 2), fmt_opt(r.efficiency, 4), fmt_opt(r.peak_device_gib, 3),
                     fmt_opt(r.peak_host_gib, 3), fmt_int(r.comm_bytes_per_step), fmt_int(r.comm_bytes_per_step_model),
                     fmt_opt(r.wall_time_s, 2), csv_field(r.hosts.empty() ? "n/a" : r.hosts), csv_field(r.reason));
  }
  return s;
}

ReportFiles write_report(const stdfs::path& sweep_dir, std::vector<RunRow>& rows) {
  fill_efficiency(rows);
  std::string title = "zlora scaling sweep: " + sweep_dir.filename().string();
  if (sweep_dir.filename().empty()) title = "zlora scaling sweep: " + sweep_dir.parent_path().filename().string();
  ReportFiles files;
  auto put = [&](const char* name, const std::string& body) {
    fs::write_file_atomic(sweep_dir / name, body);
    files.written.push_back(sweep_dir / name);
  };
  put("scaling.md", render_markdown(rows, title));
  put("scaling.json", render_json(rows));
  put("scaling.csv", render_csv(rows));
  put("scaling.svg", render_svg(rows, title));
  if (train::png_supported()) {
    Raster r = render_raster(rows, title);
    train::Image img;
    img.width = r.width;
    img.height = r.height;
    img.rgb.assign(r.rgb.begin(), r.rgb.end());
    train::write_png(sweep_dir / "scaling.png", img);
    files.written.push_back(sweep_dir / "scaling.png");
    files.png = true;
  }
  return files;
}

}  // namespace zlora::cli::scaling
