#!/usr/bin/env bash
# shellcheck disable=SC2015 # `check && check || cl_fail`: cl_fail is meant to run when any check fails
# The jobs/ scripts' logic without a cluster (runs anywhere, no root): resume_args.sh's helpers, and the
# sbatch scripts and jobs/mpirun_example.sh driven with stand-ins for srun, mpirun and scontrol on PATH.
# Asserts: only complete checkpoint-<digits> directories count (not .tmp, not .damaged*, numeric
# order); a launcher error after a checkpoint written during the launch is taken as preempted (75),
# without one it stays an error; the sbatch scripts carry --open-mode=append, --requeue and
# --signal=B:USR1, and run srun --mpi=pmix --kill-on-bad-exit=0; a TERM or USR1 to the batch shell
# reaches srun as USR1; srun's 75 requeues (scontrol requeue), or exits 75 when requeueing is refused;
# 0 and other codes are passed on, never requeued; RESUME=1 and SLURM_RESTART_COUNT resume;
# ZLORA_LAUNCHER=mpirun passes odls_base_sigkill_timeout; mpirun_example.sh passes it too and exits
# 75 when it was sent TERM and mpirun ended with 1 after the ranks saved. Plus bash -n of every script,
# and shellcheck when it is installed.
# shellcheck source=tests/cluster/lib.sh
source "$(dirname "$0")/lib.sh"
cl_init jobs_scripts
src=$CL_SRC
w=$CL_WORK
export STUB_LOG=$w/stub.log

# ---- resume_args.sh ----
# shellcheck source=jobs/resume_args.sh
source "$src/jobs/resume_args.sh"
d=$w/out
mkdir -p "$d"/{checkpoint-9,checkpoint-10.tmp,checkpoint-12.damaged,checkpoint-14.damaged-2,checkpoint-x,checkpoint-3}
for c in checkpoint-10.tmp checkpoint-12.damaged checkpoint-14.damaged-2 checkpoint-x checkpoint-3; do
  echo '{}' > "$d/$c/manifest.json"
done
[[ "$(zlora_latest_step "$d")" == 3 ]] || cl_fail "latest step '$(zlora_latest_step "$d")', expected 3 (.tmp, .damaged*, non-numeric and manifest-less ignored)"
echo '{}' > "$d/checkpoint-9/manifest.json"
mkdir -p "$d/checkpoint-10" && echo '{}' > "$d/checkpoint-10/manifest.json"
[[ "$(zlora_latest_step "$d")" == 10 ]] || cl_fail "latest step '$(zlora_latest_step "$d")', expected 10 (numeric, not lexical, order)"
e=$w/only-damaged
mkdir -p "$e/checkpoint-4.damaged" "$e/checkpoint-6.tmp"
echo '{}' > "$e/checkpoint-4.damaged/manifest.json"
echo '{}' > "$e/checkpoint-6.tmp/manifest.json"
! zlora_has_checkpoint "$e" || cl_fail "a damaged or .tmp checkpoint counted as one"
[[ "$(zlora_resume_args 1 "$e" 2> /dev/null | tr '\n' ' ')" == "--overwrite_output_dir true " ]] || cl_fail "restart with only damaged checkpoints must start over"
[[ "$(zlora_resume_args 1 "$d" | tr '\n' ' ')" == "--resume_from_checkpoint latest " ]] || cl_fail "restart with a checkpoint must resume"
[[ -z "$(zlora_resume_args 0 "$d")" ]] || cl_fail "a first start must pass no flags"
[[ -z "$(zlora_latest_step "")" && -z "$(zlora_latest_step "$w/nowhere")" ]] || cl_fail "latest step of no directory must be empty"
check_status() { # RC BEFORE DIR EXPECTED
  local got
  got=$(zlora_preempted_status "$1" "$2" "$3" 2> /dev/null)
  [[ "$got" == "$4" ]] || cl_fail "zlora_preempted_status $1 '$2' $3: $got, expected $4"
}
check_status 0 "" "$d" 0
check_status 75 10 "$d" 75
check_status 1 9 "$d" 75   # checkpoint-10 is newer than the launch's 9
check_status 205 "" "$d" 75
check_status 1 10 "$d" 1   # nothing new: an error stays an error
check_status 137 "" "$e" 137 # no checkpoint at all
cl_log "resume_args.sh: checkpoint discovery and status mapping"

