"""model.attention_impl=splash (bert_jax/models/splash.py): the Pallas TPU kernel, run on
CPU in interpret mode and checked against the einsum path (softmax(QK^T/sqrt(d))V with
the additive padding/segment bias), in float32, for logits and gradients; then
compiled for a TPU slice (libtpu compile-only devices), where the Mosaic kernel runs."""
import importlib.util

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ml_collections import ConfigDict

from bert_jax import parallel
from bert_jax.config import ModelConfig
from bert_jax.models import BertForPreTraining, splash

LENGTH = 128   # the kernel's smallest block


def tiny_cfg(**changes):
  return ModelConfig(vocab_size=120, hidden_size=32, num_heads=4, intermediate_size=64,
                     num_layers=2, attention_dropout_prob=0.0, **changes)


def inputs(packed: bool):
  """Three rows: full, padded, and (packed) three segments then padding."""
  rng = np.random.default_rng(0)
  ids = rng.integers(5, 120, (3, LENGTH)).astype(np.int32)
  types = np.zeros_like(ids)
  types[:, 40:] = 1
  mask = np.ones_like(ids)
  mask[1, 70:] = 0
  if packed:
    mask[2, :30], mask[2, 30:75], mask[2, 75:100], mask[2, 100:] = 1, 2, 3, 0
  else:
    mask[2, 9:] = 0
  return ids, types, mask


def logits_and_grads(cfg, params, ids, types, mask):
  """MLM logits and the gradient of a loss over the non-padding positions only: in packed
  rows padding queries attend differently (splash.py's docstring) and nothing reads them."""
  model = BertForPreTraining(cfg)
  keep = jnp.asarray(mask > 0, jnp.float32)[..., None]

  def loss(p):
    out = model.apply({"params": p}, ids, types, mask)
    return (out["mlm_logits"] ** 2 * keep).mean() + out["nsp_logits"].sum(), out
  grads, out = jax.grad(loss, has_aux=True)(params)
  return out, grads


@pytest.mark.parametrize("packed", [False, True], ids=["padding", "packed"])
@pytest.mark.parametrize("scan", [False, True], ids=["layers", "scanned"])
def test_splash_is_einsum_in_float32(packed, scan):
  ids, types, mask = inputs(packed)
  ref_cfg = tiny_cfg(scan_layers=scan)
  params = BertForPreTraining(ref_cfg).init(jax.random.PRNGKey(0), ids, types, mask)["params"]
  ref, ref_grads = logits_and_grads(ref_cfg, params, ids, types, mask)
  out, grads = logits_and_grads(ref_cfg.replace(attention_impl="splash"), params, ids,
                                types, mask)
  real = mask > 0
  np.testing.assert_allclose(out["mlm_logits"][real], ref["mlm_logits"][real],
                             rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(out["nsp_logits"], ref["nsp_logits"], rtol=1e-5, atol=1e-5)
  if not packed:   # unpacked rows: padding queries too are exactly einsum's
    np.testing.assert_allclose(out["mlm_logits"], ref["mlm_logits"], rtol=1e-5, atol=1e-5)
  flat_ref = jax.tree_util.tree_leaves_with_path(ref_grads)
  for (path, a), b in zip(flat_ref, jax.tree_util.tree_leaves(grads)):
    np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5, err_msg=jax.tree_util.keystr(path))


def test_a_mesh_in_context_runs_the_kernel_under_shard_map():
  """With a mesh set the kernel runs per shard (here 1 CPU device; the TPU compile below
  splits the batch over 4 chips): same output as without one."""
  rng = np.random.default_rng(1)
  q, k, v = (jnp.asarray(rng.standard_normal((2, LENGTH, 4, 8)), jnp.float32)
             for _ in range(3))
  mask = jnp.asarray(np.repeat([[1] * 100 + [0] * 28], 2, 0))
  plain = splash.attention(q, k, v, mask)
  mesh_cfg = ConfigDict({"shape": [1, 1, 1], "axes": ["data", "fsdp", "tensor"]})
  mesh = parallel.create_mesh(mesh_cfg, jax.devices()[:1])
  with jax.set_mesh(mesh), nn.logical_axis_rules(parallel.logical_axis_rules()):
    sharded = jax.jit(splash.attention)(q, k, v, mask)
  np.testing.assert_allclose(sharded, plain, rtol=1e-6, atol=1e-6)


def test_lengths_the_kernel_cannot_tile_and_attention_dropout_are_refused():
  with pytest.raises(ValueError, match="data.max_seq_length"):
    splash.block_size(200)
  assert [splash.block_size(n) for n in (128, 384, 512, 1024)] == [128, 128, 512, 512]
  ids, types, mask = (x[:, :64] for x in inputs(False))
  cfg = tiny_cfg(attention_impl="splash")
  with pytest.raises(ValueError, match="multiple of 128"):
    BertForPreTraining(cfg).init(jax.random.PRNGKey(0), ids, types, mask)
  ids, types, mask = inputs(False)
  model = BertForPreTraining(cfg.replace(attention_dropout_prob=0.1))
  params = BertForPreTraining(cfg).init(jax.random.PRNGKey(0), ids, types, mask)["params"]
  with pytest.raises(ValueError, match="attention_dropout_prob"):
    model.apply({"params": params}, ids, types, mask, deterministic=False,
                rngs={"dropout": jax.random.PRNGKey(1)})


def test_a_row_of_padding_only_stays_finite():
  ids, types, mask = inputs(False)
  mask[2] = 0
  cfg = tiny_cfg(attention_impl="splash")
  params = BertForPreTraining(cfg).init(jax.random.PRNGKey(0), ids, types, mask)["params"]
  out = BertForPreTraining(cfg).apply({"params": params}, ids, types, mask)
  assert np.isfinite(np.asarray(out["mlm_logits"])).all()


@pytest.mark.skipif(importlib.util.find_spec("libtpu") is None,
                    reason="needs libtpu: pip install -e '.[tpu]'")
def test_splash_compiles_for_a_tpu_slice_as_the_mosaic_kernel():
  from bert_jax import aot
  from configs import pretrain
  c = pretrain.get_config("mini,vocab=2048,seq=128,batch=32,mesh=fsdp")
  c.model.dtype, c.model.scan_layers = "bfloat16", True
  c.model.attention_impl, c.model.attention_dropout_prob = "splash", 0.0
  mesh = parallel.create_mesh(c.mesh, aot.topology_devices("v5e:2x2"))
  compiled = aot.compile_step(c, mesh)
  hlo = compiled.as_text()
  assert "tpu_custom_call" in hlo        # the Mosaic kernel, not the interpreter
  c.model.attention_impl = "einsum"
  assert "tpu_custom_call" not in aot.compile_step(c, mesh).as_text()
