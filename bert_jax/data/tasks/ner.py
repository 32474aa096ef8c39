"""NER on CoNLL-2003 (tfds `conll2003` or the original column files).

Labels are the tfds ids of `LABELS` (IOB2 in tfds; the original files' IOB1 tags map
onto the same names). Each word is labelled on its first WordPiece, the other pieces
carry weight 0 (Devlin et al. 2019, section 5.3). Sentences longer than the model
input are split into windows `stride` pieces apart; a word's prediction comes from the
window where its first piece has the most context. Scores are entity-level
(seqeval semantics, `bert_jax.metrics.entity_scores`).
"""

from __future__ import annotations

import collections
from typing import Sequence

import numpy as np

from bert_jax import metrics, storage
from bert_jax.data.tasks import common, windows

LABELS = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC")


def from_tfds_record(r: dict, i: int) -> dict:
  tokens = [common.as_text(t) for t in np.asarray(r["tokens"]).reshape(-1)]
  tags = [int(t) for t in np.asarray(r["ner"]).reshape(-1)]
  if len(tokens) != len(tags):
    raise ValueError(f"conll2003 record {i} has {len(tokens)} tokens but {len(tags)} "
                     "ner tags; expected one tag per token")
  return {"tokens": tokens, "tags": tags, "idx": i}


def load_conll(path: str) -> list[dict]:
  """Original CoNLL-2003 file: 'word POS chunk NER' lines, blank line between sentences."""
  if not storage.path(path).is_file():
    raise FileNotFoundError(f"no CoNLL file {path}")
  out, tokens, tags = [], [], []

  def flush():
    if tokens:
      out.append({"tokens": list(tokens), "tags": list(tags), "idx": len(out)})
      tokens.clear()
      tags.clear()

  with storage.open_text(path) as f:
    for n, line in enumerate(f):
      parts = line.split()
      if not parts or parts[0] == "-DOCSTART-":
        flush()
        continue
      tag = parts[-1]
      if tag not in LABELS:
        raise ValueError(f"{path}:{n + 1}: tag {tag!r} is not one of {LABELS}")
      tokens.append(parts[0])
      tags.append(LABELS.index(tag))
  flush()
  return out


def featurize(examples: Sequence[dict], tok, max_seq_length: int, stride: int,
              where: str = "the split") -> dict[str, np.ndarray]:
  """Sentences -> windows with 'labels', 'label_weights', 'word_index', 'max_context'."""
  common.check_nonempty(examples, where)
  rows = collections.defaultdict(list)
  for i, ex in enumerate(examples):
    bad = [t for t in ex["tags"] if not 0 <= t < len(LABELS)]
    if bad:
      raise ValueError(f"{where} sentence {i} has tags {bad}; the head has "
                       f"num_labels={len(LABELS)} (ids 0..{len(LABELS) - 1})")
    ids, word_ids = tok.encode_words(ex["tokens"])
    first = np.r_[True, np.diff(word_ids) != 0] if ids else np.zeros(0, bool)
    spans = windows.spans(len(ids), max_seq_length - 2, stride)
    for (s, n), best in zip(spans, windows.max_context(spans, len(ids))):
      input_ids, types, mask, _ = common.pack(ids[s:s + n], None, tok,
                                              max_seq_length)
      off = 1  # after [CLS]
      labels = np.zeros(max_seq_length, np.int32)
      weights = np.zeros(max_seq_length, np.float32)
      word_index = np.full(max_seq_length, -1, np.int32)
      is_max = np.zeros(max_seq_length, bool)
      w = np.asarray(word_ids[s:s + n], np.int64)
      labels[off:off + n] = np.asarray(ex["tags"], np.int32)[w] if n else []
      weights[off:off + n] = first[s:s + n]
      word_index[off:off + n] = np.where(first[s:s + n], w, -1)
      is_max[off:off + n] = best
      for k, v in (("input_ids", input_ids), ("token_type_ids", types),
                   ("attention_mask", mask), ("labels", labels),
                   ("label_weights", weights), ("word_index", word_index),
                   ("max_context", is_max), ("example_index", np.int32(i))):
        rows[k].append(v)
  return {k: np.stack(v) for k, v in rows.items()}


def postprocess(examples: Sequence[dict], features: dict, logits: np.ndarray,
                labels: Sequence[str] = LABELS) -> list[list[str]]:
  """Window logits [F, length, labels] -> tag names per word ('O' for unseen words)."""
  preds = [["O"] * len(ex["tokens"]) for ex in examples]
  best = np.argmax(logits, axis=-1)
  for f in range(len(best)):
    e = int(features["example_index"][f])
    use = (features["word_index"][f] >= 0) & features["max_context"][f]
    for pos in np.flatnonzero(use):
      preds[e][int(features["word_index"][f][pos])] = labels[int(best[f][pos])]
  return preds


def score(examples: Sequence[dict], predictions: Sequence[Sequence[str]]) -> dict:
  gold = [[LABELS[t] for t in ex["tags"]] for ex in examples]
  return metrics.entity_scores(gold, predictions)


def write_predictions(examples, predictions, path: str) -> str:
  """CoNLL format: 'word gold predicted' per line, a blank line between sentences."""
  with storage.open_atomic(path, text=True) as f:
    for ex, pred in zip(examples, predictions):
      for word, tag, p in zip(ex["tokens"], ex["tags"], pred):
        f.write(f"{word} {LABELS[tag]} {p}\n")
      f.write("\n")
  return path
