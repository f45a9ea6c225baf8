#!/usr/bin/env bash
# A rank lost on one node of a 2-node job (tools/cluster/netns_rig.sh: namespaces zt1, zt2, mpirun
# across them, 1 rank per node, ZeRO 2 and ZeRO 3, --ddp_timeout 10). While both train, rank 1 on zt2 is
#   (a) killed (SIGKILL: no handler runs, as when its node's OOM killer or a hardware fault ends it);
#   (b) stopped (SIGSTOP: the process exists but makes no progress, as a hung GPU or a stuck file system);
#   (c) cut off (zt2's interface goes down: the node vanishes from the network, as a dead node or link).
# mpirun runs with --enable-recovery and orte_abort_on_non_zero_status 0, so that it does not end the job
# itself when a process dies (Slurm's srun --kill-on-bad-exit=0, as jobs/ uses, behaves the same): only
# zlora's collective timeout can end rank 0. Asserts for each: rank 0 on zt1 ends with zlora's error
# within ddp_timeout + 20 s of the fault (slack for 2 shared cores and the abort) with a non-zero status
# (mpirun itself exits 0 under --enable-recovery, so the ranks' wrapper records it), and the message
# names the collective, the timeout and what happened to rank 1, with its node zt2: (a) "rank 1 (node
# zt2, ... pid P) is gone: its process ended" with P the killed pid; (b) "every other rank (1) still
# runs"; (c) "rank 1 (node zt2 ...) is unreachable". Every checkpoint left is complete (has its
# manifest; a save cut by the fault stays a .tmp) and there is no final adapter: the run stopped before
# its end.
# shellcheck source=tests/cluster/lib.sh
source "$(dirname "$0")/lib.sh"
cl_init netns_kill_rank
cl_need_root
cl_need_netns
cl_fixture
cl_netns_up 2
z1=${CL_NETNS_PREFIX}1
z2=${CL_NETNS_PREFIX}2
readonly TIMEOUT=10 SLACK=20

# Each rank runs zlora as a child and records its pid and host, then its exit status: under
# --enable-recovery mpirun exits 0 even after MPI_Abort, so the status of rank 0 is taken from here.
wrapper=$CL_WORK/rank.sh
cat > "$wrapper" << 'EOS'
#!/bin/sh
file=$1
shift
"$@" &
pid=$!
echo "$OMPI_COMM_WORLD_RANK $pid $(hostname)" >> "$file"
rc=0
wait "$pid" || rc=$?
echo "exit $OMPI_COMM_WORLD_RANK $rc" >> "$file"
exit "$rc"
EOS
chmod +x "$wrapper"

