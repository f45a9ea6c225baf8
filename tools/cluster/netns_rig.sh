#!/usr/bin/env bash
# N "nodes" on this one host for multi-node mpirun tests: each node is a network namespace (zn1 … znN)
# with its own interface and address on a private bridge, and its own hostname (a UTS namespace per
# command), so OpenMPI sees N hosts and talks between them over TCP only. No sshd: OpenMPI's
# plm_rsh_agent is this script's `agent`, which runs the remote daemon with `ip netns exec`.
#
# The bridge lives in a namespace of its own (zn-hub), and the addresses (198.18.7.0/24 by default:
# RFC 2544's benchmarking range) exist only inside the namespaces: the host's own network, routes and
# files are never changed. State is kept in /tmp/zlora-netns-PREFIX/ (what was made, for teardown).
#
#   tools/cluster/netns_rig.sh up N          create N node namespaces (idempotent: an identical rig is
#                                            kept, anything else under the prefix is replaced)
#   tools/cluster/netns_rig.sh down          end every process inside the namespaces (by PID), delete
#                                            them and the state directory
#   tools/cluster/netns_rig.sh status        the nodes, their addresses and processes
#   tools/cluster/netns_rig.sh exec HOST CMD...      run CMD on node HOST (its netns and hostname)
#   tools/cluster/netns_rig.sh mpirun MPIRUN-ARGS... mpirun on the first node, across the rig: adds
#                                            --mca plm_rsh_agent (this script's `agent`), btl self,tcp
#                                            and the interface selection; name the nodes yourself with
#                                            --host zn1:R,zn2:R (R ranks each)
#   tools/cluster/netns_rig.sh agent HOST CMDLINE... the plm_rsh_agent: like `ssh HOST CMDLINE` (the
#                                            words are joined and run by sh on node HOST)
#
# Environment: ZLORA_NETNS_PREFIX (default zn: nodes zn1…, hub zn-hub), ZLORA_NETNS_SUBNET (three
# octets, default 198.18.7: node i is .i/24).
# Exit codes: 0 done; 1 failed (what was made is torn down again); 2 usage; 77 cannot run here (not
# root, no `ip netns`, no unshare, namespaces not permitted). Tests skip on 77, printing the reason.
set -euo pipefail

readonly EXIT_CANNOT=77
prefix=${ZLORA_NETNS_PREFIX:-zn}
subnet=${ZLORA_NETNS_SUBNET:-198.18.7}
hub=$prefix-hub
state=/tmp/zlora-netns-$prefix
self=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")

usage() {
  echo "usage: $0 up N | down | status | exec HOST CMD... | mpirun MPIRUN-ARGS... | agent HOST CMDLINE..." >&2
  exit 2
}
die() {
  echo "netns_rig: $*" >&2
  exit 1
}
cannot() {
  echo "netns_rig: cannot run here: $*" >&2
  exit "$EXIT_CANNOT"
}

[[ "$prefix" =~ ^[a-z][a-z0-9]{0,7}$ ]] || die "ZLORA_NETNS_PREFIX must be 1-8 lowercase letters/digits, got '$prefix'"
[[ "$subnet" =~ ^[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}$ ]] || die "ZLORA_NETNS_SUBNET must be three octets (A.B.C), got '$subnet'"

check_prerequisites() {
  [[ "$(id -u)" == 0 ]] || cannot "needs root (ip netns add, unshare --uts)"
  command -v ip > /dev/null 2>&1 || PATH=$PATH:/usr/sbin:/sbin command -v ip > /dev/null 2>&1 ||
    cannot "no 'ip' command (apt-get install iproute2)"
  command -v unshare > /dev/null 2>&1 || cannot "no 'unshare' command (util-linux)"
  ip netns list > /dev/null 2>&1 || cannot "'ip netns' does not work here"
}

# The namespaces of this prefix that exist now: the hub and every PREFIX<digits>.
rig_namespaces() {
  ip netns list 2> /dev/null | awk '{print $1}' | grep -E "^(${prefix}[0-9]+|$hub)\$" || true
}

node_count() { cat "$state/nodes" 2> /dev/null || echo 0; }

# True when node 1 reaches address $1 over the bridge: a TCP connect to port 1 is answered (refused is
# an answer; a timeout is not). No ping needed.
reaches() {
  local out
  out=$(ip netns exec "${prefix}1" timeout 2 bash -c "exec 3<> /dev/tcp/$1/1" 2>&1) && return 0
  [[ "$out" == *"Connection refused"* ]]
}

