"""Evaluation metrics, exactly as the benchmarks define them (pure NumPy, host side).

GLUE (Wang et al. 2019, and the GLUE server): accuracy; F1 of the positive class
(MRPC, QQP); Matthews correlation (CoLA, AX); Pearson and Spearman correlation (STS-B).
`glue_metrics(task, predictions, labels)` returns the task's metrics and its `score`
(the mean of the task's metrics, as the leaderboard averages them).

SQuAD: the answer normalisation and EM/F1 of the official `evaluate-v1.1.py` and
`evaluate-v2.0.py` scripts (lower case; drop punctuation, the articles a/an/the and
extra whitespace; token-bag F1; maximum over the gold answers). v1.1: a question
without a prediction scores 0 and counts in the total. v2.0 adds no-answer questions,
the no-answer-probability threshold, HasAns/NoAns splits and the best-threshold
search; as in the official script, a question is HasAns when its list of gold answers
is non-empty (raw texts), while for scoring gold answers that normalise to nothing
count as the empty answer (a question whose only gold answer is "the" is HasAns and
is matched by an empty prediction).

NER: entity-level precision/recall/F1 over chunks, with the semantics of `seqeval`'s
default (conlleval) mode: IOB1/IOB2/IOBES tags, an `I-X` after `O` or after another
type starts a new chunk, and a chunk counts only when its type and both ends match.
"""

from __future__ import annotations

import collections
import re
import string
from typing import Iterable, Mapping, Sequence

import numpy as np

# ------------------------------------------------------------------------------ GLUE


def accuracy(predictions, labels) -> float:
  p, y = _pair(predictions, labels)
  return float(np.mean(p == y))


def f1_binary(predictions, labels, positive=1) -> float:
  """F1 of the positive class (sklearn `f1_score` default); 0 when it has no support."""
  p, y = _pair(predictions, labels)
  tp = np.sum((p == positive) & (y == positive))
  fp = np.sum((p == positive) & (y != positive))
  fn = np.sum((p != positive) & (y == positive))
  return float(2 * tp / (2 * tp + fp + fn)) if tp else 0.0


def matthews_corrcoef(predictions, labels) -> float:
  """Multi-class Matthews correlation (Gorodkin 2004, as sklearn); 0 when undefined."""
  p, y = _pair(predictions, labels)
  classes = np.union1d(p, y)
  c = np.zeros((len(classes), len(classes)), np.float64)
  np.add.at(c, (np.searchsorted(classes, y), np.searchsorted(classes, p)), 1)
  t_k, p_k = c.sum(1), c.sum(0)
  n, correct = c.sum(), np.trace(c)
  cov_yp = correct * n - t_k @ p_k
  cov_pp = n * n - p_k @ p_k
  cov_yy = n * n - t_k @ t_k
  if cov_pp * cov_yy == 0:
    return 0.0
  return float(cov_yp / np.sqrt(cov_pp * cov_yy))


def pearson(x, y) -> float:
  x, y = _pair(x, y, dtype=np.float64)
  x, y = x - x.mean(), y - y.mean()
  denom = np.sqrt((x @ x) * (y @ y))
  return float(x @ y / denom) if denom else float("nan")


def _ranks(x: np.ndarray) -> np.ndarray:
  """1-based ranks with ties given their average rank (scipy `rankdata` default)."""
  order = np.argsort(x, kind="mergesort")
  ranks = np.empty(len(x), np.float64)
  sorted_x = x[order]
  starts = np.flatnonzero(np.r_[True, sorted_x[1:] != sorted_x[:-1]])
  ends = np.r_[starts[1:], len(x)]
  for s, e in zip(starts, ends):
    ranks[order[s:e]] = (s + e + 1) / 2.0
  return ranks


def spearman(x, y) -> float:
  x, y = _pair(x, y, dtype=np.float64)
  return pearson(_ranks(x), _ranks(y))


def _pair(a, b, dtype=None):
  a, b = np.asarray(a, dtype), np.asarray(b, dtype)
  if a.shape != b.shape:
    raise ValueError(f"predictions have shape {a.shape} but labels {b.shape}")
  if a.size == 0:
    raise ValueError("no predictions to score (empty split?)")
  return a, b


