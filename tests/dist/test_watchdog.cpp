// The watchdog thread that ends a rank stuck inside a wait (dist/watchdog.h): it fires with the wait's
// message and exit code once the limit passes, never after its guard is released, and a nested guard
// keeps the outer limit. Death tests: the firing one ends its (forked) process.
#include "zlora/dist/watchdog.h"

#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <thread>

namespace zlora::dist {
namespace {

using namespace std::chrono_literals;

TEST(Watchdog, EndsAStuckWaitWithItsMessageAndCode) {
  EXPECT_EXIT(
      {
        Watchdog dog(2, 4);
        Watchdog::Guard guard = dog.arm(
            0.3, [] { return std::string("collective all_gather of 8 bf16 elements"); }, 3);
        std::this_thread::sleep_for(20s);  // "stuck": never returns to release the guard
      },
      testing::ExitedWithCode(3),
      "zlora: error \\(rank 2 of 4\\): collective all_gather of 8 bf16 elements \\(this rank was stuck inside the "
      "communication library");
}

TEST(Watchdog, AReleasedGuardNeverFires) {
  EXPECT_EXIT(
      {
        Watchdog dog(0, 2);
        {
          Watchdog::Guard guard = dog.arm(
              0.3, [] { return std::string("must not print"); }, 3);
          std::this_thread::sleep_for(50ms);
        }
        Watchdog::Guard early = dog.arm(
            0.3, [] { return std::string("must not print"); }, 3);
        early.release();
        std::this_thread::sleep_for(1s);  // well past both limits
        std::fprintf(stderr, "still running\n");
        std::exit(0);
      },
      testing::ExitedWithCode(0), "still running");
}

TEST(Watchdog, ANestedGuardKeepsTheOuterLimitAndMessage) {
  EXPECT_EXIT(
      {
        Watchdog dog(1, 2);
        Watchdog::Guard outer = dog.arm(
            0.4, [] { return std::string("outer wait"); }, 5);
        {
          Watchdog::Guard inner = dog.arm(
              60, [] { return std::string("inner wait"); }, 3);
        }  // the inner guard's release leaves the outer armed
        std::this_thread::sleep_for(20s);
      },
      testing::ExitedWithCode(5), "rank 1 of 2\\): outer wait");
}

TEST(Watchdog, LimitIsTheTimeoutPlusAGraceOfFiveToSixtySeconds) {
  EXPECT_DOUBLE_EQ(Watchdog::limit_for(10), 15);
  EXPECT_DOUBLE_EQ(Watchdog::limit_for(40), 50);
  EXPECT_DOUBLE_EQ(Watchdog::limit_for(1800), 1860);
}

}  // namespace
}  // namespace zlora::dist
