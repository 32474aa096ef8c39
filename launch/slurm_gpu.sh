#!/usr/bin/env bash
# Multi-node GPU cluster under SLURM: one process per node, all its GPUs local devices.
#   launch/slurm_gpu.sh [--dry-run] NODES GPUS_PER_NODE CONFIG WORKDIR [--config.FIELD=VALUE ...]
# jax.distributed reads the coordinator, process count and id from SLURM's variables
# (distributed.mode=auto detects SLURM_NTASKS > 1). WORKDIR must be on a shared filesystem.
set -euo pipefail
DRY=0
if [[ "${1:-}" == "--dry-run" ]]; then DRY=1; shift; fi
if [[ $# -lt 4 ]]; then
  echo "usage: $0 [--dry-run] NODES GPUS_PER_NODE CONFIG WORKDIR [--config.FIELD=VALUE ...]" >&2
  exit 2
fi
NODES=$1; GPUS=$2; CONFIG=$3; WORKDIR=$4; shift 4
CMD=(sbatch --nodes="$NODES" --ntasks-per-node=1 --gpus-per-node="$GPUS" --exclusive
     --job-name=bert_jax --output="${WORKDIR}/slurm-%j.out"
     --wrap="srun python -m bert_jax.main --config=${CONFIG} --workdir=${WORKDIR} $(printf '%q ' "$@")")
if [[ $DRY == 1 ]]; then
  printf '%q ' "${CMD[@]}"; echo
else
  mkdir -p "$WORKDIR"
  exec "${CMD[@]}"
fi
