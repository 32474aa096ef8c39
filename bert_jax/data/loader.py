"""A deterministic host-side pretraining loader over in-memory example arrays.

Epoch ``e`` visits the examples in the order ``np.random.default_rng([seed, e])
.permutation(N)`` (or in order when not shuffling); global batch ``k`` is the k-th
slice of ``global_batch_size`` of that order (an incomplete last batch is dropped),
and process ``p`` of ``P`` yields rows ``[p * B/P, (p + 1) * B/P)`` of it.

Masking is dynamic and per example: example ``i`` in epoch ``e`` is masked with
randomness seeded by ``(seed, e, i)``, so a global batch is the same whether one
process or several split it, and a resumed run sees the very batches it would have.

The position is ``state() == {'epoch': e, 'batch': k}``, the next batch to yield;
``restore(state)`` resumes there. Corpora that do not fit in memory go through
``prepare.py`` and the file-backed ``grain_loader.GrainPretrainingLoader``.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from bert_jax.data import masking

Batch = dict[str, np.ndarray]

BATCH_KEYS = ("input_ids", "token_type_ids", "attention_mask", "masked_lm_positions",
              "masked_lm_ids", "masked_lm_weights", "next_sentence_label")
EXAMPLE_KEYS = ("input_ids", "token_type_ids", "attention_mask", "next_sentence_label")
_REQUIRED_MASK_KWARGS = frozenset({"mask_id", "vocab_size", "first_normal_id", "special_ids"})
_OPTIONAL_MASK_KWARGS = frozenset({"masked_lm_prob", "max_predictions_per_seq", "word_start_table"})


def masking_kwargs(tokenizer: Any, masked_lm_prob: float, max_predictions_per_seq: int,
                   whole_word_masking: bool) -> dict[str, Any]:
  """``mask_kwargs`` for ``PretrainingLoader`` from a ``SentencePieceTokenizer``."""
  return {
      "mask_id": tokenizer.mask_id,
      "vocab_size": tokenizer.vocab_size,
      "first_normal_id": tokenizer.first_normal_id,
      "special_ids": tuple(tokenizer.special_ids),
      "masked_lm_prob": masked_lm_prob,
      "max_predictions_per_seq": max_predictions_per_seq,
      "word_start_table": tokenizer.word_start_table if whole_word_masking else None,
  }


def _check_examples(examples: dict[str, np.ndarray]) -> int:
  """Number of examples; errors on missing keys or inconsistent shapes."""
  missing = [k for k in EXAMPLE_KEYS if k not in examples]
  if missing:
    raise ValueError(f"examples: expected keys {EXAMPLE_KEYS}, missing {missing}")
  num = len(examples["input_ids"])
  shape = np.shape(examples["input_ids"])
  for key in EXAMPLE_KEYS:
    expected = shape if key != "next_sentence_label" else (num,)
    if np.shape(examples[key]) != expected:
      raise ValueError(f"examples[{key!r}]: expected shape {expected}, "
                       f"found {np.shape(examples[key])}")
  return num


def _check_mask_kwargs(mask_kwargs: dict[str, Any]) -> None:
  missing = _REQUIRED_MASK_KWARGS - set(mask_kwargs)
  unknown = set(mask_kwargs) - _REQUIRED_MASK_KWARGS - _OPTIONAL_MASK_KWARGS
  if missing or unknown:
    raise ValueError(f"mask_kwargs: missing {sorted(missing)}, unknown {sorted(unknown)}; "
                     f"expected {sorted(_REQUIRED_MASK_KWARGS | _OPTIONAL_MASK_KWARGS)}")
  table = mask_kwargs.get("word_start_table")
  if table is not None and np.shape(table) != (mask_kwargs["vocab_size"],):
    raise ValueError(f"mask_kwargs['word_start_table']: expected shape "
                     f"({mask_kwargs['vocab_size']},), found {np.shape(table)}")


def special_table(mask_kwargs: dict[str, Any]) -> np.ndarray:
  """[vocab] bool: True at ``mask_kwargs['special_ids']``."""
  table = np.zeros(mask_kwargs["vocab_size"], dtype=bool)
  table[list(mask_kwargs["special_ids"])] = True
  return table


def apply_masking(input_ids: np.ndarray, attention_mask: np.ndarray, seeds: np.ndarray,
                  mask_kwargs: dict[str, Any],
                  special: np.ndarray | None = None) -> dict[str, np.ndarray]:
  """Masks [B, L] rows, row b with randomness from ``seeds[b]`` alone.

  Args:
    input_ids, attention_mask: [B, L] examples.
    seeds: [B] per-example seeds (``masking.example_seeds``).
    mask_kwargs: see ``masking_kwargs``.
    special: ``special_table(mask_kwargs)``, passed in to save rebuilding it.

  Returns:
    ``masking.mask_tokens`` output: ``input_ids`` and ``masked_lm_*`` arrays.
  """
  kwargs = dict(mask_kwargs)
  table = kwargs.pop("word_start_table", None)
  kwargs.pop("special_ids")
  special = special_table(mask_kwargs) if special is None else special
  rand = masking.draw_masking_randomness(seeds, input_ids.shape[1], kwargs["vocab_size"],
                                         kwargs["first_normal_id"])
  return masking.mask_tokens(
      input_ids,
      maskable=~special[input_ids] & (attention_mask != 0),
      word_start=None if table is None else np.asarray(table)[input_ids],
      rand=rand,
      **kwargs)


class PretrainingLoader:
  """Per-process batches of dynamically masked pretraining examples."""

  def __init__(
      self,
      examples: dict[str, np.ndarray],
      global_batch_size: int,
      seed: int,
      mask_kwargs: dict[str, Any],
      shuffle: bool = True,
      process_index: int = 0,
      process_count: int = 1,
      epoch_repeats: bool = True,
  ):
    """Args:
      examples: ``create_pretraining_examples`` output (extra keys ignored).
      global_batch_size: examples per step over all processes.
      seed: drives the epoch orders and the masking.
      mask_kwargs: ``mask_id, vocab_size, first_normal_id, special_ids`` and
        optionally ``masked_lm_prob, max_predictions_per_seq`` and
        ``word_start_table`` ([vocab] bool, or None for token-level masking);
        see ``masking_kwargs``.
      shuffle: permute the examples every epoch.
      process_index, process_count: this process's share of every batch.
      epoch_repeats: iterate forever (True) or stop after the current epoch.
    """
    self._num_examples = _check_examples(examples)
    _check_mask_kwargs(mask_kwargs)
    if not 0 <= process_index < process_count:
      raise ValueError(f"process_index: expected a value in [0, process_count="
                       f"{process_count}), found {process_index}")
    if global_batch_size < 1 or global_batch_size % process_count:
      raise ValueError(f"global_batch_size: expected a positive multiple of "
                       f"process_count={process_count}, found {global_batch_size}")
    if self._num_examples < global_batch_size:
      raise ValueError(f"global_batch_size: corpus too small for one batch of "
                       f"{global_batch_size}, found {self._num_examples} examples")
    self._examples = {k: np.asarray(examples[k]) for k in EXAMPLE_KEYS}
    self._global_batch_size = global_batch_size
    self._per_host = global_batch_size // process_count
    self._row_offset = process_index * self._per_host
    self._seed = seed
    self._shuffle = shuffle
    self._epoch_repeats = epoch_repeats
    self._mask_kwargs = dict(mask_kwargs)
    self._special = special_table(mask_kwargs)
    self._epoch, self._batch = 0, 0
    self._order_cache: tuple[int, np.ndarray] | None = None

  # -- position -----------------------------------------------------------------

  @property
  def batches_per_epoch(self) -> int:
    return self._num_examples // self._global_batch_size

  @property
  def per_host_batch_size(self) -> int:
    return self._per_host

  def state(self) -> dict[str, int]:
    """The position of the next batch: ``{'epoch': e, 'batch': k}``."""
    return {"epoch": self._epoch, "batch": self._batch}

  def restore(self, state: dict[str, int]) -> None:
    """Resumes at ``state`` (from ``state()``), the next batch to yield."""
    epoch, batch = int(state["epoch"]), int(state["batch"])
    if epoch < 0 or not 0 <= batch < self.batches_per_epoch:
      raise ValueError(f"Loader state: expected epoch >= 0 and batch in [0, "
                       f"{self.batches_per_epoch}), found {state}")
    self._epoch, self._batch = epoch, batch

  # -- batches ------------------------------------------------------------------

  def _epoch_order(self, epoch: int) -> np.ndarray:
    if self._order_cache is None or self._order_cache[0] != epoch:
      if self._shuffle:
        order = np.random.default_rng([self._seed, epoch]).permutation(self._num_examples)
      else:
        order = np.arange(self._num_examples)
      self._order_cache = (epoch, order)
    return self._order_cache[1]

  def example_indices(self, epoch: int, batch: int) -> np.ndarray:
    """[per_host] indices of the examples of this process in a global batch."""
    start = batch * self._global_batch_size + self._row_offset
    return self._epoch_order(epoch)[start:start + self._per_host]

  def get_batch(self, epoch: int, batch: int) -> Batch:
    """This process's rows of global batch ``batch`` of ``epoch``, masked."""
    indices = self.example_indices(epoch, batch)
    input_ids = self._examples["input_ids"][indices]
    attention_mask = self._examples["attention_mask"][indices]
    masked = apply_masking(input_ids, attention_mask,
                           masking.example_seeds(self._seed, epoch, indices),
                           self._mask_kwargs, self._special)
    return {
        "input_ids": masked["input_ids"].astype(np.int32),
        "token_type_ids": self._examples["token_type_ids"][indices].astype(np.int32),
        "attention_mask": attention_mask.astype(np.int32),
        "masked_lm_positions": masked["masked_lm_positions"],
        "masked_lm_ids": masked["masked_lm_ids"],
        "masked_lm_weights": masked["masked_lm_weights"],
        "next_sentence_label": self._examples["next_sentence_label"][indices].astype(np.int32),
    }

  def __iter__(self) -> Iterator[Batch]:
    """Batches from ``state()`` on; ``state()`` always names the next one."""
    start_epoch = self._epoch
    while self._epoch_repeats or self._epoch == start_epoch:
      batch = self.get_batch(self._epoch, self._batch)
      self._batch += 1
      if self._batch == self.batches_per_epoch:
        self._epoch, self._batch = self._epoch + 1, 0
      yield batch
