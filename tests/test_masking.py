"""Tests for bert_jax/data/masking.py: statistics, invariants and whole-word masking."""
import numpy as np
import pytest

from bert_jax.data import masking

VOCAB, FIRST_NORMAL, MASK_ID = 30_000, 5, 4
PAD, CLS, SEP = 0, 2, 3
ROWS, LENGTH = 2_000, 128


def _batch(rows: int, length: int, seed: int = 0):
  """Rows [CLS] A [SEP] B [SEP] [PAD]..., random lengths, random word starts."""
  rng = np.random.default_rng(seed)
  ids = rng.integers(FIRST_NORMAL, VOCAB, (rows, length))
  lengths = rng.integers(8, length + 1, rows)
  first_sep = (rng.random(rows) * (lengths - 4)).astype(int) + 2
  cols = np.arange(length)[None, :]
  ids[:, 0] = CLS
  ids[cols == first_sep[:, None]] = SEP
  ids[cols == lengths[:, None] - 1] = SEP
  ids[cols >= lengths[:, None]] = PAD
  maskable = ids >= FIRST_NORMAL
  word_start = rng.random((rows, length)) < 0.6  # ~1.7 pieces per word
  return ids, maskable, word_start


def _rand(rows: int, length: int, seed: int = 1) -> masking.MaskingRandomness:
  seeds = masking.example_seeds(seed, 0, np.arange(rows))
  return masking.draw_masking_randomness(seeds, length, VOCAB, FIRST_NORMAL)


def _mask(ids, maskable, word_start, rand, **kwargs):
  return masking.mask_tokens(ids, maskable, word_start, rand, mask_id=MASK_ID,
                             vocab_size=VOCAB, first_normal_id=FIRST_NORMAL, **kwargs)


def _budget(maskable, prob=0.15, cap=20):
  n = maskable.sum(1)
  return np.minimum(cap, np.maximum(1, np.rint(n * prob))).astype(int)


def _selected(out, length):
  """[B, L] bool from the positions with weight 1."""
  sel = np.zeros((out["masked_lm_positions"].shape[0], length), dtype=bool)
  rows, slots = np.nonzero(out["masked_lm_weights"])
  sel[rows, out["masked_lm_positions"][rows, slots]] = True
  return sel


def _words(maskable, word_start):
  """[B, L] word ids as defined in masking.py (-1 where not maskable)."""
  prev_unmaskable = np.ones_like(maskable)
  prev_unmaskable[:, 1:] = ~maskable[:, :-1]
  starts = maskable & (word_start | prev_unmaskable)
  return np.where(maskable, np.cumsum(starts, 1) - 1, -1)


def _assert_within(count, total, p, sigmas=4.0):
  sigma = np.sqrt(total * p * (1 - p))
  assert abs(count - total * p) <= sigmas * sigma, (count, total, p)


@pytest.fixture(scope="module")
def token_level():
  ids, maskable, _ = _batch(ROWS, LENGTH)
  return ids, maskable, _mask(ids, maskable, None, _rand(ROWS, LENGTH))


@pytest.fixture(scope="module")
def whole_word():
  ids, maskable, word_start = _batch(ROWS, LENGTH)
  return ids, maskable, word_start, _mask(ids, maskable, word_start, _rand(ROWS, LENGTH))


def test_token_level_selects_the_budget(token_level):
  ids, maskable, out = token_level
  np.testing.assert_array_equal(out["masked_lm_weights"].sum(1), _budget(maskable))
  fraction = out["masked_lm_weights"].sum() / maskable.sum()
  expected = _budget(maskable).sum() / maskable.sum()
  assert abs(fraction - expected) < 1e-9 and 0.13 < fraction < 0.16


def test_token_level_80_10_10(token_level):
  ids, _, out = token_level
  sel = _selected(out, LENGTH)
  total = sel.sum()
  masked = (out["input_ids"][sel] == MASK_ID).sum()
  kept = (out["input_ids"][sel] == ids[sel]).sum()
  _assert_within(masked, total, 0.8)
  _assert_within(kept, total, 0.1 + 0.1 / (VOCAB - FIRST_NORMAL))
  _assert_within(total - masked - kept, total, 0.1)


def test_specials_and_unselected_tokens_untouched(token_level, whole_word):
  for ids, maskable, out in (token_level, whole_word[:2] + whole_word[3:]):
    sel = _selected(out, LENGTH)
    assert not (sel & ~maskable).any()
    np.testing.assert_array_equal(out["input_ids"][~sel], ids[~sel])
    np.testing.assert_array_equal(out["input_ids"][~maskable], ids[~maskable])


