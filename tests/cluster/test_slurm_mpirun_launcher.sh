#!/usr/bin/env bash
# jobs/slurm_multinode.sbatch with ZLORA_LAUNCHER=mpirun (OpenMPI's mpirun inside the allocation, for a
# Slurm without PMIx) on 2 nodes of the one-host Slurm rig, ZeRO 2, preempted by
# `scancel --signal=TERM JOB`. Slurm signals the step that runs mpirun's orted daemons: the ranks save
# a checkpoint and exit 75, but mpirun ends with an error (a lost daemon, not 75).
# Asserts: the script sees the checkpoint written during the launch and requeues all the same; the
# requeued attempt resumes from it and the job ends COMPLETED after 1 restart; the adapter is
# byte-identical to an uninterrupted 2-rank run's. ZLORA_KILL_GRACE=5 (odls_base_sigkill_timeout):
# the time a signalled orted waits before it ends the ranks, shortened from 30 s for the test.
# shellcheck source=tests/cluster/lib.sh
source "$(dirname "$0")/lib.sh"
cl_init slurm_mpirun_launcher
cl_need_root
cl_need_slurm
cl_fixture
cl_slurm_up 2

out=$CL_WORK/run
log=$CL_WORK/job.out
job=$(ZLORA_LAUNCHER=mpirun ZLORA_KILL_GRACE=5 cl_submit slurm_multinode.sbatch "$out" "$log")
cl_log "submitted job $job (ZLORA_LAUNCHER=mpirun)"
cl_wait_for 120 "checkpoint-2" cl_has_checkpoint "$out" 2
scancel --signal=TERM "$job"
cl_log "scancel --signal=TERM $job"
cl_wait_job "$job" 240

cl_expect_job "$job" COMPLETED 1 0:0
cl_expect_log "$log" "zlora job: job $job attempt" 2
cl_expect_log "$log" ", mpirun, 2 task(s)" 2
cl_expect_log "$log" "but the ranks wrote checkpoint-" 1
cl_expect_log "$log" "zlora job: preempted (exit 75), requeueing" 1
cl_expect_log "$log" "zlora job: finished" 1
step=$(sed -n 's/.*but the ranks wrote checkpoint-\([0-9]*\) during.*/\1/p' "$log")
[[ "$(cl_resumed_steps "$log")" == "$step" ]] || cl_fail "resumed from '$(cl_resumed_steps "$log")', not from checkpoint-$step"
((step >= 2)) || cl_fail "the TERM saved checkpoint-$step, before checkpoint-2"
cl_log "resumed from checkpoint-$step"
cl_same_adapter "$out" ref-np2-z2-12
