#!/usr/bin/env bash
# A run resubmitted on another node count: jobs/slurm_multinode.sbatch, unedited, submitted with
# --no-requeue on 2 nodes (1 rank each, ZeRO 2) and stopped by `scancel --signal=TERM`, then
# resubmitted with RESUME=1 on 1 node:
#   a. 1 node x 2 ranks (the same world size): byte-identical to an uninterrupted 2-rank run;
#   b. 1 node x 1 rank (the world size halves): the same adapter as `zlora train --resume_from_checkpoint`
#      run by hand, on one process, from a copy of the same checkpoint.
# Asserts too: a job that cannot be requeued ends FAILED with exit code 75 (the script's scontrol
# requeue is refused; 75 tells the user it is resumable), after both ranks saved a checkpoint; the
# resubmission resumes from that checkpoint, logs the world-size change, and ends COMPLETED on n1 only.
# shellcheck source=tests/cluster/lib.sh
source "$(dirname "$0")/lib.sh"
cl_init slurm_node_count
cl_need_root
cl_need_slurm
cl_fixture
cl_slurm_up 2

# stop_on_two_nodes OUT LOG: a 2-node job, stopped by TERM after checkpoint-2; prints the step saved.
stop_on_two_nodes() {
  local out=$1 log=$2 job step
  job=$(cl_submit slurm_multinode.sbatch "$out" "$log" --no-requeue)
  cl_log "submitted job $job (2 nodes, --no-requeue)" >&2
  cl_wait_for 120 "checkpoint-2" cl_has_checkpoint "$out" 2
  scancel --signal=TERM "$job"
  cl_wait_job "$job" 120
  cl_expect_job "$job" FAILED 0 75:0 >&2
  [[ "$(cl_job_field "$job" NodeList)" == "n[1-2]" ]] || cl_fail "job $job ran on $(cl_job_field "$job" NodeList), not n[1-2]"
  cl_expect_log "$log" "warning: preempted (signal 15)" 2
  cl_expect_log "$log" "scontrol requeue $job failed" 1
  step=$(cl_signal_saved_step "$log" 15)
  cl_has_checkpoint "$out" "$step" || cl_fail "checkpoint-$step is not complete"
  echo "$step"
}

# resume_on_one_node OUT LOG TASKS STEP: RESUME=1 on 1 node with TASKS ranks; it must resume from STEP.
resume_on_one_node() {
  local out=$1 log=$2 tasks=$3 step=$4 job
  job=$(RESUME=1 cl_submit slurm_multinode.sbatch "$out" "$log" --nodes=1 --ntasks-per-node="$tasks")
  cl_log "submitted job $job (RESUME=1, 1 node x $tasks)"
  cl_wait_job "$job" 180
  cl_expect_job "$job" COMPLETED 0 0:0
  [[ "$(cl_job_field "$job" NodeList)" == n1 ]] || cl_fail "job $job ran on $(cl_job_field "$job" NodeList), not n1 alone"
  cl_expect_log "$log" "resumed from $out/checkpoint-$step at step $step (saved at world size 2, now $tasks)" 1
  cl_expect_log "$log" "zlora job: finished" 1
}

# a. 2 nodes x 1 -> 1 node x 2.
out=$CL_WORK/run-a
log=$CL_WORK/job-a.out # both jobs append to it (--open-mode=append)
step=$(stop_on_two_nodes "$out" "$log")
cl_log "a: stopped at checkpoint-$step on n[1-2]"
resume_on_one_node "$out" "$log" 2 "$step"
cl_expect_log "$log" "zlora job: job " 2
cl_same_adapter "$out" ref-np2-z2-12

# b. 2 nodes x 1 -> 1 node x 1: compared with a resume by hand from a copy of the same checkpoint.
out=$CL_WORK/run-b
log=$CL_WORK/job-b.out
step=$(stop_on_two_nodes "$out" "$log")
cl_log "b: stopped at checkpoint-$step on n[1-2]"
cp -a "$out" "$CL_WORK/run-b-by-hand"
resume_on_one_node "$out" "$log" 1 "$step"
"$CL_ZLORA" train "$CL_FIX/job.yaml" --output_dir "$CL_WORK/run-b-by-hand" --resume_from_checkpoint latest \
  > "$CL_WORK/by-hand.log" 2>&1 || cl_fail "the resume by hand failed: $(tail -5 "$CL_WORK/by-hand.log")"
cl_expect_log "$CL_WORK/by-hand.log" "resumed from $CL_WORK/run-b-by-hand/checkpoint-$step at step $step (saved at world size 2, now 1)" 1
cmp -s "$out/adapter_model.safetensors" "$CL_WORK/run-b-by-hand/adapter_model.safetensors" ||
  cl_fail "the 1-node resume's adapter differs from the resume by hand"
cl_log "b: adapter byte-identical to the resume by hand"
grep -q '"global_step": 12' "$out/trainer_state.json" || cl_fail "trainer_state.json is not at step 12"