def test_random_replacements_are_normal_ids(token_level):
  ids, _, out = token_level
  changed = (out["input_ids"] != ids) & (out["input_ids"] != MASK_ID)
  assert changed.any()
  assert out["input_ids"][changed].min() >= FIRST_NORMAL
  assert out["input_ids"][changed].max() < VOCAB


def test_outputs_consistent_with_input(whole_word):
  ids, _, _, out = whole_word
  pos, lm_ids, w = out["masked_lm_positions"], out["masked_lm_ids"], out["masked_lm_weights"]
  assert pos.shape == lm_ids.shape == w.shape == (ROWS, 20)
  assert (pos.dtype, lm_ids.dtype, w.dtype) == (np.int32, np.int32, np.float32)
  count = w.sum(1).astype(int)
  slots = np.arange(20)[None, :]
  np.testing.assert_array_equal(w, (slots < count[:, None]).astype(np.float32))
  real = w > 0
  np.testing.assert_array_equal(lm_ids[real], np.take_along_axis(ids, pos, 1)[real])
  assert (pos[~real] == 0).all() and (lm_ids[~real] == 0).all()
  gaps = np.diff(pos, axis=1)
  assert (gaps[real[:, 1:]] > 0).all()  # ascending within a row


def test_whole_word_selects_whole_words_with_one_action(whole_word):
  ids, maskable, word_start, out = whole_word
  words = _words(maskable, word_start)
  sel = _selected(out, LENGTH)
  mask_hit = out["input_ids"] == MASK_ID
  kept_hit = out["input_ids"] == ids
  flat = (np.arange(ROWS)[:, None] * LENGTH + words)[maskable]
  size = np.bincount(flat, minlength=ROWS * LENGTH)

  def per_word(values):
    return np.bincount(flat, weights=values[maskable], minlength=ROWS * LENGTH)

  sel_w, mask_w, kept_w = per_word(sel), per_word(sel & mask_hit), per_word(sel & kept_hit)
  real = size > 0
  assert np.all((sel_w[real] == 0) | (sel_w[real] == size[real]))  # whole or nothing
  chosen = real & (sel_w > 0)
  assert np.all((mask_w[chosen] == 0) | (mask_w[chosen] == size[chosen]))
  # Kept or random: a random id can equal the original (p = 1/30000 per piece), so
  # mixed words are allowed at that rate; drawn per piece they would be ~half.
  unmasked = chosen & (mask_w == 0)
  random_w = sel_w - kept_w
  mixed = unmasked & (kept_w > 0) & (random_w > 0)
  assert mixed.sum() <= max(2, 0.01 * (unmasked & (size > 1)).sum())
  total = chosen.sum()
  _assert_within((mask_w[chosen] > 0).sum(), total, 0.8)
  _assert_within((unmasked & (random_w == 0)).sum(), total, 0.1, sigmas=4.5)
  _assert_within((unmasked & (random_w > 0)).sum(), total, 0.1, sigmas=4.5)
  assert (size[chosen] > 1).mean() > 0.2  # multi-piece words were actually tested


def test_whole_word_respects_and_nearly_fills_the_budget(whole_word):
  _, maskable, _, out = whole_word
  count = out["masked_lm_weights"].sum(1)
  budget = _budget(maskable)
  assert (count <= budget).all()
  assert count.sum() / budget.sum() > 0.97
  assert 0.13 < count.sum() / maskable.sum() < 0.16


def test_skipped_unit_leaves_room_for_smaller_ones():
  ids = np.arange(10, 20)[None, :]
  maskable = np.ones((1, 10), dtype=bool)
  word_start = np.array([[1, 0, 0, 1, 1, 0, 1, 0, 0, 0]], dtype=bool)  # 3, 1, 2, 4
  priority = np.array([[0.1, .9, .9, 0.9, 0.2, .9, 0.3, .9, .9, .9]])
  rand = masking.MaskingRandomness(priority, np.zeros((1, 10)), np.full((1, 10), 7))
  out = _mask(ids, maskable, word_start, rand, masked_lm_prob=0.2, max_predictions_per_seq=5)
  # Budget 2: the 3-piece word comes first and overflows it, so it is skipped; the
  # 2-piece word at positions 4-5 comes next and fills it.
  np.testing.assert_array_equal(out["masked_lm_positions"], [[4, 5, 0, 0, 0]])
  np.testing.assert_array_equal(out["input_ids"][0, 4:6], [MASK_ID, MASK_ID])


