// Preemption: Slurm sends SIGUSR1 (with --signal=USR1@T) or SIGTERM before killing a job. The handler
// only sets a flag; at each optimizer-step boundary the trainer calls agree_preempt(), an MPI_Allreduce
// (MAX), so that every rank sees the same answer in the same step, saves one checkpoint together and
// exits with kExitPreempted. jobs/ scripts requeue on that code and resume from `latest`.
#pragma once

#include <mpi.h>

#include <csignal>

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

// Collective at a step boundary: true on every rank when any rank was signalled. MPI_COMM_NULL: local.
bool agree_preempt(MPI_Comm comm);

}  // namespace zlora::ckpt
