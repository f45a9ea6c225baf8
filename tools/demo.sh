#!/usr/bin/env bash
# README command 1: installs what is missing, builds, and runs the main job on the embedded default
# (configs/demo.yaml). It grows with the pipeline into prepare -> mpirun train (ZeRO) -> export -> generate
# on a tiny model; today it shows the resolved training configuration under mpirun.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/tools/bootstrap.sh"
"$root/tools/build.sh"
zlora=${ZLORA_BUILD_DIR:-$root/build}/bin/zlora
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
cd "$root"
echo "== zlora --help"
"$zlora" --help
echo "== resolved configuration of the demo run (configs/demo.yaml + the seed's ZeRO-2 DeepSpeed JSON)"
"$zlora" train configs/demo.yaml --deepspeed configs/deepspeed/ds_z2_offload.json --print_config
