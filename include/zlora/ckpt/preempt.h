// Preemption: Slurm sends SIGUSR1 (with --signal=USR1@T) or SIGTERM before killing a job, mpirun
// SIGTERM when it is itself terminated. The handler only sets a flag; the trainer calls agree_preempt(),
// an all-reduce (MAX) over the HostGroup, at each optimizer-step boundary and, within a step, before each micro-batch
// and before the update, so that every rank sees the same answer at the same point: all abandon the
// step in flight (or stop at the boundary), save the last finished step together and exit with
// kExitPreempted. jobs/ scripts requeue on that code and resume from `latest`.
#pragma once

#include <csignal>

namespace zlora::dist {
class HostGroup;
}

namespace zlora::ckpt {

// EX_TEMPFAIL from sysexits.h ("temporary failure, try again"): distinct from success (0), zlora's errors
// (1) and a signal death (128 + n), so a wrapper script knows that requeueing is right.
inline constexpr int kExitPreempted = 75;

// Installs SIGTERM and SIGUSR1 handlers for its lifetime and restores the previous ones afterwards.
// The flag the handlers set is the one piece of process-wide mutable state in zlora: a signal handler
// can reach nothing else (a lock-free std::atomic<int>, which is async-signal-safe).
class PreemptionGuard {
 public:
  PreemptionGuard();
  ~PreemptionGuard();
  PreemptionGuard(const PreemptionGuard&) = delete;
  PreemptionGuard& operator=(const PreemptionGuard&) = delete;

 private:
  struct sigaction old_term_ {};
  struct sigaction old_usr1_ {};
};

bool preempt_requested();       // this process received a signal (or request_preempt was called)
int preempt_signal();           // the signal number received, 0 if none
void request_preempt(int sig);  // as if `sig` had arrived (tests, or a wall-clock limit)
void clear_preempt();

// Collective: true on every rank when any rank was signalled. group null: local. at_step_boundary:
// the agreement between two optimizer steps, where the fault point step_boundary is (ckpt/fault.h);
// false within a step. Bounded by the group's ddp_timeout: a rank that died mid-step leaves the others
// here, and they end the job naming it (dist/host_group.h).
bool agree_preempt(dist::HostGroup* group, bool at_step_boundary = true);

// Collective, before an optimizer update: what the ranks agree on once every micro-batch of the step ran.
enum class StepAgreement {
  kContinue,     // no rank was signalled
  kFinishStep,   // a rank was signalled, every rank's step is complete: update, then checkpoint this step
  kAbandonStep,  // some rank's step was cut short (an interrupted micro-batch): checkpoint the last one
};
StepAgreement agree_step_end(dist::HostGroup* group, bool my_step_complete);

}  // namespace zlora::ckpt
