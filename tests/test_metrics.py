"""Metrics against independent implementations: sklearn, scipy, seqeval, and the
official SQuAD evaluate-v1.1 / evaluate-v2.0 definitions (restated below from the
scripts' text, plus hand-computed cases)."""
import collections
import re
import string

import numpy as np
import pytest
import scipy.stats
import seqeval.metrics
import sklearn.metrics

from bert_jax import metrics

RNG = np.random.default_rng(0)


# ------------------------------------------------------------------------------ GLUE


@pytest.mark.parametrize("trial", range(20))
def test_classification_metrics_match_sklearn(trial):
  n = int(RNG.integers(1, 60))
  k = int(RNG.integers(2, 4))
  y = RNG.integers(0, k, n)
  p = np.where(RNG.random(n) < 0.6, y, RNG.integers(0, k, n))
  assert metrics.accuracy(p, y) == pytest.approx(sklearn.metrics.accuracy_score(y, p))
  assert metrics.matthews_corrcoef(p, y) == pytest.approx(
      sklearn.metrics.matthews_corrcoef(y, p), abs=1e-12)
  yb, pb = y % 2, p % 2
  assert metrics.f1_binary(pb, yb) == pytest.approx(
      sklearn.metrics.f1_score(yb, pb, zero_division=0.0))


@pytest.mark.parametrize("y,p", [
    ([1, 1, 1], [1, 1, 1]),          # one class only: MCC undefined -> 0
    ([0, 0, 0], [1, 1, 1]),
    ([0, 1, 0, 1], [0, 1, 0, 1]),    # perfect
    ([0, 1, 0, 1], [1, 0, 1, 0]),    # perfectly wrong
    ([0, 0, 0, 0], [0, 0, 0, 0]),    # no positives: F1 0 (sklearn zero_division=0)
    ([1], [0]),
])
def test_classification_edge_cases_match_sklearn(y, p):
  assert metrics.matthews_corrcoef(p, y) == pytest.approx(
      sklearn.metrics.matthews_corrcoef(y, p), abs=1e-12)
  assert metrics.f1_binary(p, y) == pytest.approx(
      sklearn.metrics.f1_score(y, p, zero_division=0.0))
  assert metrics.accuracy(p, y) == sklearn.metrics.accuracy_score(y, p)


@pytest.mark.parametrize("trial", range(10))
def test_correlations_match_scipy_including_ties(trial):
  n = int(RNG.integers(3, 80))
  x = RNG.normal(size=n)
  y = x + RNG.normal(size=n)
  if trial % 2:  # STS-B style scores on a 0..5 grid: many ties
    x, y = np.round(np.clip(x + 2.5, 0, 5)), np.round(np.clip(y + 2.5, 0, 5) * 2) / 2
  assert metrics.pearson(x, y) == pytest.approx(scipy.stats.pearsonr(x, y)[0], abs=1e-12, nan_ok=True)
  assert metrics.spearman(x, y) == pytest.approx(
      scipy.stats.spearmanr(x, y)[0], abs=1e-12, nan_ok=True)


def test_glue_metrics_per_task_and_errors():
  y, p = [0, 1, 1, 0, 1], [0, 1, 0, 0, 1]
  m = metrics.glue_metrics("mrpc", p, y)
  assert set(m) == {"accuracy", "f1", "score"}
  assert m["score"] == pytest.approx((0.8 + sklearn.metrics.f1_score(y, p)) / 2)
  assert set(metrics.glue_metrics("cola", p, y)) == {"matthews_corrcoef", "score"}
  assert set(metrics.glue_metrics("stsb", [0.1, 2, 3], [0, 2.5, 2.9])) == {
      "pearson", "spearman", "score"}
  with pytest.raises(ValueError, match="'mrcp' is not one of"):
    metrics.glue_metrics("mrcp", p, y)
  with pytest.raises(ValueError, match="empty split"):
    metrics.accuracy([], [])
  with pytest.raises(ValueError, match=r"shape \(2,\) but labels \(3,\)"):
    metrics.accuracy([1, 0], [1, 0, 1])


