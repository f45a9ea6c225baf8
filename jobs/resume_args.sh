# shellcheck shell=bash
# Sourced by the jobs/ scripts: how a (re)started job launches `zlora train`.
#
# zlora exits with 75 (EX_TEMPFAIL) after it saved a checkpoint on SIGUSR1/SIGTERM; the scripts then
# requeue (Slurm) or relaunch (mpirun) the job. A restarted job must resume, but
# `--resume_from_checkpoint latest` is refused when output_dir holds no complete checkpoint (a job
# killed, or preempted by a node failure, before its first save), and a fresh start is refused too
# while the killed attempt's logs are there. So a restart resumes when a checkpoint exists and
# otherwise starts over with --overwrite_output_dir (which removes only the run's own files). A first
# start passes neither: zlora then refuses an output_dir that holds another run's outputs.

# zlora_output_dir CONFIG [ARGS...]: the output_dir the run will use. $OUTPUT_DIR wins, then the last
# --output_dir flag, then the YAML's top-level `output_dir:`. Prints nothing if none is found.
zlora_output_dir() {
  if [[ -n "${OUTPUT_DIR:-}" ]]; then
    printf '%s\n' "$OUTPUT_DIR"
    return
  fi
  local config=$1 found="" prev=""
  shift
  for a in "$@"; do
    if [[ "$prev" == "--output_dir" ]]; then found=$a; fi
    if [[ "$a" == --output_dir=* ]]; then found=${a#--output_dir=}; fi
    prev=$a
  done
  if [[ -z "$found" && -f "$config" ]]; then
    # `output_dir: path` at the start of a line; quotes and a trailing comment are stripped.
    found=$(sed -n -E 's/^output_dir:[[:space:]]*["'\'']?([^"'\''#]*[^"'\''#[:space:]])["'\'']?[[:space:]]*(#.*)?$/\1/p' \
      "$config" | tail -n 1)
  fi
  if [[ -n "$found" ]]; then printf '%s\n' "$found"; fi
}

# zlora_latest_step DIR: the step of DIR's newest checkpoint-STEP directory that holds its manifest
# (written last; zlora re-verifies every file's hash when it resumes); nothing when there is none. Only
# names checkpoint-<digits> count: checkpoint-STEP.tmp (a save in progress or interrupted) and
# checkpoint-STEP.damaged* (a checkpoint that failed verification, moved aside by zlora) are not
# checkpoints to resume from.
zlora_latest_step() {
  local m name step best=""
  [[ -n "${1:-}" ]] || return 0
  for m in "$1"/checkpoint-*/manifest.json; do
    [[ -f "$m" ]] || continue
    name=${m%/manifest.json}
    name=${name##*/}
    [[ "$name" =~ ^checkpoint-([0-9]+)$ ]] || continue
    step=$((10#${BASH_REMATCH[1]}))
    if [[ -z "$best" ]] || ((step > best)); then best=$step; fi
  done
  if [[ -n "$best" ]]; then printf '%s\n' "$best"; fi
}

# zlora_has_checkpoint DIR: true when DIR holds a complete checkpoint (zlora_latest_step).
zlora_has_checkpoint() {
  [[ -n "$(zlora_latest_step "$1")" ]]
}

# zlora_wait_child PID: waits for background child PID and sets ZLORA_CHILD_RC to its exit status. A
# trapped signal interrupts `wait` (status > 128) while the child still runs: wait on for its own
# status. Sets a variable rather than printing, because `wait` in a $(...) subshell has no children.
zlora_wait_child() {
  local pid=$1
  ZLORA_CHILD_RC=0
  wait "$pid" || ZLORA_CHILD_RC=$?
  while ((ZLORA_CHILD_RC > 128)) && kill -0 "$pid" 2> /dev/null; do
    ZLORA_CHILD_RC=0
    wait "$pid" || ZLORA_CHILD_RC=$?
  done
}

# zlora_preempted_status RC STEP_BEFORE DIR: the exit status to act on after a launch that ended with
# RC, when the launcher cannot be trusted to pass on the ranks' 75: mpirun ends with 1 whenever it was
# sent SIGTERM itself, and inside a Slurm allocation it reports a lost daemon when Slurm signalled its
# orted step, although the ranks saved a checkpoint and exited with 75. Prints 75 when RC is an error
# but DIR holds a complete checkpoint newer than STEP_BEFORE (the newest step when the launch began,
# empty for none): the run made progress that a restart resumes from, so a crash loop is impossible.
# Prints RC otherwise.
zlora_preempted_status() {
  local rc=$1 before=$2 dir=$3 now
  if ((rc == 0 || rc == 75)); then
    echo "$rc"
    return
  fi
  now=$(zlora_latest_step "$dir")
  if [[ -n "$now" ]] && { [[ -z "$before" ]] || ((now > before)); }; then
    echo "zlora job: the launcher ended with $rc, but the ranks wrote checkpoint-$now during this launch: treating it as preempted (75)" >&2
    echo 75
    return
  fi
  echo "$rc"
}

# zlora_resume_args RESTARTED OUTPUT_DIR: the flags for this launch, one per line.
#   RESTARTED 0 (first start): none.
#   RESTARTED 1, a checkpoint in OUTPUT_DIR: --resume_from_checkpoint latest.
#   RESTARTED 1, none: --overwrite_output_dir true (start over; the killed attempt's logs go).
zlora_resume_args() {
  local restarted=$1 dir=$2
  if [[ "$restarted" != 1 ]]; then return 0; fi
  if [[ -z "$dir" ]]; then
    echo "zlora job: cannot tell the output_dir (set OUTPUT_DIR); resuming from latest" >&2
    printf '%s\n' --resume_from_checkpoint latest
  elif zlora_has_checkpoint "$dir"; then
    printf '%s\n' --resume_from_checkpoint latest
  else
    echo "zlora job: restarted, but $dir holds no complete checkpoint yet: starting over" >&2
    printf '%s\n' --overwrite_output_dir true
  fi
}
