// `zlora scaling-report` on synthetic sweep directories: every run a row (failed ones with their reason),
// values a run did not record as n/a, efficiency against the one-node row, and the four files + PNG.
#include "test_util.h"
#include "zlora/cli/scaling_report.h"
#include "zlora/train/plot.h"

#include <nlohmann/json.hpp>

namespace sc = zlora::cli::scaling;
using nlohmann::json;
using zlora::test::contains;
using zlora::test::read_file;
using zlora::test::TempDir;
using zlora::test::write_file;

namespace {

void launch(const std::filesystem::path& dir, int nodes, int rpn, int stage, const std::string& status,
            const std::string& reason = "") {
  json j = {{"nodes", nodes},
            {"ranks_per_node", rpn},
            {"zero_stage", stage},
            {"offload", "none"},
            {"launcher", "mpirun"},
            {"status", status},
            {"exit_code", status == "ok" ? 0 : 1},
            {"reason", reason},
            {"wall_time_s", 3.5}};
  write_file(dir / "sweep_run.json", j.dump());
}

// A run with the fields of today's trainer only (train_results.json, trainer_log.jsonl).
void old_run(const std::filesystem::path& dir, double runtime, double total_tokens) {
  write_file(dir / "all_results.json",
             json{{"train_runtime", runtime}, {"train_samples_per_second", 10.0}, {"train_loss", 2.0}}.dump());
  write_file(dir / "trainer_log.jsonl", "{\"current_steps\":1,\"total_tokens\":100,\"tokens_per_second\":50}\n" +
                                            json{{"current_steps", 2}, {"total_tokens", total_tokens}}.dump() + "\n");
}

// A run with the fields the communicator and topology add.
void new_run(const std::filesystem::path& dir, double tokens_per_s, int nodes) {
  write_file(dir / "all_results.json", json{{"train_runtime", 2.0},
                                            {"train_samples_per_second", 20.0},
                                            {"train_tokens_per_second", tokens_per_s},
                                            {"comm_bytes_per_step", 123456},
                                            {"comm_bytes_per_step_model", 120000},
                                            {"peak_host_memory_gib", 1.5},
                                            {"peak_device_memory_gib", 0.25},
                                            {"world_size", nodes},
                                            {"num_nodes", nodes}}
                                           .dump());
  json hosts = json::array();
  for (int i = 0; i < nodes; ++i) hosts.push_back({{"host", "zt" + std::to_string(i + 1)}, {"ranks", {i}}});
  write_file(dir / "topology.json",
             json{{"world_size", nodes}, {"num_nodes", nodes}, {"backend", "mpi"}, {"nodes", hosts}}.dump());
}

// n1/n2 at ZeRO 2 (new fields), n1/n2 at ZeRO 3 (old fields), n4 at ZeRO 3 failed.
void make_sweep(const std::filesystem::path& out) {
  auto runs = out / "runs";
  launch(runs / "n1-r1-z2-none", 1, 1, 2, "ok");
  new_run(runs / "n1-r1-z2-none", 1000, 1);
  launch(runs / "n2-r1-z2-none", 2, 1, 2, "ok");
  new_run(runs / "n2-r1-z2-none", 1800, 2);
  launch(runs / "n1-r1-z3-none", 1, 1, 3, "ok");
  old_run(runs / "n1-r1-z3-none", 2.0, 1000);  // 500 tokens/s
  launch(runs / "n2-r1-z3-none", 2, 1, 3, "ok");
  old_run(runs / "n2-r1-z3-none", 2.0, 1600);  // 800 tokens/s
  launch(runs / "n4-r1-z3-none", 4, 1, 3, "failed", "mpirun exited 1: zlora: error: boom | a\nb");
}

const sc::RunRow& row(const std::vector<sc::RunRow>& rows, const std::string& name) {
  for (const auto& r : rows)
    if (r.name == name) return r;
  throw std::runtime_error("no row " + name);
}

}  // namespace

TEST(ScalingReport, EveryRunIsARowWithEfficiencyAgainstOneNode) {
  TempDir t;
  make_sweep(t.path());
  auto rows = sc::read_sweep(t.path());
  ASSERT_EQ(rows.size(), 5u);
  EXPECT_EQ(rows[0].name, "n1-r1-z2-none");  // sorted by (ranks/node, stage, offload, nodes)
  EXPECT_EQ(rows[4].name, "n4-r1-z3-none");
  const auto& a = row(rows, "n2-r1-z2-none");
  EXPECT_EQ(a.status, "ok");
  ASSERT_TRUE(a.efficiency);
  EXPECT_NEAR(*a.efficiency, 0.9, 1e-12);
  EXPECT_EQ(a.tokens_source, "all_results");
  EXPECT_EQ(a.hosts, "zt1,zt2");
  EXPECT_EQ(a.backend, "mpi");
  EXPECT_DOUBLE_EQ(*a.comm_bytes_per_step, 123456);
  const auto& b = row(rows, "n2-r1-z3-none");
  ASSERT_TRUE(b.tokens_per_s);
  EXPECT_DOUBLE_EQ(*b.tokens_per_s, 800);
  EXPECT_EQ(b.tokens_source, "trainer_log total_tokens");
  EXPECT_NEAR(*b.efficiency, 0.8, 1e-12);
  EXPECT_FALSE(b.comm_bytes_per_step);
  EXPECT_FALSE(b.peak_host_gib);
  EXPECT_EQ(*b.world_size, 2);
  EXPECT_DOUBLE_EQ(*row(rows, "n1-r1-z3-none").efficiency, 1.0);
  const auto& f = row(rows, "n4-r1-z3-none");
  EXPECT_EQ(f.status, "failed");
  EXPECT_TRUE(contains(f.reason, "zlora: error: boom")) << f.reason;
  EXPECT_FALSE(f.efficiency);
}