# ----------------------------------------------------------------------------- SQuAD
# The official scripts' semantics, restated: normalise = lower -> remove every
# string.punctuation char -> replace \b(a|an|the)\b with a space -> collapse whitespace.


def ref_normalize(s):
  s = s.lower()
  s = "".join(c for c in s if c not in set(string.punctuation))
  s = re.sub(r"\b(a|an|the)\b", " ", s)
  return " ".join(s.split())


def ref_f1_v2(gold, pred):
  g, p = ref_normalize(gold).split() if gold else [], ref_normalize(pred).split() if pred else []
  if not g or not p:
    return int(g == p)
  same = sum((collections.Counter(g) & collections.Counter(p)).values())
  return 0 if same == 0 else 2 * same / (len(g) + len(p))


def ref_f1_v1(gold, pred):
  g, p = ref_normalize(gold).split(), ref_normalize(pred).split()
  same = sum((collections.Counter(g) & collections.Counter(p)).values())
  return 0 if same == 0 else 2 * same / (len(g) + len(p))


@pytest.mark.parametrize("text,expected", [
    ("The Eiffel Tower", "eiffel tower"),
    ("  an  apple, a pear; THE end. ", "apple pear end"),
    ("theatre another", "theatre another"),        # articles only as whole words
    ("a-b", "ab"),                                 # punctuation removed before articles
    ("a.the", "athe"),
    ("«Über» café", "«über» café"),                # non-ASCII punctuation is kept
    ("", ""),
    ("the a an", ""),
])
def test_squad_normalisation(text, expected):
  assert metrics.normalize_answer(text) == expected == ref_normalize(text)


def random_answer(rng):
  words = ["the", "a", "an", "Denver", "Broncos", "broncos,", "1990", "1,990", "!",
           "in", "Paris.", "paris", "THE", "an-apple", "  "]
  return " ".join(rng.choice(words, size=int(rng.integers(0, 5))))


def test_squad_em_f1_match_the_official_definitions_on_random_strings():
  rng = np.random.default_rng(1)
  for _ in range(500):
    g, p = random_answer(rng), random_answer(rng)
    assert metrics.squad_exact(g, p) == int(ref_normalize(g) == ref_normalize(p))
    assert metrics.squad_f1(g, p, "v2.0") == pytest.approx(ref_f1_v2(g, p))
    assert metrics.squad_f1(g, p, "v1.1") == pytest.approx(ref_f1_v1(g, p))


def test_squad_v1_hand_computed():
  gold = {"q1": ["Denver Broncos", "The Denver Broncos"],   # multiple gold answers
          "q2": ["Santa Clara, California"],
          "q3": ["1990"]}
  preds = {"q1": "the denver broncos!",   # EM 1 via normalisation
           "q2": "Santa Clara",           # P=1, R=2/3 -> F1 0.8
           "q3": "in 1991"}               # 0
  m = metrics.squad_evaluate(gold, preds, version="v1.1")
  assert m == pytest.approx({"exact_match": 100 / 3, "f1": 100 * 1.8 / 3})


def test_squad_v1_unanswered_question_scores_zero_in_the_total():
  gold = {"q1": ["cat"], "q2": ["dog"]}
  m = metrics.squad_evaluate(gold, {"q1": "cat"}, version="v1.1")
  assert m == pytest.approx({"exact_match": 50.0, "f1": 50.0})
  assert m == pytest.approx(official_v1(gold, {"q1": "cat"}))


