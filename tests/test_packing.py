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
  params = jax.jit(model.init)(jax.random.PRNGKey(0), ex["input_ids"],
                               ex["token_type_ids"], ex["attention_mask"])["params"]
  apply = jax.jit(model.apply)   # one compile per shape, not op-by-op dispatch
  unpacked = apply({"params": params}, ex["input_ids"], ex["token_type_ids"],
                   ex["attention_mask"], masked_lm_positions=ex["masked_lm_positions"])
  rows = apply({"params": params}, packed["input_ids"], packed["token_type_ids"],
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


# -- data.packing: the config field, the loader, the steps --------------------------

SPECIAL = {"mask_id": 4, "vocab_size": VOCAB, "first_normal_id": 5,
           "special_ids": (0, 1, 2, 3, 4), "unk_id": 1, "word_start_table": None}
LOADER_LENGTHS = [10, 7, 13, 5, 9, 20, 3, 12]


def short_examples(lengths=LOADER_LENGTHS):
  """Unmasked in-memory examples, as `create_pretraining_examples` returns them."""
  ex = {k: v for k, v in masked_examples(lengths).items() if not k.startswith("masked")}
  ex["next_sentence_label"] = np.zeros(len(lengths), np.int32)
  return ex


def packing_config(packing: bool, impl: str = "einsum"):
  from configs import pretrain as pretrain_config  # pylint: disable=g-import-not-at-top
  c = pretrain_config.get_config(f"tiny,vocab={VOCAB},seq={LENGTH},batch=8")
  c.model.hidden_size, c.model.num_heads, c.model.intermediate_size = 32, 4, 64
  c.model.num_layers, c.model.attention_impl = 2, impl
  c.data.objective, c.data.packing = "none", packing
  c.data.max_predictions_per_seq = 6
  return c


def loader_batch(config, examples, **kwargs):
  """Batch 0 of the pretraining loader `config` asks for (`pretrain.make_loader`)."""
  import types  # pylint: disable=g-import-not-at-top
  from bert_jax.train import pretrain  # pylint: disable=g-import-not-at-top
  data = pretrain.PretrainingData(types.SimpleNamespace(**SPECIAL), examples, examples, 7)
  loader = pretrain.make_loader(examples, data, config, seed=0, shuffle=False,
                                repeat=False, **kwargs)
  return loader.get_batch(0)


def segments_of(packed, unpacked):
  """Example i -> (row, start) in the packed batch, found by its (masked) tokens."""
  found = {}
  for r, k in {(int(r), int(k)) for r, k in zip(*np.nonzero(packed["attention_mask"]))}:
    cols = np.flatnonzero(packed["attention_mask"][r] == k)
    for i, n in enumerate(unpacked["attention_mask"].sum(1)):
      if n == len(cols) and (packed["input_ids"][r, cols] ==
                             unpacked["input_ids"][i, :n]).all():
        found[i] = (r, int(cols[0]))
  assert sorted(found) == list(range(len(unpacked["input_ids"])))
  return found


def steps_on(config, batch, params=None):
  """(model params, per-prediction MLM cross-entropy, eval sums, grads, train sums)."""
  import types  # pylint: disable=g-import-not-at-top
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  from bert_jax.train import pretrain_steps  # pylint: disable=g-import-not-at-top
  model = BertForPreTraining(ModelConfig.from_config(config.model))
  if params is None:
    params = nn.meta.unbox(model.init(jax.random.PRNGKey(0), batch["input_ids"],
                                      batch["token_type_ids"],
                                      batch["attention_mask"])["params"])

  @jax.jit
  def run(params, batch):  # one program: eager dispatch of a grad is slow on 2 cores
    out = model.apply({"params": params}, batch["input_ids"], batch["token_type_ids"],
                      batch["attention_mask"],
                      masked_lm_positions=batch["masked_lm_positions"],
                      position_ids=batch.get("position_ids"))
    xent = optax.softmax_cross_entropy_with_integer_labels(out["mlm_logits"],
                                                           batch["masked_lm_ids"])
    state = types.SimpleNamespace(apply_fn=model.apply, params=params)
    sums = pretrain_steps.eval_step(state, batch, baseline_token=7)
    grads, train_sums = pretrain_steps.grads_and_sums(
        model.apply, params, batch, jax.random.PRNGKey(1),
        use_nsp=config.data.objective != "none")
    return xent, sums, grads, train_sums

  xent, sums, grads, train_sums = jax.device_get(run(params, batch))
  return params, xent, sums, grads, train_sums


MLM_SUMS = ("mlm_loss_sum", "mlm_correct", "mlm_weight", "baseline_correct")


def assert_trees_close(a, b):
  for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(a), jax.tree_util.tree_leaves(b)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-5,
                               err_msg=jax.tree_util.keystr(path))