TEST(ScalingReport, WritesTablesAndPlots) {
  TempDir t;
  make_sweep(t.path());
  auto rows = sc::read_sweep(t.path());
  auto files = sc::write_report(t.path(), rows);
  std::string md = read_file(t / "scaling.md");
  EXPECT_EQ(zlora::test::count_occurrences(md, "\n| n"), 5u) << md;
  EXPECT_TRUE(contains(md, "| 90.0 % |")) << md;
  EXPECT_TRUE(contains(md, "| failed |")) << md;
  EXPECT_TRUE(contains(md, "zlora: error: boom \\| a b |\n")) << md;  // escaped, one line
  EXPECT_TRUE(contains(md, "| n/a |")) << md;
  json j = json::parse(read_file(t / "scaling.json"));
  ASSERT_EQ(j["runs"].size(), 5u);
  EXPECT_TRUE(j["runs"][4]["tokens_per_second"].is_null());
  EXPECT_EQ(j["runs"][4]["status"], "failed");
  std::string csv = read_file(t / "scaling.csv");
  EXPECT_EQ(zlora::test::count_occurrences(csv, "\n"), 7u) << csv;  // the reason's newline is quoted
  EXPECT_TRUE(contains(csv, "\nn2-r1-z2-none,2,1,2,2,none,ok,")) << csv;
  std::string svg = read_file(t / "scaling.svg");
  EXPECT_EQ(svg.rfind("<?xml", 0), 0u);
  EXPECT_TRUE(contains(svg, "</svg>"));
  EXPECT_EQ(zlora::test::count_occurrences(svg, "<polyline"), 4u);  // 2 series x 2 panels
  EXPECT_TRUE(contains(svg, "1 rank(s)/node, ZeRO 3, offload none"));
  EXPECT_EQ(files.png, zlora::train::png_supported());
  if (files.png) {
    EXPECT_EQ(read_file(t / "scaling.png").substr(1, 3), "PNG");
  }
}

TEST(ScalingReport, MissingAndBrokenFilesAreNotErrors) {
  TempDir t;
  auto runs = t / "runs";
  write_file(runs / "n1-r2-z0-none" / "all_results.json", "{not json");
  write_file(runs / "n1-r2-z0-none" / "trainer_log.jsonl", "garbage\n");
  write_file(runs / "n1-r2-z0-none" / "topology.json", "[]");
  std::filesystem::create_directories(runs / "odd-name");
  auto rows = sc::read_sweep(t.path());
  ASSERT_EQ(rows.size(), 2u);
  const auto& a = row(rows, "n1-r2-z0-none");
  EXPECT_EQ(a.nodes, 1);
  EXPECT_EQ(a.ranks_per_node, 2);
  EXPECT_EQ(a.status, "failed");
  EXPECT_TRUE(contains(a.reason, "did not finish")) << a.reason;
  EXPECT_TRUE(contains(row(rows, "odd-name").reason, "no sweep_run.json")) << row(rows, "odd-name").reason;
  sc::write_report(t.path(), rows);
  EXPECT_TRUE(contains(read_file(t / "scaling.svg"), "no successful run to plot"));
}

TEST(ScalingReport, NodeCountMismatchIsNoted) {
  TempDir t;
  auto dir = t / "runs" / "n2-r1-z2-none";
  launch(dir, 2, 1, 2, "ok");
  new_run(dir, 1000, 1);
  auto rows = sc::read_sweep(t.path());
  EXPECT_TRUE(contains(rows[0].reason, "ran on 1 node(s), launched on 2")) << rows[0].reason;
}

TEST(ScalingReport, CommandLine) {
  TempDir t;
  make_sweep(t.path());
  auto r = zlora::test::run_zlora("scaling-report " + t.path().string());
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "5 run(s), 1 failed")) << r.output;
  EXPECT_TRUE(std::filesystem::exists(t / "scaling.csv"));
  auto missing = zlora::test::run_zlora("scaling-report " + (t / "nope").string());
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_TRUE(contains(missing.output, "does not exist")) << missing.output;
  auto none = zlora::test::run_zlora("scaling-report");
  EXPECT_EQ(none.exit_code, 1);
  EXPECT_TRUE(contains(none.output, "takes one SWEEP_DIR")) << none.output;
  auto help = zlora::test::run_zlora("scaling-report --help");
  EXPECT_EQ(help.exit_code, 0);
  EXPECT_TRUE(contains(help.output, "usage: zlora scaling-report")) << help.output;
}
