"""The launchers' dry runs print exactly what README's Launchers section shows.

(The local launcher really runs 2 processes in tests/test_multihost.py.)
"""
import os
import re
import shlex
import subprocess
import sys

import pytest

from launch import tpu_pod

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def readme_dry_runs():
  """[(command, expected output)] of every ```bash block that starts `$ python -m launch.`."""
  with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
    text = f.read()
  blocks = re.findall(r"```bash\n\$ (python -m launch\.[^\n]*)\n(.*?)```", text, re.S)
  return [(cmd, out) for cmd, out in blocks]


def launch(*args):
  return subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True,
                        text=True, timeout=60)


def test_readme_shows_a_v4_32_slice_and_a_2_node_slurm_job():
  commands = [cmd for cmd, _ in readme_dry_runs()]
  assert any("launch.tpu_pod" in c and "--accelerator=v4-32" in c for c in commands)
  assert any("launch.slurm" in c and "--nodes=2 --gpus_per_node=8" in c for c in commands)


@pytest.mark.parametrize("command,expected", readme_dry_runs())
def test_dry_run_output_is_what_the_readme_shows(command, expected):
  proc = launch(*shlex.split(command)[2:])
  assert proc.returncode == 0, proc.stderr
  assert proc.stdout == expected


def test_tpu_dry_run_runs_on_every_worker_and_deletes_on_request():
  proc = launch("launch.tpu_pod", "--name=t", "--zone=z", "--accelerator=v5litepod-16",
                "--delete", "--dry-run", "--", "--config=c", "--workdir=gs://b/r")
  lines = proc.stdout.splitlines()
  assert [i for i, line in enumerate(lines) if "--worker=" in line and "tee" in line] == [5, 6, 7, 8]
  assert lines[-1] == "gcloud compute tpus tpu-vm delete t --zone=z --quiet"
  only_delete = launch("launch.tpu_pod", "--name=t", "--zone=z", "--delete", "--dry-run")
  assert only_delete.stdout.splitlines() == [lines[-1]]


@pytest.mark.parametrize("accelerator,hosts", [
    ("v4-8", 1), ("v4-32", 4), ("v5p-128", 16), ("v3-8", 1), ("v5litepod-8", 1),
    ("v5litepod-16", 4), ("v6e-64", 16)])
def test_tpu_hosts_per_slice(accelerator, hosts):
  assert tpu_pod.num_workers(accelerator) == hosts


def test_slurm_per_gpu_runs_one_task_per_gpu():
  proc = launch("launch.slurm", "--nodes=4", "--gpus_per_node=8", "--per=gpu", "--wait",
                "--time=1:00:00", "--dry-run", "--", "--config=c", "--workdir=/s/r")
  sbatch = shlex.split(proc.stdout.splitlines()[1])
  assert "--ntasks-per-node=8" in sbatch and "--nodes=4" in sbatch and "--wait" in sbatch
  assert "--time=1:00:00" in sbatch and "local_device_ids" not in proc.stdout


@pytest.mark.parametrize("args,message", [
    (["launch.slurm", "--nodes=2", "--dry-run"], "--gpus_per_node"),
    (["launch.slurm", "--nodes=2", "--gpus_per_node=8", "--", "--config=c"], "--workdir="),
    (["launch.tpu_pod", "--name=t", "--zone=z", "--accelerator=v9-8", "--dry-run", "--",
      "--config=c", "--workdir=w"], "--accelerator='v9-8'"),
])
def test_bad_arguments_are_one_line_errors(args, message):
  proc = launch(*args)
  assert proc.returncode != 0 and message in proc.stderr.splitlines()[-1]


def test_local_cpu_devices_are_appended_to_the_callers_xla_flags():
  """A user's XLA_FLAGS (an HLO dump, a debug flag) reach every process; the device
  count comes last, so it is the one XLA keeps."""
  env = {**os.environ, "XLA_FLAGS": "--xla_dump_to=/tmp/hlo"}
  proc = subprocess.run([sys.executable, "-m", "launch.local", "--processes=2",
                         "--cpu_devices_per_process=4", "--dry-run", "--", "--config=c",
                         "--workdir=w"], cwd=REPO, env=env, capture_output=True,
                        text=True, timeout=60)
  assert proc.returncode == 0, proc.stderr
  lines = proc.stdout.splitlines()[:2]
  for line in lines:
    flags = next(a for a in shlex.split(line) if a.startswith("XLA_FLAGS="))
    assert flags == ("XLA_FLAGS=--xla_dump_to=/tmp/hlo "
                     "--xla_force_host_platform_device_count=4"), line
