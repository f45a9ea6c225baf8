// The one wait policy of every zlora collective, whatever the backend (c10d's Work::wait with a timeout,
// kept in one place): poll a completion test, yielding at first (small collectives finish within
// microseconds) and then sleeping with back-off (ranks often share cores), until it reports done or the
// deadline passes. On the deadline the job ends with timeout_message(): the operation, the backend, this
// rank, and which ranks stopped answering (Topology::diagnose).
#pragma once

#include <functional>
#include <string>

namespace zlora::dist {

class MpiRuntime;
class Topology;

struct PollPolicy {
  int spin_polls = 200;   // sched_yield() between the first polls
  int max_nap_us = 2000;  // then sleeps doubling from 20 us up to this
};

// Returns once `done()` is true. When `timeout_s` seconds pass first, calls `on_timeout()`, which must not
// return (it ends the job).
void poll_until(const std::function<bool()>& done, double timeout_s, const std::function<void()>& on_timeout,
                PollPolicy policy = {});

// Where a collective waits: what its timeout message and its watchdog need.
struct WaitSite {
  const MpiRuntime* mpi = nullptr;
  std::string backend;  // "mpi", "mpi host", "nccl, GPU 0"
  int rank = 0;
  int size = 1;
  double timeout_s = 0;
  const Topology* topology = nullptr;
};

// What a collective that outlived ddp_timeout reports: `what` (e.g. "all_reduce of 4 fp32 elements") on
// the site's backend, its rank of its size, and, with a topology, the ranks that no longer answer (by
// host and pid) or that every other rank still runs (so one is stuck or skipped the collective).
std::string timeout_message(const WaitSite& site, const std::string& what);

// The wait of every backend: poll_until(done) with the site's timeout, calling `on_timeout` (which ends
// the job) on the deadline. Meanwhile the runtime's Watchdog is armed for Watchdog::limit_for(timeout)
// with the same message, in case this thread gets stuck inside `done()` itself.
void wait_with_deadline(const WaitSite& site, const std::string& what, const std::function<bool()>& done,
                        const std::function<void()>& on_timeout, PollPolicy policy = {});

// Ends the job with timeout_message() (MpiRuntime::fail_job, exit code 3).
[[noreturn]] void end_job_on_timeout(const WaitSite& site, const std::string& what);

}  // namespace zlora::dist
