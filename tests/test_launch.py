"""The launch scripts print the command they would run with --dry-run."""
import os
import subprocess

import pytest

LAUNCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "launch")


@pytest.mark.parametrize("script,args,expected", [
    ("local.sh", ["configs/pretrain.py:tiny", "w", "--config.seed=3"],
     ["python -m bert_jax.main", "--config=configs/pretrain.py:tiny", "--workdir=w",
      "--config.seed=3"]),
    ("tpu_pod.sh", ["tpu1", "zone-a", "configs/pretrain.py:base", "gs://b/r"],
     ["gcloud compute tpus tpu-vm ssh tpu1", "--worker=all", "distributed.mode=on",
      "--workdir=gs://b/r"]),
    ("slurm_gpu.sh", ["2", "8", "configs/pretrain.py:large", "/shared/r"],
     ["sbatch", "--nodes=2", "--gpus-per-node=8", "srun python -m bert_jax.main"]),
])
def test_dry_run_prints_the_command(script, args, expected):
  out = subprocess.run(["bash", os.path.join(LAUNCH, script), "--dry-run", *args],
                       capture_output=True, text=True, check=True).stdout
  flat = out.replace("\\ ", " ")
  for piece in expected:
    assert piece in flat, (piece, out)


def test_missing_arguments_are_a_usage_error():
  proc = subprocess.run(["bash", os.path.join(LAUNCH, "slurm_gpu.sh"), "--dry-run", "2"],
                        capture_output=True, text=True)
  assert proc.returncode == 2 and "usage:" in proc.stderr
