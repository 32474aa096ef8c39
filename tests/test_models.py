"""Model properties that the HF parity tests do not cover."""
import flax.linen as nn
import jax
import numpy as np
import pytest

from bert_jax.config import ModelConfig
from bert_jax.models import BertForPreTraining


def tiny_cfg(**changes):
  return ModelConfig(vocab_size=120, hidden_size=32, num_heads=4, intermediate_size=64,
                     num_layers=2, **changes)


def padded_inputs():
  rng = np.random.default_rng(0)
  ids = rng.integers(5, 120, (3, 16)).astype(np.int32)
  mask = np.ones_like(ids)
  mask[1, 10:] = 0
  mask[2, 4:] = 0
  return ids, np.zeros_like(ids), mask


@pytest.mark.parametrize("fast", [dict(attention_impl="xla"), dict(fused_qkv=True),
                                  dict(fused_qkv=True, attention_impl="xla")])
def test_fast_paths_give_the_reference_logits_and_gradients(fast):
  """Each speed option computes the same function from the same parameters (float32)."""
  cfg = tiny_cfg(attention_dropout_prob=0.0)
  ids, types, mask = padded_inputs()
  types[:, 8:] = 1
  model, fast_model = BertForPreTraining(cfg), BertForPreTraining(cfg.replace(**fast))
  params = model.init(jax.random.PRNGKey(0), ids, types, mask)["params"]
  assert jax.tree_util.tree_structure(params) == jax.tree_util.tree_structure(
      fast_model.init(jax.random.PRNGKey(0), ids, types, mask)["params"])

  def run(m):
    def loss(p):
      out = m.apply({"params": p}, ids, types, mask)
      return (out["mlm_logits"] ** 2).mean() + out["nsp_logits"].sum(), out
    return jax.grad(loss, has_aux=True)(params)
  (ref_grads, ref), (grads, out) = run(model), run(fast_model)
  for key in ("mlm_logits", "nsp_logits"):
    np.testing.assert_allclose(out[key], ref[key], rtol=1e-5, atol=1e-5)
  for a, b in zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(ref_grads)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def _reductions(jaxpr):
  """(primitive, shape, dtype) of every scatter-add and reduce_sum in a jaxpr, its
  sub-jaxprs included."""
  found = []
  for eqn in jaxpr.eqns:
    if eqn.primitive.name in ("scatter-add", "reduce_sum"):
      aval = eqn.outvars[0].aval
      found.append((eqn.primitive.name, tuple(aval.shape), str(aval.dtype)))
    for value in eqn.params.values():
      for sub in value if isinstance(value, (tuple, list)) else (value,):
        sub = getattr(sub, "jaxpr", sub)
        if hasattr(sub, "eqns"):
          found += _reductions(sub)
  return found


def test_bfloat16_compute_reduces_parameter_gradients_in_float32():
  """With bf16 compute no parameter's gradient is a bf16 sum over the batch tokens
  (8-bit mantissa; contended bf16 atomics on GPUs): biases are added at their float32
  precision, embedding rows looked up in float32; only the word table is scattered
  into, and token types and default positions take no scatter at all."""
  cfg = tiny_cfg(dtype="bfloat16", type_vocab_size=3, max_position_embeddings=40)
  ids, types, mask = padded_inputs()
  model = BertForPreTraining(cfg)
  params = nn.unbox(model.init(jax.random.PRNGKey(0), ids, types, mask)["params"])
  loss = lambda p: model.apply({"params": p}, ids, types, mask)["mlm_logits"].sum()  # noqa: E731
  found = _reductions(jax.make_jaxpr(jax.grad(loss))(params).jaxpr)
  shapes = {tuple(x.shape) for x in jax.tree_util.tree_leaves(params)}
  assert not [r for r in found if r[1] in shapes and r[2] != "float32"], found
  tables = {(120, 32), (3, 32), (40, 32)}
  assert [r for r in found if r[0] == "scatter-add" and r[1] in tables] == [
      ("scatter-add", (120, 32), "float32")], found
  # And the values: bf16 compute's gradient of the token-type table is close to float32's.
  weights = np.random.default_rng(1).normal(size=(16, 32)).astype(np.float32)
  grad = lambda c: jax.grad(lambda p: (BertForPreTraining(c).apply(  # noqa: E731
      {"params": p}, ids, types, mask)["sequence_output"] * weights).sum())(params)
  g16 = grad(cfg)["bert"]["embeddings"]["token_type_embeddings"]["embedding"]
  g32 = grad(cfg.replace(dtype="float32"))["bert"]["embeddings"]["token_type_embeddings"][
      "embedding"]
  np.testing.assert_allclose(g16, g32, rtol=0.05, atol=0.05 * float(np.abs(g32).max()))


