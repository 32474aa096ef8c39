"""Sequence packing: the packer's layout, and packed rows computing what unpacked
examples compute (per-example MLM logits and loss, float32 CPU)."""
import jax
import numpy as np
import optax
import pytest

from bert_jax.config import ModelConfig
from bert_jax.data import packing
from bert_jax.models import BertForPreTraining

VOCAB, LENGTH, CLS, SEP = 120, 32, 2, 3


def masked_examples(lengths, max_predictions=4, seed=0):
  """Padded [CLS] ... [SEP] examples with up to `max_predictions` masked positions."""
  rng = np.random.default_rng(seed)
  n = len(lengths)
  ex = {k: np.zeros((n, LENGTH), np.int32)
        for k in ("input_ids", "token_type_ids", "attention_mask")}
  ex["masked_lm_positions"] = np.zeros((n, max_predictions), np.int32)
  ex["masked_lm_ids"] = np.zeros((n, max_predictions), np.int32)
  ex["masked_lm_weights"] = np.zeros((n, max_predictions), np.float32)
  for i, length in enumerate(lengths):
    ex["input_ids"][i, :length] = [CLS, *rng.integers(5, VOCAB, length - 2), SEP]
    ex["token_type_ids"][i, length // 2:length] = 1
    ex["attention_mask"][i, :length] = 1
    p = min(max_predictions, max(1, length // 4))
    ex["masked_lm_positions"][i, :p] = np.sort(rng.choice(np.arange(1, length - 1), p,
                                                          replace=False))
    ex["masked_lm_ids"][i, :p] = rng.integers(5, VOCAB, p)
    ex["masked_lm_weights"][i, :p] = 1.0
  return ex


def test_packer_layout():
  lengths = [10, 7, 13, 5, 9, 30, 3]
  ex = masked_examples(lengths)
  packed = packing.pack_examples(ex, max_predictions=8, max_segments=4)
  rows = len(packed["input_ids"])
  assert rows < len(lengths)  # 77 tokens fit in 3 rows of 32
  placed = packed["segment_example"][packed["segment_example"] >= 0]
  np.testing.assert_array_equal(np.sort(placed), np.arange(len(lengths)))
  for r in range(rows):
    members = packed["segment_example"][r][packed["segment_example"][r] >= 0]
    starts = packed["segment_starts"][r][:len(members)]
    for k, (i, start) in enumerate(zip(members, starts)):
      n = lengths[i]
      cols = slice(start, start + n)
      np.testing.assert_array_equal(packed["input_ids"][r, cols], ex["input_ids"][i, :n])
      np.testing.assert_array_equal(packed["token_type_ids"][r, cols],
                                    ex["token_type_ids"][i, :n])
      assert (packed["attention_mask"][r, cols] == k + 1).all()
      np.testing.assert_array_equal(packed["position_ids"][r, cols], np.arange(n))
    used = sum(lengths[i] for i in members)
    assert (packed["attention_mask"][r, used:] == 0).all()
  # Every prediction kept once, pointing at the same token id in the packed row.
  assert packed["masked_lm_weights"].sum() == ex["masked_lm_weights"].sum()
  for r in range(rows):
    real = packed["masked_lm_weights"][r] > 0
    pos = packed["masked_lm_positions"][r][real]
    assert (packed["attention_mask"][r, pos] > 0).all()


def test_packer_rejects_an_example_longer_than_a_row():
  with pytest.raises(ValueError, match="example 0 has 20 tokens"):
    packing.pack_examples(masked_examples([20]), max_seq_length=16)


@pytest.mark.parametrize("impl", ["einsum", "xla"])
def test_packed_rows_give_each_example_its_unpacked_logits_and_loss(impl):
  cfg = ModelConfig(vocab_size=VOCAB, hidden_size=32, num_heads=4, intermediate_size=64,
                    num_layers=2, attention_impl=impl)
  lengths = [10, 7, 13, 5, 9, 20, 3]
  ex = masked_examples(lengths)
  packed = packing.pack_examples(ex, max_predictions=12)
  assert packed["input_ids"].shape[0] < len(lengths)
  model = BertForPreTraining(cfg)
  params = model.init(jax.random.PRNGKey(0), ex["input_ids"], ex["token_type_ids"],
                      ex["attention_mask"])["params"]
  unpacked = model.apply({"params": params}, ex["input_ids"], ex["token_type_ids"],
                         ex["attention_mask"], masked_lm_positions=ex["masked_lm_positions"])
  rows = model.apply({"params": params}, packed["input_ids"], packed["token_type_ids"],
                     packed["attention_mask"], masked_lm_positions=packed["masked_lm_positions"],
                     position_ids=packed["position_ids"])

  def example_loss(logits, ids, weights):
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, ids)
    return float(np.sum(ce * weights) / np.sum(weights))

  for i in range(len(lengths)):
    r, k = map(int, np.argwhere(packed["segment_example"] == i)[0])
    start = packed["segment_starts"][r, k]
    slots = ((packed["masked_lm_weights"][r] > 0)
             & (packed["masked_lm_positions"][r] >= start)
             & (packed["masked_lm_positions"][r] < start + lengths[i]))
    real = ex["masked_lm_weights"][i] > 0
    np.testing.assert_array_equal(packed["masked_lm_positions"][r][slots] - start,
                                  ex["masked_lm_positions"][i][real])
    got = np.asarray(rows["mlm_logits"][r])[slots]
    want = np.asarray(unpacked["mlm_logits"][i])[real]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        example_loss(got, packed["masked_lm_ids"][r][slots], np.ones(slots.sum())),
        example_loss(want, ex["masked_lm_ids"][i][real], np.ones(real.sum())),
        rtol=1e-5, atol=1e-5)
    # The whole segment's hidden states match the example's, not just masked rows.
    np.testing.assert_allclose(
        np.asarray(rows["sequence_output"][r, start:start + lengths[i]]),
        np.asarray(unpacked["sequence_output"][i, :lengths[i]]), rtol=1e-5, atol=1e-5)
