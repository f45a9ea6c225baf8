#!/usr/bin/env bash
# README command 2: installs what is missing, builds, and runs the whole test suite: ctest (unit tests,
# MPI tests under mpiexec, end-to-end CLI tests, fuzz-regression replays, and the cluster tests on
# their one-host rigs: label `cluster`, skipped with the reason where they cannot run; docs/testing.md),
# then every libFuzzer target for a bounded, repeatable run (ZLORA_FUZZ_RUNS inputs from a fixed seed,
# default 4000; 0 skips; tools/fuzz.sh SECONDS runs them for a time instead, for long campaigns).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/tools/bootstrap.sh"
# Slurm + munge for the cluster tests (tests/cluster/); as root only, as the rigs need root anyway.
if [ "$(id -u)" -eq 0 ] && [ "${ZLORA_CLUSTER_DEPS:-1}" != 0 ]; then "$root/tools/cluster/bootstrap.sh"; fi
"$root/tools/build.sh"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
(cd "${ZLORA_BUILD_DIR:-$root/build}" && ctest --output-on-failure -j"$(nproc)" "$@")
runs=${ZLORA_FUZZ_RUNS:-4000}
if [ "$runs" != 0 ]; then
  ZLORA_FUZZ_RUNS=$runs "$root/tools/fuzz.sh"
fi
