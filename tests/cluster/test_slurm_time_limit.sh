#!/usr/bin/env bash
# A real time limit: jobs/slurm_multinode.sbatch, unedited, on 2 nodes of the one-host Slurm rig (1 rank
# per node, ZeRO 2, 120 steps, a checkpoint every 20), submitted with --time=1 and
# --signal=B:USR1@20 on the command line. Nothing in the test signals the job: Slurm's controller sends
# the batch shell USR1 at its first time-limit check (every 30 s) at which now + 30 + 20 s >= the end
# time (slurmctld sends the --signal up to one check interval early), i.e. 10 to 40 s after the start,
# before the limit itself at 60 s. Attempt 1 (about 80 s of training) is still running then. While the
# requeued job waits (BeginTime, the rig's cred_expire), the test raises its TimeLimit to 10 minutes with
# `scontrol update`, so attempt 2 gets no warning and finishes.
# Asserts: the batch shell got USR1 10 s or more after the attempt started (no scancel reached the job:
# slurmctld logged no REQUEST_KILL_JOB for it) and forwarded it; both ranks
# saved a checkpoint and exited 75; the script requeued the job itself; Slurm's time limit never ended
# it (no TIMEOUT, no "DUE TO TIME LIMIT", no "Time limit exhausted" in slurmctld's log); attempt 2
# resumed from the checkpoint written on the USR1 and the job ends COMPLETED after 1 restart; the
# adapter is byte-identical to an uninterrupted 2-rank run's of the same 120 steps.
# shellcheck source=tests/cluster/lib.sh
source "$(dirname "$0")/lib.sh"
cl_init slurm_time_limit
cl_need_root
cl_need_slurm
cl_fixture
cl_ref_once 2 ref-np2-z2-120 --max_steps 120 --save_steps 20
cl_slurm_up 2

out=$CL_WORK/run
log=$CL_WORK/job.out
job=$(cl_submit slurm_multinode.sbatch "$out" "$log" --time=1 --signal=B:USR1@20 -- --max_steps 120 --save_steps 20)
cl_log "submitted job $job (--time=1 --signal=B:USR1@20)"
[[ "$(cl_job_field "$job" TimeLimit)" == 00:01:00 ]] || cl_fail "job $job has TimeLimit=$(cl_job_field "$job" TimeLimit), not 00:01:00"

# Attempt 1 ends on Slurm's USR1; the script's `scontrol requeue` leaves the job pending (BeginTime).
requeued_and_pending() { cl_restarts_reached "$job" 1 && cl_job_pending "$job"; }
cl_wait_for 120 "the job to be requeued after the time-limit warning" requeued_and_pending
scontrol update JobId="$job" TimeLimit=10
[[ "$(cl_job_field "$job" TimeLimit)" == 00:10:00 ]] || cl_fail "scontrol update did not raise job $job's TimeLimit"
cl_log "job $job requeued; TimeLimit raised to 10 min for attempt 2"
cl_wait_job "$job" 300

cl_expect_job "$job" COMPLETED 1 0:0
cl_expect_log "$log" "zlora job: job $job attempt" 2
# The batch shell got USR1 from Slurm (once: attempt 2 got none) and passed it to the ranks.
cl_expect_log "$log" "zlora job: USR1" 1
cl_expect_log "$log" "warning: preempted (signal 10)" 2
cl_expect_log "$log" "Exited with exit code 75" 2
cl_expect_log "$log" "zlora job: preempted (exit 75), requeueing" 1
cl_expect_log "$log" "scontrol requeue $job failed" 0
cl_expect_log "$log" "DUE TO TIME LIMIT" 0
cl_expect_log "$CL_RIG/log/slurmctld.log" "Time limit exhausted for JobId=$job" 0
# No scancel reached the job (slurmctld logs each one as REQUEST_KILL_JOB): the USR1 was Slurm's own.
cl_expect_log "$CL_RIG/log/slurmctld.log" "REQUEST_KILL_JOB JobId=$job" 0
cl_expect_log "$log" "zlora job: finished" 1
# When: the attempt's start and the USR1, from the script's own timestamps (date -Is).
started=$(date -d "$(sed -n 's/.*zlora job: job .* attempt 1 on .*(\(.*\))$/\1/p' "$log")" +%s)
warned=$(date -d "$(sed -n 's/.*zlora job: USR1 (\(.*\)), asking.*/\1/p' "$log")" +%s)
after=$((warned - started))
((after >= 9 && after <= 45)) || cl_fail "the USR1 came $after s after the start, expected 10..40 s (60 s limit - 20 s - one 30 s check)"
cl_log "Slurm's time-limit USR1 came $after s after attempt 1 started"
steps=$(cl_resumed_steps "$log")
[[ "$steps" =~ ^[0-9]+$ ]] || cl_fail "expected one resume, got '$steps'"
(($(cl_signal_saves "$log" "$steps" 10) == 2)) || cl_fail "attempt 1 did not save checkpoint-$steps on the USR1"
((steps > 0 && steps < 120)) || cl_fail "resumed from step $steps"
cl_log "resumed from checkpoint-$steps"
cl_same_adapter "$out" ref-np2-z2-120
grep -q '"global_step": 120' "$out/trainer_state.json" || cl_fail "trainer_state.json is not at step 120"
