#!/usr/bin/env bash
# mpirun across 2 "nodes" of tools/cluster/netns_rig.sh (network namespaces zt1, zt2 on a private
# bridge, each with its own hostname; OpenMPI's daemon started on zt2 by the rig's plm_rsh_agent, no
# sshd; --mca btl self,tcp over the rig's subnet only), the tiny model, 4 steps of a global batch of 4
# (1 per rank, gradient accumulation 4 / world), as a matrix: ZeRO 0, 1, 1 + offload_optimizer cpu, 2,
# 2 + offload, 3 (base weights partitioned and all-gathered across the nodes), 3 + offload; each on
# 2 nodes x 1 rank (--host zt1:1,zt2:1) and on 2 nodes x 2 ranks (--host zt1:2,zt2:2).
# The references (cl_ref_once, kept with the fixture; 21 runs the first time): for each configuration
# one process (no mpirun), mpirun -np 2 and mpirun -np 4 on this host, the same global batch.
# Asserts for each of the 14 runs: rank r ran on the node and as the local rank mpirun's by-slot mapping
# gives it (ranks 0..k-1 on zt1, local ranks 0..k-1; the rest on zt2), the ranks of one node in one
# network namespace and the two nodes in different ones; the traffic went over the bridge (zt1's eth0
# sent and received bytes); the adapter is (a) byte-identical to the same run's with the same world
# size on one host (plain mpirun) and (b) within 1e-5 relative error, tensor by tensor, of one process
# with the same global batch (tests/tools/adapter_diff.cpp).
# shellcheck source=tests/cluster/lib.sh
source "$(dirname "$0")/lib.sh"
cl_init netns_mpirun
cl_need_root
cl_need_netns
cl_fixture
# The flags of a run of configuration CFG at world size N: the global batch is 4 at every N.
run_flags() {
  echo "--max_steps 4 --per_device_train_batch_size 1 --gradient_accumulation_steps $((4 / $2)) $(cl_zero_flags "$1")"
}
for cfg in "${CL_ZERO_CONFIGS[@]}"; do
  for np in 1 2 4; do
    # shellcheck disable=SC2046 # one flag or value per word
    cl_ref_once "$np" "ref-np$np-$cfg-b4s4" $(run_flags "$cfg" "$np")
  done
done
cl_netns_up 2
z1=${CL_NETNS_PREFIX}1
z2=${CL_NETNS_PREFIX}2

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
  tx=$(ip netns exec "$z1" cat /sys/class/net/eth0/statistics/tx_bytes)
  rx=$(ip netns exec "$z1" cat /sys/class/net/eth0/statistics/rx_bytes)
  echo $((tx + rx))
}

# check_placement RANKS PER_NODE: the ranks file shows 2 x PER_NODE ranks, rank r on zt(r / PER_NODE + 1)
# as local rank r % PER_NODE; one network namespace per node, different between the nodes.
check_placement() {
  local file=$1 per=$2 world=$(($2 * 2)) r h n l want_h line
  local -A ns=()
  mapfile -t where < <(sort -n "$file")
  ((${#where[@]} == world)) || cl_fail "expected $world ranks in $file, got: ${where[*]}"
  for line in "${where[@]}"; do
    read -r r h n l <<< "$line"
    want_h=$CL_NETNS_PREFIX$((r / per + 1))
    [[ "$h $l" == "$want_h $((r % per))" ]] ||
      cl_fail "rank $r ran on $h as local rank $l, expected $want_h as local rank $((r % per)) (${where[*]})"
    if [[ -n "${ns[$h]:-}" && "${ns[$h]}" != "$n" ]]; then cl_fail "the ranks on $h ran in two network namespaces"; fi
    ns[$h]=$n
  done
  [[ "${ns[$z1]}" != "${ns[$z2]}" ]] || cl_fail "the ranks of $z1 and $z2 ran in one network namespace ${ns[$z1]}"
  cl_log "placement: ${where[*]}"
}

# check_topology LOG OUT PER: rank 0's log and output_dir/topology.json describe what ran: 2 nodes (by
# their hostnames) with PER ranks each, local rank -> device, each node's own bridge address, the
# launcher's network selection and the transport of each kind of collective.
check_topology() {
  local log=$1 out=$2 per=$3 r1 r2 locals
  if ((per == 1)); then
    r1=0 r2=1 locals="local 0 -> cpu"
  else
    r1=0-1 r2=2-3 locals="local 0 -> cpu, local 1 -> cpu"
  fi
  local want
  for want in "topology: 2 nodes, $world ranks" \
    "node $z1 (host $z1): ranks $r1 ($locals); interfaces eth0=$ZLORA_NETNS_SUBNET.1" \
    "node $z2 (host $z2): ranks $r2 ($locals); interfaces eth0=$ZLORA_NETNS_SUBNET.2" \
    "network selection: OMPI_MCA_btl=self,tcp" \
    "collectives: mpi (host memory); step agreements and checkpoint traffic over MPI in host memory"; do
    grep -qF -- "$want" "$log" || cl_fail "$tag: the log does not say '$want': $(grep -A4 'topology:' "$log")"
  done
  jq -e --arg z1 "$z1" --arg z2 "$z2" --argjson w "$world" --argjson per "$per" '
    .world_size == $w and .num_nodes == 2 and .backend == "mpi"
    and ([.nodes[].host] == [$z1, $z2]) and ([.nodes[].ranks | length] == [$per, $per])
    and ([.ranks[] | select(.host == $z2) | .rank] == [range($per; $w)])
    and ([.ranks[].local_rank] == [range(0; $w) | . % $per])
    and (.collectives["training collectives"] | length > 0)' "$out/topology.json" > /dev/null ||
    cl_fail "$tag: topology.json does not describe 2 nodes x $per ranks: $(cat "$out/topology.json")"
}

for per in 1 2; do
  world=$((per * 2))
  for cfg in "${CL_ZERO_CONFIGS[@]}"; do
    tag=$cfg-${per}pn
    out=$CL_WORK/$tag
    ranks=$CL_WORK/ranks-$tag.txt
    before=$(eth0_bytes)
    t=$(date +%s.%N)
    rc=0
    # shellcheck disable=SC2046 # one flag or value per word
    "$CL_SRC/tools/cluster/netns_rig.sh" mpirun --host "$z1:$per,$z2:$per" -np "$world" --bind-to none \
      "$wrapper" "$ranks" "$CL_ZLORA" train "$CL_FIX/job.yaml" $(run_flags "$cfg" "$world") --output_dir "$out" \
      > "$CL_WORK/$tag.log" 2>&1 || rc=$?
    ((rc == 0)) || cl_fail "$cfg on $z1:$per,$z2:$per: mpirun exited $rc: $(tail -n 20 "$CL_WORK/$tag.log")"
    bytes=$(($(eth0_bytes) - before))
    cl_log "$cfg on 2 nodes x $per: $(printf '%.1f' "$(echo "$(date +%s.%N) - $t" | bc)") s, $bytes bytes through $z1's eth0"
    ((bytes > 100000)) || cl_fail "only $bytes bytes went through $z1's eth0: the ranks did not talk over the bridge"
    check_placement "$ranks" "$per"
    check_topology "$CL_WORK/$tag.log" "$out" "$per"
    cl_same_adapter "$out" "ref-np$world-$cfg-b4s4"
    cl_close_adapter "$out" "ref-np1-$cfg-b4s4"
    rm -rf "$out"
  done
done
