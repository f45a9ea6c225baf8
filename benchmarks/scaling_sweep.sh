#!/usr/bin/env bash
# Scaling experiments: runs `zlora train` over nodes x ranks per node x ZeRO stage x optimizer offload,
# through mpirun (hosts from a hostfile) or sbatch (jobs/slurm_multinode.sbatch, unedited), one output_dir
# per run, then `zlora scaling-report OUT`: OUT/scaling.{md,json,csv,svg,png} with time, samples/s,
# tokens/s, scaling efficiency against one node, peak memory and bytes communicated per step, and the plot
# of throughput and efficiency against nodes. See docs/benchmarks.md, "Scaling experiments".
#
#   benchmarks/scaling_sweep.sh --config job.yaml --out DIR [options] [-- zlora train flags...]
#
# Options (lists are comma-separated):
#   --launcher mpirun|sbatch   how runs start (default mpirun)
#   --nodes 1,2,4              node counts (default 1)
#   --ranks-per-node 1,8       ranks on each node (default 1)
#   --stages 0,1,2,3           ZeRO stages (default 2)
#   --offload none,cpu         optimizer offload (default none)
#   --variants z2-none,z3-cpu  stage-offload pairs instead of --stages x --offload
#   --config FILE              the zlora train YAML (required)
#   --steps N                  --max_steps N for every run
#   --out DIR                  the sweep directory (required); run R is DIR/runs/n{N}-r{R}-z{S}-{offload}
#   --zlora BIN                the zlora binary (default: $ZLORA, else build/bin/zlora, else zlora on PATH)
#   --force                    replace run directories left by an earlier sweep (those with sweep_run.json)
#   --timeout S                mpirun: end a run after S seconds (recorded as failed; default: no limit)
#   --dry-run                  print the launch commands; run nothing
#   mpirun:
#   --hostfile F               hosts, one a line (OpenMPI's "host slots=N" format; comments allowed); a
#                              run on N nodes uses the first N hosts with R slots each. Without it only
#                              --nodes 1 runs, on this host.
#   --mpirun "CMD"             the mpirun command (default mpirun; on the test rig
#                              "tools/cluster/netns_rig.sh mpirun")
#   --mpirun-args "ARGS"       extra mpirun arguments (e.g. "--bind-to none -x NCCL_DEBUG")
#   sbatch:
#   --sbatch-args "ARGS"       extra sbatch options (e.g. "--partition=gpu --gres=gpu:8 --exclusive")
#   --sbatch-script F          the batch script (default jobs/slurm_multinode.sbatch)
#   --serial                   one job at a time (default: all submitted at once, then waited for)
#                              An interrupt (Ctrl-C) stops the waiting only: scancel the jobs, named
#                              zlora-sweep-n{N}-r{R}-z{S}-{offload}, yourself.
#
# Every run is a row of the table: one that failed is recorded as failed with its reason (the exit code
# and the log's error line), never dropped. Exit codes: 0 every run succeeded; 3 the report was written
# but some run failed; 2 bad options; 1 anything else.
set -euo pipefail

self_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$self_dir/.." && pwd)

usage_error() {
  echo "scaling_sweep: $*" >&2
  echo "usage: $0 --config job.yaml --out DIR [--launcher mpirun|sbatch] [--nodes 1,2] [--ranks-per-node 1]" \
    "[--stages 2] [--offload none] [--steps N] [-- zlora train flags] (see the header of $0)" >&2
  exit 2
}
die() {
  echo "scaling_sweep: $*" >&2
  exit 1
}
log() { echo "[scaling_sweep] $*"; }

launcher=mpirun nodes_list=1 rpn_list=1 stages_list=2 offload_list=none variants="" config="" steps="" out=""
zlora=${ZLORA:-} force=0 timeout_s=0 dry_run=0 hostfile="" mpirun_cmd=mpirun mpirun_args="" sbatch_args=""
sbatch_script=$root/jobs/slurm_multinode.sbatch serial=0
extra=() nodes=() rpns=() stages=() offloads=() combos=()