# ---- the sbatch scripts, under stand-ins ----
mkdir -p "$w/bin"
cat > "$w/bin/srun" << 'EOS'
#!/bin/bash
echo "srun $*" >> "$STUB_LOG"
on_usr1() {
  echo "srun got USR1" >> "$STUB_LOG"
  mkdir -p "$STUB_OUT/checkpoint-7" && echo '{}' > "$STUB_OUT/checkpoint-7/manifest.json"
  exit 75
}
trap on_usr1 USR1
case "$STUB_MODE" in
  exit*) exit "${STUB_MODE#exit}" ;;
  wait) for _ in $(seq 300); do sleep 0.1; done; exit 99 ;;
esac
EOS
# shellcheck disable=SC2016 # the stand-in's own variables
sed 's/^echo "srun/echo "mpirun/; s/srun got USR1/mpirun got USR1/; s/^  exit 75$/  exit "${STUB_USR1_EXIT:-75}"/' "$w/bin/srun" > "$w/bin/mpirun"
cat > "$w/bin/scontrol" << 'EOS'
#!/bin/bash
echo "scontrol $*" >> "$STUB_LOG"
exit "${STUB_SCONTROL_RC:-0}"
EOS
chmod +x "$w/bin"/*

for f in "$src"/jobs/slurm_*.sbatch; do
  for opt in "--open-mode=append" "--requeue" "--signal=B:USR1@"; do
    grep -q -- "^#SBATCH $opt" "$f" || cl_fail "$f lacks #SBATCH $opt"
  done
  ! grep -q -- "--kill-on-bad-exit=1" "$f" || cl_fail "$f still passes --kill-on-bad-exit=1"
done

yaml=$w/job.yaml
echo "output_dir: $w/job-out" > "$yaml"
# run_batch SCRIPT [ENV=VALUE...]: the batch script as Slurm would start it; its status in $rc.
run_batch() {
  local script=$1
  shift
  : > "$STUB_LOG"
  rc=0
  env PATH="$w/bin:$PATH" SLURM_JOB_ID=42 SLURM_SUBMIT_DIR="$src" ZLORA=/bin/false STUB_OUT="$w/job-out" "$@" \
    bash "$script" "$yaml" --seed 1 > "$w/batch.log" 2>&1 || rc=$?
}
for f in "$src"/jobs/slurm_*.sbatch; do
  name=$(basename "$f")
  rm -rf "$w/job-out"
  run_batch "$f" STUB_MODE=exit0
  ((rc == 0)) || cl_fail "$name: srun 0 -> script $rc"
  grep -q -- "^srun --mpi=pmix --kill-on-bad-exit=0 --wait=60 /bin/false train $yaml --seed 1\$" "$STUB_LOG" ||
    cl_fail "$name: srun called as: $(cat "$STUB_LOG")"
  ! grep -q "^scontrol" "$STUB_LOG" || cl_fail "$name: a finished run was requeued"
  run_batch "$f" STUB_MODE=exit3
  ((rc == 3)) || cl_fail "$name: srun 3 -> script $rc"
  ! grep -q "^scontrol" "$STUB_LOG" || cl_fail "$name: a failed run was requeued"
  run_batch "$f" STUB_MODE=exit75
  ((rc == 0)) && grep -q "^scontrol requeue 42\$" "$STUB_LOG" || cl_fail "$name: srun 75 -> script $rc, $(cat "$STUB_LOG")"
  run_batch "$f" STUB_MODE=exit75 STUB_SCONTROL_RC=1
  ((rc == 75)) || cl_fail "$name: srun 75 with the requeue refused -> script $rc (expected 75)"
  # A restart resumes (a checkpoint exists by now: checkpoint-7 below, or made here).
  mkdir -p "$w/job-out/checkpoint-2" && echo '{}' > "$w/job-out/checkpoint-2/manifest.json"
  for how in SLURM_RESTART_COUNT=1 RESUME=1; do
    run_batch "$f" STUB_MODE=exit0 "$how"
    grep -q -- "--seed 1 --resume_from_checkpoint latest\$" "$STUB_LOG" || cl_fail "$name: $how did not resume: $(cat "$STUB_LOG")"
  done
  # TERM and USR1 to the batch shell reach srun as USR1; srun's 75 then requeues.
  for sig in TERM USR1; do
    : > "$STUB_LOG"
    env PATH="$w/bin:$PATH" SLURM_JOB_ID=42 SLURM_SUBMIT_DIR="$src" ZLORA=/bin/false STUB_OUT="$w/job-out" STUB_MODE=wait \
      bash "$f" "$yaml" > "$w/batch.log" 2>&1 &
    pid=$!
    cl_wait_for 20 "srun to start" grep -q "^srun" "$STUB_LOG"
    kill -"$sig" "$pid"
    rc=0
    wait "$pid" || rc=$?
    ((rc == 0)) && grep -q "^srun got USR1\$" "$STUB_LOG" && grep -q "^scontrol requeue 42\$" "$STUB_LOG" ||
      cl_fail "$name: $sig to the batch shell -> script $rc; $(cat "$STUB_LOG"; cat "$w/batch.log")"
    grep -q "zlora job: $sig" "$w/batch.log" || cl_fail "$name: the script did not log the $sig"
  done
done
cl_log "sbatch scripts: srun flags, requeue on 75 only, TERM/USR1 forwarded, RESUME=1"

# ZLORA_LAUNCHER=mpirun: the kill grace is passed; mpirun's error after a checkpoint requeues.
rm -rf "$w/job-out"
run_batch "$src/jobs/slurm_multinode.sbatch" STUB_MODE=exit0 ZLORA_LAUNCHER=mpirun
grep -q -- "^mpirun --bind-to none --mca odls_base_sigkill_timeout 30 .*/bin/false train $yaml --seed 1\$" "$STUB_LOG" ||
  cl_fail "mpirun launcher called as: $(cat "$STUB_LOG")"
