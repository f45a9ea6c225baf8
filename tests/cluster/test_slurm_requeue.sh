#!/usr/bin/env bash
# jobs/slurm_multinode.sbatch, unedited, on 2 nodes of the one-host Slurm rig (1 rank per node, ZeRO 2,
# the tiny model, 12 steps, a checkpoint every 2). Interrupted twice by Slurm itself, which sends SIGTERM
# to every process of the job (batch shell, srun, ranks) and requeues it:
#   1. `scontrol requeue` once checkpoint-4 exists;
#   2. in the requeued attempt, partition preemption: a job in the `high` partition that needs both
#      nodes whole (PreemptMode=REQUEUE).
# Asserts: every attempt saved a checkpoint on the TERM and exited 75 (no SIGKILL after KillWait, no
# FAILED job); each requeued attempt resumed from the newest checkpoint of the one before; the job ends
# COMPLETED after 2 restarts; the one --output file holds all 3 attempts (--open-mode=append); the
# adapter is byte-identical to an uninterrupted 2-rank run's.
# shellcheck source=tests/cluster/lib.sh
source "$(dirname "$0")/lib.sh"
cl_init slurm_requeue
cl_need_root
cl_need_slurm
cl_fixture
cl_slurm_up 2

out=$CL_WORK/run
log=$CL_WORK/job.out
job=$(cl_submit slurm_multinode.sbatch "$out" "$log")
cl_log "submitted job $job"

cl_wait_for 120 "checkpoint-4" cl_has_checkpoint "$out" 4
scontrol requeue "$job"
cl_log "scontrol requeue $job"
cl_wait_for 120 "the requeued attempt to start" cl_restarts_reached "$job" 1
cl_wait_for 120 "the second attempt to resume" cl_resumes_reached "$log" 1
first=$(cl_resumed_steps "$log")
# Its next periodic checkpoint: the signal handlers are installed by then (a TERM before zlora's training
# loop starts ends the process without a checkpoint, which is not what this test is about).
cl_wait_for 120 "a checkpoint after the resume" cl_has_checkpoint "$out" $(((first / 2 + 1) * 2))
high=$(sbatch --parsable --partition=high --nodes=2 --ntasks-per-node=2 --cpus-per-task=1 \
  --output="$CL_WORK/high.out" --wrap "echo high-priority job ran")
cl_log "submitted job $high to partition high (preempts $job)"
cl_wait_job "$high" 120
cl_expect_job "$high" COMPLETED 0 0:0
cl_wait_job "$job" 240

cl_expect_job "$job" COMPLETED 2 0:0
cl_expect_log "$log" "zlora job: job $job attempt" 3
cl_expect_log "$log" "DUE TO JOB REQUEUE"
cl_expect_log "$log" "DUE TO PREEMPTION"
# Each interruption: both ranks checkpointed and exited 75.
cl_expect_log "$log" "warning: preempted" 4
cl_expect_log "$log" "Exited with exit code 75" 4
cl_expect_log "$log" "zlora job: finished" 1
steps=$(cl_resumed_steps "$log")
read -r s1 s2 <<< "$steps"
if [[ -z "${s2:-}" ]] || ((s1 < 4 || s2 <= s1)); then cl_fail "resumed from steps '$steps', expected two increasing steps, the first >= 4"; fi
# What each attempt resumed from was the checkpoint the attempt before saved on the TERM.
for s in $s1 $s2; do
  (($(cl_signal_saves "$log" "$s") > 0)) || cl_fail "no attempt saved checkpoint-$s on the TERM"
done
cl_log "resumed from checkpoint-$s1, then checkpoint-$s2"
cl_same_adapter "$out" ref-np2-z2-12
grep -q '"global_step": 12' "$out/trainer_state.json" || cl_fail "trainer_state.json is not at step 12"
