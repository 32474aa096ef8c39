r"""TPU VM pod slice: create or reuse it, copy and install this checkout on every worker,
run the same command on all workers with each worker's log streamed and kept, and
delete the slice on request.

  python -m launch.tpu_pod --name=bert-v4 --zone=us-central2-b --accelerator=v4-32 \
      [--project=P] [--version=tpu-ubuntu2204-base] [--spot] [--skip_setup] [--delete] \
      [--dry-run] -- --config=configs/pretrain.py:base --workdir=gs://BUCKET/run

Steps (each one shell line, printed by --dry-run exactly as it runs):
  1. `describe` the slice, `create` it if that fails;
  2. pack the checkout (`git ls-files`: tracked and untracked-but-not-ignored files, so
     uncommitted edits travel too) into /tmp/bert_jax-NAME.tgz;
  3. `scp` it to every worker and unpack + `pip install -e . jax[tpu]` there (skipped
     with --skip_setup, e.g. for the second point of a sweep);
  4. one `ssh --worker=i` per worker, all at once, running `python3 -m bert_jax.main
     ARGS --config.distributed.mode=on` (jax.distributed finds the pod from the TPU
     metadata), its output shown and kept in LOG_DIR/worker-i.log (default logs/NAME);
  5. with --delete: delete the slice after the run (alone, without `--` args: only that).
The workdir must be storage every worker reaches (gs://... for checkpoints and logs).
"""

from __future__ import annotations

import re
import shlex
import sys
from typing import Sequence

from launch import common

REMOTE_DIR = "~/bert_jax"
# Hosts of a slice: v2/v3/v4/v5p count TensorCores (8 per host); v5e/v6e count chips
# (one host up to 8 chips, then 4 per host).
CORES_PER_HOST = {"v2": 8, "v3": 8, "v4": 8, "v5p": 8}
CHIPS_PER_HOST = {"v5litepod": 4, "v5e": 4, "v6e": 4}


def num_workers(accelerator: str) -> int:
  """Hosts in a slice from its accelerator type ('v4-32' -> 4, 'v5litepod-16' -> 4)."""
  m = re.fullmatch(r"(v\d+[a-z]*)-(\d+)", accelerator)
  if not m or m.group(1) not in {**CORES_PER_HOST, **CHIPS_PER_HOST}:
    raise ValueError(f"--accelerator={accelerator!r}: expected e.g. v4-32, v5p-64, "
                     f"v5litepod-16, v6e-32 (or give --workers)")
  kind, n = m.group(1), int(m.group(2))
  if kind in CORES_PER_HOST:
    return max(1, n // CORES_PER_HOST[kind])
  return 1 if n <= 8 else n // CHIPS_PER_HOST[kind]


def steps(args) -> tuple[list[str], list[str], list[str]]:
  """(setup steps, per-worker run steps, teardown steps) as shell lines."""
  gcloud = ["gcloud", "compute", "tpus", "tpu-vm"]
  where = [f"--zone={args.zone}"] + ([f"--project={args.project}"] if args.project else [])
  name = args.name
  archive = f"/tmp/bert_jax-{name}.tgz"
  setup, run, teardown = [], [], []
  if args.main_args and not args.skip_setup:
    create = gcloud + ["create", name, *where, f"--accelerator-type={args.accelerator}",
                       f"--version={args.version}"] + (["--spot"] if args.spot else [])
    setup.append(f"{shlex.join(gcloud + ['describe', name, *where])} >/dev/null 2>&1 || "
                 f"{shlex.join(create)}")
    setup.append("git ls-files -z --cached --others --exclude-standard | "
                 f"tar -czf {archive} --null -T -")
    setup.append(shlex.join(gcloud + ["scp", archive, f"{name}:/tmp/bert_jax.tgz", *where,
                                      "--worker=all"]))
    install = (f"mkdir -p {REMOTE_DIR} && tar -xzf /tmp/bert_jax.tgz -C {REMOTE_DIR} && "
               f"python3 -m pip install -q -e {REMOTE_DIR} 'jax[tpu]'")
    setup.append(shlex.join(gcloud + ["ssh", name, *where, "--worker=all",
                                      f"--command={install}"]))
  if args.main_args:
    remote = (f"cd {REMOTE_DIR} && " + shlex.join(common.main_command(
        args.main_args + ["--config.distributed.mode=on"], python="python3")))
    workers = args.workers or num_workers(args.accelerator)
    log_dir = args.log_dir or f"logs/{name}"
    setup.append(f"mkdir -p {log_dir}")
    for i in range(workers):
      run.append(shlex.join(gcloud + ["ssh", name, *where, f"--worker={i}",
                                      f"--command={remote}"])
                 + f" 2>&1 | tee {log_dir}/worker-{i}.log")
  if args.delete:
    teardown.append(shlex.join(gcloud + ["delete", name, *where, "--quiet"]))
  return setup, run, teardown


def main(argv: Sequence[str] | None = None) -> int:
  p = common.parser("tpu_pod", __doc__)
  p.add_argument("--name", required=True, help="TPU VM name")
  p.add_argument("--zone", required=True)
  p.add_argument("--accelerator", default="v4-32", help="accelerator type, e.g. v4-32")
  p.add_argument("--version", default="tpu-ubuntu2204-base", help="TPU VM software version")
  p.add_argument("--project", default="", help="GCP project ('' = gcloud's default)")
  p.add_argument("--spot", action="store_true", help="create a Spot slice")
  p.add_argument("--workers", type=int, default=0, help="hosts (0 = from --accelerator)")
  p.add_argument("--log_dir", default="", help="local per-worker logs (default logs/NAME)")
  p.add_argument("--skip_setup", action="store_true",
                 help="the slice exists and holds this checkout: only run")
  p.add_argument("--delete", action="store_true", help="delete the slice at the end")
  ours, main_args = common.split_argv(sys.argv[1:] if argv is None else argv)
  args = p.parse_args(ours)
  args.main_args = main_args
  if not main_args and not args.delete:
    p.error("give the bert_jax.main arguments after '--' (or only --delete)")
  try:
    setup, run, teardown = steps(args)
  except ValueError as e:
    p.error(str(e))
  rc = common.run_shell(setup, args.dry_run)
  if rc == 0:
    rc = common.run_parallel_shell(run, args.dry_run)
  if args.delete:  # also after a failed run: a forgotten slice costs money
    rc = common.run_shell(teardown, args.dry_run) or rc
  return rc


if __name__ == "__main__":
  sys.exit(main())
