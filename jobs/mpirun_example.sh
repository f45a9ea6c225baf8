#!/bin/bash
# zlora without Slurm: OpenMPI's mpirun on one node or a host list.
#   jobs/mpirun_example.sh configs/qwen2.5-7b_lora_sft.yaml                   # 8 GPUs of this node
#   NP=16 HOSTS=node1:8,node2:8 jobs/mpirun_example.sh CONFIG.yaml --deepspeed configs/deepspeed/ds_z1.json
#   NP=2 jobs/mpirun_example.sh CONFIG.yaml --comm mpi                        # 2 ranks sharing one GPU
# Preemption: SIGUSR1 to this script (or to any rank) makes zlora save a checkpoint at the next step
# boundary and exit with 75; the script then relaunches from `latest`, at most MAX_REQUEUES times.
# SIGTERM/SIGINT to this script also checkpoint, but stop: run the script again with RESUME=1 to go on.
# RESUME=1 marks a launch as a restart (resume from output_dir's checkpoint, or start over when there is
# none, see jobs/resume_args.sh). OUTPUT_DIR overrides the output_dir read from the flags or the YAML.
# ZLORA_KILL_GRACE (seconds, default 30) is OpenMPI's odls_base_sigkill_timeout: when mpirun itself is
# sent SIGTERM (a TERM to this script's whole process group, `timeout`, a plain `kill` of mpirun) it
# sends the ranks SIGCONT, then SIGTERM after this long, then SIGKILL after as long again. OpenMPI's
# default of 1 s kills a rank that is in the middle of a long step before it reaches the step boundary
# where it saves; 30 s covers a step and a checkpoint. mpirun then ends with 1, not the ranks' 75: a run
# that was signalled and wrote a checkpoint during the launch is taken as preempted (75) all the same.
# The price: once any rank exits non-zero (75 too), mpirun takes 2 x the grace to return, even when
# every rank has exited already (docs/launching.md). Tests that preempt on purpose set 1-5.
set -euo pipefail

CONFIG=${1:?usage: $0 CONFIG.yaml [zlora train flags]}
shift
NP=${NP:-8}
ZLORA=${ZLORA:-zlora}
MAX_REQUEUES=${MAX_REQUEUES:-10}
KILL_GRACE=${ZLORA_KILL_GRACE:-30}
HOST_ARGS=()
if [[ -n "${HOSTS:-}" ]]; then HOST_ARGS=(--host "$HOSTS"); fi
# Extra mpirun options, e.g. MPIRUN_ARGS=--oversubscribe when NP exceeds the cores.
read -r -a EXTRA_ARGS <<< "${MPIRUN_ARGS:-}"
# shellcheck source=jobs/resume_args.sh
source "$(dirname "${BASH_SOURCE[0]}")/resume_args.sh"
OUT=$(zlora_output_dir "$CONFIG" "$@")

MPIRUN_PID=""
STOP=0
SIGNALLED=0
# mpirun forwards SIGUSR1 to the ranks; SIGTERM it would turn into a kill, so the ranks get USR1 too.
forward() {
  if [[ -n "$MPIRUN_PID" ]]; then kill -USR1 "$MPIRUN_PID" 2> /dev/null || true; fi
}
trap 'echo "zlora job: USR1, asking the ranks to checkpoint; the job will be relaunched"; SIGNALLED=1; forward' USR1
trap 'echo "zlora job: stop requested, asking the ranks to checkpoint"; STOP=1; SIGNALLED=1; forward' TERM INT

restarted=${RESUME:-0}
for ((attempt = 0; ; attempt++)); do
  mapfile -t RESUME_ARGS < <(zlora_resume_args "$restarted" "$OUT")
  step_before=$(zlora_latest_step "$OUT")
  # -x exports the variables to every rank (remote hosts too); --bind-to none leaves CPU placement to
  # OpenMP; --map-by ppr:N:node would pin N ranks per node.
  mpirun -np "$NP" "${HOST_ARGS[@]}" "${EXTRA_ARGS[@]}" --bind-to none --mca odls_base_sigkill_timeout "$KILL_GRACE" \
    -x NCCL_DEBUG="${NCCL_DEBUG:-WARN}" -x OMP_NUM_THREADS="${OMP_NUM_THREADS:-8}" -x PATH -x LD_LIBRARY_PATH \
    "$ZLORA" train "$CONFIG" "$@" "${RESUME_ARGS[@]}" &
  MPIRUN_PID=$!
  zlora_wait_child "$MPIRUN_PID"
  rc=$ZLORA_CHILD_RC
  MPIRUN_PID=""
  # Signalled: mpirun may have been sent the signal too (it then ends with 1 whatever the ranks did).
  if ((SIGNALLED)); then rc=$(zlora_preempted_status "$rc" "$step_before" "$OUT"); fi
  SIGNALLED=0
  if ((rc != 75)) || ((STOP)); then exit "$rc"; fi
  if ((attempt >= MAX_REQUEUES)); then
    echo "zlora job: preempted again after $MAX_REQUEUES relaunches; giving up (run again with RESUME=1)" >&2
    exit "$rc"
  fi
  echo "zlora job: zlora checkpointed and exited with 75 (preempted); relaunching from the latest checkpoint"
  restarted=1
done
