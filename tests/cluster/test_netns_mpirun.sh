#!/usr/bin/env bash
# mpirun across 2 "nodes" of tools/cluster/netns_rig.sh (network namespaces zt1, zt2 on a private
# bridge, each with its own hostname; OpenMPI's daemon started on zt2 by the rig's plm_rsh_agent, no
# sshd; --mca btl self,tcp over the rig's subnet only), 1 rank per node, the tiny model, 6 steps, at
# ZeRO 2 and at ZeRO 3 (base weights partitioned and all-gathered across the nodes).
# Asserts: rank 0 ran on zt1 and rank 1 on zt2, in different network namespaces, each as local rank 0 of
# its node; the traffic went over the bridge (zt1's eth0 sent and received bytes); each adapter is
# byte-identical to the same run's with 2 ranks on one node (plain mpirun on this host).
# shellcheck source=tests/cluster/lib.sh
source "$(dirname "$0")/lib.sh"
cl_init netns_mpirun
cl_need_root
cl_need_netns
cl_fixture
cl_netns_up 2

# Each rank records where it runs, then becomes zlora.
wrapper=$CL_WORK/rank.sh
cat > "$wrapper" << 'EOS'
#!/bin/sh
out=$1
shift
echo "$OMPI_COMM_WORLD_RANK $(hostname) $(readlink /proc/self/ns/net) $OMPI_COMM_WORLD_LOCAL_RANK" >> "$out"
exec "$@"
EOS
chmod +x "$wrapper"

eth0_bytes() {
  local tx rx
  tx=$(ip netns exec zt1 cat /sys/class/net/eth0/statistics/tx_bytes)
  rx=$(ip netns exec zt1 cat /sys/class/net/eth0/statistics/rx_bytes)
  echo $((tx + rx))
}

for stage in 2 3; do
  out=$CL_WORK/z$stage
  ranks=$CL_WORK/ranks-z$stage.txt
  before=$(eth0_bytes)
  t=$(date +%s.%N)
  rc=0
  "$CL_SRC/tools/cluster/netns_rig.sh" mpirun --host zt1:1,zt2:1 -np 2 --bind-to none \
    "$wrapper" "$ranks" "$CL_ZLORA" train "$CL_FIX/job.yaml" --max_steps 6 --zero_stage "$stage" --output_dir "$out" \
    > "$CL_WORK/z$stage.log" 2>&1 || rc=$?
  ((rc == 0)) || cl_fail "ZeRO $stage across zt1, zt2: mpirun exited $rc: $(tail -n 20 "$CL_WORK/z$stage.log")"
  bytes=$(($(eth0_bytes) - before))
  cl_log "ZeRO $stage on 2 nodes: $(printf '%.1f' "$(echo "$(date +%s.%N) - $t" | bc)") s, $bytes bytes through zt1's eth0"
  ((bytes > 100000)) || cl_fail "only $bytes bytes went through zt1's eth0: the ranks did not talk over the bridge"
  mapfile -t where < <(sort -n "$ranks")
  ((${#where[@]} == 2)) || cl_fail "expected 2 ranks in $ranks, got: ${where[*]}"
  read -r r0 h0 n0 l0 <<< "${where[0]}"
  read -r r1 h1 n1 l1 <<< "${where[1]}"
  [[ "$r0 $h0 $l0 / $r1 $h1 $l1" == "0 zt1 0 / 1 zt2 0" ]] ||
    cl_fail "ranks ran as '${where[0]}' / '${where[1]}', expected rank 0 on zt1 and rank 1 on zt2, local rank 0 each"
  [[ "$n0" != "$n1" ]] || cl_fail "both ranks ran in network namespace $n0"
  cl_log "rank 0 on $h0 ($n0), rank 1 on $h1 ($n1)"
  cl_same_adapter "$out" "ref-np2-z$stage-6"
done