def test_data_packing_keeps_each_examples_loss_the_eval_sums_and_the_gradient():
  """Through the config path (make_loader, the pretraining steps): data.packing=True
  packs the batch into fewer filled rows (same shapes) and changes no example's MLM
  loss, no eval sum and not the gradient (float32, no dropout); attention_impl xla
  gives the packed batch what einsum does."""
  examples = short_examples()
  unpacked = loader_batch(packing_config(False), examples)
  packed = loader_batch(packing_config(True), examples)
  assert "position_ids" not in unpacked
  assert set(packed) == set(unpacked) | {"position_ids"}
  for key, value in unpacked.items():
    assert packed[key].shape == value.shape and packed[key].dtype == value.dtype, key
  filled = (packed["attention_mask"] > 0).any(1)
  assert filled.sum() < len(LOADER_LENGTHS) and not filled[filled.sum():].any()
  assert packed["masked_lm_weights"][~filled].sum() == 0
  np.testing.assert_array_equal(packed["masked_lm_weights"].sum(),
                                unpacked["masked_lm_weights"].sum())

  params, xent_u, sums_u, grads_u, train_u = steps_on(packing_config(False), unpacked)
  _, xent_p, sums_p, grads_p, train_p = steps_on(packing_config(True), packed, params)
  for i, (r, start) in segments_of(packed, unpacked).items():
    real = unpacked["masked_lm_weights"][i] > 0
    assert real.any(), f"example {i} has no prediction"
    n = unpacked["attention_mask"][i].sum()
    slots = ((packed["masked_lm_weights"][r] > 0) & (packed["masked_lm_positions"][r] >= start)
             & (packed["masked_lm_positions"][r] < start + n))
    np.testing.assert_array_equal(packed["masked_lm_positions"][r][slots] - start,
                                  unpacked["masked_lm_positions"][i][real])
    np.testing.assert_allclose(xent_p[r][slots].mean(), xent_u[i][real].mean(),
                               rtol=1e-5, atol=1e-5, err_msg=f"example {i}")
  for key in MLM_SUMS:
    np.testing.assert_allclose(sums_p[key], sums_u[key], rtol=1e-5, atol=1e-5, err_msg=key)
  for key in MLM_SUMS[:3]:
    np.testing.assert_allclose(train_p[key], train_u[key], rtol=1e-5, atol=1e-5,
                               err_msg=key)
  assert_trees_close(grads_p, grads_u)

  _, xent_x, sums_x, grads_x, _ = steps_on(packing_config(True, "xla"), packed, params)
  np.testing.assert_allclose(xent_x, xent_p, rtol=1e-5, atol=1e-5)
  for key in MLM_SUMS:
    np.testing.assert_allclose(sums_x[key], sums_p[key], rtol=1e-5, atol=1e-5, err_msg=key)
  assert_trees_close(grads_x, grads_p)


def test_each_process_packs_its_own_rows():
  """With 2 processes each packs its half of the batch alone: its rows are the packing
  of its unpacked rows, so the global batch is built from process-local rows as before."""
  from bert_jax.data import grain_loader  # pylint: disable=g-import-not-at-top
  examples = short_examples()
  from bert_jax.data import masking  # pylint: disable=g-import-not-at-top
  masker = masking.Masker(masking.MaskingConfig(max_predictions_per_seq=6), **SPECIAL)
  for p in (0, 1):
    def batch(pack, p=p):
      return grain_loader.GrainPretrainingLoader(
          examples, 8, seed=3, masker=masker, process_index=p,
          process_count=2, pack=pack).get_batch(0)
    unpacked, packed = batch(False), batch(True)
    assert packed["input_ids"].shape == (4, LENGTH)
    want = packing.pack_batch(unpacked, 6)
    for key in want:
      np.testing.assert_array_equal(packed[key], want[key], err_msg=key)
    segments_of(packed, unpacked)  # each of its 4 examples, and only those


@pytest.mark.parametrize("objective", ["nsp", "sop"])
def test_packing_refuses_a_sentence_pair_objective(objective):
  from bert_jax import config_checks  # pylint: disable=g-import-not-at-top
  c = packing_config(True)
  c.data.objective = objective
  with pytest.raises(ValueError, match=rf"data\.packing=True: expected "
                                       rf"data\.objective='none' \(found data\.objective="
                                       rf"'{objective}'\)"):
    config_checks.check_pretrain_config(c)
  c.data.packing = False
  config_checks.check_pretrain_config(c)


@pytest.mark.parametrize("value", [None, "yes", 1])
def test_packing_must_be_a_bool(value):
  import ml_collections  # pylint: disable=g-import-not-at-top
  from bert_jax import config_checks  # pylint: disable=g-import-not-at-top
  c = packing_config(False).to_dict()
  c["data"]["packing"] = value   # e.g. a config read back from JSON: no type lock
  with pytest.raises(ValueError, match=rf"data\.packing={value!r}: expected True or False"):
    config_checks.check_pretrain_config(ml_collections.ConfigDict(c))


def test_packed_pretraining_runs_end_to_end(tmp_path):
  """`train_and_evaluate` with data.packing=True for a few steps: packed train and eval
  batches reach the jitted steps (position_ids included). Objective 'none' fills every
  row already, so here each row holds one example; the tests above pack short ones."""
  from bert_jax.train import pretrain  # pylint: disable=g-import-not-at-top
  from tests.helpers import write_embedded_corpus  # pylint: disable=g-import-not-at-top
  from tests.test_pretrain import small_config  # pylint: disable=g-import-not-at-top
  corpus = write_embedded_corpus(tmp_path / "docs.txt", 40)
  c = small_config(corpus, steps=3)
  c.data.objective, c.data.packing = "none", True
  c.train.log_every_steps = c.train.eval_every_steps = c.train.checkpoint_every_steps = 3
  c.train.eval_batches = 1
  result = pretrain.train_and_evaluate(c, str(tmp_path / "run"))
  assert np.isfinite(result["eval"]["mlm_loss"])
  assert 0.0 <= result["eval"]["mlm_accuracy"] <= 1.0


def test_packed_batch_shapes_carry_position_ids():
  """What AOT compiles and the memory estimate read (`setup.pretraining_batch_shapes`)."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from bert_jax.train import setup as setup_lib  # pylint: disable=g-import-not-at-top
  assert "position_ids" not in setup_lib.pretraining_batch_shapes(packing_config(False))
  assert setup_lib.pretraining_batch_shapes(packing_config(True))["position_ids"] == (
      (8, LENGTH), jnp.int32)
