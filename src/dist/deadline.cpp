#include "zlora/dist/deadline.h"

#include "zlora/dist/mpi_runtime.h"
#include "zlora/dist/topology.h"
#include "zlora/dist/watchdog.h"

#include <fmt/format.h>
#include <sched.h>

#include <algorithm>
#include <chrono>
#include <thread>

namespace zlora::dist {

void poll_until(const std::function<bool()>& done, double timeout_s, const std::function<void()>& on_timeout,
                PollPolicy policy) {
  using clock = std::chrono::steady_clock;
  const auto deadline = clock::now() + std::chrono::duration<double>(timeout_s);
  auto nap = std::chrono::microseconds(20);
  const auto max_nap = std::chrono::microseconds(policy.max_nap_us);
  for (int polls = 0;; ++polls) {
    if (done()) return;
    if (clock::now() > deadline) {
      on_timeout();
      return;  // on_timeout ends the job; a handler that returns is treated as "stop waiting"
    }
    if (polls < policy.spin_polls) {
      sched_yield();
    } else {
      std::this_thread::sleep_for(nap);
      nap = std::min(nap * 2, max_nap);
    }
  }
}

std::string timeout_message(const WaitSite& site, const std::string& what) {
  std::string msg = fmt::format("collective {} ({} backend, rank {} of {}) did not complete within ddp_timeout={} s",
                                what, site.backend, site.rank, site.size, site.timeout_s);
  if (site.topology)
    msg += ": " + site.topology->diagnose();
  else
    msg += ": another rank failed, is stuck, or skipped this collective";
  msg += "; raise --ddp_timeout if steps are legitimately that slow";
  return msg;
}

void wait_with_deadline(const WaitSite& site, const std::string& what, const std::function<bool()>& done,
                        const std::function<void()>& on_timeout, PollPolicy policy) {
  Watchdog::Guard guard = site.mpi->watchdog().arm(
      Watchdog::limit_for(site.timeout_s), [site, what] { return timeout_message(site, what); }, 3);
  poll_until(
      done, site.timeout_s,
      [&] {
        guard.release();  // the orderly end below prints the message; MpiRuntime::fail_job bounds its abort
        on_timeout();
      },
      policy);
}

void end_job_on_timeout(const WaitSite& site, const std::string& what) {
  site.mpi->fail_job(timeout_message(site, what), 3);
}

}  // namespace zlora::dist
