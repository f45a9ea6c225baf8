# shellcheck shell=bash
# Sourced by the jobs/slurm_*.sbatch scripts (after resume_args.sh): runs `zlora train` as the job step
# inside the batch job and turns a preemption into a requeue. Tested under a real Slurm 22.05 by
# tests/cluster/ (tools/cluster/slurm_rig.sh: slurmctld and several slurmd on one host).
#
# zlora_srun_train CONFIG [zlora train flags...]
#   - A requeued run (SLURM_RESTART_COUNT > 0), or one submitted with RESUME=1 (a resubmission, e.g.
#     with another node count), resumes from output_dir's newest complete checkpoint, or starts over
#     when the earlier attempt died before its first one (jobs/resume_args.sh).
#   - USR1 or TERM to the batch shell (Slurm's --signal=B:USR1@T before the time limit; `scancel
#     --batch --signal=...`; the TERM that Slurm's own preemption, time limit, `scancel` or `scontrol
#     requeue` sends to every process of the job) is passed to the ranks as USR1: zlora saves a
#     checkpoint at the next step boundary and exits with 75. A signal that arrives before the step
#     started skips the launch (nothing to save) and requeues.
#   - The step's status 75 requeues the job (`scontrol requeue`); when Slurm is requeueing it already,
#     or the job was submitted with --no-requeue, the script exits with 75 instead. Any other status
#     ends the job, so a finished run (0) or an error is never restarted in a loop.
#
# ZLORA_LAUNCHER: srun (default) or mpirun.
#   srun    `srun --mpi=pmix --kill-on-bad-exit=0 --wait=ZLORA_SRUN_WAIT`: one rank per task, PMIx
#           wires them up. Needs Slurm's mpi_pmix plugin (`srun --mpi=list`). Not `--mpi=pmi2`:
#           Debian's OpenMPI (Ubuntu's is built the same way) lacks Slurm's PMI-2, and MPI_Init fails
#           ("OMPI was not built with SLURM's PMI support").
#   mpirun  OpenMPI's mpirun inside the allocation (it starts its orted daemons through srun itself):
#           for a Slurm without PMIx. `--mca odls_base_sigkill_timeout ZLORA_KILL_GRACE`: the time a
#           signalled orted/mpirun gives the ranks before SIGTERM and again before SIGKILL (OpenMPI's
#           default of 1 s kills a rank in the middle of a long step, before it can save). When Slurm
#           signals the orted step, mpirun ends with an error (a lost daemon) although the ranks saved
#           and exited with 75: a launch that wrote a checkpoint counts as preempted (75) then
#           (zlora_preempted_status in resume_args.sh).
# ZLORA_SRUN_WAIT (seconds, default 60): how long srun lets the other ranks run after the first one
#   ended (srun --wait). Ranks end together (after the final barrier, or after a checkpoint), so this
#   only matters when a rank died: the others, which may be blocked in a collective until ddp_timeout
#   (default 1800 s), are ended by srun after this.
# ZLORA_KILL_GRACE (seconds, default 30): see mpirun above. Slurm's KillWait (default 30 s) caps it:
#   Slurm sends SIGKILL to everything then. Once a rank exits non-zero (75 too), mpirun takes 2 x the
#   grace to return, even when every rank has exited (docs/launching.md).

