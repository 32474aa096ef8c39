"""A fine-tuning task's features as this process's rows of each global batch.

Features are the host arrays a task's `featurize` returns ({name: [rows, ...]}), in
memory. Two ways through them:

    EpochBatches     training: epoch after epoch, each shuffled by PRNG [seed, epoch],
                     its last batch wrapping around; resumable (`state`/`restore` hold
                     the epoch and the position of the next batch), so a restored run
                     reads the same batches
    padded_batches   prediction: every row once, in order, the last batch padded with
                     row 0 at weight 0

Every batch carries `weight` [rows] (1 for a real row). The job is `finetune.py`; the
evaluation that reads `padded_batches` is `finetune_eval.py`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import jax
import numpy as np


class EpochBatches:
  """This process's rows of each global batch, epoch after epoch (each epoch shuffled
  by PRNG [seed, epoch], its last batch wrapping around). Resumable: `state()` is the
  (epoch, position) of the next batch, so a restored run reads the same batches."""

  def __init__(self, features: dict, keys, batch_size: int, seed: int):
    self.features, self.keys, self.batch_size, self.seed = features, keys, batch_size, seed
    self.num_rows = len(features["input_ids"])
    self.steps_per_epoch = -(-self.num_rows // batch_size)
    self.epoch, self.position = 1, 0

  def state(self) -> dict:
    return {"epoch": self.epoch, "position": self.position}

  def restore(self, state: dict) -> None:
    self.epoch, self.position = int(state["epoch"]), int(state["position"])

  def __iter__(self):
    per = self.batch_size // jax.process_count()
    lo = jax.process_index() * per
    while True:
      order = np.resize(np.random.default_rng([self.seed, self.epoch]).permutation(
          self.num_rows), self.steps_per_epoch * self.batch_size)
      while self.position < self.steps_per_epoch:
        s = self.position
        rows = order[s * self.batch_size:(s + 1) * self.batch_size][lo:lo + per]
        batch = {k: self.features[k][rows] for k in self.keys}
        batch["weight"] = np.ones(per, np.float32)
        self.position += 1
        yield batch
      self.epoch, self.position = self.epoch + 1, 0


def padded_batches(features: dict, keys: Sequence[str], batch_size: int
                   ) -> Iterator[dict[str, np.ndarray]]:
  """Every row in order, this process's share of each global batch (the last one
  padded with row 0 at weight 0)."""
  n = len(features["input_ids"])
  per = batch_size // jax.process_count()
  lo = jax.process_index() * per
  for start in range(0, n, batch_size):
    rows = np.arange(start, start + batch_size)
    valid = rows < n
    rows = np.where(valid, rows, 0)[lo:lo + per]
    batch = {k: features[k][rows] for k in keys}
    batch["weight"] = valid[lo:lo + per].astype(np.float32)
    yield batch
