"""Model properties that the HF parity tests do not cover."""
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


@pytest.mark.parametrize("impl", ["xla"])
def test_fused_attention_path_equals_einsum(impl):
  cfg = tiny_cfg()
  ids, types, mask = padded_inputs()
  params = BertForPreTraining(cfg).init(jax.random.PRNGKey(0), ids, types, mask)["params"]
  ref = BertForPreTraining(cfg).apply({"params": params}, ids, types, mask)
  out = BertForPreTraining(cfg.replace(attention_impl=impl)).apply({"params": params}, ids, types, mask)
  for key in ("mlm_logits", "nsp_logits"):
    np.testing.assert_allclose(out[key], ref[key], rtol=1e-5, atol=1e-5)


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
