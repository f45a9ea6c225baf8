#!/usr/bin/env bash
# A Slurm cluster of N nodes on this one host, for testing the jobs/ scripts under a real Slurm
# (Debian's slurm-wlm 22.05 + munge): munged, slurmctld and N slurmd ("n1" … "nN": Debian builds slurmd
# with multiple-slurmd support, so all run here, each on its own port). Everything lives under DIR
# (generated slurm.conf, munge key and socket, state, spool, logs, pid files; use a private directory
# under /tmp): the system's /etc/slurm, /etc/munge and /run/munge are never read or written.
#
#   tools/cluster/slurm_rig.sh start DIR [--nodes N] [--owner PID]
#       start from a clean state (N nodes, default 2, at most 16); waits until sinfo shows every node
#       idle. Idempotent: a rig that is up in DIR with N nodes is left as it is (jobs included); anything
#       else in DIR is stopped first. --owner: stop the rig by itself once process PID is gone (a test
#       that crashes leaves nothing running)
#   tools/cluster/slurm_rig.sh stop DIR [--purge]
#       cancel every job, stop every daemon by its PID, kill what is left of the jobs' processes (by
#       PID); the logs stay in DIR/log unless --purge, which removes DIR. Idempotent.
#   tools/cluster/slurm_rig.sh status DIR     daemons, pids, sinfo (exit 0 only when all are up)
#   source DIR/env.sh                         then sbatch/squeue/scontrol talk to the rig
#
# The cluster: nodes n1 … nN (2 CPUs and 8 count-only "gpu" GRES each, so the scripts' --gres=gpu:8
# is satisfied as written), partitions `low` (default) and `high`; PreemptType=preempt/partition_prio
# with PreemptMode=REQUEUE, so a job in `high` preempts (requeues) one in `low`. Settings a one-host
# cluster needs, and why:
#   TmpFS=DIR/tmp/%n              each slurmd's own TmpFS: the nodes' PMIx step daemons would
#                                 otherwise create the same directories and collide
#   AuthInfo=...,cred_expire=N    a requeued job is held for cred_expire seconds before it may start
#                                 again (default 120); SLURM_RIG_CRED_EXPIRE, default 10
#   ProctrackType=proctrack/linuxproc, TaskPlugin=task/none   no cgroups needed (containers, CI)
#   MpiDefault=pmix               what `srun --mpi=pmix` in the scripts uses anyway
#   KillWait=30                   the grace between Slurm's SIGTERM and its SIGKILL (Slurm's default)
#   MinJobAge=600                 `scontrol show job` still knows a finished job (state, restarts, code)
#   GraceTime (partition low)     only with SLURM_RIG_GRACE_TIME=N: a preempted job of `low` gets N
#                                 seconds after the first SIGTERM before it is ended (none by default)
#
# Ports: SLURM_RIG_PORT_BASE (default 16817): slurmctld listens on BASE, node i's slurmd on BASE+i.
#
# Exit codes: 0 done; 1 failed (the daemons' log tails are printed; nothing is left running);
# 2 usage; 76 busy (a port in use: the tests retry on other ports); 77 cannot run here (not root,
# slurm-wlm or munge not installed: tools/cluster/bootstrap.sh installs them; no PMIx plugin). Tests
# skip on 77, printing the reason. See docs/testing.md.
set -euo pipefail

readonly EXIT_BUSY=76 EXIT_CANNOT=77
self=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")

usage() {
  echo "usage: $0 start DIR [--nodes N] [--owner PID] | stop DIR [--purge] | status DIR" >&2
  exit 2
}
die() {
  echo "slurm_rig: $*" >&2
  exit 1
}
cannot() {
  echo "slurm_rig: cannot run here: $*" >&2
  exit "$EXIT_CANNOT"
}

(($# >= 2)) || usage
cmd=$1
dir=$2
shift 2
[[ "$dir" == /* ]] || dir=$PWD/$dir
dir=${dir%/}
[[ -n "$dir" && "$dir" != / ]] || die "refusing DIR=/"

conf=$dir/etc/slurm.conf

# The rig's daemons in stop order (nodes first, munge last), from the node count recorded at start.
daemons() {
  local n i
  n=$(cat "$dir/run/nodes" 2> /dev/null || echo 0)
  [[ "$n" =~ ^[0-9]+$ ]] || n=0
  for ((i = 1; i <= n; i++)); do echo "slurmd-n$i"; done
  echo slurmctld
  echo munged
}

# The PID recorded for daemon NAME if that process is alive and still that daemon (not a recycled
# PID); empty otherwise.
live_pid() {
  local f=$dir/run/$1.rigpid pid exe
  [[ -f "$f" ]] || return 0
  pid=$(cat "$f")
  [[ "$pid" =~ ^[0-9]+$ ]] || return 0
  exe=$(readlink "/proc/$pid/exe" 2> /dev/null) || return 0
  case "$1" in
    slurmd-*) [[ "$exe" == */slurmd* ]] ;;
    *) [[ "$exe" == */"$1"* ]] ;;
  esac || return 0
  echo "$pid"
}