: > "$STUB_LOG"
env PATH="$w/bin:$PATH" SLURM_JOB_ID=42 SLURM_SUBMIT_DIR="$src" ZLORA=/bin/false STUB_OUT="$w/job-out" STUB_MODE=wait \
  STUB_USR1_EXIT=205 ZLORA_LAUNCHER=mpirun ZLORA_KILL_GRACE=7 bash "$src/jobs/slurm_multinode.sbatch" "$yaml" > "$w/batch.log" 2>&1 &
pid=$!
cl_wait_for 20 "mpirun to start" grep -q "^mpirun" "$STUB_LOG"
grep -q "odls_base_sigkill_timeout 7 " "$STUB_LOG" || cl_fail "ZLORA_KILL_GRACE not passed: $(cat "$STUB_LOG")"
kill -TERM "$pid"
rc=0
wait "$pid" || rc=$?
((rc == 0)) && grep -q "^scontrol requeue 42\$" "$STUB_LOG" && grep -q "but the ranks wrote checkpoint-7" "$w/batch.log" ||
  cl_fail "mpirun launcher: 205 after a checkpoint -> script $rc; $(cat "$STUB_LOG" "$w/batch.log")"
cl_log "sbatch scripts, ZLORA_LAUNCHER=mpirun: kill grace passed, mpirun's 205 after a checkpoint requeues"

# jobs/mpirun_example.sh: TERM to the script; mpirun (sent USR1) ends with 1 after the ranks saved.
rm -rf "$w/job-out"
: > "$STUB_LOG"
env PATH="$w/bin:$PATH" STUB_OUT="$w/job-out" STUB_MODE=wait STUB_USR1_EXIT=1 ZLORA=/bin/false NP=2 \
  bash "$src/jobs/mpirun_example.sh" "$yaml" > "$w/mpirun.log" 2>&1 &
pid=$!
cl_wait_for 20 "mpirun to start" grep -q "^mpirun" "$STUB_LOG"
grep -q -- "--mca odls_base_sigkill_timeout 30 " "$STUB_LOG" || cl_fail "mpirun_example.sh: no kill grace: $(cat "$STUB_LOG")"
kill -TERM "$pid"
rc=0
wait "$pid" || rc=$?
((rc == 75)) || cl_fail "mpirun_example.sh: TERM, mpirun 1 after a checkpoint -> $rc, expected 75; $(cat "$w/mpirun.log")"
cl_log "mpirun_example.sh: kill grace passed; TERM with mpirun's 1 after a checkpoint exits 75"

# ---- syntax and lint ----
scripts=("$src"/jobs/*.sh "$src"/jobs/*.sbatch "$src"/tools/cluster/*.sh "$src"/tests/cluster/*.sh)
for f in "${scripts[@]}"; do bash -n "$f" || cl_fail "bash -n $f"; done
if command -v shellcheck > /dev/null 2>&1; then
  (cd "$src" && shellcheck -x "${scripts[@]#"$src"/}") || cl_fail "shellcheck found problems (above)"
  cl_log "bash -n and shellcheck: ${#scripts[@]} scripts"
else
  cl_log "bash -n: ${#scripts[@]} scripts (shellcheck not installed: not run)"
fi
