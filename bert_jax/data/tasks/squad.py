"""SQuAD v1.1 / v2.0: examples, windowed features with offsets, n-best decoding.

Features follow google-research/bert `run_squad.py`: the question is cut to
`max_query_length` pieces; the context is split into windows of
`max_seq_length - len(question) - 3` pieces starting `doc_stride` apart; each feature
is `[CLS] question [SEP] window [SEP]`. Instead of whitespace tokens and
`get_final_text`, every context piece keeps its character offsets (from the fast
tokenizer), so a predicted span maps straight back to a substring of the context.
A window that does not contain the answer (and every v2.0 impossible question) is
labelled with the [CLS] position, as in the v2.0 recipe.

Decoding (`postprocess`): per question, the `n_best_size` best starts and ends among the
context pieces of every window (run_squad.py ranks every position, padding included,
then drops the invalid ones; ranking only context pieces makes the result independent
of how far a window is padded); a span is valid when both ends are in the context,
end >= start, it has at most `max_answer_length` pieces and its start is in the window
where it has the most context. For v2.0 the null score is the smallest [CLS] score over the windows; the
answer is "" when `null - best_span > null_score_diff_threshold`.
"""

from __future__ import annotations

import collections
import json
from typing import Sequence

import numpy as np

from bert_jax import metrics, storage
from bert_jax.data.tasks import common, windows

VERSIONS = ("v1.1", "v2.0")


def example(qid, question, context, answers=(), answer_starts=(), is_impossible=False):
  return {"id": qid, "question": question, "context": context,
          "answers": list(answers), "answer_starts": [int(s) for s in answer_starts],
          "is_impossible": bool(is_impossible)}


def from_tfds_record(r) -> dict:
  answers = r.get("answers", {})
  texts = [common.as_text(t) for t in np.asarray(answers.get("text", [])).reshape(-1)]
  starts = [int(s) for s in np.asarray(answers.get("answer_start", [])).reshape(-1)]
  impossible = bool(np.asarray(r.get("is_impossible", False)))
  if impossible:
    texts, starts = [], []
  return example(common.as_text(r["id"]), common.as_text(r["question"]),
                 common.as_text(r["context"]), texts, starts[:len(texts)], impossible)


def load_json(path: str) -> list[dict]:
  """The official SQuAD json ({'data': [{'paragraphs': [{'context', 'qas'}]}]})."""
  data = storage.read_json(path)["data"]
  out = []
  for article in data:
    for p in article["paragraphs"]:
      for qa in p["qas"]:
        answers = qa.get("answers", [])
        out.append(example(qa["id"], qa["question"], p["context"],
                           [a["text"] for a in answers],
                           [a["answer_start"] for a in answers],
                           qa.get("is_impossible", False)))
  return out


def _char_to_token_span(offsets, char_start, char_end):
  """First/last piece overlapping [char_start, char_end); None if none does."""
  hits = [i for i, (s, e) in enumerate(offsets) if s < char_end and e > char_start]
  return (hits[0], hits[-1]) if hits else None


def featurize(examples: Sequence[dict], tok, max_seq_length: int, doc_stride: int,
              max_query_length: int) -> dict[str, np.ndarray]:
  """Examples -> features (one per window); see the module docstring."""
  common.check_nonempty(examples, "the SQuAD split")
  rows = collections.defaultdict(list)
  for ex_index, ex in enumerate(examples):
    q_ids = tok.encode(ex["question"])[0][:max_query_length]
    budget = max_seq_length - len(q_ids) - 3
    if budget < 1:
      raise ValueError(
          f"SQuAD question {ex['id']!r} has {len(q_ids)} pieces (after cutting to "
          f"data.max_query_length={max_query_length}), leaving no room for context "
          f"in data.max_seq_length={max_seq_length}; expected "
          f"max_query_length <= max_seq_length - 4")
    c_ids, c_offsets = tok.encode(ex["context"])
    answer = None
    if ex["answers"] and not ex["is_impossible"]:
      start = ex["answer_starts"][0]
      answer = _char_to_token_span(c_offsets, start, start + len(ex["answers"][0]))
    spans = windows.spans(len(c_ids), budget, doc_stride)
    for (start, n), best in zip(spans, windows.max_context(spans, len(c_ids))):
      ids, types, mask, off = common.pack(q_ids, c_ids[start:start + n], tok,
                                          max_seq_length)
      offsets = np.full((max_seq_length, 2), -1, np.int32)
      offsets[off:off + n] = c_offsets[start:start + n]
      is_max = np.zeros(max_seq_length, bool)
      is_max[off:off + n] = best
      s_pos = e_pos = 0
      if answer is not None and start <= answer[0] and answer[1] < start + n:
        s_pos, e_pos = answer[0] - start + off, answer[1] - start + off
      for k, v in (("input_ids", ids), ("token_type_ids", types),
                   ("attention_mask", mask), ("offsets", offsets),
                   ("max_context", is_max), ("start_positions", s_pos),
                   ("end_positions", e_pos), ("example_index", ex_index)):
        rows[k].append(v)
  return {k: np.stack([np.asarray(x) for x in v]).astype(
      bool if k == "max_context" else np.int32) for k, v in rows.items()}


