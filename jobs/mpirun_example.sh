#!/bin/bash
# zlora without Slurm: OpenMPI's mpirun on one node or a host list.
#   jobs/mpirun_example.sh configs/qwen2.5-7b_lora_sft.yaml                   # 8 GPUs of this node
#   NP=16 HOSTS=node1:8,node2:8 jobs/mpirun_example.sh CONFIG.yaml --deepspeed configs/deepspeed/ds_z1.json
#   NP=2 jobs/mpirun_example.sh CONFIG.yaml --comm mpi                        # 2 ranks sharing one GPU
set -euo pipefail

CONFIG=${1:?usage: $0 CONFIG.yaml [zlora train flags]}
shift
NP=${NP:-8}
ZLORA=${ZLORA:-zlora}
HOST_ARGS=()
if [[ -n "${HOSTS:-}" ]]; then HOST_ARGS=(--host "$HOSTS"); fi

# -x exports the variables to every rank (remote hosts too); --bind-to none leaves CPU placement to
# OpenMP; --map-by ppr:N:node would pin N ranks per node. Add --oversubscribe when NP exceeds cores.
exec mpirun -np "$NP" "${HOST_ARGS[@]}" --bind-to none \
  -x NCCL_DEBUG="${NCCL_DEBUG:-WARN}" -x OMP_NUM_THREADS="${OMP_NUM_THREADS:-8}" -x PATH -x LD_LIBRARY_PATH \
  "$ZLORA" train "$CONFIG" "$@"
