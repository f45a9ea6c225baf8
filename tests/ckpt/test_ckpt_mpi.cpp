// The checkpoint protocol across ranks (run under mpiexec -n 2 and -n 3): one file per rank, the
// manifest on rank 0 lists them all, a checkpoint missing one rank's file is never taken, a different
// world size reads every payload, a failure on one rank fails the save on all, preemption agreement.
#include "test_util.h"
#include "zlora/ckpt/checkpoint.h"
#include "zlora/ckpt/preempt.h"
#include "zlora/core/error.h"
#include "zlora/core/sha256.h"
#include "zlora/dist/host_group.h"
#include "zlora/dist/mpi_runtime.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

using namespace zlora::ckpt;
using nlohmann::json;
namespace stdfs = std::filesystem;

namespace {
zlora::dist::MpiRuntime* g_mpi = nullptr;
zlora::dist::HostGroup* g_group = nullptr;  // the checkpoint and preemption collectives (60 s timeout)

// A directory shared by all ranks: rank 0 creates it, broadcasts the name, removes it at the end.
class SharedDir {
 public:
  SharedDir() {
    char buf[512] = {};
    if (g_mpi->rank() == 0) {
      std::string tmpl = (stdfs::temp_directory_path() / "zlora-ckpt-mpi-XXXXXX").string();
      if (!mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
      std::snprintf(buf, sizeof buf, "%s", tmpl.c_str());
    }
    MPI_Bcast(buf, sizeof buf, MPI_CHAR, 0, MPI_COMM_WORLD);
    path_ = buf;
  }
  ~SharedDir() {
    MPI_Barrier(MPI_COMM_WORLD);
    if (g_mpi->rank() == 0) zlora::fs::remove_tree(path_);
  }
  const stdfs::path& path() const { return path_; }

 private:
  stdfs::path path_;
};

std::string payload_of(int rank, long long step) {
  return "rank " + std::to_string(rank) + " state at step " + std::to_string(step) +
         std::string(size_t(rank) * 100, '#');
}

stdfs::path save(const stdfs::path& out, long long step, std::optional<long long> limit = std::nullopt) {
  std::string payload = payload_of(g_mpi->rank(), step);
  SaveRequest r;
  r.step = step;
  r.payload = payload;
  r.rank0_files = [](const stdfs::path& dir) { zlora::test::write_file(dir / "adapter_config.json", "{}"); };
  r.trainer_state_json = "{}";
  r.save_total_limit = limit;
  return save_checkpoint(out, r, g_group);
}
}  // namespace

TEST(CheckpointMpi, EveryRankWritesItsFileAndTheManifestListsThemAll) {
  SharedDir out;
  stdfs::path dir = save(out.path(), 4);
  EXPECT_EQ(dir, out.path() / "checkpoint-4");
  // Every rank returns only after the commit: the manifest and `latest` are visible to all.
  EXPECT_TRUE(stdfs::is_regular_file(dir / "manifest.json"));
  EXPECT_EQ(read_latest_pointer(out.path()).value_or(""), "checkpoint-4");
  json m = json::parse(zlora::test::read_file(dir / "manifest.json"));
  const int W = g_mpi->size();
  EXPECT_EQ(m["world_size"], W);
  ASSERT_EQ(int(m["rank_files"].size()), W);
  for (int r = 0; r < W; ++r) {
    std::string expect = payload_of(r, 4);
    EXPECT_EQ(m["rank_files"][r]["name"], rank_file_name(r));
    EXPECT_EQ(m["rank_files"][r]["size"], expect.size());
    EXPECT_EQ(m["rank_files"][r]["sha256"], zlora::sha256_hex(expect));
  }
  auto info = find_latest_checkpoint(out.path());
  ASSERT_TRUE(info);
  ResumePayloads p = read_payloads(*info, g_mpi->rank(), W);
  EXPECT_TRUE(p.same_world);
  ASSERT_EQ(p.payloads.size(), 1u);
  EXPECT_EQ(p.payloads[0], payload_of(g_mpi->rank(), 4));
}

TEST(CheckpointMpi, MissingRankFileIsNeverLatest) {
  SharedDir out;
  save(out.path(), 1);
  stdfs::path two = save(out.path(), 2);
  MPI_Barrier(MPI_COMM_WORLD);
  if (g_mpi->rank() == 0) stdfs::remove(two / rank_file_name(g_mpi->size() - 1));  // the last rank's file lost
  MPI_Barrier(MPI_COMM_WORLD);
  auto info = find_latest_checkpoint(out.path());
  ASSERT_TRUE(info);
  EXPECT_EQ(info->step(), 1);
  EXPECT_EQ(read_payloads(*info, g_mpi->rank(), g_mpi->size()).payloads[0], payload_of(g_mpi->rank(), 1));
  EXPECT_THROW(resolve_resume(out.path(), two.string()), zlora::Error);
}

TEST(CheckpointMpi, CollectiveResolveAgreesOrFailsEverywhere) {
  SharedDir out;
  std::string msg;
  try {
    resolve_resume(out.path(), "latest", MPI_COMM_WORLD);
  } catch (const zlora::Error& e) {
    msg = e.what();
  }
  EXPECT_NE(msg.find("no complete checkpoint"), std::string::npos) << "rank " << g_mpi->rank() << ": " << msg;
  save(out.path(), 3);
  stdfs::path five = save(out.path(), 5);
  MPI_Barrier(MPI_COMM_WORLD);
  if (g_mpi->rank() == 0) zlora::test::write_file(five / rank_file_name(0), std::string(payload_of(0, 5).size(), '?'));
  MPI_Barrier(MPI_COMM_WORLD);
  CheckpointInfo info = resolve_resume(out.path(), "latest", MPI_COMM_WORLD);  // 5 is damaged (same size)
  EXPECT_EQ(info.step(), 3);
  EXPECT_EQ(read_payloads(info, g_mpi->rank(), g_mpi->size()).payloads[0], payload_of(g_mpi->rank(), 3));
}

TEST(CheckpointMpi, OtherWorldSizeReadsEveryPayload) {
  SharedDir out;
  save(out.path(), 7);
  auto info = resolve_resume(out.path(), "latest");
  const int W = g_mpi->size();
  for (int new_world : {W + 1, 1}) {
    ResumePayloads p = read_payloads(info, 0, new_world);
    EXPECT_FALSE(p.same_world);
    EXPECT_EQ(p.saved_world_size, W);
    ASSERT_EQ(int(p.payloads.size()), W);
    for (int r = 0; r < W; ++r) EXPECT_EQ(p.payloads[size_t(r)], payload_of(r, 7));
  }
}

TEST(CheckpointMpi, PruningAcrossRanks) {
  SharedDir out;
  for (long long s = 1; s <= 4; ++s) save(out.path(), s, 2);
  auto dirs = list_checkpoint_dirs(out.path());
  ASSERT_EQ(dirs.size(), 2u);
  EXPECT_EQ(dirs[0].filename(), "checkpoint-3");
  EXPECT_EQ(dirs[1].filename(), "checkpoint-4");
}

TEST(CheckpointMpi, AFailureOnOneRankFailsTheSaveOnAll) {
  SharedDir out;
  save(out.path(), 1);
  // The last rank cannot write its file: its output_dir is a regular file (rank 0 writes into the real one).
  const int last = g_mpi->size() - 1;
  if (g_mpi->rank() == 0) zlora::test::write_file(out.path() / "blocker", "x");
  MPI_Barrier(MPI_COMM_WORLD);
  std::string payload = payload_of(g_mpi->rank(), 2);
  SaveRequest r;
  r.step = 2;
  r.payload = payload;
  stdfs::path where = g_mpi->rank() == last ? out.path() / "blocker" : out.path();
  bool threw = false;
  std::string msg;
  try {
    save_checkpoint(where, r, g_group);
  } catch (const zlora::Error& e) {
    threw = true;
    msg = e.what();
  }
  EXPECT_TRUE(threw) << "rank " << g_mpi->rank();
  // Every rank reports the failing rank's own reason: whichever rank's report ends the job (mpiexec kills
  // the rest at the first MPI_Abort) must say what went wrong, not point elsewhere.
  EXPECT_NE(msg.find("failed on rank " + std::to_string(last) + ": "), std::string::npos) << msg;
  EXPECT_NE(msg.find("Not a directory"), std::string::npos) << msg;
  EXPECT_NE(msg.find((out.path() / "blocker").string()), std::string::npos) << msg;
  MPI_Barrier(MPI_COMM_WORLD);
  EXPECT_EQ(read_latest_pointer(out.path()).value_or(""), "checkpoint-1");
  EXPECT_EQ(find_latest_checkpoint(out.path())->step(), 1);
}

TEST(CheckpointMpi, AllRanksAgreeOnPreemption) {
  clear_preempt();
  EXPECT_FALSE(agree_preempt(g_group));
  if (g_mpi->rank() == g_mpi->size() - 1) request_preempt(SIGUSR1);  // only the last rank was signalled
  EXPECT_TRUE(agree_preempt(g_group));
  clear_preempt();
  EXPECT_FALSE(agree_preempt(g_group));
}

int main(int argc, char** argv) {
  zlora::dist::MpiRuntime mpi(&argc, &argv);
  g_mpi = &mpi;
  zlora::dist::HostGroup group(mpi, 60);
  g_group = &group;
  ::testing::InitGoogleTest(&argc, argv);
  if (mpi.rank() != 0)
    delete ::testing::UnitTest::GetInstance()->listeners().Release(
        ::testing::UnitTest::GetInstance()->listeners().default_result_printer());
  int rc = RUN_ALL_TESTS();
  int worst = 0;
  MPI_Allreduce(&rc, &worst, 1, MPI_INT, MPI_MAX, mpi.world());
  return worst;
}
