// Resume, as a matrix: every ZeRO stage x CPU optimizer offload, saved at one world size and resumed at
// the same, a smaller and a larger one, and into another stage. Each case is the zlora binary under
// mpiexec on the tiny random Qwen2-shaped model (train_e2e_util.h), 4 optimizer steps of a global batch
// of 6 samples (world 1 x accumulation 6, world 2 x 3, world 3 x 2), checkpointing every 2 steps.
//
// For each configuration the uninterrupted run at world 2 is the reference; then checkpoint-2 alone (a
// copy into a fresh output_dir, as a run killed after it would leave) is resumed with
// `--resume_from_checkpoint latest`:
//   - at world 2, the same stage: the final adapter equals the reference bit for bit (every rank gets
//     back its own partition, sampler position, generator and AdamW state);
//   - at world 1 and world 3: within 1e-5 of the reference (the same global batch, so the same samples per
//     step; only the order of the floating-point reductions differs);
//   - at world 2 into the next configuration of the list (stage 0 <- 3+offload included): within 1e-5.
// ZeRO-0 at 2+ ranks was the case that failed before (its rank files hold slices of a buffer every rank
// steps whole), and resuming into stage 0 from a partitioned checkpoint.
#include "train_e2e_util.h"
#include "zlora/ckpt/checkpoint.h"

#include <fmt/format.h>

#include <cstdio>
#include <string>
#include <vector>

namespace {

namespace stdfs = std::filesystem;
using zlora::test::Clock;
using zlora::test::contains;
using zlora::test::Job;
using zlora::test::JobEnd;
using zlora::test::read_adapter_bytes;
using zlora::test::seconds_since;

constexpr int kMaxSteps = 4;
constexpr int kSaveSteps = 2;
constexpr int kGlobalBatch = 6;
constexpr double kJobLimitS = 120;
constexpr double kRelTol = 1e-5;
const std::vector<std::string> kOneThread = {"OMP_NUM_THREADS=1"};

struct ZeroSetup {
  const char* name;
  int stage;
  bool offload;
};
const std::vector<ZeroSetup> kSetups = {{"s0", 0, false},   {"s1", 1, false}, {"s1off", 1, true}, {"s2", 2, false},
                                        {"s2off", 2, true}, {"s3", 3, false}, {"s3off", 3, true}};

class ResumeMatrix : public ::testing::Test {
 public:
  static void SetUpTestSuite() {
    dir_ = new zlora::test::TempDir();
    ASSERT_NO_FATAL_FAILURE(zlora::test::prepare_tiny_model_and_tokens(dir_->path(), 32, 40));
  }
  static void TearDownTestSuite() { delete dir_; }

  static std::string train_cmd(int world, const ZeroSetup& s, const stdfs::path& out, const std::string& extra) {
    return "exec " + zlora::test::mpiexec_zlora(world) + " train " +
           zlora::test::tiny_train_flags(dir_->path(), 1, kGlobalBatch / world, 1) + " --zero_stage " +
           std::to_string(s.stage) + " --offload_optimizer " + (s.offload ? "cpu" : "none") +
           " --ddp_timeout 60 --max_steps " + std::to_string(kMaxSteps) + " --save_steps " +
           std::to_string(kSaveSteps) + " --output_dir " + out.string() + " " + extra;
  }
  static JobEnd train(int world, const ZeroSetup& s, const stdfs::path& out, const std::string& extra) {
    Job job(train_cmd(world, s, out, extra), out.string() + ".log", kOneThread);
    return job.wait(kJobLimitS, out.string());
  }

  static zlora::test::TempDir* dir_;
};
zlora::test::TempDir* ResumeMatrix::dir_ = nullptr;

TEST_F(ResumeMatrix, EveryStageAndOffloadResumesAtAnyWorldSizeAndIntoAnotherStage) {
  const auto t_all = Clock::now();
  int cases = 0;
  for (size_t i = 0; i < kSetups.size(); ++i) {
    const ZeroSetup& s = kSetups[i];
    SCOPED_TRACE(s.name);
    const stdfs::path ref = *dir_ / (std::string(s.name) + "-ref");
    JobEnd r = train(2, s, ref, "");
    ASSERT_EQ(r.exit_code, 0) << r.output;
    const std::string ref_adapter = read_adapter_bytes(ref);
    ASSERT_GT(ref_adapter.size(), 1000u);
    const stdfs::path saved = ref / zlora::ckpt::checkpoint_dir_name(kSaveSteps);
    ASSERT_TRUE(zlora::ckpt::verify_checkpoint(saved, true)) << saved;

    struct Resume {
      int world;
      const ZeroSetup& into;
      bool bit_identical;
    };
    const std::vector<Resume> resumes = {
        {2, s, true}, {1, s, false}, {3, s, false}, {2, kSetups[(i + 1) % kSetups.size()], false}};
    for (const Resume& res : resumes) {
      const std::string tag = std::string(s.name) + "-to-" + res.into.name + "-w" + std::to_string(res.world);
      SCOPED_TRACE(tag);
      const auto t0 = Clock::now();
      const stdfs::path out = *dir_ / tag;
      stdfs::create_directories(out);
      stdfs::copy(saved, out / saved.filename(), stdfs::copy_options::recursive);
      JobEnd e = train(res.world, res.into, out, "--resume_from_checkpoint latest");
      ASSERT_EQ(e.exit_code, 0) << e.output;
      EXPECT_TRUE(contains(e.output, "resumed from " + (out / saved.filename()).string() +
                                         " at step 2 (saved at "
                                         "world size 2, now " +
                                         std::to_string(res.world) + ")"))
          << e.output;
      double err = 0;
      if (res.bit_identical) {
        EXPECT_TRUE(read_adapter_bytes(out) == ref_adapter) << tag << ": the resumed adapter differs";
      } else {
        err = zlora::test::adapter_rel_err(out, ref);
        EXPECT_LE(err, kRelTol) << tag;
      }
      // The resumed run wrote its own checkpoint at step 4, complete, at its world size.
      const auto last = zlora::ckpt::find_latest_checkpoint(out);
      ASSERT_TRUE(last);
      EXPECT_EQ(last->step(), kMaxSteps);
      EXPECT_EQ(last->world_size(), res.world);
      std::printf("[resume] %-16s %s (%.1f s)\n", tag.c_str(),
                  res.bit_identical ? "bit-identical" : fmt::format("rel err {:.2e}", err).c_str(), seconds_since(t0));
      std::fflush(stdout);
      ++cases;
      zlora::fs::remove_tree(out);
    }
    zlora::fs::remove_tree(ref);
  }
  std::printf("[resume] %d resumes of %zu configurations in %.0f s\n", cases, kSetups.size(), seconds_since(t_all));
}

}  // namespace
