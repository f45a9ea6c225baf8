#include "zlora/ckpt/preempt.h"

#include "zlora/ckpt/fault.h"
#include "zlora/core/error.h"
#include "zlora/dist/host_group.h"

#include <atomic>
#include <cerrno>
#include <cstring>

namespace zlora::ckpt {

namespace {

// The process-wide preemption flag (see preempt.h): the signal number, 0 when none arrived.
std::atomic<int> g_signal{0};
static_assert(std::atomic<int>::is_always_lock_free, "the preemption flag must be lock-free to be set in a handler");

extern "C" void on_preempt_signal(int sig) { g_signal.store(sig, std::memory_order_relaxed); }

void install(int sig, struct sigaction* old) {
  struct sigaction sa {};
  sa.sa_handler = on_preempt_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;  // blocking reads and MPI progress continue; the flag is polled at step ends
  if (sigaction(sig, &sa, old) != 0) fail("cannot install the {} handler: {}", strsignal(sig), std::strerror(errno));
}

}  // namespace

PreemptionGuard::PreemptionGuard() {
  install(SIGTERM, &old_term_);
  install(SIGUSR1, &old_usr1_);
}

PreemptionGuard::~PreemptionGuard() {
  sigaction(SIGTERM, &old_term_, nullptr);
  sigaction(SIGUSR1, &old_usr1_, nullptr);
}

bool preempt_requested() { return g_signal.load(std::memory_order_relaxed) != 0; }
int preempt_signal() { return g_signal.load(std::memory_order_relaxed); }
void request_preempt(int sig) { g_signal.store(sig == 0 ? SIGTERM : sig, std::memory_order_relaxed); }
void clear_preempt() { g_signal.store(0, std::memory_order_relaxed); }

bool agree_preempt(dist::HostGroup* group, bool at_step_boundary) {
  const int rank = group ? group->rank() : 0;
  // The peers are about to wait in the all-reduce for this rank.
  if (at_step_boundary) fault_point("step_boundary", rank);
  const long long mine = preempt_requested() ? 1 : 0;
  return (group ? group->all_reduce_max(mine, "agreeing on preemption (an all-reduce of one flag)") : mine) != 0;
}

StepAgreement agree_step_end(dist::HostGroup* group, bool my_step_complete) {
  const long long mine = !my_step_complete ? 2 : preempt_requested() ? 1 : 0;
  const long long worst =
      group ? group->all_reduce_max(mine, "agreeing on the end of a step (an all-reduce of one flag)") : mine;
  return worst == 2 ? StepAgreement::kAbandonStep : worst == 1 ? StepAgreement::kFinishStep : StepAgreement::kContinue;
}

}  // namespace zlora::ckpt
