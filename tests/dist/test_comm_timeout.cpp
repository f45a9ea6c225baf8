// A collective one rank never joins ends the job after ddp_timeout with the operation and rank named,
// and, with the run's topology, which rank stopped answering: one whose process is gone is named with
// its node and pid; one that still runs is reported as stuck. Through the Communicator and through the
// HostGroup (the preemption agreements and checkpoint collectives).
#include "test_util.h"

#include <unistd.h>

#include <chrono>

namespace {

struct Outcome {
  zlora::test::RunResult r;
  double seconds = 0;
};

Outcome run_helper(const std::string& args) {
  const auto start = std::chrono::steady_clock::now();
  // `timeout 100` only guards this test against a hang; the helper's own timeout is 1 s.
  Outcome o;
  o.r = zlora::test::run_command(std::string("timeout 100 ") + ZLORA_MPIEXEC + " -n 2 --oversubscribe " +
                                 ZLORA_TIMEOUT_HELPER + " " + args);
  o.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_NE(o.r.exit_code, 0) << o.r.output;
  EXPECT_NE(o.r.exit_code, 124) << "the job hung instead of aborting:\n" << o.r.output;
  EXPECT_NE(o.r.output.find("rank 0 of 2"), std::string::npos) << o.r.output;
  EXPECT_NE(o.r.output.find("ddp_timeout=1 s"), std::string::npos) << o.r.output;
  EXPECT_EQ(o.r.output.find("timeout did not fire"), std::string::npos) << o.r.output;
  EXPECT_LT(o.seconds, 60) << o.r.output;
  return o;
}

std::string host_name() {
  char buf[256] = {};
  gethostname(buf, sizeof buf - 1);
  return buf;
}

}  // namespace

TEST(CommTimeout, AbsentRankAbortsJobWithMessage) {
  Outcome o = run_helper("1");
  EXPECT_NE(o.r.output.find("all_reduce of 16 fp32 elements"), std::string::npos) << o.r.output;
  EXPECT_NE(o.r.output.find("another rank failed, is stuck, or skipped"), std::string::npos) << o.r.output;
}

TEST(CommTimeout, StuckRankIsReportedAsStillRunning) {
  Outcome o = run_helper("1 stuck");
  EXPECT_NE(o.r.output.find("all_reduce of 16 fp32 elements (mpi backend"), std::string::npos) << o.r.output;
  EXPECT_NE(o.r.output.find("every other rank (1) still runs"), std::string::npos) << o.r.output;
}

TEST(CommTimeout, LostRankIsNamedWithNodeAndPid) {
  Outcome o = run_helper("1 gone");
  const std::string lost = "lost rank 1 (node " + host_name() + ", host " + host_name() + ", pid ";
  EXPECT_NE(o.r.output.find(lost), std::string::npos) << o.r.output;
  EXPECT_NE(o.r.output.find("is gone: its process ended"), std::string::npos) << o.r.output;
}

TEST(CommTimeout, HostAgreementTimesOutAndNamesTheLostRank) {
  Outcome o = run_helper("1 gone host");
  EXPECT_NE(o.r.output.find("collective a test agreement (mpi host backend, rank 0 of 2)"), std::string::npos)
      << o.r.output;
  EXPECT_NE(o.r.output.find("lost rank 1"), std::string::npos) << o.r.output;
}