def test_max_predictions_per_seq_is_respected():
  ids, maskable, word_start = _batch(200, LENGTH)
  rand = _rand(200, LENGTH)
  for ws in (None, word_start):
    out = _mask(ids, maskable, ws, rand, masked_lm_prob=0.5, max_predictions_per_seq=5)
    assert out["masked_lm_positions"].shape == (200, 5)
    count = out["masked_lm_weights"].sum(1)
    assert (count <= 5).all() and (count == 5).mean() > 0.9
    assert (_selected(out, LENGTH).sum(1) == count).all()


def test_row_without_maskable_tokens():
  ids = np.array([[CLS, SEP, SEP, PAD]])
  out = _mask(ids, np.zeros((1, 4), dtype=bool), None, _rand(1, 4), max_predictions_per_seq=2)
  np.testing.assert_array_equal(out["input_ids"], ids)
  assert out["masked_lm_weights"].sum() == 0


def test_randomness_is_per_example():
  seeds = masking.example_seeds(3, 2, np.arange(10))
  full = masking.draw_masking_randomness(seeds, 16, VOCAB, FIRST_NORMAL)
  part = masking.draw_masking_randomness(seeds[4:7], 16, VOCAB, FIRST_NORMAL)
  for a, b in zip(full, part):
    np.testing.assert_array_equal(a[4:7], b)
  assert len(set(seeds.tolist())) == 10
  other_epoch = masking.example_seeds(3, 3, np.arange(10))
  assert not np.intersect1d(seeds, other_epoch).size
  assert 0 <= full.priority.min() and full.priority.max() < 1
  assert abs(full.action.mean() - 0.5) < 0.1


@pytest.mark.parametrize("kwargs, field", [
    ({"max_predictions_per_seq": 0}, "max_predictions_per_seq"),
    ({"max_predictions_per_seq": 9}, "max_predictions_per_seq"),
    ({"masked_lm_prob": 0.0}, "masked_lm_prob"),
    ({"masked_lm_prob": 1.0}, "masked_lm_prob"),
])
def test_bad_arguments_name_the_field(kwargs, field):
  ids, maskable, _ = _batch(2, 8)
  with pytest.raises(ValueError, match=field):
    _mask(ids, maskable, None, _rand(2, 8), **{"max_predictions_per_seq": 4, **kwargs})


def test_shape_mismatch_names_the_array():
  ids, maskable, _ = _batch(2, 8)
  with pytest.raises(ValueError, match="word_start"):
    _mask(ids, maskable, np.ones((2, 7), dtype=bool), _rand(2, 8))


# ----------------------------------------------------------------------------------
# The options that restore google-research/bert's behaviour, against its
# `create_masked_lm_predictions` (create_pretraining_data.py) restated over ids.

UNK = 1


def original_masked_lm(tokens, masked_lm_prob, max_predictions_per_seq, vocab_size, rng):
  """The original script: candidates are all tokens but [CLS]/[SEP]; the budget is a
  share of len(tokens); a random replacement is any vocabulary word."""
  cand_indexes = [i for i, t in enumerate(tokens) if t not in (CLS, SEP)]
  rng.shuffle(cand_indexes)
  output_tokens = list(tokens)
  num_to_predict = min(max_predictions_per_seq,
                       max(1, int(round(len(tokens) * masked_lm_prob))))
  masked = []
  for index in cand_indexes:
    if len(masked) >= num_to_predict:
      break
    if rng.random() < 0.8:
      output_tokens[index] = MASK_ID
    elif rng.random() < 0.5:
      output_tokens[index] = tokens[index]
    else:
      output_tokens[index] = rng.randint(0, vocab_size - 1)
    masked.append(index)
  return output_tokens, sorted(masked)


def _masker(vocab=VOCAB, **options):
  return masking.Masker(masking.MaskingConfig(**options), mask_id=MASK_ID,
                        vocab_size=vocab, first_normal_id=FIRST_NORMAL,
                        special_ids=(PAD, UNK, CLS, SEP, MASK_ID), unk_id=UNK)


def _apply(ids, seed=0, **options):
  seeds = masking.example_seeds(seed, 0, np.arange(len(ids)))
  return masking.apply_masking(ids, (ids != PAD).astype(np.int32), seeds,
                               _masker(vocab=options.pop("vocab", VOCAB), **options))


def _unpadded(row):
  return [int(t) for t in row if t != PAD]


def test_masking_budget_all_tokens_is_the_original_num_to_predict():
  import random  # pylint: disable=g-import-not-at-top
  ids, _, _ = _batch(400, LENGTH, seed=5)
  rng = random.Random(0)
  original = np.array([len(original_masked_lm(_unpadded(r), 0.15, 20, VOCAB, rng)[1])
                       for r in ids])
  counts = {b: _apply(ids, masking_budget=b)["masked_lm_weights"].sum(1)
            for b in masking.MASKING_BUDGETS}
  np.testing.assert_array_equal(counts["all_tokens"], original)
  assert (counts["maskable"] <= original).all() and (counts["maskable"] < original).any()


