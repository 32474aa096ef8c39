"""Sequence packing: several short examples per row, so no compute goes to padding.

`pack_examples` places padded examples (`[N, L]` arrays, tokens first then pads, as
`pretraining.create_pretraining_examples` makes them) into rows of `max_seq_length`,
best fit (the row whose free room is the smallest that holds the example), and returns
the row arrays the model reads:

    input_ids, token_type_ids  [M, L]  the examples' tokens side by side, then pads
    attention_mask             [M, L]  segment ids: k on the k-th example of the row
                                       (1, 2, ...), 0 on pads. The model attends only
                                       within a segment (`models/bert.attention_bias`).
    position_ids               [M, L]  0, 1, ... restarting at each segment
    segment_starts             [M, S]  column of each segment's first token ([CLS])
    segment_example            [M, S]  the example index of each segment, -1 = none
    masked_lm_positions/ids/weights [M, P]   when the examples carry them (masked
                                       already): concatenated, positions shifted to
                                       the row; P = `max_predictions` bounds a row.

A row holds at most `max_segments` examples (S). Every example's tokens see what they
would see unpacked (their own segment, positions 0..n-1), so packing changes no
example's result, only where it sits (tests/test_packing.py checks per-example MLM
logits and loss).

Packing suits the MLM-only objective (`data.objective='none'`): the NSP/SOP head reads
the row's first [CLS] only, so `segment_starts` is returned for a per-segment
sentence-pair head but no such head exists yet.

`pack_batch` is what pretraining uses (`data.packing=True`, `grain_loader`): one
process's masked examples of one batch packed into as many rows as it had examples,
so shapes stay static and the processes pack their own rows independently. Its limits,
stated plainly: the window is that one batch, and the step still runs every row (the
rows left over are all padding with weight 0), so by itself it saves no compute per
step; it only moves short examples together. With `data.objective='none'` the rows
are already full (RoBERTa FULL-SENTENCES), so nothing moves at all. Compute is saved
only once a step reads more short examples than it has rows, which is not built.
"""

from __future__ import annotations

import numpy as np

MLM_KEYS = ("masked_lm_positions", "masked_lm_ids", "masked_lm_weights")


def _lengths(examples: dict[str, np.ndarray]) -> np.ndarray:
  mask = np.asarray(examples["attention_mask"]) != 0
  lengths = mask.sum(1)
  if not np.array_equal(mask, np.arange(mask.shape[1])[None, :] < lengths[:, None]):
    raise ValueError("pack_examples: attention_mask must be 1 on a prefix of each row "
                     "(tokens first, then padding)")
  return lengths


def assign_rows(lengths: np.ndarray, predictions: np.ndarray, max_seq_length: int,
                max_predictions: int, max_segments: int) -> list[list[int]]:
  """Best-fit: example i goes to the open row with the least free room that holds its
  tokens (and predictions and a segment slot), else to a new row. Returns the example
  indices of each row, in placement order."""
  rows: list[list[int]] = []
  room: list[int] = []                  # free token slots per row
  pred_room: list[int] = []             # free prediction slots per row
  by_room: list[list[int]] = [[] for _ in range(max_seq_length + 1)]  # room -> rows
  for i, (n, p) in enumerate(zip(lengths.tolist(), predictions.tolist())):
    if n > max_seq_length or p > max_predictions:
      raise ValueError(f"pack_examples: example {i} has {n} tokens and {p} predictions; "
                       f"a row holds {max_seq_length} and {max_predictions}")
    row = next((r for free in range(n, max_seq_length + 1) for r in by_room[free]
                if pred_room[r] >= p), None)
    if row is None:
      row = len(rows)
      rows.append([])
      room.append(max_seq_length)
      pred_room.append(max_predictions)
    else:
      by_room[room[row]].remove(row)
    rows[row].append(i)
    room[row] -= n
    pred_room[row] -= p
    if len(rows[row]) < max_segments and room[row] > 0:
      by_room[room[row]].append(row)
  return rows