need_value() { (($2 >= 2)) || usage_error "$1 needs a value"; }
while (($#)); do
  case "$1" in
    --) shift; extra=("$@"); break ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    --force) force=1; shift ;;
    --dry-run) dry_run=1; shift ;;
    --serial) serial=1; shift ;;
    --launcher | --nodes | --ranks-per-node | --stages | --offload | --variants | --config | --steps | --out | \
      --zlora | --timeout | --hostfile | --mpirun | --mpirun-args | --sbatch-args | --sbatch-script)
      need_value "$1" $#
      case "$1" in
        --launcher) launcher=$2 ;;
        --nodes) nodes_list=$2 ;;
        --ranks-per-node) rpn_list=$2 ;;
        --stages) stages_list=$2 ;;
        --offload) offload_list=$2 ;;
        --variants) variants=$2 ;;
        --config) config=$2 ;;
        --steps) steps=$2 ;;
        --out) out=$2 ;;
        --zlora) zlora=$2 ;;
        --timeout) timeout_s=$2 ;;
        --hostfile) hostfile=$2 ;;
        --mpirun) mpirun_cmd=$2 ;;
        --mpirun-args) mpirun_args=$2 ;;
        --sbatch-args) sbatch_args=$2 ;;
        --sbatch-script) sbatch_script=$2 ;;
      esac
      shift 2
      ;;
    *) usage_error "unknown option '$1' (zlora train flags go after --)" ;;
  esac
done

