// A collective one rank never joins ends the job after ddp_timeout with the operation and rank named.
#include "test_util.h"

#include <chrono>

TEST(CommTimeout, AbsentRankAbortsJobWithMessage) {
  const auto start = std::chrono::steady_clock::now();
  // `timeout 100` only guards this test against a hang; the helper's own timeout is 1 s.
  auto r = zlora::test::run_command(std::string("timeout 100 ") + ZLORA_MPIEXEC + " -n 2 --oversubscribe " +
                                    ZLORA_TIMEOUT_HELPER + " 1");
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_NE(r.exit_code, 124) << "the job hung instead of aborting:\n" << r.output;
  EXPECT_NE(r.output.find("all_reduce of 16 fp32 elements"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("rank 0 of 2"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("ddp_timeout=1 s"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("timeout did not fire"), std::string::npos) << r.output;
  EXPECT_LT(seconds, 60) << r.output;
}
