"""Sentence and sentence-pair tasks: features with windows, and window combining.

An example is `{'text_a', 'text_b' (or None), 'label', 'idx'}`; the label is an int
(classification), a float (regression) or a list of ints (multi-label, the labels that
apply). Kinds: 'classification' | 'regression' | 'multilabel'.

Inputs longer than `max_seq_length` become several windows (`windows.py`): the longer
segment is windowed `stride` pieces apart, the shorter one is kept whole in each window
(cut to half the budget if it is longer than that). An example's prediction is the
mean of its windows' logits.
"""

from __future__ import annotations

import collections
import json
from typing import Sequence

import numpy as np

from bert_jax.data.tasks import common, windows

KINDS = ("classification", "regression", "multilabel")


def check_label(ex: dict, i: int, kind: str, num_labels: int, where: str) -> None:
  """Labels outside the head's range are an error naming the example."""
  label = ex["label"]
  values = label if kind == "multilabel" else [label]
  if kind == "regression":
    if not np.isfinite(float(label)):
      raise ValueError(f"{where} example {i} (idx {ex.get('idx')}) has label {label}")
    return
  bad = [v for v in values if not (0 <= int(v) < num_labels) or int(v) != v]
  if bad:
    raise ValueError(
        f"{where} example {i} (idx {ex.get('idx')}) has label {label!r}; the head has "
        f"num_labels={num_labels}, so labels must be integers in [0, {num_labels - 1}]")


def _label_array(ex, kind, num_labels, labelled):
  if kind == "regression":
    return np.float32(ex["label"] if labelled else 0.0)
  if kind == "multilabel":
    hot = np.zeros(num_labels, np.float32)
    if labelled:
      hot[[int(v) for v in ex["label"]]] = 1.0
    return hot
  return np.int32(ex["label"] if labelled else 0)


def featurize(examples: Sequence[dict], tok, max_seq_length: int, stride: int, kind: str,
              num_labels: int, labelled: bool = True, where: str = "the split"
              ) -> dict[str, np.ndarray]:
  """Examples -> features [F, ...] with 'label' and 'example_index' per window."""
  common.check_nonempty(examples, where)
  if kind not in KINDS:
    raise ValueError(f"task kind {kind!r} is not one of {KINDS}")
  rows = collections.defaultdict(list)
  for i, ex in enumerate(examples):
    if labelled:
      check_label(ex, i, kind, num_labels, where)
    a = tok.encode(ex["text_a"])[0]
    b = tok.encode(ex["text_b"])[0] if ex.get("text_b") is not None else None
    label = _label_array(ex, kind, num_labels, labelled)
    for first, second in _windows(a, b, max_seq_length, stride):
      ids, types, mask, _ = common.pack(first, second, tok, max_seq_length)
      for k, v in (("input_ids", ids), ("token_type_ids", types),
                   ("attention_mask", mask), ("label", label),
                   ("example_index", np.int32(i))):
        rows[k].append(v)
  return {k: np.stack(v) for k, v in rows.items()}


def _windows(a, b, max_seq_length, stride):
  """[(first, second)] segment pieces per window; see the module docstring."""
  if b is None:
    budget = max_seq_length - 2
    return [(a[s:s + n], None) for s, n in windows.spans(len(a), budget, stride)]
  budget = max_seq_length - 3
  if len(a) + len(b) <= budget:
    return [(a, b)]
  long_is_a = len(a) > len(b)
  short = (b if long_is_a else a)[:budget // 2]
  long = a if long_is_a else b
  out = []
  for s, n in windows.spans(len(long), budget - len(short), stride):
    piece = long[s:s + n]
    out.append((piece, short) if long_is_a else (short, piece))
  return out


def combine(logits: np.ndarray, example_index: np.ndarray, num_examples: int) -> np.ndarray:
  """Mean of the window logits [F, ...] of each example -> [num_examples, ...]."""
  sums = np.zeros((num_examples,) + logits.shape[1:], np.float64)
  np.add.at(sums, example_index, logits)
  counts = np.bincount(example_index, minlength=num_examples).astype(np.float64)
  if (counts == 0).any():
    raise ValueError(f"examples {np.flatnonzero(counts == 0)[:5]} have no window")
  return sums / counts.reshape((-1,) + (1,) * (logits.ndim - 1))


def predictions(logits: np.ndarray, kind: str) -> np.ndarray:
  """Combined logits -> class ids, regression values or multi-hot predictions."""
  if kind == "regression":
    return logits.reshape(len(logits), -1)[:, 0]
  if kind == "multilabel":
    return (logits > 0).astype(np.int32)   # sigmoid(logit) > 0.5
  return np.argmax(logits, axis=-1)


def load_jsonl(path: str) -> list[dict]:
  """One JSON object per line: {'text_a', 'text_b'?, 'label', 'idx'?}."""
  out = []
  with open(path, encoding="utf-8") as f:
    for n, line in enumerate(f):
      if not line.strip():
        continue
      row = json.loads(line)
      if "text_a" not in row:
        raise ValueError(f"{path}:{n + 1}: expected a 'text_a' field, found "
                         f"{sorted(row)}")
      out.append({"text_a": row["text_a"], "text_b": row.get("text_b"),
                  "label": row.get("label"), "idx": row.get("idx", len(out))})
  return out