# fault_run NAME FAULT STAGE: one run of many steps on zt1:1,zt2:1; after step 3 has been logged the
# fault hits rank 1; the rest is checked by the caller from $log, $rc, $secs and $victim.
fault_run() {
  local name=$1 fault=$2 stage=$3 out=$CL_WORK/$1 pids=$CL_WORK/pids-$1.txt mpid
  log=$CL_WORK/$name.log
  rc=0
  "$CL_SRC/tools/cluster/netns_rig.sh" mpirun --host "$z1:1,$z2:1" -np 2 --bind-to none --enable-recovery \
    --mca orte_abort_on_non_zero_status 0 "$wrapper" "$pids" "$CL_ZLORA" train "$CL_FIX/job.yaml" \
    --zero_stage "$stage" --max_steps 100000 --save_steps 2 --ddp_timeout "$TIMEOUT" --output_dir "$out" \
    > "$log" 2>&1 &
  mpid=$!
  step3() { grep -q "step 3/" "$log"; }
  cl_wait_for 120 "step 3 of $name" step3
  victim=$(awk '$1 == 1 { print $2 }' "$pids")
  local host
  host=$(awk '$1 == 1 { print $3 }' "$pids")
  [[ -n "$victim" && "$host" == "$z2" ]] || cl_fail "$name: rank 1 is not on $z2: $(cat "$pids")"
  local t0
  t0=$(date +%s.%N)
  case $fault in
    kill) kill -KILL "$victim" ;;
    stop) kill -STOP "$victim" ;;
    cut) ip netns exec "$z2" ip link set eth0 down ;;
  esac
  cl_log "$name: $fault rank 1 (pid $victim on $z2) after step 3"
  # Rank 0 must end by itself (its wrapper records the status); past the limit the test fails.
  rank0_done() { grep -q '^exit 0 ' "$pids"; }
  local i
  for ((i = 0; i < (TIMEOUT + SLACK) * 5; i++)); do
    rank0_done && break
    sleep 0.2
  done
  secs=$(echo "$(date +%s.%N) - $t0" | bc)
  if ! rank0_done; then
    kill -CONT "$victim" 2> /dev/null || true
    kill -KILL "$mpid" 2> /dev/null || true
    cl_fail "$name: rank 0 still ran $(printf '%.1f' "$secs") s after the fault (ddp_timeout $TIMEOUT s): $(tail -n 15 "$log")"
  fi
  rc=$(awk '$1 == "exit" && $2 == 0 { print $3 }' "$pids")
  # mpirun itself waits for its daemon on zt2, which a cut-off node never answers (as on a real
  # cluster, until TCP gives up): the link comes back, then mpirun gets 30 s to end.
  if [[ $fault == cut ]]; then ip netns exec "$z2" ip link set eth0 up; fi
  for ((i = 0; i < 150; i++)); do
    kill -0 "$mpid" 2> /dev/null || break
    sleep 0.2
  done
  kill -KILL "$mpid" 2> /dev/null || true
  wait "$mpid" || true
  if [[ $fault == stop ]]; then kill -KILL "$victim" 2> /dev/null || true; fi
  cl_log "$name: rank 0 ended $(printf '%.1f' "$secs") s after the fault, exit status $rc"
  [[ -n "$rc" && "$rc" != 0 ]] || cl_fail "$name: rank 0 exited '${rc:-?}' after losing rank 1 (want non-zero): $(cat "$pids")"
  expect "$name" "did not complete within ddp_timeout=$TIMEOUT s"
  expect "$name" "zlora: error (rank 0 of 2)"
  [[ ! -f "$out/adapter_model.safetensors" ]] || cl_fail "$name: a final adapter was written by a run that lost a rank"
  local last d
  for d in "$out"/checkpoint-*; do
    [[ -d "$d" && "$d" != *.tmp ]] || continue
    [[ -f "$d/manifest.json" ]] || cl_fail "$name: $d looks complete but has no manifest.json"
  done
  last=$(find "$out" -maxdepth 1 -name 'checkpoint-*' ! -name '*.tmp' -printf '%f\n' | sed 's/checkpoint-//' |
    sort -n | tail -n 1)
  cl_log "$name: last checkpoint ${last:-none}"
}
expect() {
  grep -qF -- "$2" "$log" || cl_fail "$1: the log does not say '$2': $(grep -F 'zlora: error' "$log" || tail -n 15 "$log")"
}

for stage in 2 3; do
  fault_run "kill-z$stage" kill "$stage"
  expect "kill-z$stage" "rank 1 (node $z2, host $z2, pid $victim) is gone: its process ended"
  cl_log "kill-z$stage: $(grep -F 'zlora: error' "$log" | head -n 1)"
  # OpenMPI 4.1's TCP BTL can deadlock on its own endpoint lock when a send to the dead peer fails
  # (frag_send -> endpoint_close -> ob1's FIN -> endpoint_send): the main thread never returns from
  # MPI_Test, and zlora's watchdog thread ends the rank with the same diagnosis, at ddp_timeout + 5 s.
  if grep -qF "stuck inside the communication library" "$log"; then
    cl_log "kill-z$stage: ended by the watchdog (the MPI library deadlocked in its TCP error path)"
  fi
done
fault_run stop-z2 stop 2
expect stop-z2 "every other rank (1) still runs"
cl_log "stop-z2: $(grep -F 'zlora: error' "$log" | head -n 1)"
fault_run cut-z2 cut 2
expect cut-z2 "rank 1 (node $z2, host $z2"
expect cut-z2 "unreachable"
cl_log "cut-z2: $(grep -F 'zlora: error' "$log" | head -n 1)"
cl_log "ok"