def test_mask_unk_makes_unk_a_candidate_as_in_the_original():
  import random  # pylint: disable=g-import-not-at-top
  row = np.array([[CLS, 7, UNK, 9, UNK, SEP, 11, UNK, SEP, PAD, PAD, PAD]])
  rows = np.repeat(row, 300, axis=0)
  rng = random.Random(0)
  original = set()
  for _ in range(300):
    original.update(original_masked_lm(_unpadded(row[0]), 0.15, 5, VOCAB, rng)[1])

  def ever_selected(**options):
    out = _apply(rows, max_predictions_per_seq=5, **options)
    return set(out["masked_lm_positions"][out["masked_lm_weights"] > 0].tolist())

  assert ever_selected(mask_unk=True) == original == {1, 2, 3, 4, 6, 7}
  assert ever_selected(mask_unk=False) == {1, 3, 6}


def test_random_replacement_any_id_draws_the_whole_vocab_as_the_original():
  import random  # pylint: disable=g-import-not-at-top
  vocab, rows = 12, 3000
  ids = np.tile(np.array([[CLS, 6, 7, 8, 9, 10, 11, 6, SEP]]), (rows, 1))

  def replacements(out_ids, positions):
    """Ids put in place of a token other than [MASK] or the token itself."""
    got = []
    for out_row, pos in zip(out_ids, positions):
      for p in pos:
        if out_row[p] not in (MASK_ID, ids[0, p]):
          got.append(int(out_row[p]))
    return np.bincount(got, minlength=vocab)

  rng = random.Random(0)
  runs = [original_masked_lm(_unpadded(ids[0]), 0.3, 3, vocab, rng) for _ in range(rows)]
  original = replacements([o for o, _ in runs], [p for _, p in runs])
  ours = {}
  for choice in masking.RANDOM_REPLACEMENTS:
    out = _apply(ids, vocab=vocab, masked_lm_prob=0.3, max_predictions_per_seq=3,
                 random_replacement=choice)
    ours[choice] = replacements(out["input_ids"], [
        p[w > 0] for p, w in zip(out["masked_lm_positions"], out["masked_lm_weights"])])
  assert set(np.flatnonzero(ours["any_id"])) == set(np.flatnonzero(original))
  assert ours["any_id"][[PAD, UNK, CLS, SEP]].min() > 0  # specials drawn, as the original
  assert set(np.flatnonzero(ours["normal_ids"])) <= set(range(FIRST_NORMAL, vocab))
  # The same share of replacements lands on each id (uniform draws in both).
  share = ours["any_id"] / ours["any_id"].sum()
  original_share = original / original.sum()
  np.testing.assert_allclose(share, original_share, atol=0.03)


def test_masking_options_are_checked_once_naming_the_field():
  for field, value, expected in (
      ("masking_budget", "tokens", "expected one of"),
      ("random_replacement", "all", "expected one of"),
      ("masked_lm_prob", 1.5, "expected a probability in"),
      ("max_predictions_per_seq", 0, "expected >= 1"),
      ("max_predictions_per_seq", 2.0, "expected a int"),
      ("mask_unk", "yes", "expected a bool")):
    with pytest.raises(ValueError, match=f"config field data.{field}={value!r}: {expected}"):
      masking.MaskingConfig(**{field: value})
  # The data section of a config holds them (pretraining's checks call this).
  from configs import pretrain  # pylint: disable=g-import-not-at-top
  d = pretrain.get_config("tiny").data
  assert masking.MaskingConfig.from_config(d).masked_lm_prob == d.masked_lm_prob
  d.random_replacement = "everything"
  with pytest.raises(ValueError, match="data.random_replacement='everything'"):
    masking.MaskingConfig.from_config(d)
  # Bound to a vocabulary: the ids are checked against it.
  with pytest.raises(ValueError, match=r"mask_id=40: expected an id in \[0, vocab_size=30\)"):
    masking.Masker(masking.MaskingConfig(), mask_id=40, vocab_size=30, first_normal_id=5,
                   special_ids=(0, 1))
  with pytest.raises(ValueError, match="data.mask_unk=True: the tokenizer has no"):
    masking.Masker(masking.MaskingConfig(mask_unk=True), mask_id=4, vocab_size=30,
                   first_normal_id=5, special_ids=(0, 1))
