#!/usr/bin/env bash
# jobs/slurm_1node_8gpu.sbatch, unedited, on a 1-node Slurm rig, submitted with command-line overrides the
# CPU rig can satisfy (--ntasks-per-node=2 --cpus-per-task=1 --gres=gpu:2 for the script's 8 x 12 CPUs
# and gpu:8): 2 ranks on n1, ZeRO 2, the fixture's 12 steps. Preempted by `scancel --signal=TERM`
# (SIGTERM to the tasks of the job step, the ranks; not to the batch shell or srun). Not `--full`: that
# sends srun the TERM too, srun cancels the step ("forcing job termination") and the ranks are killed
# within a second, before they can save (seen: FAILED, exit 137, not requeued; docs/launching.md).
# Asserts: both ranks got the TERM (signal 15), saved a checkpoint and exited 75; the script requeued
# the job itself; the requeued attempt ran on n1 with 2 tasks, resumed from the
# checkpoint saved on the signal, and the job ends COMPLETED after 1 restart, both attempts in its one
# log; the adapter is byte-identical to an uninterrupted 2-rank run's.
# shellcheck source=tests/cluster/lib.sh
source "$(dirname "$0")/lib.sh"
cl_init slurm_1node
cl_need_root
cl_need_slurm
cl_fixture
cl_slurm_up 1

out=$CL_WORK/run
log=$CL_WORK/job.out
job=$(cl_submit slurm_1node_8gpu.sbatch "$out" "$log" --nodes=1 --ntasks-per-node=2 --gres=gpu:2)
cl_log "submitted job $job (jobs/slurm_1node_8gpu.sbatch, 1 node x 2 tasks)"

cl_wait_for 120 "checkpoint-2" cl_has_checkpoint "$out" 2
scancel --signal=TERM "$job"
cl_log "scancel --signal=TERM $job"
cl_wait_job "$job" 240

cl_expect_job "$job" COMPLETED 1 0:0
[[ "$(cl_job_field "$job" NodeList)" == n1 && "$(cl_job_field "$job" NumTasks)" == 2 ]] ||
  cl_fail "job $job ran on $(cl_job_field "$job" NodeList) with $(cl_job_field "$job" NumTasks) task(s), not n1 with 2"
cl_expect_log "$log" "zlora job: job $job attempt" 2
cl_expect_log "$log" "on n1, srun, 2 task(s)" 2
cl_expect_log "$log" "warning: preempted (signal 15)" 2
# srun reports both ranks of the node on one line ("tasks 0-1: ...") or one line each, as they end.
exited=$(($(grep -cE 'n1: task [01]: Exited with exit code 75' "$log") + 2 * $(cl_count "$log" 'n1: tasks 0-1: Exited with exit code 75')))
((exited == 2)) || cl_fail "srun reported $exited of the 2 ranks exiting with 75"
cl_expect_log "$log" "zlora job: preempted (exit 75), requeueing" 1
cl_expect_log "$log" "scontrol requeue $job failed" 0
cl_expect_log "$log" "zlora job: finished" 1
step=$(cl_resumed_steps "$log")
[[ "$step" =~ ^[0-9]+$ ]] || cl_fail "expected one resume, got '$step'"
((step >= 2)) || cl_fail "resumed from step $step, before checkpoint-2"
(($(cl_signal_saves "$log" "$step" 15) == 2)) ||
  cl_fail "the 2 ranks did not both report saving checkpoint-$step on the signal"
cl_log "resumed from checkpoint-$step"
cl_same_adapter "$out" ref-np2-z2-12
grep -q '"global_step": 12' "$out/trainer_state.json" || cl_fail "trainer_state.json is not at step 12"