def test_padding_tokens_do_not_influence_real_positions():
  cfg = tiny_cfg()
  ids, types, mask = padded_inputs()
  model = BertForPreTraining(cfg)
  params = model.init(jax.random.PRNGKey(0), ids, types, mask)["params"]
  other = ids.copy()
  other[mask == 0] = 7  # different ids under the padding
  a = model.apply({"params": params}, ids, types, mask)["sequence_output"]
  b = model.apply({"params": params}, other, types, mask)["sequence_output"]
  real = mask.astype(bool)
  np.testing.assert_allclose(np.asarray(a)[real], np.asarray(b)[real], rtol=1e-6, atol=1e-6)
  assert not np.allclose(np.asarray(a)[~real], np.asarray(b)[~real])


def test_dropout_is_active_only_when_not_deterministic():
  cfg = tiny_cfg()
  ids, types, mask = padded_inputs()
  model = BertForPreTraining(cfg)
  params = model.init(jax.random.PRNGKey(0), ids, types, mask)["params"]
  det = model.apply({"params": params}, ids, types, mask)["mlm_logits"]
  drop = lambda seed: model.apply({"params": params}, ids, types, mask, deterministic=False,
                                  rngs={"dropout": jax.random.PRNGKey(seed)})["mlm_logits"]
  assert not np.allclose(drop(1), det)
  np.testing.assert_array_equal(drop(1), drop(1))


def test_bfloat16_compute_keeps_float32_params_and_logits():
  cfg = tiny_cfg(dtype="bfloat16")
  ids, types, mask = padded_inputs()
  model = BertForPreTraining(cfg)
  params = model.init(jax.random.PRNGKey(0), ids, types, mask)["params"]
  assert {x.dtype for x in jax.tree_util.tree_leaves(params)} == {np.dtype("float32")}
  out = model.apply({"params": params}, ids, types, mask)
  assert out["mlm_logits"].dtype == np.float32
  assert out["sequence_output"].dtype == jax.numpy.bfloat16
  cfg32 = tiny_cfg()
  ref = BertForPreTraining(cfg32).apply({"params": params}, ids, types, mask)["mlm_logits"]
  err = np.max(np.abs(np.asarray(out["mlm_logits"]) - np.asarray(ref))) / np.max(np.abs(ref))
  assert err < 0.05  # bf16 has an 8-bit mantissa


def test_token_type_and_word_ids_outside_their_tables_give_nan():
  """Bad ids are not silently read as a zero or clamped row: the loss turns NaN."""
  cfg = tiny_cfg()
  ids, types, mask = padded_inputs()
  model = BertForPreTraining(cfg)
  params = model.init(jax.random.PRNGKey(0), ids, types, mask)["params"]
  apply = lambda i, t: np.asarray(model.apply({"params": params}, i, t, mask)[  # noqa: E731
      "sequence_output"])
  assert np.isfinite(apply(ids, types)).all()
  bad_types, bad_ids = types.copy(), ids.copy()
  bad_types[0, 3] = cfg.type_vocab_size
  bad_ids[0, 3] = cfg.vocab_size
  out = apply(ids, bad_types)
  assert np.isnan(out[0]).all() and np.isfinite(out[1:]).all()
  assert np.isnan(apply(bad_ids, types)[0]).all()
