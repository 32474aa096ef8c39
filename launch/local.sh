#!/usr/bin/env bash
# Single-host run (CPU, one GPU, or all local GPUs/TPU cores).
#   launch/local.sh [--dry-run] CONFIG WORKDIR [--config.FIELD=VALUE ...]
#   launch/local.sh configs/pretrain.py:tiny workdir/tiny
set -euo pipefail
DRY=0
if [[ "${1:-}" == "--dry-run" ]]; then DRY=1; shift; fi
if [[ $# -lt 2 ]]; then
  echo "usage: $0 [--dry-run] CONFIG WORKDIR [--config.FIELD=VALUE ...]" >&2
  exit 2
fi
CONFIG=$1; WORKDIR=$2; shift 2
CMD=(python -m bert_jax.main "--config=${CONFIG}" "--workdir=${WORKDIR}" "$@")
if [[ $DRY == 1 ]]; then
  printf '%q ' "${CMD[@]}"; echo
else
  exec "${CMD[@]}"
fi
