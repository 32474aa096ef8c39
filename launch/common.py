"""What the launchers share: splitting argv at `--`, printing or running shell steps."""

from __future__ import annotations

import argparse
import subprocess
import sys
import threading
from typing import IO, Sequence


def split_argv(argv: Sequence[str]) -> tuple[list[str], list[str]]:
  """[launcher flags..., '--', bert_jax.main args...] -> the two lists."""
  argv = list(argv)
  if "--" not in argv:
    return argv, []
  i = argv.index("--")
  return argv[:i], argv[i + 1:]


def parser(prog: str, doc: str) -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(
      prog=f"python -m launch.{prog}", description=doc.split("\n")[0],
      usage=f"python -m launch.{prog} [flags] -- --config=CONFIG --workdir=DIR [--config.F=V ...]")
  p.add_argument("--dry-run", "--dry_run", dest="dry_run", action="store_true",
                 help="print every command, run nothing")
  return p


def parse(p: argparse.ArgumentParser, argv: Sequence[str] | None):
  """Launcher flags and the bert_jax.main arguments (which must name --config, --workdir)."""
  ours, main_args = split_argv(sys.argv[1:] if argv is None else argv)
  args = p.parse_args(ours)
  for flag in ("--config=", "--workdir="):
    if not any(a.startswith(flag) for a in main_args):
      p.error(f"after '--' give the bert_jax.main arguments, {flag}... included")
  args.main_args = main_args
  return args


def workdir_of(main_args: Sequence[str]) -> str:
  return next(a.split("=", 1)[1] for a in main_args if a.startswith("--workdir="))


def main_command(main_args: Sequence[str], python: str = "python") -> list[str]:
  return [python, "-m", "bert_jax.main", *main_args]


def run_shell(steps: Sequence[str], dry_run: bool, out: IO = sys.stdout) -> int:
  """Runs shell command lines in order (stops at the first failure); or prints them."""
  for step in steps:
    if dry_run:
      print(step, file=out)
      continue
    print(f"[launch] $ {step}", file=sys.stderr, flush=True)
    rc = subprocess.run(["bash", "-o", "pipefail", "-c", step]).returncode
    if rc:
      print(f"[launch] failed (exit {rc}): {step}", file=sys.stderr)
      return rc
  return 0


def run_parallel_shell(steps: Sequence[str], dry_run: bool, out: IO = sys.stdout) -> int:
  """Runs shell command lines at once (one per worker); the first non-zero exit code."""
  if dry_run:
    return run_shell(steps, True, out)
  procs = []
  for step in steps:
    print(f"[launch] $ {step}", file=sys.stderr, flush=True)
    procs.append(subprocess.Popen(["bash", "-o", "pipefail", "-c", step]))
  codes = [p.wait() for p in procs]
  return next((c for c in codes if c), 0)


def pump(stream: IO, log: IO, echo: IO | None) -> threading.Thread:
  """Copies a process's output line by line to its log file (and to `echo`)."""
  def copy():
    for line in stream:
      log.write(line)
      log.flush()
      if echo is not None:
        echo.write(line)
        echo.flush()
  thread = threading.Thread(target=copy, daemon=True)
  thread.start()
  return thread
