"""Sentence and sentence-pair tasks: features with windows, and window combining.

An example is `{'text_a', 'text_b' (or None), 'label', 'idx'}`; the label is an int
(classification), a float (regression) or a list of ints (multi-label, the labels that
apply). Kinds: 'classification' | 'regression' | 'multilabel'. JSON-lines files may
name their labels instead (strings): `label_ids` maps names onto ids.

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

from bert_jax import storage
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


def parse_label_names(value, field: str = "data.label_names") -> list[str]:
  """Config field `data.label_names` ('a,b,c' or a sequence of names) -> names."""
  names = value.split(",") if isinstance(value, str) else list(value or ())
  names = [str(n).strip() for n in names] if names != [""] else []
  if "" in names or len(set(names)) != len(names):
    raise ValueError(f"config field {field}={value!r}: expected distinct non-empty "
                     "comma-separated names")
  return names


def string_labels(examples: Sequence[dict], kind: str, where: str) -> list[str]:
  """The sorted distinct labels of `examples` when they are strings, else [].

  Labels that mix strings and numbers have no names of their own: an error.
  """
  values = [v for ex in examples if ex["label"] is not None
            for v in (ex["label"] if kind == "multilabel" else [ex["label"]])]
  strings = {v for v in values if isinstance(v, str)}
  if strings and any(not isinstance(v, str) for v in values):
    raise ValueError(f"{where} mixes string and numeric labels; use one or the other, "
                     "or name the labels with config field data.label_names (numbers "
                     "index it)")
  return sorted(strings)


def label_ids(examples: Sequence[dict], names: Sequence[str], kind: str,
              where: str) -> list[dict]:
  """Examples whose string labels are replaced by their index in `names` (numbers
  are kept: `check_label` checks them against the head)."""
  index = {n: i for i, n in enumerate(names)}

  def to_id(v, i, ex):
    if not isinstance(v, str):
      return v
    if v not in index:
      raise ValueError(f"{where} example {i} (idx {ex.get('idx')}) has label {v!r}, "
                       f"which is not one of the label names {list(names)}")
    return index[v]

  out = []
  for i, ex in enumerate(examples):
    label = ex["label"]
    if label is not None:
      label = ([to_id(v, i, ex) for v in label] if kind == "multilabel"
               else to_id(label, i, ex))
    out.append({**ex, "label": label})
  return out


def load_jsonl(path: str) -> list[dict]:
  """One JSON object per line: {'text_a', 'text_b'?, 'label', 'idx'?}; a label is a
  number, a string (a label name) or, for multi-label tasks, a list of either."""
  out = []
  with storage.open_text(path) as f:
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
