#!/usr/bin/env bash
# README command 2: installs what is missing, builds, and runs the whole test suite: ctest (unit tests,
# MPI tests under mpiexec, end-to-end CLI tests, fuzz-regression replays), then every libFuzzer target
# for a bounded time (ZLORA_FUZZ_SECONDS per target, default 15; 0 skips).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/tools/bootstrap.sh"
"$root/tools/build.sh"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
(cd "${ZLORA_BUILD_DIR:-$root/build}" && ctest --output-on-failure -j"$(nproc)" "$@")
seconds=${ZLORA_FUZZ_SECONDS:-15}
if [ "$seconds" != 0 ]; then
  "$root/tools/fuzz.sh" "$seconds"
fi