def postprocess(examples: Sequence[dict], features: dict, start_logits: np.ndarray,
                end_logits: np.ndarray, *, version: str = "v1.1", n_best_size: int = 20,
                max_answer_length: int = 30, null_score_diff_threshold: float = 0.0):
  """Window logits [features, length] -> (predictions, null_odds, nbest) by question id."""
  if version not in VERSIONS:
    raise ValueError(f"SQuAD version {version!r} is not one of {VERSIONS}")
  by_example = collections.defaultdict(list)
  for f, e in enumerate(features["example_index"]):
    by_example[int(e)].append(f)
  predictions, null_odds, nbest = {}, {}, {}
  for e, ex in enumerate(examples):
    candidates, null_score = [], np.inf
    for f in by_example.get(e, []):
      s_log, e_log = start_logits[f], end_logits[f]
      offsets, is_max = features["offsets"][f], features["max_context"][f]
      null_score = min(null_score, float(s_log[0] + e_log[0]))
      in_context = offsets[:, 0] >= 0  # padding never crowds out context positions
      starts = np.argsort(-np.where(in_context, s_log, -np.inf), kind="stable")[:n_best_size]
      ends = np.argsort(-np.where(in_context, e_log, -np.inf), kind="stable")[:n_best_size]
      for i in starts:
        if offsets[i, 0] < 0 or not is_max[i]:
          continue
        for j in ends:
          if offsets[j, 0] < 0 or j < i or j - i + 1 > max_answer_length:
            continue
          candidates.append((float(s_log[i] + e_log[j]), float(s_log[i]),
                             float(e_log[j]), int(offsets[i, 0]),
                             int(offsets[j, 1])))
    candidates.sort(key=lambda c: -c[0])
    entries, seen = [], set()
    for score, s, en, c0, c1 in candidates:
      text = ex["context"][c0:c1]
      if text in seen:
        continue
      seen.add(text)
      entries.append({"text": text, "score": score, "start_logit": s,
                      "end_logit": en, "char_start": c0})
      if len(entries) >= n_best_size:
        break
    if version == "v2.0" and np.isfinite(null_score):
      entries.append({"text": "", "score": null_score, "start_logit": None,
                      "end_logit": None, "char_start": -1})
      entries.sort(key=lambda x: -x["score"])
    if not entries:
      entries = [{"text": "", "score": 0.0, "start_logit": None, "end_logit": None,
                  "char_start": -1}]
    scores = np.array([x["score"] for x in entries])
    probs = np.exp(scores - scores.max())
    for x, p in zip(entries, probs / probs.sum()):
      x["probability"] = float(p)
    best = next((x for x in entries if x["text"]), None)
    if version == "v2.0":
      diff = null_score - (best["score"] if best else -np.inf)
      null_odds[ex["id"]] = float(diff) if np.isfinite(diff) else 1e9
      predictions[ex["id"]] = (best["text"] if best is not None
                               and diff <= null_score_diff_threshold else "")
    else:
      predictions[ex["id"]] = best["text"] if best else ""
    nbest[ex["id"]] = entries
  return predictions, null_odds, nbest


def score(examples: Sequence[dict], predictions: dict, version: str,
          null_odds: dict | None = None, null_score_diff_threshold: float = 0.0) -> dict:
  gold = {ex["id"]: ex["answers"] for ex in examples}
  if version == "v1.1":
    return metrics.squad_evaluate(gold, predictions, "v1.1")
  return metrics.squad_evaluate(gold, predictions, "v2.0", na_probs=null_odds,
                                na_prob_thresh=null_score_diff_threshold)


def write_predictions(directory: str, predictions, null_odds, nbest, version) -> list[str]:
  """predictions.json (official format), nbest_predictions.json, null_odds.json (v2)."""
  files = {"predictions.json": predictions, "nbest_predictions.json": nbest}
  if version == "v2.0":
    files["null_odds.json"] = null_odds
  paths = []
  for name, obj in files.items():
    path = storage.join(directory, name)
    storage.write_text_atomic(path, json.dumps(obj, indent=2, ensure_ascii=False))
    paths.append(path)
  return paths
