"""Task pipelines on `Model` + `Tokenizer`: embed, fill_mask, classify, tag, answer.

Every pipeline takes a list of inputs and returns one result per input. Inputs longer
than the window (`max_length` tokens, default: the fine-tuning run's
`max_seq_length`, a sentence-transformers dir's `max_seq_length`, else
`model.max_position_embeddings`) are cut into overlapping windows `stride` pieces
apart (`data/tasks/windows.py`, as fine-tuning does; default stride: the run's
`doc_stride`, else half the window). An input that fits one window is one window, so
windowing changes nothing for short inputs. How windows are combined:

  embed      the mean of the window embeddings (each pooled as configured), then the
             L2 normalisation if asked;
  fill_mask  each [MASK] is predicted in the window where it is most central;
  classify   the mean (default, as fine-tuning evaluates) or the element-wise max of
             the window logits, then softmax / sigmoid;
  tag        each word is tagged in the window where its first piece is most central
             (`ner.postprocess`); a text's words are those of BERT's basic tokenizer
             (`data/tasks/words.py`), for SentencePiece models as for WordPiece;
  answer     the best span over all windows, each start taken only in its most
             central window (`squad.postprocess`, the n-best of run_squad.py).

Features are built by the fine-tuning featurizers themselves
(`classification.featurize`, `ner.featurize`, `squad.featurize`), so a fine-tuned
model sees here exactly what its run evaluated. Rows are run longest first, in
batches of `batch_size`, so padding stays small.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from bert_jax import metrics
from bert_jax.data.tasks import classification, ner, squad, windows
from bert_jax.data.tasks import words as words_lib
from bert_jax.inference.model import Model, ModelError
from bert_jax.inference.tokenizer import Tokenizer

POOLINGS = ("cls", "mean", "max", "pooler")
AGGREGATIONS = ("mean", "max")


def window_settings(model: Model, max_length: int | None, stride: int | None,
                    default_length: int | None = None) -> tuple[int, int]:
  """(window length, stride) from the arguments, the model's task or its size."""
  task = model.task or {}
  length = max_length or task.get("max_seq_length") or default_length or model.max_length
  if length > model.max_length:
    raise ValueError(f"max_length={length} exceeds model.max_position_embeddings="
                     f"{model.max_length}")
  if length < 8:
    raise ValueError(f"max_length={length}: expected at least 8 tokens per window")
  stride = stride or task.get("doc_stride") or max(1, length // 2)
  return int(length), int(stride)


def run_features(model: Model, features: dict, batch_size: int,
                 keep: Callable[[dict, dict], dict]) -> dict[str, np.ndarray]:
  """`keep(outputs, batch)` of every row of `features`, in row order.

  Rows go to the model longest first, `batch_size` at a time.
  """
  if batch_size < 1:
    raise ValueError(f"batch_size={batch_size}: expected >= 1")
  n = len(features["input_ids"])
  order = np.argsort(-features["attention_mask"].sum(1), kind="stable")
  parts, rows = [], []
  for s in range(0, n, batch_size):
    idx = order[s:s + batch_size]
    batch = {k: v[idx] for k, v in features.items()}
    out = model(batch["input_ids"], batch["token_type_ids"], batch["attention_mask"],
                masked_lm_positions=batch.get("masked_lm_positions"))
    parts.append(keep(out, batch))
    rows.append(idx)
  inverse = np.argsort(np.concatenate(rows), kind="stable")
  return {k: np.concatenate([p[k] for p in parts])[inverse] for k in parts[0]}


def _sequence_features(tok: Tokenizer, texts, text_pairs, length, stride, kind="",
                       num_labels=1):
  texts = list(texts)
  if text_pairs is not None and len(text_pairs) != len(texts):
    raise ValueError(f"{len(texts)} texts but {len(text_pairs)} text_pairs")
  examples = [{"text_a": t, "text_b": None if text_pairs is None else text_pairs[i],
               "label": None, "idx": i} for i, t in enumerate(texts)]
  return classification.featurize(examples, tok.core, length, stride,
                                  kind or "classification", num_labels,
                                  labelled=False, where="the inputs")


# ------------------------------------------------------------------------- embed


def embed(model: Model, tok: Tokenizer, texts: Sequence[str], *,
          pooling: str | None = None, normalize: bool | None = None,
          max_length: int | None = None, stride: int | None = None,
          batch_size: int = 32) -> np.ndarray:
  """[len(texts), hidden] float32 sentence vectors.

  `pooling`: 'cls' (the [CLS] vector), 'mean' (over real tokens, mask-aware), 'max'
  or 'pooler' (the tanh pooler); default: a sentence-transformers dir's setting, else
  'mean'. `normalize`: L2-normalise (default: a sentence-transformers dir's Normalize
  module, else False).
  """
  src = model.source
  pooling = pooling or src.pooling or "mean"
  if pooling not in POOLINGS:
    raise ValueError(f"pooling={pooling!r} is not one of {POOLINGS}")
  if pooling == "pooler" and "bert/pooler" in model.initialised:
    raise ModelError(f"pooling='pooler': {src.describe()} has no trained pooler")
  normalize = src.normalize if normalize is None else normalize
  if not texts:
    return np.zeros((0, int(model.config.hidden_size)), np.float32)
  length, stride = window_settings(model, max_length, stride, src.max_length)
  features = _sequence_features(tok, texts, None, length, stride)

  def keep(out, batch):
    mask = batch["attention_mask"][..., None].astype(np.float32)
    seq = out["sequence_output"].astype(np.float32)
    if pooling == "cls":
      v = seq[:, 0]
    elif pooling == "pooler":
      v = out["pooled_output"]
    elif pooling == "mean":
      v = (seq * mask).sum(1) / np.maximum(mask.sum(1), 1e-9)
    else:
      v = np.where(mask > 0, seq, -1e9).max(1)
    return {"vector": np.asarray(v, np.float32)}

  vectors = run_features(model, features, batch_size, keep)["vector"]
  out = classification.combine(vectors, features["example_index"], len(texts))
  if normalize:
    out = out / np.maximum(np.linalg.norm(out, axis=-1, keepdims=True), 1e-12)
  return out.astype(np.float32)


# --------------------------------------------------------------------- fill_mask


def fill_mask(model: Model, tok: Tokenizer, texts: Sequence[str], *, top_k: int = 5,
              max_length: int | None = None, stride: int | None = None,
              batch_size: int = 32) -> list[list[list[dict]]]:
  """Per text, per [MASK]: the top_k {'token', 'token_id', 'probability'}."""
  length, stride = window_settings(model, max_length, stride)
  budget = length - 2
  rows, where = [], []   # where: (text, mask number) of each predicted position
  for t, text in enumerate(texts):
    ids = tok.masked_ids(text)
    masks = [i for i, x in enumerate(ids) if x == tok.mask_id]
    spans = windows.spans(len(ids), budget, stride)
    best = windows.max_context(spans, len(ids))
    for (start, n), central in zip(spans, best):
      mine = [m for m in masks if start <= m < start + n and central[m - start]]
      if mine:
        rows.append(([tok.cls_id] + ids[start:start + n] + [tok.sep_id],
                     [m - start + 1 for m in mine]))
        where += [(t, masks.index(m)) for m in mine]
  width = max(len(r) for r, _ in rows)
  most = max(len(p) for _, p in rows)
  features = {"input_ids": np.full((len(rows), width), tok.pad_id, np.int32),
              "attention_mask": np.zeros((len(rows), width), np.int32),
              "token_type_ids": np.zeros((len(rows), width), np.int32),
              "masked_lm_positions": np.zeros((len(rows), most), np.int32),
              "count": np.array([len(p) for _, p in rows])}
  for i, (ids, positions) in enumerate(rows):
    features["input_ids"][i, :len(ids)] = ids
    features["attention_mask"][i, :len(ids)] = 1
    features["masked_lm_positions"][i, :len(positions)] = positions

  def keep(out, batch):
    logits = out["mlm_logits"].astype(np.float64)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    top = np.argsort(-probs, axis=-1, kind="stable")[..., :top_k]
    return {"ids": top, "probs": np.take_along_axis(probs, top, -1)}

  got = run_features(model, features, batch_size, keep)
  results: list[list[list[dict]]] = [[] for _ in texts]
  k = 0
  for r in range(len(rows)):
    for j in range(features["count"][r]):
      t, _ = where[k]
      results[t].append([{"token": tok.id_to_token(i), "token_id": int(i),
                          "probability": float(p)}
                         for i, p in zip(got["ids"][r, j], got["probs"][r, j])])
      k += 1
  return results


# ---------------------------------------------------------------------- classify


def classify(model: Model, tok: Tokenizer, texts: Sequence[str],
             text_pairs: Sequence[str] | None = None, *, aggregate: str = "mean",
             thresholds: float | Sequence[float] = 0.5, max_length: int | None = None,
             stride: int | None = None, batch_size: int = 32) -> list[dict]:
  """One result per text (pair), by the model's kind:

  classification  {'label', 'score', 'scores': {name: softmax probability}}
  multilabel      {'labels': [names with sigmoid >= threshold], 'scores': {...}}
  regression      {'value'}
  `aggregate`: 'mean' or 'max' of the window logits (module docstring);
  `thresholds`: multi-label only, one for all labels or one per label.
  """
  model.require(classification.KINDS, "classify")
  if aggregate not in AGGREGATIONS:
    raise ValueError(f"aggregate={aggregate!r} is not one of {AGGREGATIONS}")
  names = model.label_names
  length, stride = window_settings(model, max_length, stride)
  features = _sequence_features(tok, texts, text_pairs, length, stride)
  logits = run_features(model, features, batch_size,
                        lambda out, _: {"logits": out["logits"]})["logits"]
  logits = combine_windows(logits, features["example_index"], len(texts), aggregate)
  if model.kind == "regression":
    return [{"value": float(v)} for v in classification.predictions(logits, model.kind)]
  if model.kind == "multilabel":
    cut = np.broadcast_to(np.asarray(thresholds, np.float64), (logits.shape[1],))
    probs = 1 / (1 + np.exp(-logits))
    return [{"labels": [names[j] for j in np.flatnonzero(p >= cut)],
             "scores": dict(zip(names, map(float, p)))} for p in probs]
  probs = np.exp(logits - logits.max(-1, keepdims=True))
  probs /= probs.sum(-1, keepdims=True)
  labels = classification.predictions(logits, model.kind)
  return [{"label": names[int(y)], "score": float(p[y]),
           "scores": dict(zip(names, map(float, p)))} for y, p in zip(labels, probs)]


def combine_windows(logits: np.ndarray, example_index: np.ndarray, count: int,
                    aggregate: str) -> np.ndarray:
  """Window logits [F, ...] -> [count, ...] by the mean or the element-wise max."""
  if aggregate == "mean":
    return classification.combine(logits, example_index, count)
  out = np.full((count,) + logits.shape[1:], -np.inf)
  np.maximum.at(out, example_index, logits)
  return out


# --------------------------------------------------------------------------- tag


def split_words(text: str, lowercase: bool = False) -> list[tuple[int, int]]:
  """[start, end) spans of the words of `text` as BERT's basic tokenizer draws them
  (`data/tasks/words.py`: every punctuation mark, ASCII symbols such as `$ + =`
  included, and each CJK character is a word of its own)."""
  return words_lib.word_spans(text, lowercase)


def tag(model: Model, tok: Tokenizer, inputs: Sequence[str | Sequence[str]], *,
        max_length: int | None = None, stride: int | None = None,
        batch_size: int = 32) -> list[dict]:
  """Per input (a text, or a list of words): {'words', 'tags', 'entities'}.

  Entities are chunks of the BIO tags (`metrics.get_entities`, conlleval semantics):
  {'type', 'text', 'start', 'end', 'first_word', 'last_word'}, `start`/`end` character
  offsets into the text (for a list of words: into the words joined by spaces).
  """
  model.require(("token",), "tag")
  length, stride = window_settings(model, max_length, stride)
  examples, texts, spans = [], [], []
  for i, item in enumerate(inputs):
    if isinstance(item, str):
      text, word_spans = item, split_words(item, bool(tok.lowercase))
    else:
      words = [str(w) for w in item]
      starts = np.cumsum([0] + [len(w) + 1 for w in words])
      text = " ".join(words)
      word_spans = [(int(s), int(s) + len(w)) for s, w in zip(starts, words)]
    examples.append({"tokens": [text[s:e] for s, e in word_spans],
                     "tags": [0] * len(word_spans), "idx": i})
    texts.append(text)
    spans.append(word_spans)
  results = [None] * len(examples)
  nonempty = [i for i, ex in enumerate(examples) if ex["tokens"]]
  for i in set(range(len(examples))) - set(nonempty):
    results[i] = {"words": [], "tags": [], "entities": []}
  if nonempty:
    chosen = [examples[i] for i in nonempty]
    features = ner.featurize(chosen, tok.core, length, stride, where="the inputs")
    logits = run_features(model, features, batch_size,
                          lambda out, _: {"logits": out["logits"]})["logits"]
    tags = ner.postprocess(chosen, features, logits, labels=model.label_names)
    for i, t in zip(nonempty, tags):
      ws, text = spans[i], texts[i]
      results[i] = {"words": examples[i]["tokens"], "tags": t, "entities": [
          {"type": kind, "text": text[ws[a][0]:ws[b][1]], "start": ws[a][0],
           "end": ws[b][1], "first_word": a, "last_word": b}
          for kind, a, b in metrics.get_entities(t)]}
  return results


# ------------------------------------------------------------------------ answer


def answer(model: Model, tok: Tokenizer, questions: Sequence[str],
           contexts: Sequence[str], *, n_best: int = 20, max_answer_length: int = 30,
           null_threshold: float = 0.0, version: str | None = None,
           max_query_length: int | None = None, max_length: int | None = None,
           stride: int | None = None, batch_size: int = 32) -> list[dict]:
  """Per question: {'answer', 'start', 'end', 'probability', 'nbest'} (+ 'null_odds').

  `version`: 'v2.0' allows the null answer ("" when null score - best span score >
  `null_threshold`); default: 'v2.0' for a model fine-tuned on squad_v2.0, else 'v1.1'.
  `nbest`: up to `n_best` {'text', 'start', 'end', 'probability'} (the null answer has
  text "" and start -1).
  """
  model.require(("span",), "answer")
  if len(questions) != len(contexts):
    raise ValueError(f"{len(questions)} questions but {len(contexts)} contexts")
  task = model.task or {}
  version = version or ("v2.0" if task.get("task") == "squad_v2.0" else "v1.1")
  length, stride = window_settings(model, max_length, stride)
  max_query_length = max_query_length or task.get("max_query_length") or 64
  examples = [squad.example(str(i), q, c) for i, (q, c) in
              enumerate(zip(questions, contexts))]
  features = squad.featurize(examples, tok.core, length, stride, max_query_length)
  got = run_features(model, features, batch_size, lambda out, _: {
      "start": out["start_logits"], "end": out["end_logits"]})
  preds, odds, nbest = squad.postprocess(
      examples, features, got["start"], got["end"], version=version,
      n_best_size=n_best, max_answer_length=max_answer_length,
      null_score_diff_threshold=null_threshold)
  out = []
  for ex in examples:
    text = preds[ex["id"]]
    entries = nbest[ex["id"]]
    chosen = next((e for e in entries if e["text"] == text), entries[0])
    start = chosen["char_start"]
    row = {"answer": text, "start": start, "end": start + len(text) if text else -1,
           "probability": chosen["probability"],
           "nbest": [{"text": e["text"], "start": e["char_start"],
                      "end": e["char_start"] + len(e["text"]) if e["text"] else -1,
                      "probability": e["probability"]} for e in entries]}
    if version == "v2.0":
      row["null_odds"] = odds[ex["id"]]
    out.append(row)
  return out