# TERM to every PID in "${@:2}", then KILL to those still there after $1 seconds; returns once all are
# gone (or reaped by someone else).
stop_pids() {
  local grace=$1 pid i left
  shift
  (($#)) || return 0
  for pid in "$@"; do kill -TERM "$pid" 2> /dev/null || true; done
  for ((i = 0; i < grace * 10 + 50; i++)); do
    left=()
    for pid in "$@"; do if kill -0 "$pid" 2> /dev/null; then left+=("$pid"); fi; done
    ((${#left[@]})) || return 0
    if ((i == grace * 10)); then
      echo "slurm_rig: pid(s) ${left[*]} still there ${grace} s after SIGTERM: SIGKILL" >&2
      for pid in "${left[@]}"; do kill -KILL "$pid" 2> /dev/null || true; done
    fi
    sleep 0.1
  done
  echo "slurm_rig: pid(s) ${left[*]} survived SIGKILL" >&2
}

# Every live process that carries this rig's marker in its environment (the daemons and the
# slurmstepd they start inherit it), and all descendants of those (the jobs' shells, srun, ranks).
rig_processes() {
  local marker="ZLORA_RIG_DIR=$dir" f pid ppid
  declare -A mark=()
  # grep -z: environ is NUL-separated; unreadable (other users') and vanished processes are skipped.
  while read -r f; do
    pid=${f#/proc/}
    mark[${pid%/environ}]=1
  done < <(grep -lzxF "$marker" /proc/[0-9]*/environ 2> /dev/null)
  local -a tree
  mapfile -t tree < <(ps -e -o pid=,ppid=)
  local changed=1 line
  while ((changed)); do
    changed=0
    for line in "${tree[@]}"; do
      read -r pid ppid <<< "$line"
      if [[ -z "${mark[$pid]:-}" && -n "${mark[$ppid]:-}" ]]; then
        mark[$pid]=1
        changed=1
      fi
    done
  done
  for pid in "${!mark[@]}"; do
    if [[ "$pid" != "$$" && "$pid" != "$BASHPID" ]]; then echo "$pid"; fi
  done
}

do_stop() {
  local name pid
  # The watchdog of `start --owner` (unless it is the one stopping the rig).
  pid=$(cat "$dir/run/watchdog.rigpid" 2> /dev/null || true)
  if [[ "$pid" =~ ^[0-9]+$ && "$pid" != "$$" && "${RIG_WATCHDOG:-}" != 1 ]]; then kill "$pid" 2> /dev/null || true; fi
  rm -f "$dir/run/watchdog.rigpid"
  # Jobs first, while slurmctld can still end them: KILL to every process of every job, then cancel.
  if [[ -n "$(live_pid slurmctld)" && -f "$conf" ]]; then
    local jobs
    jobs=$(SLURM_CONF=$conf squeue -h -o %i 2> /dev/null | tr '\n' ' ' || true)
    if [[ -n "${jobs// /}" ]]; then
      # shellcheck disable=SC2086 # one argument per job id
      SLURM_CONF=$conf scancel --signal=KILL --full $jobs 2> /dev/null || true
      # shellcheck disable=SC2086
      SLURM_CONF=$conf scancel $jobs 2> /dev/null || true
      for _ in $(seq 50); do
        [[ -z "$(SLURM_CONF=$conf squeue -h -o %i 2> /dev/null)" ]] && break
        sleep 0.2
      done
    fi
  fi
  local names
  mapfile -t names < <(daemons)
  # Also any slurmd pid file of a larger earlier rig whose node count file is gone.
  for name in "$dir"/run/slurmd-n*.rigpid; do
    [[ -f "$name" ]] || continue
    name=$(basename "$name" .rigpid)
    [[ " ${names[*]} " == *" $name "* ]] || names=("$name" "${names[@]}")
  done
  # The nodes together, then slurmctld and munged together (each takes a second or two to go).
  local -a nodes=() others=()
  for name in "${names[@]}"; do
    pid=$(live_pid "$name")
    [[ -n "$pid" ]] || continue
    case "$name" in
      slurmd-*) nodes+=("$pid") ;;
      *) others+=("$pid") ;;
    esac
  done
  stop_pids 10 "${nodes[@]}"
  stop_pids 10 "${others[@]}"
  for name in "${names[@]}"; do rm -f "$dir/run/$name.rigpid"; done
  # slurmstepd outlives slurmd by design (a restarted slurmd picks its steps up again): whatever of
  # the jobs is still there goes now, each process by its PID.
  local left
  mapfile -t left < <(rig_processes)
  if ((${#left[@]})); then
    echo "slurm_rig: killing ${#left[@]} process(es) left by the rig's jobs: ${left[*]}" >&2
    for pid in "${left[@]}"; do kill -KILL "$pid" 2> /dev/null || true; done
  fi
}

check_prerequisites() {
  [[ "$(id -u)" == 0 ]] || cannot "needs root (the daemons run as root with their files under DIR)"
  local missing=() b
  for b in munged munge slurmctld slurmd slurmstepd sbatch srun squeue sinfo scontrol scancel; do
    command -v "$b" > /dev/null 2>&1 || PATH=$PATH:/usr/sbin command -v "$b" > /dev/null 2>&1 || missing+=("$b")
  done
  ((${#missing[@]} == 0)) || cannot "not installed: ${missing[*]} (install slurm-wlm and munge: tools/cluster/bootstrap.sh)"
  [[ -e /usr/lib/x86_64-linux-gnu/slurm-wlm/mpi_pmix.so || -n "$(find /usr/lib*/ -name mpi_pmix.so -path '*slurm*' -print -quit 2> /dev/null)" ]] ||
    cannot "this Slurm has no PMIx plugin (mpi_pmix.so), which the jobs/ scripts' srun --mpi=pmix needs"
}

# Waits up to $1 seconds for the command "${@:2}" to succeed.
wait_until() {
  local limit=$1 i
  shift
  for ((i = 0; i < limit * 5; i++)); do
    if "$@" > /dev/null 2>&1; then return 0; fi
    sleep 0.2
  done
  return 1
}

# True when sinfo lists exactly the nodes n1..n$1 and each is idle (with $2 = any: idle, allocated,
# mixed or completing; not down, drained or unknown).
all_nodes_up() {
  local n=$1 mode=${2:-idle} got want="" i
  for ((i = 1; i <= n; i++)); do want+="n$i "; done
  got=$(SLURM_CONF=$conf sinfo -h -N -o '%N %t' 2> /dev/null | sort -u -V) || return 1
  [[ "$(awk '{printf "%s ", $1}' <<< "$got")" == "$want" ]] || return 1
  local ok='^idle$'
  if [[ "$mode" == any ]]; then ok='^(idle|alloc|mix|comp)$'; fi
  if awk '{print $2}' <<< "$got" | grep -qvE "$ok"; then return 1; fi
}

write_config() {
  local host=$1 n=$2 base=$3 cred=${SLURM_RIG_CRED_EXPIRE:-10} i grace=""
  if [[ -n "${SLURM_RIG_GRACE_TIME:-}" ]]; then
    [[ "$SLURM_RIG_GRACE_TIME" =~ ^[0-9]+$ ]] || die "SLURM_RIG_GRACE_TIME must be a number of seconds, got '$SLURM_RIG_GRACE_TIME'"
    grace=" GraceTime=$SLURM_RIG_GRACE_TIME"
  fi
  cat > "$conf" << EOF
# Generated by tools/cluster/slurm_rig.sh: a test cluster of $n slurmd on this host.
ClusterName=zlorarig
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$base
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/munge/munge.socket.2,cred_expire=$cred
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool/%n
SlurmctldPidFile=$dir/run/slurmctld.pid
SlurmdPidFile=$dir/run/slurmd-%n.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
TmpFS=$dir/tmp/%n
PlugStackConfig=$dir/etc/plugstack.conf
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=pmix
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
GresTypes=gpu
SlurmdParameters=config_overrides
ReturnToService=2
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=5
KillWait=30
MinJobAge=600
InactiveLimit=0
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
EOF
  for ((i = 1; i <= n; i++)); do
    echo "NodeName=n$i NodeHostname=$host NodeAddr=127.0.0.1 Port=$((base + i)) CPUs=2 Boards=1 SocketsPerBoard=1 CoresPerSocket=2 ThreadsPerCore=1 RealMemory=2000 Gres=gpu:8 State=UNKNOWN" >> "$conf"
  done
  cat >> "$conf" << EOF
PartitionName=low Nodes=n[1-$n] Default=YES MaxTime=INFINITE State=UP PriorityTier=1 PreemptMode=REQUEUE$grace
PartitionName=high Nodes=n[1-$n] MaxTime=INFINITE State=UP PriorityTier=10 PreemptMode=OFF
EOF
  # Slurm drops GPUs without device files from a node, so each "GPU" is an empty regular file here
  # (TaskPlugin=task/none: no device cgroup is built from them).
  mkdir -p "$dir/dev"
  touch "$dir"/dev/gpu{0..7}
  echo "NodeName=n[1-$n] Name=gpu File=$dir/dev/gpu[0-7]" > "$dir/etc/gres.conf"
  : > "$dir/etc/plugstack.conf"
  printf 'export SLURM_CONF=%q\n' "$conf" > "$dir/env.sh"
}

# Starts "${@:2}" in its own session with the rig marker, output to log $1; prints its PID.
launch() {
  local log=$1
  shift
  ZLORA_RIG_DIR=$dir SLURM_CONF=$conf setsid "$@" < /dev/null >> "$log" 2>&1 &
  echo $!
}

start_watchdog() {
  local owner=$1 since pid
  kill -0 "$owner" 2> /dev/null || die "--owner $owner is not a running process"
  pid=$(cat "$dir/run/watchdog.rigpid" 2> /dev/null || true)
  if [[ "$pid" =~ ^[0-9]+$ ]]; then kill "$pid" 2> /dev/null || true; fi
  since=$(awk '{print $22}' "/proc/$owner/stat")
  # The owner is recognised by PID and start time, so a recycled PID does not keep the rig up.
  RIG_WATCHDOG=1 setsid "$self" _watch "$dir" "$owner" "$since" < /dev/null >> "$dir/log/watchdog.out" 2>&1 &
  echo $! > "$dir/run/watchdog.rigpid"
}

do_start() {
  local owner="" n=2
  while (($#)); do
    case "$1" in
      --owner)
        owner=${2:?--owner PID}
        shift 2
        ;;
      --nodes)
        n=${2:?--nodes N}
        shift 2
        ;;
      *) usage ;;
    esac
  done
  if ! [[ "$n" =~ ^[0-9]+$ ]] || ((n < 1 || n > 16)); then die "--nodes must be 1..16, got '$n'"; fi
  check_prerequisites
  export PATH=$PATH:/usr/sbin
  local base=${SLURM_RIG_PORT_BASE:-16817}
  if ! [[ "$base" =~ ^[0-9]+$ ]] || ((base < 1024 || base + n > 65535)); then
    die "SLURM_RIG_PORT_BASE must be a port number 1024..$((65535 - n)), got '$base'"
  fi

  # Already up as asked: leave it (and its jobs) alone.
  local name up=1
  if [[ "$(cat "$dir/run/nodes" 2> /dev/null)" == "$n" && "$(cat "$dir/run/port_base" 2> /dev/null)" == "$base" ]]; then
    while read -r name; do [[ -n "$(live_pid "$name")" ]] || up=0; done < <(daemons)
    if ((up)) && all_nodes_up "$n" any; then
      if [[ -n "$owner" ]]; then start_watchdog "$owner"; fi
      echo "slurm_rig: already up in $dir: n[1-$n]; source $dir/env.sh"
      return 0
    fi
  fi

  # Otherwise a clean state: an earlier rig in DIR is stopped, its files removed.
  mkdir -p "$dir"
  do_stop
  local p
  for ((p = base; p <= base + n; p++)); do
    if ss -Hltn "sport = :$p" | grep -q .; then
      echo "slurm_rig: busy: port $p is in use (another rig? set SLURM_RIG_PORT_BASE)" >&2
      exit "$EXIT_BUSY"
    fi
  done
  rm -rf "${dir:?}"/{etc,dev,munge,state,spool,log,run,tmp} "$dir/env.sh"
  mkdir -p "$dir"/{etc,state,spool,log,run,tmp}
  local i
  for ((i = 1; i <= n; i++)); do mkdir -p "$dir/spool/n$i" "$dir/tmp/n$i"; done
  echo "$n" > "$dir/run/nodes"
  echo "$base" > "$dir/run/port_base"
  # munged refuses a key or socket directory that others may write to.
  install -d -m 0700 "$dir/munge"
  local host
  host=$(hostname -s)
  write_config "$host" "$n" "$base"

  # From here on a failure stops whatever was started.
  trap 'rc=$?; if ((rc != 0)); then echo "slurm_rig: start failed; stopping what was started" >&2; do_stop; fi' EXIT

  mungekey --create --keyfile "$dir/munge/munge.key" > /dev/null 2>&1 ||
    dd if=/dev/urandom of="$dir/munge/munge.key" bs=1024 count=1 status=none
  chmod 0400 "$dir/munge/munge.key"
  # --force: the rig's directories may sit under a world-writable /tmp, which munged otherwise refuses.
  launch "$dir/log/munged.out" munged -F --force --key-file="$dir/munge/munge.key" \
    --socket="$dir/munge/munge.socket.2" --pid-file="$dir/munge/munged.pid" \
    --log-file="$dir/log/munged.log" --seed-file="$dir/munge/munged.seed" > "$dir/run/munged.rigpid"
  if ! wait_until 20 bash -c "munge -n -S '$dir/munge/munge.socket.2' | unmunge -S '$dir/munge/munge.socket.2'"; then
    tail -n 20 "$dir/log/munged.out" "$dir/log/munged.log" >&2 2> /dev/null || true
    die "munged did not answer on $dir/munge/munge.socket.2"
  fi

  launch "$dir/log/slurmctld.out" slurmctld -D -f "$conf" > "$dir/run/slurmctld.rigpid"
  if ! wait_until 30 bash -c "SLURM_CONF='$conf' scontrol ping | grep -q UP"; then
    tail -n 30 "$dir/log/slurmctld.out" "$dir/log/slurmctld.log" >&2 2> /dev/null || true
    die "slurmctld did not come up"
  fi
  for ((i = 1; i <= n; i++)); do
    launch "$dir/log/slurmd-n$i.out" slurmd -D -N "n$i" -f "$conf" > "$dir/run/slurmd-n$i.rigpid"
  done
  if ! wait_until 40 all_nodes_up "$n"; then
    SLURM_CONF=$conf sinfo -N -l >&2 || true
    tail -n 20 "$dir"/log/slurmd-n*.out "$dir"/log/slurmd-n*.log "$dir/log/slurmctld.log" >&2 2> /dev/null || true
    die "the nodes n[1-$n] did not all become idle"
  fi
  while read -r name; do
    [[ -n "$(live_pid "$name")" ]] || die "$name exited during start-up (see $dir/log/)"
  done < <(daemons)

  if [[ -n "$owner" ]]; then start_watchdog "$owner"; fi
  trap - EXIT
  echo "slurm_rig: up in $dir: n[1-$n] idle; partitions low (default), high; source $dir/env.sh"
}

do_status() {
  local name pid up=1
  if [[ ! -f "$dir/run/nodes" ]]; then
    echo "slurm_rig: no rig in $dir"
    return 1
  fi
  while read -r name; do
    pid=$(live_pid "$name")
    if [[ -n "$pid" ]]; then echo "$name: running, pid $pid"; else
      echo "$name: not running"
      up=0
    fi
  done < <(daemons)
  if [[ -n "$(live_pid slurmctld)" ]]; then
    SLURM_CONF=$conf sinfo -N -o '%N %P %t %G' || true
    SLURM_CONF=$conf squeue -o '%i %j %T %r %N' || true
  fi
  ((up))
}

case "$cmd" in
  start) do_start "$@" ;;
  stop)
    purge=0
    if [[ "${1:-}" == --purge ]]; then
      purge=1
      shift
    fi
    (($# == 0)) || usage
    if [[ -d "$dir" ]]; then do_stop; fi
    if ((purge)); then rm -rf "${dir:?}"; fi
    ;;
  status)
    (($# == 0)) || usage
    do_status
    ;;
  _watch) # the watchdog of `start --owner`: stops the rig once the owner is gone
    while [[ "$(awk '{print $22}' "/proc/$1/stat" 2> /dev/null)" == "$2" ]]; do sleep 1; done
    echo "slurm_rig: owner $1 is gone ($(date -Is)); stopping the rig"
    do_stop
    ;;
  *) usage ;;
esac
