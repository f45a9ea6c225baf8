#include "zlora/ckpt/preempt.h"

#include "zlora/ckpt/fault.h"
#include "zlora/core/error.h"

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

bool agree_preempt(MPI_Comm comm, bool at_step_boundary) {
  int mine = preempt_requested() ? 1 : 0, any = mine;
  int rank = 0;
  if (comm != MPI_COMM_NULL) MPI_Comm_rank(comm, &rank);
  // The peers are about to wait in the allreduce for this rank.
  if (at_step_boundary) fault_point("step_boundary", rank);
  if (comm != MPI_COMM_NULL) {
    int rc = MPI_Allreduce(&mine, &any, 1, MPI_INT, MPI_MAX, comm);
    ZLORA_REQUIRE(rc == MPI_SUCCESS, "agreeing on preemption: MPI_Allreduce failed (code {})", rc);
  }
  return any != 0;
}

StepAgreement agree_step_end(MPI_Comm comm, bool my_step_complete) {
  int mine = !my_step_complete ? 2 : preempt_requested() ? 1 : 0, worst = mine;
  if (comm != MPI_COMM_NULL) {
    int rc = MPI_Allreduce(&mine, &worst, 1, MPI_INT, MPI_MAX, comm);
    ZLORA_REQUIRE(rc == MPI_SUCCESS, "agreeing on the end of a step: MPI_Allreduce failed (code {})", rc);
  }
  return worst == 2 ? StepAgreement::kAbandonStep : worst == 1 ? StepAgreement::kFinishStep : StepAgreement::kContinue;
}

}  // namespace zlora::ckpt