def pack_examples(examples: dict[str, np.ndarray], max_seq_length: int | None = None,
                  max_predictions: int | None = None,
                  max_segments: int = 16) -> dict[str, np.ndarray]:
  """Packs `examples` (module docstring) into rows; see the module docstring.

  Args:
    examples: `input_ids`, `token_type_ids`, `attention_mask` [N, L]; optionally the
      `masked_lm_*` arrays [N, P_in] (weight 0 = padding slot).
    max_seq_length: row length (default: L).
    max_predictions: prediction slots per row (default: P_in), masked examples only.
    max_segments: most examples per row (S, the width of `segment_*`).
  """
  length_in = examples["input_ids"].shape[1]
  max_seq_length = max_seq_length or length_in
  lengths = _lengths(examples)
  masked = all(k in examples for k in MLM_KEYS)
  if masked:
    weights = np.asarray(examples["masked_lm_weights"])
    max_predictions = max_predictions or weights.shape[1]
    predictions = (weights > 0).sum(1)
  else:
    max_predictions = max_predictions or 0
    predictions = np.zeros_like(lengths)
  rows = assign_rows(lengths, predictions, max_seq_length, max_predictions, max_segments)

  m = len(rows)
  out = {k: np.zeros((m, max_seq_length), np.int32)
         for k in ("input_ids", "token_type_ids", "attention_mask", "position_ids")}
  out["segment_starts"] = np.zeros((m, max_segments), np.int32)
  out["segment_example"] = np.full((m, max_segments), -1, np.int32)
  if masked:
    out["masked_lm_positions"] = np.zeros((m, max_predictions), np.int32)
    out["masked_lm_ids"] = np.zeros((m, max_predictions), np.int32)
    out["masked_lm_weights"] = np.zeros((m, max_predictions), np.float32)
  for r, members in enumerate(rows):
    start = slot = 0
    for k, i in enumerate(members):
      n = lengths[i]
      cols = slice(start, start + n)
      out["input_ids"][r, cols] = examples["input_ids"][i, :n]
      out["token_type_ids"][r, cols] = examples["token_type_ids"][i, :n]
      out["attention_mask"][r, cols] = k + 1
      out["position_ids"][r, cols] = np.arange(n)
      out["segment_starts"][r, k] = start
      out["segment_example"][r, k] = i
      if masked:
        keep = np.asarray(examples["masked_lm_weights"][i]) > 0
        p = int(keep.sum())
        out["masked_lm_positions"][r, slot:slot + p] = (
            np.asarray(examples["masked_lm_positions"][i])[keep] + start)
        out["masked_lm_ids"][r, slot:slot + p] = np.asarray(examples["masked_lm_ids"][i])[keep]
        out["masked_lm_weights"][r, slot:slot + p] = weights[i][keep]
        slot += p
      start += n
  return out


ROW_KEYS = ("input_ids", "token_type_ids", "attention_mask", "position_ids")


def pack_batch(batch: dict[str, np.ndarray], max_predictions: int | None = None
               ) -> dict[str, np.ndarray]:
  """One batch of masked examples [B, ...] packed into B rows (module docstring).

  Args:
    batch: a loader batch: `input_ids`, `token_type_ids`, `attention_mask` [B, L],
      `masked_lm_*` [B, P], `next_sentence_label` [B].
    max_predictions: prediction slots per row (default: P).

  Returns:
    The same keys with the same shapes, plus `position_ids` [B, L]: the packed rows
    first, then rows of padding (mask 0, MLM weight 0); `next_sentence_label` is 0
    (a packed row is no sentence pair: the caller refuses NSP/SOP with packing).
  """
  rows = len(batch["input_ids"])
  length = batch["input_ids"].shape[1]
  # A segment holds at least one token, so `length` segments never bind.
  packed = pack_examples(batch, max_predictions=max_predictions, max_segments=length)

  def pad(x):
    return np.concatenate([x, np.zeros((rows - len(x),) + x.shape[1:], x.dtype)])

  out = {k: pad(packed[k]) for k in ROW_KEYS + MLM_KEYS}
  out["next_sentence_label"] = np.zeros(rows, np.int32)
  return out
