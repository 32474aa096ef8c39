r"""SLURM multi-node GPU job: `sbatch` + `srun`, one process per node or per GPU.

  python -m launch.slurm --nodes=2 --gpus_per_node=8 [--per=node|gpu] [--partition=P] \
      [--time=HH:MM:SS] [--account=A] [--job_name=bert_jax] [--wait] [--dry-run] \
      -- --config=configs/pretrain.py:large --workdir=/shared/runs/large

Submitted from the checkout's root (srun starts in the submit directory; the checkout
and the Python environment must be visible on every node, as on a shared home). Each
task runs `python -m bert_jax.main ARGS`; jax.distributed reads the coordinator,
process count and process id from SLURM's variables (`distributed.mode=auto` detects
SLURM_NTASKS > 1). JAX gives each SLURM task the one GPU numbered by SLURM_LOCALID,
which is right for `--per=gpu` (8 tasks per node, all GPUs visible to each); with
`--per=node` (one task per node) the launcher passes
`--config.distributed.local_device_ids=0,...,G-1` so each process drives all its GPUs.
WORKDIR must be on storage every node shares; logs go to WORKDIR/logs/ (slurm-JOB.out
for the batch script, slurm-JOB-TASK.out per task). `--wait` blocks until the job ends.
"""

from __future__ import annotations

import shlex
import sys
from typing import Sequence

from launch import common


def steps(args) -> list[str]:
  workdir = common.workdir_of(args.main_args)
  logs = f"{workdir}/logs"
  main_args = list(args.main_args)
  if args.per == "node":
    tasks = 1
    ids = ",".join(str(i) for i in range(args.gpus_per_node))
    main_args.append(f"--config.distributed.local_device_ids={ids}")
  else:
    tasks = args.gpus_per_node
  srun = ["srun", "--kill-on-bad-exit=1", f"--output={logs}/slurm-%j-%t.out",
          *common.main_command(main_args)]
  sbatch = ["sbatch", f"--job-name={args.job_name}", f"--nodes={args.nodes}",
            f"--ntasks-per-node={tasks}", f"--gpus-per-node={args.gpus_per_node}",
            "--exclusive", f"--output={logs}/slurm-%j.out"]
  sbatch += [f"--{flag}={value}" for flag, value in (
      ("partition", args.partition), ("time", args.time), ("account", args.account)) if value]
  sbatch += ["--wait"] if args.wait else []
  sbatch.append(f"--wrap={shlex.join(srun)}")
  return [shlex.join(["mkdir", "-p", logs]), shlex.join(sbatch)]


def main(argv: Sequence[str] | None = None) -> int:
  p = common.parser("slurm", __doc__)
  p.add_argument("--nodes", type=int, required=True)
  p.add_argument("--gpus_per_node", type=int, required=True)
  p.add_argument("--per", choices=("node", "gpu"), default="node",
                 help="one process per node (all its GPUs) or per GPU")
  p.add_argument("--partition", default="")
  p.add_argument("--time", default="", help="time limit, e.g. 48:00:00")
  p.add_argument("--account", default="")
  p.add_argument("--job_name", default="bert_jax")
  p.add_argument("--wait", action="store_true", help="return when the job ends (sbatch --wait)")
  args = common.parse(p, argv)
  return common.run_shell(steps(args), args.dry_run)


if __name__ == "__main__":
  sys.exit(main())