zlora_srun_train() {
  local config=$1
  shift
  local restarted=0
  if [[ "${SLURM_RESTART_COUNT:-0}" -gt 0 || "${RESUME:-0}" == 1 ]]; then restarted=1; fi
  local launcher=${ZLORA_LAUNCHER:-srun}
  case "$launcher" in
    srun | mpirun) ;;
    *)
      echo "zlora job: ZLORA_LAUNCHER must be srun or mpirun, not '$launcher'" >&2
      exit 2
      ;;
  esac
  # Set before the step exists too, so that the traps below never see an unset variable (set -u would
  # end the script inside the trap, and the job with it).
  _zlora_step_pid=""
  _zlora_signalled=""
  # USR1 and TERM mean the same to zlora (checkpoint, exit 75). USR1 is what the launcher is sent: srun
  # and mpirun pass it to every rank on every node, while a TERM to srun makes it cancel the step, and
  # a TERM to mpirun makes it end the ranks after the kill grace and exit with 1.
  trap '_zlora_forward USR1' USR1
  trap '_zlora_forward TERM' TERM

  echo "zlora job: job $SLURM_JOB_ID attempt $((${SLURM_RESTART_COUNT:-0} + 1)) on ${SLURM_JOB_NODELIST:-?}, $launcher, ${SLURM_NTASKS:-?} task(s) ($(date -Is))"
  local out
  out=$(zlora_output_dir "$config" "$@")
  local -a resume
  mapfile -t resume < <(zlora_resume_args "$restarted" "$out")
  local step_before
  step_before=$(zlora_latest_step "$out")

  if [[ -n "$_zlora_signalled" ]]; then
    echo "zlora job: $_zlora_signalled before the ranks started; requeueing without running"
    _zlora_requeue
  fi
  if [[ "$launcher" == srun ]]; then
    # --kill-on-bad-exit=0 (Slurm's own default is KillOnBadExit=0, but sites may set 1): a rank's exit
    # 75 is not a failure; with 1, srun kills the other ranks as soon as the first one exits 75 (before
    # they finished their part of the checkpoint), and the job fails (143) instead of being requeued.
    # --wait: see ZLORA_SRUN_WAIT above.
    srun --mpi=pmix --kill-on-bad-exit=0 --wait="${ZLORA_SRUN_WAIT:-60}" \
      "$ZLORA" train "$config" "$@" "${resume[@]}" &
  else
    # One rank per Slurm task (mpirun reads the allocation); -x passes these variables to the ranks.
    local -a xenv=()
    local v
    for v in NCCL_DEBUG OMP_NUM_THREADS PATH LD_LIBRARY_PATH; do
      if [[ -n "${!v+set}" ]]; then xenv+=(-x "$v"); fi
    done
    mpirun --bind-to none --mca odls_base_sigkill_timeout "${ZLORA_KILL_GRACE:-30}" "${xenv[@]}" \
      "$ZLORA" train "$config" "$@" "${resume[@]}" &
  fi
  _zlora_step_pid=$!
  # A signal between `… &` and the line above found no pid to forward to: forward it now.
  if [[ -n "$_zlora_signalled" ]]; then kill -USR1 "$_zlora_step_pid" 2> /dev/null || true; fi
  zlora_wait_child "$_zlora_step_pid"
  local rc=$ZLORA_CHILD_RC
  _zlora_step_pid=""
  if [[ "$launcher" == mpirun ]]; then rc=$(zlora_preempted_status "$rc" "$step_before" "$out"); fi
  # 75: zlora checkpointed on USR1/TERM. The requeued job gets SLURM_RESTART_COUNT > 0 and resumes.
  if ((rc == 75)); then
    echo "zlora job: preempted (exit 75), requeueing; the next run resumes from the latest checkpoint"
    _zlora_requeue
  fi
  if ((rc == 0)); then echo "zlora job: finished ($(date -Is))"; else echo "zlora job: $launcher ended with $rc; not requeued ($(date -Is))"; fi
  exit "$rc"
}

_zlora_forward() {
  _zlora_signalled=$1
  if [[ -n "$_zlora_step_pid" ]]; then
    echo "zlora job: $1 ($(date -Is)), asking the ranks to checkpoint"
    kill -USR1 "$_zlora_step_pid" 2> /dev/null || true
  fi
}

# Requeues this job and ends the script. When Slurm is requeueing the job already (preemption with
# PreemptMode=REQUEUE, `scontrol requeue` from outside), scontrol refuses; Slurm's requeue stands. If
# the job cannot be requeued at all (--no-requeue, or JobRequeue=0), exit 75 leaves it FAILED with
# that code, for the user to resubmit (with RESUME=1 to resume, on any node count).
_zlora_requeue() {
  if scontrol requeue "$SLURM_JOB_ID"; then exit 0; fi
  echo "zlora job: scontrol requeue $SLURM_JOB_ID failed (already being requeued by Slurm, or not requeueable); exiting with 75" >&2
  exit 75
}