def test_squad_v2_no_answer_threshold_and_best_threshold():
  gold = {"a": ["Paris"], "b": [], "c": ["the"], "d": ["New York City"]}
  # "c" has a gold answer (HasAns for the official script), but it normalises to "",
  # so only an empty prediction matches it.
  preds = {"a": "Paris", "b": "", "c": "London", "d": "York"}
  na = {"a": 0.1, "b": 0.9, "c": 0.8, "d": 0.3}
  raw = metrics.squad_evaluate(gold, preds, "v2.0")
  # a: 1/1, b: 1/1 (empty == empty), c: 0/0, d: EM 0, F1 2*(1*1/3)/(1+1/3)=0.5
  assert raw["exact"] == pytest.approx(50.0)
  assert raw["f1"] == pytest.approx(100 * 2.5 / 4)
  assert raw["HasAns_total"] == 3 and raw["NoAns_total"] == 1
  assert raw["HasAns_f1"] == pytest.approx(100 * 1.5 / 3) and raw["NoAns_exact"] == 100.0
  m = metrics.squad_evaluate(gold, preds, "v2.0", na_probs=na, na_prob_thresh=0.5)
  # With threshold 0.5, b and c abstain: b scores 1 (NoAns), c scores 0 (HasAns).
  assert m["exact"] == pytest.approx(50.0) and m["f1"] == pytest.approx(100 * 2.5 / 4)
  # Best-threshold sweep (official find_best_thresh): start = #NoAns = 1; sorted by
  # na: a(+1) d(+0.5 f1 / +0 em) c(+0, HasAns scoring 0) b(0).
  assert m["best_f1"] == pytest.approx(100 * 2.5 / 4) and m["best_f1_thresh"] == 0.3
  assert m["best_exact"] == pytest.approx(50.0) and m["best_exact_thresh"] == 0.1
  for got in (raw, m):
    assert got == pytest.approx(official_v2(gold, preds, na if got is m else None, 0.5))


# The official scripts' evaluation, restated from their text over {qid: [answers]}
# (a dataset of one paragraph per question): evaluate-v1.1.py `evaluate`, and
# evaluate-v2.0.py `main` with `make_qid_to_has_ans`, `get_raw_scores`,
# `apply_no_ans_threshold`, `make_eval_dict` and `find_best_thresh`.


def official_v1(gold, preds):
  f1 = exact_match = total = 0
  for qid, answers in gold.items():
    total += 1
    if qid not in preds:
      continue  # "Unanswered question ... will receive score 0."
    exact_match += max(ref_normalize(preds[qid]) == ref_normalize(a) for a in answers)
    f1 += max(ref_f1_v1(a, preds[qid]) for a in answers)
  return {"exact_match": 100.0 * exact_match / total, "f1": 100.0 * f1 / total}


def official_v2(gold, preds, na_probs, na_prob_thresh):
  qid_to_has_ans = {qid: bool(answers) for qid, answers in gold.items()}
  exact_raw, f1_raw = {}, {}
  for qid, answers in gold.items():
    gold_answers = [a for a in answers if ref_normalize(a)] or [""]
    if qid not in preds:
      continue
    exact_raw[qid] = max(int(ref_normalize(a) == ref_normalize(preds[qid]))
                         for a in gold_answers)
    f1_raw[qid] = max(ref_f1_v2(a, preds[qid]) for a in gold_answers)
  probs = na_probs if na_probs is not None else {k: 0.0 for k in preds}
  thresh = na_prob_thresh if na_probs is not None else 1.0

  def apply(scores):
    return {q: float(not qid_to_has_ans[q]) if probs[q] > thresh else s
            for q, s in scores.items()}

  def eval_dict(exact, f1, qids):
    return {"exact": 100.0 * sum(exact[k] for k in qids) / len(qids),
            "f1": 100.0 * sum(f1[k] for k in qids) / len(qids), "total": len(qids)}

  exact_t, f1_t = apply(exact_raw), apply(f1_raw)
  out = eval_dict(exact_t, f1_t, list(exact_t))
  for prefix, want in (("HasAns", True), ("NoAns", False)):
    qids = [k for k, v in qid_to_has_ans.items() if v == want]
    if qids:
      out.update({f"{prefix}_{k}": v for k, v in eval_dict(exact_t, f1_t, qids).items()})
  if na_probs is not None:
    for name, scores in (("exact", exact_raw), ("f1", f1_raw)):
      cur = best = sum(1 for k in qid_to_has_ans if not qid_to_has_ans[k])
      best_thresh = 0.0
      for qid in sorted(na_probs, key=lambda k: na_probs[k]):
        if qid_to_has_ans[qid]:
          cur += scores[qid]
        else:
          cur += -1 if preds[qid] else 0
        if cur > best:
          best, best_thresh = cur, na_probs[qid]
      out[f"best_{name}"] = 100.0 * best / len(scores)
      out[f"best_{name}_thresh"] = best_thresh
  return out


