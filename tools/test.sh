#!/usr/bin/env bash
# README command 2: installs what is missing, builds, and runs the whole test suite (ctest: unit tests,
# MPI tests under mpiexec, end-to-end CLI tests).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/tools/bootstrap.sh"
"$root/tools/build.sh"
cd "${ZLORA_BUILD_DIR:-$root/build}"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
ctest --output-on-failure -j"$(nproc)" "$@"