do_down() {
  local ns pid pids i
  for ns in $(rig_namespaces); do
    # Whatever still runs inside (ranks, orted, mpirun of a crashed test): TERM, then KILL, by PID.
    mapfile -t pids < <(ip netns pids "$ns" 2> /dev/null || true)
    if ((${#pids[@]})); then
      echo "netns_rig: ending ${#pids[@]} process(es) in $ns: ${pids[*]}" >&2
      for pid in "${pids[@]}"; do kill -TERM "$pid" 2> /dev/null || true; done
      for ((i = 0; i < 30; i++)); do
        [[ -z "$(ip netns pids "$ns" 2> /dev/null)" ]] && break
        sleep 0.1
      done
      mapfile -t pids < <(ip netns pids "$ns" 2> /dev/null || true)
      for pid in "${pids[@]}"; do kill -KILL "$pid" 2> /dev/null || true; done
    fi
    # Deleting a namespace removes its end of every veth pair, and so the pair.
    ip netns del "$ns" 2> /dev/null || echo "netns_rig: could not delete namespace $ns" >&2
  done
  rm -rf "$state"
  [[ -z "$(rig_namespaces)" ]] || die "namespaces left: $(rig_namespaces | tr '\n' ' ')"
}

healthy() {
  local n=$1 i
  [[ "$(node_count)" == "$n" && "$(cat "$state/subnet" 2> /dev/null)" == "$subnet" ]] || return 1
  [[ "$(rig_namespaces | sort | tr '\n' ' ')" == "$(printf '%s\n' "$hub" $(seq -f "$prefix%g" 1 "$n") | sort | tr '\n' ' ')" ]] || return 1
  for ((i = 2; i <= n; i++)); do
    reaches "$subnet.$i" || return 1
  done
}

do_up() {
  local n=$1 i
  if ! [[ "$n" =~ ^[0-9]+$ ]] || ((n < 1 || n > 200)); then die "N must be 1..200, got '$n'"; fi
  check_prerequisites
  if healthy "$n"; then
    echo "netns_rig: already up: $n node(s) ${prefix}1..$prefix$n on $subnet.0/24"
    return 0
  fi
  do_down
  mkdir -p "$state"
  trap 'rc=$?; if ((rc != 0)); then echo "netns_rig: up failed; tearing down" >&2; do_down; fi' EXIT
  echo "$subnet" > "$state/subnet"
  echo "$n" > "$state/nodes"
  ip netns add "$hub" 2> "$state/err" || cannot "ip netns add failed: $(cat "$state/err")"
  ip -n "$hub" link set lo up
  ip -n "$hub" link add br0 type bridge || die "cannot create a bridge (kernel module 'bridge' missing?)"
  ip -n "$hub" link set br0 up
  for ((i = 1; i <= n; i++)); do
    local ns=$prefix$i
    ip netns add "$ns"
    ip -n "$ns" link set lo up
    ip -n "$hub" link add "v$i" type veth peer name eth0 netns "$ns"
    ip -n "$hub" link set "v$i" master br0 up
    ip -n "$ns" addr add "$subnet.$i/24" dev eth0
    ip -n "$ns" link set eth0 up
  done
  for ((i = 2; i <= n; i++)); do
    local ok=0 t
    for ((t = 0; t < 50; t++)); do
      if reaches "$subnet.$i"; then
        ok=1
        break
      fi
      sleep 0.1
    done
    ((ok)) || die "${prefix}1 cannot reach $prefix$i at $subnet.$i"
  done
  trap - EXIT
  echo "netns_rig: up: $n node(s) ${prefix}1..$prefix$n on $subnet.0/24 (bridge in $hub)"
}

do_status() {
  local n ns i
  n=$(node_count)
  if ((n == 0)); then
    echo "netns_rig: not up (prefix $prefix)"
    [[ -z "$(rig_namespaces)" ]] || echo "netns_rig: but namespaces exist: $(rig_namespaces | tr '\n' ' ') (run down)"
    return 1
  fi
  for ((i = 1; i <= n; i++)); do
    ns=$prefix$i
    printf '%s %s processes: %s\n' "$ns" \
      "$(ip -n "$ns" -4 -o addr show dev eth0 2> /dev/null | awk '{print $4}')" \
      "$(ip netns pids "$ns" 2> /dev/null | tr '\n' ' ')"
  done
}

# Runs "${@:2}" on node $1: in its network namespace, with a UTS namespace of its own named after it.
node_exec() {
  local host=$1
  shift
  [[ -e "/run/netns/$host" ]] || die "no node '$host' (netns_rig.sh up first; nodes are $prefix<i>)"
  # shellcheck disable=SC2016 # $0 and $@ are the inner shell's
  exec ip netns exec "$host" unshare --uts -- sh -c 'hostname "$0" && exec "$@"' "$host" "$@"
}

cmd=${1:-}
[[ -n "$cmd" ]] || usage
shift
case "$cmd" in
  up)
    (($# == 1)) || usage
    do_up "$1"
    ;;
  down)
    (($# == 0)) || usage
    check_prerequisites
    do_down
    echo "netns_rig: down"
    ;;
  status)
    (($# == 0)) || usage
    do_status
    ;;
  exec)
    (($# >= 2)) || usage
    node_exec "$@"
    ;;
  agent)
    # OpenMPI calls `AGENT [agent options] HOST WORDS...`, as it would call ssh; the words form one
    # command line for the remote shell (`VAR=…; export VAR; …/orted -mca … "…"`).
    while [[ "${1:-}" == -* ]]; do shift; done
    (($# >= 2)) || usage
    host=$1
    shift
    node_exec "$host" sh -c "$*"
    ;;
  mpirun)
    n=$(node_count)
    ((n > 0)) || die "not up (netns_rig.sh up N first)"
    [[ "$self" != *[[:space:]]* ]] || die "the path of this script may not contain spaces ($self): it is the plm_rsh_agent"
    node_exec "${prefix}1" mpirun --mca plm_rsh_agent "$self agent" \
      --mca btl self,tcp --mca btl_tcp_if_include "$subnet.0/24" --mca oob_tcp_if_include "$subnet.0/24" \
      "$@"
    ;;
  *) usage ;;
esac
