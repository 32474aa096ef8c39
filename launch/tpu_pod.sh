#!/usr/bin/env bash
# Multi-host TPU pod: the same command on every worker of a TPU VM pod slice.
#   launch/tpu_pod.sh [--dry-run] TPU_NAME ZONE CONFIG WORKDIR [--config.FIELD=VALUE ...]
# WORKDIR must be shared by all hosts (e.g. gs://bucket/run). jax.distributed finds the
# pod from the TPU metadata (distributed.mode=on); each host feeds its share of the batch.
set -euo pipefail
DRY=0
if [[ "${1:-}" == "--dry-run" ]]; then DRY=1; shift; fi
if [[ $# -lt 4 ]]; then
  echo "usage: $0 [--dry-run] TPU_NAME ZONE CONFIG WORKDIR [--config.FIELD=VALUE ...]" >&2
  exit 2
fi
TPU=$1; ZONE=$2; CONFIG=$3; WORKDIR=$4; shift 4
REMOTE="cd ~/bert_jax && python -m bert_jax.main --config=${CONFIG} --workdir=${WORKDIR} --config.distributed.mode=on"
for arg in "$@"; do REMOTE+=" $(printf '%q' "$arg")"; done
CMD=(gcloud compute tpus tpu-vm ssh "$TPU" --zone="$ZONE" --worker=all --command="$REMOTE")
if [[ $DRY == 1 ]]; then
  printf '%q ' "${CMD[@]}"; echo
else
  exec "${CMD[@]}"
fi
