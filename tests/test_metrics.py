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


def test_squad_v2_no_answer_threshold_and_best_threshold():
  gold = {"a": ["Paris"], "b": [], "c": ["the"], "d": ["New York City"]}
  # "c" has only a gold answer that normalises to "", so it is a no-answer question.
  preds = {"a": "Paris", "b": "", "c": "London", "d": "York"}
  na = {"a": 0.1, "b": 0.9, "c": 0.8, "d": 0.3}
  raw = metrics.squad_evaluate(gold, preds, "v2.0")
  # a: 1/1, b: 1/1 (empty == empty), c: 0/0, d: EM 0, F1 2*(1*1/3)/(1+1/3)=0.5
  assert raw["exact"] == pytest.approx(50.0)
  assert raw["f1"] == pytest.approx(100 * 2.5 / 4)
  assert raw["HasAns_total"] == 2 and raw["NoAns_total"] == 2
  assert raw["HasAns_f1"] == pytest.approx(75.0) and raw["NoAns_exact"] == 50.0
  m = metrics.squad_evaluate(gold, preds, "v2.0", na_probs=na, na_prob_thresh=0.5)
  # With threshold 0.5, b and c abstain -> both count 1 (they have no answer).
  assert m["exact"] == pytest.approx(75.0) and m["f1"] == pytest.approx(100 * 3.5 / 4)
  # Best-threshold sweep (official find_best_thresh): sorted by na: a(+1) d(+0.5 f1 / 0
  # em) c(-1, it predicted text) b(0). Start = #no-answer = 2.
  assert m["best_f1"] == pytest.approx(100 * 3.5 / 4) and m["best_f1_thresh"] == 0.3
  assert m["best_exact"] == pytest.approx(75.0) and m["best_exact_thresh"] == 0.1


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
