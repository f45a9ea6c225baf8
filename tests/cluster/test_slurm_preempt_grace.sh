#!/usr/bin/env bash
# Partition preemption with a grace time: jobs/slurm_multinode.sbatch, unedited, in partition `low` of a
# 2-node rig started with SLURM_RIG_GRACE_TIME=30 (GraceTime=30 on `low`; PreemptType=
# preempt/partition_prio, PreemptMode=REQUEUE), 1 rank per node, ZeRO 2, 12 steps, preempted by a job
# in partition `high` that needs both nodes whole.
# What Slurm 22.05 does then (seen with a sleeping job, and in this test's log): at once, SIGCONT and
# SIGTERM to the tasks of the job's steps only (the ranks; slurmstepd logs "STEP ... CANCELLED"); the
# batch shell and srun get nothing. Only when the grace time is over would Slurm requeue the job and
# send SIGTERM to all its processes (SIGKILL KillWait later). The script's --signal=B:USR1 is not sent
# (that needs PreemptParameters=send_user_signal). Here the ranks save within a second or two, srun
# ends with 75 and the script's own `scontrol requeue` succeeds (the job is still RUNNING), so the
# high-priority job starts long before the grace is over, and Slurm's preemption requeue never happens.
# Asserts: both ranks got SIGTERM (signal 15), saved a checkpoint and exited 75; the batch shell got no
# signal; the script requeued the job (its scontrol requeue did not fail; no "DUE TO PREEMPTION"; whether
# slurmstepd logs "DUE TO JOB REQUEUE" is a race with the batch shell's exit); the high job
# started less than the 30 s grace after its submission and ran; the requeued attempt resumed from the
# checkpoint saved on the TERM, the job ends COMPLETED with Restarts=1; the adapter is byte-identical
# to an uninterrupted 2-rank run's.
# shellcheck source=tests/cluster/lib.sh
source "$(dirname "$0")/lib.sh"
cl_init slurm_preempt_grace
cl_need_root
cl_need_slurm
cl_fixture
export SLURM_RIG_GRACE_TIME=30
cl_slurm_up 2
grep -q "^PartitionName=low .*GraceTime=30" "$SLURM_CONF" || cl_fail "the rig's partition low has no GraceTime=30"

out=$CL_WORK/run
log=$CL_WORK/job.out
job=$(cl_submit slurm_multinode.sbatch "$out" "$log")
cl_log "submitted job $job to partition low"

cl_wait_for 120 "checkpoint-2" cl_has_checkpoint "$out" 2
high=$(sbatch --parsable --partition=high --nodes=2 --ntasks-per-node=2 --cpus-per-task=1 \
  --output="$CL_WORK/high.out" --wrap "echo high-priority job ran")
t_pre=$(date +%s)
cl_log "submitted job $high to partition high (preempts $job)"
cl_wait_job "$high" 180
cl_expect_job "$high" COMPLETED 0 0:0
cl_expect_log "$CL_WORK/high.out" "high-priority job ran" 1
cl_wait_job "$job" 240

cl_expect_job "$job" COMPLETED 1 0:0
cl_expect_log "$log" "zlora job: job $job attempt" 2
cl_expect_log "$log" "warning: preempted (signal 15)" 2
cl_expect_log "$log" "Exited with exit code 75" 2
cl_expect_log "$log" "zlora job: TERM" 0
cl_expect_log "$log" "zlora job: USR1" 0
cl_expect_log "$log" "zlora job: preempted (exit 75), requeueing" 1
cl_expect_log "$log" "scontrol requeue $job failed" 0
cl_expect_log "$log" "DUE TO PREEMPTION" 0
waited=$(($(date -d "$(cl_job_field "$high" StartTime)" +%s) - $(date -d "$(cl_job_field "$high" SubmitTime)" +%s)))
((waited < 30)) || cl_fail "the high job started $waited s after its submission: the grace time ran out"
cl_log "the high job started $waited s after its submission (GraceTime 30)"
cl_expect_log "$log" "zlora job: finished" 1
step=$(cl_resumed_steps "$log")
[[ "$step" =~ ^[0-9]+$ ]] || cl_fail "expected one resume, got '$step'"
((step >= 2)) || cl_fail "resumed from step $step, before checkpoint-2"
(($(cl_signal_saves "$log" "$step" 15) == 2)) || cl_fail "the 2 ranks did not both report saving checkpoint-$step on the TERM"
cl_log "resumed from checkpoint-$step ($(($(date +%s) - t_pre)) s after the preemption)"
cl_same_adapter "$out" ref-np2-z2-12
grep -q '"global_step": 12' "$out/trainer_state.json" || cl_fail "trainer_state.json is not at step 12"