def random_gold(rng):
  """0-3 gold answers, some that normalise to nothing ("the", "a!")."""
  pool = ["Paris", "the", "a!", "Denver Broncos", "the Broncos", "1990", "an apple"]
  return [str(a) for a in rng.choice(pool, size=int(rng.integers(0, 4)))]


@pytest.mark.parametrize("trial", range(10))
def test_squad_matches_the_official_scripts_on_random_cases(trial):
  rng = np.random.default_rng(100 + trial)
  gold = {f"q{i}": random_gold(rng) for i in range(12)}
  preds = {q: ("" if rng.random() < 0.3 else random_answer(rng)) for q in gold}
  na = {q: float(rng.choice([0.1, 0.2, 0.5, 0.7, 0.9])) for q in gold}
  got = metrics.squad_evaluate(gold, preds, "v2.0", na_probs=na, na_prob_thresh=0.5)
  assert got == pytest.approx(official_v2(gold, preds, na, 0.5))
  answerable = {q: a or ["x"] for q, a in gold.items()}  # v1.1 always has answers
  some_preds = {q: p for q, p in preds.items() if rng.random() < 0.7}
  some_preds.setdefault("q0", "x")
  assert metrics.squad_evaluate(answerable, some_preds, "v1.1") == pytest.approx(
      official_v1(answerable, some_preds))


def test_squad_bad_input():
  with pytest.raises(ValueError, match="v3"):
    metrics.squad_evaluate({"a": ["x"]}, {"a": "x"}, version="v3")
  with pytest.raises(ValueError, match="empty split"):
    metrics.squad_evaluate({}, {}, version="v2.0")


# ------------------------------------------------------------------------------- NER


def random_tags(rng, n):
  choices = ["O", "O", "B-PER", "I-PER", "B-LOC", "I-LOC", "I-ORG", "B-ORG", "E-PER",
             "S-LOC"]
  return [str(t) for t in rng.choice(choices, size=n)]


def test_entity_scores_match_seqeval_on_random_tag_sequences():
  rng = np.random.default_rng(2)
  for _ in range(50):
    lengths = rng.integers(1, 12, size=int(rng.integers(1, 6)))
    gold = [random_tags(rng, n) for n in lengths]
    pred = [[g if rng.random() < 0.7 else random_tags(rng, 1)[0] for g in s] for s in gold]
    m = metrics.entity_scores(gold, pred)
    assert m["precision"] == pytest.approx(seqeval.metrics.precision_score(gold, pred))
    assert m["recall"] == pytest.approx(seqeval.metrics.recall_score(gold, pred))
    assert m["f1"] == pytest.approx(seqeval.metrics.f1_score(gold, pred))


def test_entity_edge_cases():
  # IOB1 (CoNLL-2003's original scheme): I- after O starts a chunk; B- separates two.
  assert metrics.get_entities(["I-PER", "I-PER", "B-PER", "O", "I-LOC", "I-ORG"]) == [
      ("PER", 0, 1), ("PER", 2, 2), ("LOC", 4, 4), ("ORG", 5, 5)]
  # Wrong type or wrong boundary -> the chunk is not counted.
  m = metrics.entity_scores([["B-PER", "I-PER", "O"]], [["B-PER", "O", "O"]])
  assert m["precision"] == 0 and m["recall"] == 0 and m["f1"] == 0
  m = metrics.entity_scores([["O", "O"]], [["O", "O"]])
  assert m["f1"] == 0.0 and m["num_gold_entities"] == 0
  with pytest.raises(ValueError, match="sentence 0: 1 predicted tags for 2 tokens"):
    metrics.entity_scores([["O", "O"]], [["O"]])