# ---- validation ----
[[ "$launcher" == mpirun || "$launcher" == sbatch ]] || usage_error "--launcher must be mpirun or sbatch, got '$launcher'"
[[ -n "$config" ]] || usage_error "--config job.yaml is required"
[[ -f "$config" ]] || usage_error "--config '$config' is not a file"
[[ -n "$out" ]] || usage_error "--out DIR is required"
[[ -z "$steps" || "$steps" =~ ^[1-9][0-9]*$ ]] || usage_error "--steps must be a positive integer, got '$steps'"
[[ "$timeout_s" =~ ^[0-9]+$ ]] || usage_error "--timeout must be a number of seconds, got '$timeout_s'"
split_list() { # NAME LIST REGEX WHAT: the list's items into array NAME, each matching REGEX
  local -n arr=$1
  IFS=, read -r -a arr <<< "$2"
  ((${#arr[@]})) || usage_error "$4: empty list"
  local x
  for x in "${arr[@]}"; do [[ "$x" =~ $3 ]] || usage_error "$4: '$x' is not valid (in '$2')"; done
}
split_list nodes "$nodes_list" '^[1-9][0-9]*$' "--nodes (positive integers)"
split_list rpns "$rpn_list" '^[1-9][0-9]*$' "--ranks-per-node (positive integers)"
if [[ -n "$variants" ]]; then
  split_list combos "$variants" '^z[0-3]-(none|cpu)$' "--variants (z{0-3}-{none|cpu}, e.g. z2-none,z3-cpu)"
else
  split_list stages "$stages_list" '^[0-3]$' "--stages (0, 1, 2 or 3)"
  split_list offloads "$offload_list" '^(none|cpu)$' "--offload (none or cpu)"
  for s in "${stages[@]}"; do for o in "${offloads[@]}"; do combos+=("z$s-$o"); done; done
fi
if [[ -z "$zlora" ]]; then
  if [[ -x "$root/build/bin/zlora" ]]; then zlora=$root/build/bin/zlora; else zlora=$(command -v zlora || true); fi
fi
[[ -n "$zlora" && -x "$zlora" ]] || usage_error "no zlora binary (build it, or pass --zlora BIN / set ZLORA)"
[[ "$zlora" == */* ]] && zlora=$(realpath "$zlora")
max_nodes=1
for n in "${nodes[@]}"; do if ((n > max_nodes)); then max_nodes=$n; fi; done
hosts=()
if [[ "$launcher" == mpirun ]]; then
  [[ -z "$sbatch_args" ]] || usage_error "--sbatch-args is for --launcher sbatch"
  if [[ -n "$hostfile" ]]; then
    [[ -f "$hostfile" ]] || usage_error "--hostfile '$hostfile' is not a file"
    mapfile -t hosts < <(sed 's/#.*//' "$hostfile" | awk 'NF {print $1}' | awk '!seen[$0]++')
    ((${#hosts[@]})) || usage_error "--hostfile '$hostfile' names no host"
  fi
  ((max_nodes == 1 || ${#hosts[@]} >= max_nodes)) ||
    usage_error "--nodes up to $max_nodes needs a --hostfile with at least $max_nodes hosts (it has ${#hosts[@]})"
else
  [[ -z "$hostfile" ]] || usage_error "--hostfile is for --launcher mpirun (Slurm picks the nodes)"
  [[ -f "$sbatch_script" ]] || usage_error "--sbatch-script '$sbatch_script' is not a file"
  ((timeout_s == 0)) ||
    usage_error "--timeout is for --launcher mpirun; under sbatch give the jobs a limit: --sbatch-args \"--time=MIN --no-requeue\""
  ((dry_run)) || command -v sbatch > /dev/null || usage_error "no sbatch command (is this a Slurm login node?)"
fi
config=$(cd "$(dirname "$config")" && pwd)/$(basename "$config")
out=$(realpath -m "$out")
((dry_run)) || mkdir -p "$out/runs"

json_str() { # a JSON string literal
  local s=${1//\\/\\\\}
  s=${s//\"/\\\"}
  s=${s//$'\t'/ }
  s=${s//$'\r'/ }
  s=${s//$'\n'/ | }
  printf '"%s"' "$(printf '%s' "$s" | tr -d '\000-\037\177')" # other control characters (colour codes)
}

# record DIR N R S O STATUS EXIT REASON WALL: DIR/sweep_run.json (atomically).
record() {
  local dir=$1
  cat > "$dir/sweep_run.json.tmp" << EOF
{"nodes": $2, "ranks_per_node": $3, "zero_stage": $4, "offload": "$5", "launcher": "$launcher",
 "status": "$6", "exit_code": $7, "reason": $(json_str "$8"), "wall_time_s": $9,
 "config": $(json_str "$config"), "steps": $(json_str "$steps"), "zlora": $(json_str "$zlora")}
EOF
  mv "$dir/sweep_run.json.tmp" "$dir/sweep_run.json"
}

# Why a run failed: its exit code and the last error line of its log.
failure_reason() {
  local rc=$1 logf=$2 line=""
  if [[ -f "$logf" ]]; then
    # zlora's own message first (the launcher's "task exited" lines come after it).
    line=$(grep -E 'zlora: (error|internal error)' "$logf" | tail -n 1 || true)
    [[ -n "$line" ]] || line=$(grep -E 'error:|Error|ERROR|Killed|timed out' "$logf" | tail -n 1 || true)
    [[ -n "$line" ]] || line=$(grep -v '^\s*$' "$logf" | tail -n 1 || true)
  fi
  if ((rc == 124)); then echo "timed out after ${timeout_s} s${line:+: $line}"; else echo "exit code $rc${line:+: $line}"; fi
}

train_args() { # S O DIR: the zlora train arguments of one run
  local a=("$config" --output_dir "$3" --zero_stage "$1" --offload_optimizer "$2")
  [[ -z "$steps" ]] || a+=(--max_steps "$steps")
  printf '%s\0' "${a[@]}" "${extra[@]}"
}

# mpirun_run N R S O DIR: one run through mpirun, in the foreground.
mpirun_run() {
  local n=$1 r=$2 dir=$5 cmd=() host="" i t0 rc=0
  # shellcheck disable=SC2206 # the override and extra arguments are word-split on purpose
  cmd=($mpirun_cmd $mpirun_args)
  if ((${#hosts[@]})); then
    for ((i = 0; i < n; i++)); do host+="${host:+,}${hosts[i]}:$r"; done
    cmd+=(--host "$host")
  fi
  cmd+=(-np $((n * r)) "$zlora" train)
  mapfile -d '' -t targs < <(train_args "$3" "$4" "$dir")
  cmd+=("${targs[@]}")
  ((timeout_s == 0)) || cmd=(timeout --signal=TERM --kill-after=30 "$timeout_s" "${cmd[@]}")
  if ((dry_run)); then
    printf '%q ' "${cmd[@]}"
    echo
    return 0
  fi
  printf '%q ' "${cmd[@]}" > "$dir/sweep_command.txt"
  t0=$(date +%s.%N)
  "${cmd[@]}" > "$dir/sweep.log" 2>&1 < /dev/null || rc=$?
  finish_run "$dir" "$n" "$r" "$3" "$4" "$rc" "$dir/sweep.log" "$t0"
}

# finish_run DIR N R S O RC LOG T0: the run's record.
finish_run() {
  local wall
  wall=$(echo "$(date +%s.%N) - $8" | bc)
  if (($6 == 0)); then
    record "$1" "$2" "$3" "$4" "$5" ok 0 "" "$wall"
    log "$(basename "$1"): ok in $(printf '%.1f' "$wall") s"
  else
    record "$1" "$2" "$3" "$4" "$5" failed "$6" "$(failure_reason "$6" "$7")" "$wall"
    log "$(basename "$1"): FAILED ($(failure_reason "$6" "$7"))"
  fi
}

# sbatch_run N R S O DIR: one job through sbatch --wait (in the background unless --serial).
sbatch_run() {
  local n=$1 r=$2 dir=$5 cmd=() t0 rc=0
  # shellcheck disable=SC2206
  cmd=(sbatch --wait --nodes="$n" --ntasks-per-node="$r" --job-name="zlora-sweep-$(basename "$dir")"
    --output="$dir/slurm-%j.out" $sbatch_args "$sbatch_script")
  mapfile -d '' -t targs < <(train_args "$3" "$4" "$dir")
  cmd+=("${targs[@]}")
  ((timeout_s == 0)) || cmd=(timeout --signal=TERM --kill-after=30 "$timeout_s" "${cmd[@]}")
  if ((dry_run)); then
    printf '%q ' "${cmd[@]}"
    echo
    return 0
  fi
  printf '%q ' "${cmd[@]}" > "$dir/sweep_command.txt"
  t0=$(date +%s.%N)
  ZLORA=$zlora ZLORA_JOBS_DIR=${ZLORA_JOBS_DIR:-$root/jobs} "${cmd[@]}" > "$dir/sweep.log" 2>&1 < /dev/null || rc=$?
  cat "$dir"/slurm-*.out >> "$dir/sweep.log" 2> /dev/null || true
  finish_run "$dir" "$n" "$r" "$3" "$4" "$rc" "$dir/sweep.log" "$t0"
}

# ---- the sweep ----
pids=()
on_exit_signal() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2> /dev/null || true; done
  exit 130
}
trap on_exit_signal INT TERM
count=0
for r in "${rpns[@]}"; do
  for combo in "${combos[@]}"; do
    s=${combo%%-*} s=${s#z} o=${combo#*-}
    for n in "${nodes[@]}"; do
      name=n$n-r$r-z$s-$o dir=$out/runs/$name
      count=$((count + 1))
      if ((dry_run)); then
        echo "# $name"
      else
        if [[ -e "$dir" ]]; then
          [[ -f "$dir/sweep_run.json" || -z "$(ls -A "$dir")" ]] ||
            die "$dir exists and was not made by this script (no sweep_run.json); remove it or choose another --out"
          ((force)) || die "$dir holds an earlier run; pass --force to replace it, or choose another --out"
          rm -rf -- "$dir"
        fi
        mkdir -p "$dir"
      fi
      if [[ "$s" == 0 && "$o" != none ]]; then
        why="not run: offload_optimizer $o needs zero_stage 1, 2 or 3 (zlora refuses it at stage 0)"
        log "$name: $why"
        ((dry_run)) || record "$dir" "$n" "$r" "$s" "$o" failed -1 "$why" 0
        continue
      fi
      log "$name: $n node(s) x $r rank(s), ZeRO $s, offload $o ($launcher)"
      if [[ "$launcher" == mpirun ]]; then
        mpirun_run "$n" "$r" "$s" "$o" "$dir"
      elif ((serial || dry_run)); then
        sbatch_run "$n" "$r" "$s" "$o" "$dir"
      else
        sbatch_run "$n" "$r" "$s" "$o" "$dir" &
        pids+=($!)
      fi
    done
  done
done
for p in "${pids[@]}"; do wait "$p" || true; done
((dry_run)) && exit 0

log "$count run(s) done; writing the report"
"$zlora" scaling-report "$out" || die "zlora scaling-report $out failed"
failed=$(cat "$out"/runs/*/sweep_run.json 2> /dev/null | grep -c '"status": "failed"' || true)
log "table: $out/scaling.md ($failed of $count run(s) failed)"
((failed == 0)) || exit 3
