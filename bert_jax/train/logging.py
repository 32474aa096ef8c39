"""Metric writing on process 0 only: JSON lines, TensorBoard events, a progress bar.

TensorBoard events come from tensorboardX (clu.metric_writers would pull TensorFlow).
Every other process gets no-op writers, so library code can call them unconditionally.

A remote workdir (`gs://...`, through `bert_jax.storage`) has no appendable files and
tensorboardX's own `gs://` writer goes through another GCS client: there
`metrics.jsonl` is kept in memory (its old rows read back on start) and rewritten as
one object at every `write` (an object upload is atomic: a reader sees the previous
rows or the new ones), and the events are written to a local temporary directory
whose files are copied to `workdir/tensorboard/` at most every `sync_secs` and at
`close` (a killed run loses at most that much of its TensorBoard curve, never a
metrics row).
"""

from __future__ import annotations

import json
import sys
import tempfile
import time

import jax
from tqdm import tqdm

from bert_jax import storage, workdir as workdir_lib


class MetricWriter:
  """Writes scalars to `workdir/metrics.jsonl` and `workdir/tensorboard/` (process 0)."""

  def __init__(self, workdir: str, enabled: bool | None = None, sync_secs: float = 30.0):
    self.enabled = jax.process_index() == 0 if enabled is None else enabled
    self.remote = storage.is_remote(workdir)
    self._tb = None
    self._jsonl = None
    self._metrics = workdir_lib.metrics_file(workdir)
    self._tb_dir = workdir_lib.tensorboard_dir(workdir)
    self._sync_secs, self._synced_at = sync_secs, time.monotonic()
    if not self.enabled:
      return
    from tensorboardX import SummaryWriter
    if self.remote:
      self._local_tb = tempfile.mkdtemp(prefix="bert_jax_tensorboard-")
      self._tb = SummaryWriter(self._local_tb)
      self._rows = self._metrics.read_text(encoding="utf-8") if self._metrics.exists() else ""
    else:
      self._tb = SummaryWriter(str(self._tb_dir))
      self._jsonl = storage.open_text(self._metrics, "a")

  def write(self, step: int, scalars: dict, prefix: str = "") -> None:
    if not self.enabled:
      return
    row = {f"{prefix}{k}": float(v) for k, v in scalars.items()}
    for k, v in row.items():
      self._tb.add_scalar(k, v, step)
    line = json.dumps({"step": int(step), **row}) + "\n"
    if self.remote:
      self._rows += line
      storage.write_text_atomic(self._metrics, self._rows)
      if time.monotonic() - self._synced_at >= self._sync_secs:
        self._sync_tensorboard()
    else:
      self._jsonl.write(line)
      self._jsonl.flush()

  def _sync_tensorboard(self) -> None:
    """Copies the local event files to the remote `tensorboard/` (whole objects)."""
    self._tb.flush()
    storage.copy_tree(self._local_tb, self._tb_dir)
    self._synced_at = time.monotonic()

  def close(self) -> None:
    if not self.enabled:
      return
    self._tb.close()
    if self.remote:
      self._sync_tensorboard()
      storage.path(self._local_tb).rmtree(missing_ok=True)
    else:
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