# GLUE task -> the metrics the benchmark reports for it.
GLUE_METRICS = {
    "cola": ("matthews_corrcoef",),
    "sst2": ("accuracy",),
    "mrpc": ("accuracy", "f1"),
    "stsb": ("pearson", "spearman"),
    "qqp": ("accuracy", "f1"),
    "mnli": ("accuracy",),
    "mnli_matched": ("accuracy",),
    "mnli_mismatched": ("accuracy",),
    "qnli": ("accuracy",),
    "rte": ("accuracy",),
    "wnli": ("accuracy",),
    "ax": ("matthews_corrcoef",),
}
_FNS = {"accuracy": accuracy, "f1": f1_binary, "matthews_corrcoef": matthews_corrcoef,
        "pearson": pearson, "spearman": spearman}


def glue_metrics(task: str, predictions, labels) -> dict[str, float]:
  """The task's GLUE metrics and `score`, their mean (the leaderboard's task score)."""
  if task not in GLUE_METRICS:
    raise ValueError(f"GLUE task {task!r} is not one of {sorted(GLUE_METRICS)}")
  out = {name: _FNS[name](predictions, labels) for name in GLUE_METRICS[task]}
  out["score"] = float(np.mean(list(out.values())))
  return out


# ----------------------------------------------------------------------------- SQuAD

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(s: str) -> str:
  """Official SQuAD normalisation: lower, drop punctuation, then articles, then spaces."""
  s = "".join(ch for ch in s.lower() if ch not in _PUNCTUATION)
  return " ".join(_ARTICLES.sub(" ", s).split())


def squad_exact(gold: str, prediction: str) -> int:
  return int(normalize_answer(gold) == normalize_answer(prediction))


def squad_f1(gold: str, prediction: str, version: str = "v2.0") -> float:
  """Token-bag F1. v2.0: an empty side scores 1 iff both are empty; v1.1: 0."""
  gold_toks = normalize_answer(gold).split()
  pred_toks = normalize_answer(prediction).split()
  if version == "v2.0" and (not gold_toks or not pred_toks):
    return float(gold_toks == pred_toks)
  same = sum((collections.Counter(gold_toks) & collections.Counter(pred_toks)).values())
  if same == 0:
    return 0.0
  precision, recall = same / len(pred_toks), same / len(gold_toks)
  return 2 * precision * recall / (precision + recall)


def squad_evaluate(gold_answers: Mapping[str, Sequence[str]],
                   predictions: Mapping[str, str], version: str = "v2.0",
                   na_probs: Mapping[str, float] | None = None,
                   na_prob_thresh: float = 1.0) -> dict[str, float]:
  """Official scores (percent) for question id -> gold answer texts / predicted text.

  v1.1 returns {'exact_match', 'f1'}; v2.0 returns {'exact', 'f1', 'total',
  'HasAns_*', 'NoAns_*'} and, given `na_probs`, 'best_exact'/'best_f1' with their
  thresholds. v1.1 (`evaluate-v1.1.py`): a question without a prediction scores 0
  and counts in the total. v2.0 (`evaluate-v2.0.py`): HasAns means a non-empty list
  of gold answers (raw, before normalisation); a question without a prediction is
  left out of every total, as that script's `get_raw_scores` leaves it out.
  """
  if version not in ("v1.1", "v2.0"):
    raise ValueError(f"SQuAD version {version!r} is not one of 'v1.1', 'v2.0'")
  if not gold_answers:
    raise ValueError("no SQuAD questions to score (empty split?)")
  exact, f1 = {}, {}
  has_ans = {}
  for qid, answers in gold_answers.items():
    answers = list(answers)
    has_ans[qid] = bool(answers)
    if version == "v2.0":
      answers = [a for a in answers if normalize_answer(a)] or [""]
    if qid not in predictions:
      continue
    exact[qid] = max(squad_exact(a, predictions[qid]) for a in answers)
    f1[qid] = max(squad_f1(a, predictions[qid], version) for a in answers)
  if not exact:
    raise ValueError("none of the SQuAD questions has a prediction")
  if version == "v1.1":  # unanswered questions score 0 over the full total
    total = len(gold_answers)
    return {"exact_match": 100.0 * sum(exact.values()) / total,
            "f1": 100.0 * sum(f1.values()) / total}

  if na_probs is not None:
    exact_t = _apply_no_answer(exact, na_probs, has_ans, na_prob_thresh)
    f1_t = _apply_no_answer(f1, na_probs, has_ans, na_prob_thresh)
  else:
    exact_t, f1_t = exact, f1
  out = {"exact": 100.0 * _mean(exact_t), "f1": 100.0 * _mean(f1_t),
         "total": len(exact_t)}
  for prefix, want in (("HasAns", True), ("NoAns", False)):
    ids = [q for q in exact_t if has_ans[q] == want]
    if ids:
      out[f"{prefix}_exact"] = 100.0 * sum(exact_t[q] for q in ids) / len(ids)
      out[f"{prefix}_f1"] = 100.0 * sum(f1_t[q] for q in ids) / len(ids)
      out[f"{prefix}_total"] = len(ids)
  if na_probs is not None:
    for name, raw in (("exact", exact), ("f1", f1)):
      best, thresh = _best_threshold(predictions, raw, na_probs, has_ans)
      out[f"best_{name}"], out[f"best_{name}_thresh"] = best, thresh
  return out


