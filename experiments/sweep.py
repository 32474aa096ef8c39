r"""The one sweep runner: a grid over any config fields -> runs -> a table and plots.

A sweep file is a small Python module (see experiments/sweeps/) holding:

  BASE = "configs/pretrain.py:tiny"            # the config every point starts from
  GRID = {"model.hidden_act": ["gelu", "relu"], "seed": [0, 1]}   # the product is run
  OVERRIDES = {"train.num_train_steps": 2000}  # optional: fixed for every point
  METRICS = ["eval/mlm_accuracy", "eval/mlm_loss"]  # optional: final metrics tabulated
  CURVES = ["train/loss", "eval/mlm_accuracy"]  # optional: plotted over steps
  AGGREGATE_OVER = "seed"                      # optional: median/min/max over this field
  TITLE = "GELU vs ReLU"                       # optional

or a `get_sweep(arg) -> dict` with the same keys in lower case, called with the text
after a colon (`--sweep=experiments/sweeps/glue.py:task=rte`), like config files.
Extra keys a recipe may give: `PAPER` ({metric: number}, shown beside the result, and
`PAPER_SOURCE`, where it comes from) and `SELECT` (the metric that picks the best row;
default the first of METRICS).

  python -m experiments.sweep --sweep=experiments/sweeps/hidden_act.py --workdir=/tmp/act \
      [--launcher=local|slurm|tpu --launcher_args='--nodes=2 --gpus_per_node=8'] \
      [--override=train.num_train_steps=100 ...] [--dry-run]

Every point runs as `python -m bert_jax.main --config=BASE --config.FIELD=VALUE ...
--workdir=WORKDIR/<point>` (through `python -m launch.slurm|launch.tpu_pod` with the
other launchers), its output in WORKDIR/logs/<point>.log. A point whose workdir holds a
final result (`final_eval.json` of pretraining, `results.json` of fine-tuning) is
skipped, an unfinished one resumes from its own checkpoints, and a failed one is
reported while the sweep goes on. The report (experiments/report.py) is collected from
the runs' own files into WORKDIR/results.md, results.json, final.png and curves.png;
`--collect_only` rebuilds it without running anything. `--parallel=N` runs N points at
once (local CPU/GPU runs: mind the cores and devices). The skip check and the report
read WORKDIR with the local filesystem: with remote launchers give a WORKDIR mounted
here too (a shared filesystem, or gs:// through gcsfuse).

With AGGREGATE_OVER='seed' the table holds the median (min, max) over seeds of every
other field combination: the fine-tuning protocol of Devlin et al. 2019 (sec. 4.1, lr
picked on dev) with several seeds per lr, as papers do since (BERT-large is unstable
on small sets).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import importlib.util
import itertools
import os
import shlex
import subprocess
import sys
import tempfile
import time
from typing import Any, Sequence

from bert_jax import storage, workdir as workdir_lib

LAUNCHERS = ("local", "slurm", "tpu")


@dataclasses.dataclass(frozen=True)
class Sweep:
  """What a sweep file declares (see the module docstring)."""
  base: str
  grid: dict[str, list]
  overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
  metrics: tuple[str, ...] = ("eval/mlm_accuracy", "eval/mlm_loss")
  curves: tuple[str, ...] = ("train/loss", "eval/mlm_loss")
  aggregate_over: str = ""
  title: str = ""
  paper: dict[str, float] = dataclasses.field(default_factory=dict)
  paper_source: str = ""    # where PAPER's numbers come from (paper, table, dev/test)
  select: str = ""

  @property
  def select_metric(self) -> str:
    return self.select or self.metrics[0]


@dataclasses.dataclass(frozen=True)
class Point:
  """One run of the sweep: its name (the workdir's) and its config overrides."""
  name: str
  values: dict[str, Any]    # the grid's fields only


def load_sweep(spec: str) -> Sweep:
  """'experiments/sweeps/x.py[:arg]' -> Sweep; errors name the file and the key."""
  path, _, arg = spec.partition(":")
  if not os.path.exists(path):
    raise ValueError(f"sweep file {path} does not exist")
  module_spec = importlib.util.spec_from_file_location("_bert_jax_sweep", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  if hasattr(module, "get_sweep"):
    fields = dict(module.get_sweep(arg or None))
  else:
    if arg:
      raise ValueError(f"sweep file {path} takes no argument (it has no get_sweep), got {arg!r}")
    fields = {k.lower(): v for k, v in vars(module).items() if k.isupper()}
  known = {f.name for f in dataclasses.fields(Sweep)}
  unknown = sorted(set(fields) - known)
  if unknown:
    raise ValueError(f"sweep file {path}: unknown keys {[k.upper() for k in unknown]}; "
                     f"expected some of {sorted(k.upper() for k in known)}")
  for key in ("base", "grid"):
    if key not in fields:
      raise ValueError(f"sweep file {path} must define {key.upper()}")
  for key in ("metrics", "curves"):
    if key in fields:
      fields[key] = tuple(fields[key])
  sweep = Sweep(**fields)
  if sweep.aggregate_over and sweep.aggregate_over not in sweep.grid:
    raise ValueError(f"sweep file {path}: AGGREGATE_OVER={sweep.aggregate_over!r} is not a "
                     f"GRID field {sorted(sweep.grid)}")
  return sweep


def format_value(value: Any) -> str:
  """A value as `--config.f=` takes it (tuples without spaces, bools as True/False)."""
  if isinstance(value, (tuple, list)):
    return "(" + ",".join(format_value(v) for v in value) + ("," if len(value) == 1 else "") + ")"
  if isinstance(value, float):
    return f"{value:g}"
  return str(value)


def points(sweep: Sweep) -> list[Point]:
  """The grid's product in GRID order; names like 'model.hidden_act=gelu,seed=0'."""
  fields = list(sweep.grid)
  out = []
  for combo in itertools.product(*(sweep.grid[f] for f in fields)):
    values = dict(zip(fields, combo))
    name = ",".join(f"{f}={format_value(v)}" for f, v in values.items())
    out.append(Point(name.replace("/", "_").replace(" ", ""), values))
  return out


def parse_overrides(items: Sequence[str]) -> dict[str, str]:
  """['train.num_train_steps=4', ...] -> {'train.num_train_steps': '4'}."""
  out = {}
  for item in items:
    field, sep, value = item.partition("=")
    if not sep or not field:
      raise ValueError(f"--override={item!r}: expected FIELD=VALUE")
    out[field.removeprefix("--config.")] = value
  return out


def main_args(sweep: Sweep, point: Point, workdir: str,
              extra: dict[str, Any] | None = None) -> list[str]:
  """The `bert_jax.main` arguments of one point (fixed overrides, then the grid's)."""
  fields = {**sweep.overrides, **(extra or {}), **point.values}
  return ([f"--config={sweep.base}"]
          + [f"--config.{f}={format_value(v)}" for f, v in fields.items()]
          + [f"--workdir={storage.join(workdir, point.name)}"])


def launch_command(args: list[str], launcher: str, launcher_args: Sequence[str] = (),
                   first: bool = True) -> list[str]:
  """The command that runs `bert_jax.main ARGS` through a launcher (launch/)."""
  if launcher == "local":
    if launcher_args:
      return [sys.executable, "-m", "launch.local", *launcher_args, "--", *args]
    return [sys.executable, "-m", "bert_jax.main", *args]
  if launcher == "slurm":
    return [sys.executable, "-m", "launch.slurm", *launcher_args, "--wait", "--", *args]
  if launcher == "tpu":
    setup = [] if first else ["--skip_setup"]
    return [sys.executable, "-m", "launch.tpu_pod", *launcher_args, *setup, "--", *args]
  raise ValueError(f"--launcher={launcher!r} is not one of {LAUNCHERS}")


def finished(run_dir: str) -> bool:
  return workdir_lib.is_finished(run_dir)


@contextlib.contextmanager
def _local_log(log_path: str):
  """A local file to append a run's output to: `log_path` itself when local; for a
  remote one a temporary copy of it, uploaded whole afterwards (objects do not append)."""
  if not storage.is_remote(log_path):
    os.makedirs(os.path.dirname(os.path.abspath(log_path)), exist_ok=True)
    yield log_path
    return
  with tempfile.TemporaryDirectory(prefix="bert_jax_sweep-") as tmp:
    local = os.path.join(tmp, "run.log")
    if storage.exists(log_path):
      storage.copy_file(log_path, local)
    try:
      yield local
    finally:
      storage.copy_file(local, log_path)


def run_point(cmd: list[str], run_dir: str, log_path: str, launcher: str,
              env: dict[str, str] | None = None) -> tuple[str, str]:
  """Runs one point's command, its output appended to `log_path`; (status, message)."""
  start = time.perf_counter()
  with _local_log(log_path) as local:
    with open(local, "a", encoding="utf-8") as log:   # a subprocess writes a local file
      log.write(f"$ {shlex.join(cmd)}\n")
      log.flush()
      rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env).returncode
  seconds = time.perf_counter() - start
  # A local run must leave its result file; remote launchers may write where we cannot see.
  if rc == 0 and (launcher != "local" or finished(run_dir)):
    return "done", f"done in {seconds:.0f} s"
  text = storage.path(log_path).read_bytes().decode("utf-8", errors="replace")
  tail = " | ".join(text.splitlines()[-3:])
  return f"failed (exit {rc}, log {log_path})", f"FAILED (exit {rc}) after {seconds:.0f} s: {tail}"


def run_points(sweep: Sweep, workdir: str, *, launcher: str = "local",
               launcher_args: Sequence[str] = (), extra: dict[str, Any] | None = None,
               dry_run: bool = False, parallel: int = 1, env: dict[str, str] | None = None,
               echo=print) -> dict[str, str]:
  """Runs every unfinished point, `parallel` at a time; {point: 'done' | 'skipped ...' |
  'failed ...'}. A failed point does not stop the others."""
  status: dict[str, str] = {}
  jobs = []
  for point in points(sweep):
    if not dry_run and finished(storage.join(workdir, point.name)):
      status[point.name] = "skipped (finished)"
      echo(f"[sweep] {point.name}: finished before, skipped")
      continue
    # The first launched point sets the machines up (TPU launcher); the others reuse them.
    cmd = launch_command(main_args(sweep, point, workdir, extra), launcher, launcher_args,
                         first=not jobs)
    jobs.append((point.name, cmd))
  if dry_run:
    for _, cmd in jobs:
      echo(shlex.join(cmd))
    return status
  if not jobs:
    return status

  def one(job):
    name, cmd = job
    log_path = storage.join(workdir, "logs", name + ".log")
    echo(f"[sweep] {name}: running, log {log_path}")
    state, message = run_point(cmd, storage.join(workdir, name), log_path, launcher, env)
    echo(f"[sweep] {name}: {message}")
    return name, state

  with concurrent.futures.ThreadPoolExecutor(max(1, parallel)) as pool:
    status.update(pool.map(one, jobs))
  return status


def parse_args(argv: Sequence[str] | None = None):
  import argparse
  p = argparse.ArgumentParser(prog="python -m experiments.sweep",
                              description=__doc__.split("\n")[0])
  p.add_argument("--sweep", required=True,
                 help="sweep file, e.g. experiments/sweeps/hidden_act.py[:arg]")
  p.add_argument("--workdir", required=True, help="sweep directory (one sub-directory per point)")
  p.add_argument("--launcher", default="local", choices=LAUNCHERS, help="how each point runs")
  p.add_argument("--launcher_args", default="", help="arguments for launch.<launcher>, one string")
  p.add_argument("--override", action="append", default=[],
                 help="FIELD=VALUE for every point (repeatable)")
  p.add_argument("--parallel", type=int, default=1,
                 help="points run at once (local launcher: mind the cores and devices)")
  p.add_argument("--dry-run", "--dry_run", dest="dry_run", action="store_true",
                 help="print every command, run nothing")
  p.add_argument("--collect_only", action="store_true", help="only rebuild the table and plots")
  return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
  from experiments import report
  args = parse_args(argv)
  sweep = load_sweep(args.sweep)
  status = {}
  if not args.collect_only:
    status = run_points(sweep, args.workdir, launcher=args.launcher,
                        launcher_args=shlex.split(args.launcher_args),
                        extra=parse_overrides(args.override), dry_run=args.dry_run,
                        parallel=args.parallel)
  if args.dry_run:
    return 0
  table = report.write_report(sweep, args.workdir, points(sweep), status)
  print(table["markdown"])
  failed = [n for n, s in status.items() if s.startswith("failed")]
  if failed:
    print(f"[sweep] {len(failed)} point(s) failed: {failed}", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main())
