#!/usr/bin/env bash
# jobs/slurm_multinode.sbatch, unedited, on 2 nodes of the one-host Slurm rig (1 rank per node, ZeRO 2),
# preempted by a user's or an admin's signal rather than by Slurm ending the job:
#   1. `scancel --signal=TERM JOB`: SIGTERM to the ranks of the job step only (not the batch shell);
#   2. in the requeued attempt, `scancel --batch --signal=USR1 JOB`: SIGUSR1 to the batch shell only,
#      as `#SBATCH --signal=B:USR1@120` sends it before the time limit; the script forwards it.
# Asserts: each time the ranks save a checkpoint and exit 75, srun ends with 75 and the script itself
# requeues the job (scontrol requeue); the requeued attempt resumes from that checkpoint; the job ends
# COMPLETED after 2 restarts, with all 3 attempts in its one log; the adapter is byte-identical to an
# uninterrupted 2-rank run's.
# shellcheck source=tests/cluster/lib.sh
source "$(dirname "$0")/lib.sh"
cl_init slurm_signals
cl_need_root
cl_need_slurm
cl_fixture
cl_slurm_up 2

out=$CL_WORK/run
log=$CL_WORK/job.out
job=$(cl_submit slurm_multinode.sbatch "$out" "$log")
cl_log "submitted job $job"

cl_wait_for 120 "checkpoint-2" cl_has_checkpoint "$out" 2
scancel --signal=TERM "$job"
cl_log "scancel --signal=TERM $job"
cl_wait_for 120 "the requeued attempt to start" cl_restarts_reached "$job" 1
cl_wait_for 120 "the second attempt to resume" cl_resumes_reached "$log" 1
first=$(cl_resumed_steps "$log")
cl_wait_for 120 "a checkpoint after the resume" cl_has_checkpoint "$out" $(((first / 2 + 1) * 2))
scancel --batch --signal=USR1 "$job"
cl_log "scancel --batch --signal=USR1 $job"
cl_wait_job "$job" 240

cl_expect_job "$job" COMPLETED 2 0:0
cl_expect_log "$log" "zlora job: job $job attempt" 3
# 1: the ranks got TERM themselves (signal 15); 2: the script got USR1 and forwarded it (signal 10).
cl_expect_log "$log" "warning: preempted (signal 15)" 2
cl_expect_log "$log" "zlora job: USR1" 1
cl_expect_log "$log" "warning: preempted (signal 10)" 2
cl_expect_log "$log" "Exited with exit code 75" 4
# The script requeued the job itself both times (Slurm was not requeueing it).
cl_expect_log "$log" "zlora job: preempted (exit 75), requeueing" 2
cl_expect_log "$log" "scontrol requeue $job failed" 0
cl_expect_log "$log" "zlora job: finished" 1
steps=$(cl_resumed_steps "$log")
read -r s1 s2 <<< "$steps"
if [[ -z "${s2:-}" ]] || ((s1 < 2 || s2 <= s1)); then cl_fail "resumed from steps '$steps', expected two increasing steps"; fi
for s in $s1 $s2; do
  (($(cl_signal_saves "$log" "$s") > 0)) || cl_fail "no attempt saved checkpoint-$s on the signal"
done
cl_log "resumed from checkpoint-$s1, then checkpoint-$s2"
cl_same_adapter "$out" ref-np2-z2-12
