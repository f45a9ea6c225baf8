#!/usr/bin/env bash
# The rigs themselves (tools/cluster/slurm_rig.sh, netns_rig.sh): start, status, idempotence, stop, and
# that nothing is left behind.
# Asserts: a 3-node Slurm rig comes up with n1..n3 idle and runs a job on all three; `start` again
# leaves it (and its job) as it is; `stop` ends the daemons and the job's processes, so no process of
# the rig is left and its ports are free, and a second `stop` is a no-op; a rig started with --owner
# stops by itself once the owner is gone; `stop --purge` removes the directory. The netns rig: `up 3`
# gives 3 nodes that reach each other, with their own hostnames; `up 3` again keeps them; `down`
# leaves no namespace of its prefix and no process in them.
# shellcheck source=tests/cluster/lib.sh
source "$(dirname "$0")/lib.sh"
cl_init rigs
cl_need_root
rig=$CL_SRC/tools/cluster/slurm_rig.sh
netns=$CL_SRC/tools/cluster/netns_rig.sh

# rig_pids DIR: the live processes that carry DIR's rig marker (daemons, slurmstepd, jobs).
rig_pids() { grep -lzxF "ZLORA_RIG_DIR=$1" /proc/[0-9]*/environ 2> /dev/null | cut -d/ -f3 | tr '\n' ' ' || true; }
no_rig_pids() { [[ -z "$(rig_pids "$1")" ]]; }

if command -v slurmctld > /dev/null 2>&1; then
  cl_slurm_up 3
  all3() { [[ "$(sinfo -h -N -o '%N %t' | sort -u | tr '\n' ' ')" == "n1 idle n2 idle n3 idle " ]]; }
  all3 || cl_fail "sinfo: $(sinfo -N)"
  job=$(sbatch --parsable --nodes=3 --output=/dev/null --wrap "srun sleep 300")
  cl_wait_for 30 "job $job to run" cl_job_running "$job"
  cl_wait_for 30 "the job's sleep processes" pgrep -f "^/usr/bin/sleep 300$|^sleep 300$"
  SLURM_RIG_PORT_BASE=$(cat "$CL_RIG/run/port_base") "$rig" start "$CL_RIG" --nodes 3 > "$CL_WORK/again.log" 2>&1 ||
    cl_fail "start again: $(cat "$CL_WORK/again.log")"
  grep -q "already up" "$CL_WORK/again.log" || cl_fail "start again did not see the rig up: $(cat "$CL_WORK/again.log")"
  cl_job_running "$job" || cl_fail "start again disturbed job $job"
  "$rig" status "$CL_RIG" > "$CL_WORK/status.log" || cl_fail "status: $(cat "$CL_WORK/status.log")"
  [[ "$(grep -c ': running, pid' "$CL_WORK/status.log")" == 5 ]] || cl_fail "status: $(cat "$CL_WORK/status.log")"
  cl_log "Slurm rig: 3 nodes, a 3-node job, start again kept both"
  port=$(cat "$CL_RIG/run/port_base")
  t=$(date +%s.%N)
  "$rig" stop "$CL_RIG" || cl_fail "stop failed"
  cl_log "stop with a running job: $(printf '%.1f' "$(echo "$(date +%s.%N) - $t" | bc)") s"
  no_rig_pids "$CL_RIG" || cl_fail "processes left after stop: $(rig_pids "$CL_RIG")"
  ! pgrep -f "^(/usr/bin/)?sleep 300$" > /dev/null || cl_fail "the job's processes outlived stop: $(pgrep -af 'sleep 300')"
  for ((p = port; p <= port + 3; p++)); do
    [[ -z "$(ss -Hltn "sport = :$p")" ]] || cl_fail "port $p still listened on after stop"
  done
  ! "$rig" status "$CL_RIG" > /dev/null || cl_fail "status says up after stop"
  "$rig" stop "$CL_RIG" || cl_fail "a second stop failed"
  # --owner: the rig goes when its owner does.
  owned=$CL_WORK/owned
  sleep 600 &
  owner=$!
  SLURM_RIG_PORT_BASE=$((port + 10)) "$rig" start "$owned" --nodes 1 --owner "$owner" > "$CL_WORK/owned.log" 2>&1 ||
    cl_fail "start --owner: $(cat "$CL_WORK/owned.log")"
  kill "$owner"
  wait "$owner" 2> /dev/null || true
  cl_wait_for 30 "the owned rig to stop by itself" no_rig_pids "$owned"
  grep -q "owner $owner is gone" "$owned/log/watchdog.out" || cl_fail "no watchdog message"
  "$rig" stop "$owned" --purge
  [[ ! -e "$owned" ]] || cl_fail "stop --purge left $owned"
  cl_log "Slurm rig: stop left nothing; --owner stopped it; --purge removed it"
  CL_RIG=""
else
  cl_log "no slurmctld: the Slurm rig part is not run"
fi

if command -v ip > /dev/null 2>&1 && ip netns list > /dev/null 2>&1; then
  cl_netns_up 3
  "$netns" up 3 | grep -q "already up" || cl_fail "netns up again did not keep the rig"
  for i in 1 2 3; do
    [[ "$("$netns" exec "zt$i" hostname)" == "zt$i" ]] || cl_fail "node zt$i has hostname $("$netns" exec "zt$i" hostname)"
  done
  [[ "$(hostname)" != zt* ]] || cl_fail "the host's own hostname changed"
  ip netns exec zt3 timeout 10 sleep 300 &
  "$netns" down > /dev/null || cl_fail "netns down failed"
  CL_NETNS=0
  ! ip netns list | grep -qE '^zt([0-9]+|-hub)( |$)' || cl_fail "namespaces left: $(ip netns list)"
  [[ ! -e /tmp/zlora-netns-zt ]] || cl_fail "netns state directory left"
  wait 2> /dev/null || true
  cl_log "netns rig: 3 nodes with their own hostnames; down left nothing"
else
  cl_log "no ip netns: the netns part is not run"
fi
