#!/usr/bin/env bash
# Installs what the cluster rigs and their tests need (tests/cluster/, label `cluster`), when missing:
# Slurm (slurmctld, slurmd, the client commands, the PMIx plugin: Debian's slurm-wlm), munge, iproute2
# (ip netns), util-linux (unshare, flock), bc, jq (the tests read zlora's JSON outputs), and shellcheck
# (the jobs/ scripts are linted when it is there). Safe to re-run: it asks apt only for what `dpkg -s`
# does not report as installed.
#
# The packages' own services are not used: the rig runs its own munged, slurmctld and slurmd under a
# private directory (tools/cluster/slurm_rig.sh). On a systemd host, Debian starts a system munged at
# install and leaves slurmctld/slurmd stopped until /etc/slurm/slurm.conf exists; neither disturbs the
# rig. tools/test.sh runs this when it runs as root (as CI does); ZLORA_CLUSTER_DEPS=0 skips it.
set -euo pipefail
packages=(slurm-wlm munge iproute2 util-linux bc jq shellcheck)
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" > /dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "zlora: installing ${missing[*]} (cluster test rigs)"
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