def _mean(scores: Mapping[str, float]) -> float:
  return sum(scores.values()) / len(scores)


def _apply_no_answer(scores, na_probs, has_ans, thresh):
  return {q: float(not has_ans[q]) if na_probs[q] > thresh else s
          for q, s in scores.items()}


def _best_threshold(predictions, scores, na_probs, has_ans):
  """The official sweep: abstain on every question whose na_prob exceeds a threshold."""
  score = best = sum(1 for h in has_ans.values() if not h)
  best_thresh = 0.0
  for qid in sorted(na_probs, key=lambda k: na_probs[k]):
    if qid not in scores:
      continue
    if has_ans[qid]:
      score += scores[qid]
    elif predictions[qid]:
      score -= 1
    if score > best:
      best, best_thresh = score, na_probs[qid]
  return 100.0 * best / len(scores), best_thresh


# ------------------------------------------------------------------------------- NER


def _split_tag(tag: str) -> tuple[str, str]:
  """'B-PER' -> ('B', 'PER'); a bare 'B' has type '_' (as seqeval parses tags)."""
  tag = tag or "O"
  return tag[0], tag[1:].split("-", 1)[-1] or "_"


def _end_of_chunk(prev_tag, tag, prev_type, type_) -> bool:
  return (prev_tag in ("E", "S")
          or (prev_tag in ("B", "I") and tag in ("B", "S", "O"))
          or (prev_tag != "O" and prev_type != type_))


def _start_of_chunk(prev_tag, tag, prev_type, type_) -> bool:
  return (tag in ("B", "S")
          or (prev_tag in ("E", "S", "O") and tag in ("I", "E"))
          or (tag != "O" and prev_type != type_))


def get_entities(tags: Sequence[str]) -> list[tuple[str, int, int]]:
  """Chunks (type, first, last) of one tag sequence, conlleval semantics."""
  chunks = []
  prev_tag, prev_type, begin = "O", "", 0
  for i, tag in enumerate(list(tags) + ["O"]):
    t, kind = _split_tag(tag)
    if _end_of_chunk(prev_tag, t, prev_type, kind):
      chunks.append((prev_type, begin, i - 1))
    if _start_of_chunk(prev_tag, t, prev_type, kind):
      begin = i
    prev_tag, prev_type = t, kind
  return chunks


def entity_scores(gold: Iterable[Sequence[str]], predicted: Iterable[Sequence[str]]
                  ) -> dict[str, float]:
  """Micro precision/recall/F1 over entity chunks of whole sentences (seqeval)."""
  gold, predicted = list(gold), list(predicted)
  if len(gold) != len(predicted):
    raise ValueError(f"{len(predicted)} predicted sentences for {len(gold)} gold ones")
  if not gold:
    raise ValueError("no sentences to score (empty split?)")
  true, pred = set(), set()
  for s, (g, p) in enumerate(zip(gold, predicted)):
    if len(g) != len(p):
      raise ValueError(f"sentence {s}: {len(p)} predicted tags for {len(g)} tokens")
    true.update((s,) + c for c in get_entities(g))
    pred.update((s,) + c for c in get_entities(p))
  correct = len(true & pred)
  precision = correct / len(pred) if pred else 0.0
  recall = correct / len(true) if true else 0.0
  f1 = 2 * precision * recall / (precision + recall) if correct else 0.0
  return {"precision": precision, "recall": recall, "f1": f1,
          "num_gold_entities": len(true), "num_predicted_entities": len(pred)}
