"""One pretraining example as bytes, and a batch of them back as padded arrays.

A record is little-endian int32 values, no padding stored::

    [n, b_start, label, p,  token_0 .. token_{n-1},  position_0 .. position_{p-1},
     original_id_0 .. original_id_{p-1}]

``n`` tokens of ``[CLS] A [SEP] B [SEP]`` (or ``[CLS] A [SEP]`` when packed without a
second segment: ``b_start = n``), segment B from index ``b_start``, the sentence-pair
``label``, and ``p`` masked-LM predictions when masking was static (``p = 0`` for
dynamic masking: the loader draws the masks). Under static masking the stored
tokens are already masked.

``decode_batch`` turns a list of records into the arrays the model takes in one
vectorised pass (no per-row Python loop beyond reading the record lengths).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

HEADER = 4  # n, b_start, label, p


def encode(tokens: Sequence[int], b_start: int, label: int,
           positions: Sequence[int] = (), original_ids: Sequence[int] = ()) -> bytes:
  """The record of one example (module docstring)."""
  if len(positions) != len(original_ids):
    raise ValueError(f"records.encode: expected as many positions as original ids, found "
                     f"{len(positions)} and {len(original_ids)}")
  header = (len(tokens), b_start, label, len(positions))
  return np.asarray([*header, *tokens, *positions, *original_ids], dtype="<i4").tobytes()


def decode_batch(records: Sequence[bytes], max_seq_length: int, pad_id: int,
                 max_predictions: int = 0) -> dict[str, np.ndarray]:
  """Padded arrays of ``B`` records.

  Returns:
    ``input_ids``, ``token_type_ids``, ``attention_mask`` [B, L] int32 and
    ``next_sentence_label`` [B] int32; with ``max_predictions = P > 0`` also
    ``masked_lm_positions``, ``masked_lm_ids`` [B, P] int32 and
    ``masked_lm_weights`` [B, P] float32 (the statically masked predictions).
  """
  batch = len(records)
  words = np.frombuffer(b"".join(records), dtype="<i4")
  sizes = np.fromiter((len(r) for r in records), dtype=np.int64, count=batch) // 4
  starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
  header = words[starts[:, None] + np.arange(HEADER)]
  lengths, b_start, labels, num_predictions = header.T
  if batch and lengths.max() > max_seq_length:
    raise ValueError(f"Prepared example of {lengths.max()} tokens: expected at most "
                     f"max_seq_length={max_seq_length}")
  cols = np.arange(max_seq_length)
  inside = cols[None, :] < lengths[:, None]
  token_at = np.where(inside, starts[:, None] + HEADER + cols[None, :], 0)
  out = {
      "input_ids": np.where(inside, words[token_at], pad_id).astype(np.int32),
      "token_type_ids": (inside & (cols[None, :] >= b_start[:, None])).astype(np.int32),
      "attention_mask": inside.astype(np.int32),
      "next_sentence_label": labels.astype(np.int32),
  }
  if max_predictions:
    if batch and num_predictions.max() > max_predictions:
      raise ValueError(f"Prepared example with {num_predictions.max()} predictions: "
                       f"expected at most {max_predictions}")
    slots = np.arange(max_predictions)
    used = slots[None, :] < num_predictions[:, None]
    first = starts[:, None] + HEADER + lengths[:, None] + slots[None, :]
    positions = np.where(used, words[np.where(used, first, 0)], 0)
    ids_at = np.where(used, first + num_predictions[:, None], 0)
    out["masked_lm_positions"] = positions.astype(np.int32)
    out["masked_lm_ids"] = np.where(used, words[ids_at], 0).astype(np.int32)
    out["masked_lm_weights"] = used.astype(np.float32)
  return out
