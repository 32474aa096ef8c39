"""Metric writing on process 0 only: JSON lines, TensorBoard events, a progress bar.

TensorBoard events come from tensorboardX (clu.metric_writers would pull TensorFlow).
Every other process gets no-op writers, so library code can call them unconditionally.
"""

from __future__ import annotations

import json
import os
import sys
import time

import jax
from tqdm import tqdm


class MetricWriter:
  """Writes scalars to `workdir/metrics.jsonl` and `workdir/tensorboard/` (process 0)."""

  def __init__(self, workdir: str, enabled: bool | None = None):
    self.enabled = jax.process_index() == 0 if enabled is None else enabled
    self._tb = None
    self._jsonl = None
    if self.enabled:
      from tensorboardX import SummaryWriter
      self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))
      self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a", encoding="utf-8")

  def write(self, step: int, scalars: dict, prefix: str = "") -> None:
    if not self.enabled:
      return
    row = {f"{prefix}{k}": float(v) for k, v in scalars.items()}
    for k, v in row.items():
      self._tb.add_scalar(k, v, step)
    self._jsonl.write(json.dumps({"step": int(step), **row}) + "\n")
    self._jsonl.flush()

  def close(self) -> None:
    if self.enabled:
      self._tb.close()
      self._jsonl.close()


class Progress:
  """A tqdm bar over train steps with loss and throughput (process 0 only)."""

  def __init__(self, total: int, initial: int, unit_per_step: int,
               tokens_per_sequence: int = 0):
    self.enabled = jax.process_index() == 0
    self.unit_per_step = unit_per_step
    self.tokens_per_sequence = tokens_per_sequence
    self._bar = tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True,
                     disable=not self.enabled, file=sys.stderr, mininterval=1.0)
    self._last = (initial, time.perf_counter())

  def advance(self, step: int) -> None:
    """Moves the bar to `step` (host only; tqdm redraws at most once a second)."""
    self._bar.update(step - self._bar.n)

  def update(self, step: int, loss: float) -> float:
    """Advances to `step`; returns sequences/s since the last update."""
    last_step, last_t = self._last
    now = time.perf_counter()
    rate = (step - last_step) * self.unit_per_step / max(now - last_t, 1e-9)
    self._last = (step, now)
    self.advance(step)
    self._bar.set_postfix(loss=f"{loss:.3f}", seq_per_s=f"{rate:.0f}", refresh=False)
    return rate

  def close(self) -> None:
    self._bar.close()


def quiet_libraries() -> None:
  """Keeps library INFO chatter (orbax logs every file operation through absl) off
  the console: absl and orbax loggers at WARNING. Our own lines go through `info`."""
  import logging
  from absl import logging as absl_logging
  absl_logging.set_verbosity(absl_logging.WARNING)
  for name in ("absl", "orbax", "jax._src.distributed"):
    logging.getLogger(name).setLevel(logging.WARNING)


def info(msg: str, *args) -> None:
  """A progress line on process 0 only (stderr, so it interleaves with the bar)."""
  if jax.process_index() == 0:
    tqdm.write(f"[bert_jax] {msg % args if args else msg}", file=sys.stderr)
