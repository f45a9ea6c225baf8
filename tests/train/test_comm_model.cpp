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

}  // namespace
