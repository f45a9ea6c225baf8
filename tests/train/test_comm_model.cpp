// The communication model against the communicator's counters: the zlora binary under mpiexec on the
// tiny model at every ZeRO stage x CPU optimizer offload, at world 1, 2 and 3, with 2 micro-batches per
// step (micro_batch_tokens = cutoff_len: one sample each, so ZeRO-3's per-micro-batch gathers count twice). Each run's
// all_results.json holds the bytes rank 0's communicator sent per step (counted on every collective) and the model's
// prediction from the shapes (zero/comm_model.h): they agree within 1 %, and at world 1 both are 0. The log prints the
// model at the start and the comparison at the end; topology.json names the one node and every rank.
#include "train_e2e_util.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <string>
#include <vector>

namespace {

namespace stdfs = std::filesystem;
using zlora::test::contains;
using zlora::test::Job;
using zlora::test::JobEnd;

struct ZeroSetup {
  const char* name;
  int stage;
  bool offload;
};
const std::vector<ZeroSetup> kSetups = {{"s0", 0, false},   {"s1", 1, false}, {"s1off", 1, true}, {"s2", 2, false},
                                        {"s2off", 2, true}, {"s3", 3, false}, {"s3off", 3, true}};

nlohmann::json read_json(const stdfs::path& p) { return nlohmann::json::parse(zlora::test::read_file(p)); }

class CommModel : public ::testing::Test {
 public:
  static void SetUpTestSuite() {
    dir_ = new zlora::test::TempDir();
    ASSERT_NO_FATAL_FAILURE(zlora::test::prepare_tiny_model_and_tokens(dir_->path(), 32, 40));
  }
  static void TearDownTestSuite() { delete dir_; }
  static zlora::test::TempDir* dir_;
};
zlora::test::TempDir* CommModel::dir_ = nullptr;

TEST_F(CommModel, CountedTrafficMatchesTheModelAtEveryStageAndWorldSize) {
  for (int world : {1, 2, 3}) {
    for (const ZeroSetup& s : kSetups) {
      SCOPED_TRACE(fmt::format("{} at world {}", s.name, world));
      const stdfs::path out = *dir_ / fmt::format("{}-np{}", s.name, world);
      const std::string cmd =
          "exec " + zlora::test::mpiexec_zlora(world) + " train " +
          zlora::test::tiny_train_flags(dir_->path(), 1, 2, 1) + " --zero_stage " + std::to_string(s.stage) +
          " --offload_optimizer " + (s.offload ? "cpu" : "none") +
          " --micro_batch_tokens 32 --ddp_timeout 60 --max_steps 3 --save_strategy no --output_dir " + out.string();
      Job job(cmd, out.string() + ".log", {"OMP_NUM_THREADS=1"});
      const JobEnd end = job.wait(120, out.string());
      ASSERT_EQ(end.exit_code, 0) << end.output;
      const nlohmann::json r = read_json(out / "all_results.json");
      ASSERT_TRUE(r.contains("comm_bytes_per_step") && r.contains("comm_bytes_per_step_model")) << r.dump();
      const double counted = r["comm_bytes_per_step"].get<double>();
      const double modelled = r["comm_bytes_per_step_model"].get<double>();
      if (world == 1) {
        EXPECT_EQ(counted, 0);
        EXPECT_EQ(modelled, 0);
      } else {
        EXPECT_GT(modelled, 1000);
        EXPECT_NEAR(counted, modelled, 0.01 * modelled) << end.output;
      }
      EXPECT_EQ(r["world_size"].get<int>(), world);
      EXPECT_EQ(r["num_nodes"].get<int>(), 1);
      EXPECT_GT(r["peak_host_memory_gib"].get<double>(), 0.0);
      EXPECT_GT(r["train_tokens_per_second"].get<double>(), 0.0);
      EXPECT_TRUE(s.offload == r.contains("offload_bytes_per_step_model")) << r.dump();
      // Every log line carries the step's counted bytes; the start of the log the model.
      EXPECT_TRUE(contains(end.output, "communication model (bytes each rank sends per optimizer step")) << end.output;
      EXPECT_TRUE(contains(end.output, "communication: ")) << end.output;
      EXPECT_TRUE(contains(end.output, "topology: 1 node, " + std::to_string(world) + " rank")) << end.output;
      const nlohmann::json topo = read_json(out / "topology.json");
      EXPECT_EQ(topo["world_size"].get<int>(), world);
      ASSERT_EQ(topo["ranks"].size(), static_cast<size_t>(world));
      for (int k = 0; k < world; ++k) {
        EXPECT_EQ(topo["ranks"][k]["rank"].get<int>(), k);
        EXPECT_EQ(topo["ranks"][k]["local_rank"].get<int>(), k);
        EXPECT_EQ(topo["ranks"][k]["device"].get<std::string>(), "cpu");
      }
      EXPECT_EQ(topo["backend"].get<std::string>(), "mpi");
    }
  }
}

// `zlora comm-model` (the projection of docs/benchmarks.md) prices the same traffic from config.json
// alone: against the ZeRO-3 and ZeRO-1 runs above at world 2 and 3 (their model from the real shapes and
// the micro-batches they ran), within 0.1 % (the runs' flat buffers carry padding to the world size).
TEST_F(CommModel, CommModelCommandMatchesTheRunsModel) {
  for (int world : {2, 3}) {
    for (const char* setup : {"s1", "s3"}) {
      SCOPED_TRACE(fmt::format("{} at world {}", setup, world));
      const stdfs::path out = *dir_ / fmt::format("{}-np{}", setup, world);
      ASSERT_TRUE(stdfs::exists(out / "all_results.json")) << "CountedTrafficMatchesTheModelAtEveryStageAndWorldSize "
                                                              "runs first and leaves "
                                                           << out;
      const double run_model = read_json(out / "all_results.json")["comm_bytes_per_step_model"].get<double>();
      const auto r = zlora::test::run_zlora(
          fmt::format("comm-model --json --model_name_or_path {} --lora_rank 4 --lora_target all --fp32 --world {} "
                      "--zero_stage {} --micro_batches 2",
                      (*dir_ / "model").string(), world, setup[1]));
      ASSERT_EQ(r.exit_code, 0) << r.output;
      const nlohmann::json rows = nlohmann::json::parse(r.output);
      ASSERT_EQ(rows.size(), 1u) << r.output;
      // The runs are 3 steps: the once-per-run prefetch is a third of a step's.
      const double cli = rows[0]["bytes_per_step"].get<double>() + rows[0]["bytes_once_per_run"].get<double>() / 3;
      EXPECT_NEAR(cli, run_model, 1e-3 * run_model) << r.output;
    }
  }
  const auto bad =
      zlora::test::run_zlora("comm-model --model_name_or_path " + (*dir_ / "model").string() + " --zero_stage 4");
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_TRUE(contains(bad.output, "--zero_stage values must be in [0, 3], got 4")) << bad.output;
}

}  // namespace
