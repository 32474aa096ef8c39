r"""N processes on one machine joined on 127.0.0.1: multi-host code on a laptop or CI box.

  python -m launch.local --processes=2 --cpu_devices_per_process=4 [--port=0] \
      [--log_dir=logs/local] [--dry-run] -- --config=configs/pretrain.py:tiny --workdir=DIR

Process i runs `python -m bert_jax.main ARGS --config.distributed.coordinator_address=
127.0.0.1:PORT --config.distributed.num_processes=N --config.distributed.process_id=i`
(gloo collectives between CPU devices); `--cpu_devices_per_process=K` gives each
process K CPU devices (JAX_PLATFORMS=cpu, --xla_force_host_platform_device_count=K appended to
XLA_FLAGS), `--gpus_per_process=G` gives process i GPUs iG..iG+G-1 (CUDA_VISIBLE_DEVICES).
Every process's output goes to LOG_DIR/process-i.log and process 0's to the console
too; if one process fails the others are stopped. With --processes=1: a plain run.
"""

from __future__ import annotations

import os
import shlex
import socket
import subprocess
import sys
from typing import Sequence

from launch import common


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def commands(args, port: int) -> list[tuple[dict[str, str], list[str]]]:
  """(extra environment, argv) of each process."""
  out = []
  for i in range(args.processes):
    env = {}
    if args.cpu_devices_per_process:
      env["JAX_PLATFORMS"] = "cpu"
      # Appended to the caller's XLA_FLAGS (a dump dir, a debug flag), not replacing them;
      # XLA takes the last of a repeated flag, so this device count wins.
      env["XLA_FLAGS"] = " ".join(filter(None, (
          os.environ.get("XLA_FLAGS", ""),
          f"--xla_force_host_platform_device_count={args.cpu_devices_per_process}")))
    if args.gpus_per_process:
      g = args.gpus_per_process
      env["CUDA_VISIBLE_DEVICES"] = ",".join(str(i * g + j) for j in range(g))
    extra = [] if args.processes == 1 else [
        f"--config.distributed.coordinator_address=127.0.0.1:{port}",
        f"--config.distributed.num_processes={args.processes}",
        f"--config.distributed.process_id={i}"]
    out.append((env, common.main_command(list(args.main_args) + extra, sys.executable)))
  return out


def run(procs: list[tuple[dict[str, str], list[str]]], log_dir: str) -> int:
  """Starts every process, streams their logs, stops the rest when one fails."""
  os.makedirs(log_dir, exist_ok=True)
  running, pumps, logs = [], [], []
  for i, (env, argv) in enumerate(procs):
    log = open(os.path.join(log_dir, f"process-{i}.log"), "w", encoding="utf-8")
    p = subprocess.Popen(argv, env={**os.environ, **env}, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    running.append(p)
    logs.append(log)
    pumps.append(common.pump(p.stdout, log, sys.stdout if i == 0 else None))
  rc = 0
  try:
    pending = set(range(len(running)))
    while pending:
      for i in list(pending):
        try:
          code = running[i].wait(timeout=0.5)
        except subprocess.TimeoutExpired:
          continue
        pending.discard(i)
        if code and not rc:
          rc = code
          print(f"[launch] process {i} failed (exit {code}, log {log_dir}/process-{i}.log); "
                "stopping the others", file=sys.stderr)
          for j in pending:
            running[j].terminate()
  finally:
    for p in running:
      if p.poll() is None:
        p.kill()
    for t, log in zip(pumps, logs):
      t.join(timeout=5)
      log.close()
  return rc


def main(argv: Sequence[str] | None = None) -> int:
  p = common.parser("local", __doc__)
  p.add_argument("--processes", type=int, default=2)
  p.add_argument("--cpu_devices_per_process", type=int, default=0,
                 help="fake CPU devices per process (0 = the platform's devices)")
  p.add_argument("--gpus_per_process", type=int, default=0,
                 help="GPUs per process (0 = all visible to every process)")
  p.add_argument("--port", type=int, default=0, help="coordinator port (0 = a free one)")
  p.add_argument("--log_dir", default="logs/local", help="per-process logs")
  args = common.parse(p, argv)
  if args.processes < 1:
    p.error(f"--processes={args.processes}: expected >= 1")
  procs = commands(args, args.port or free_port())
  if args.dry_run:
    for i, (env, argv_i) in enumerate(procs):
      print(shlex.join([f"{k}={v}" for k, v in env.items()] + argv_i)
            + f" > {args.log_dir}/process-{i}.log 2>&1 &")
    print("wait")
    return 0
  return run(procs, args.log_dir)


if __name__ == "__main__":
  sys.exit(main())
