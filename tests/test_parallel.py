"""Sharded training: equal losses on every mesh, measured shard shapes, gradient
accumulation, scanned vs unscanned layers, and the configuration errors.

The 8-device checks run `tests/mesh_worker.py` in a subprocess with
XLA_FLAGS=--xla_force_host_platform_device_count=8, because this pytest process
(conftest.py) has already started JAX with one CPU device; that also keeps them safe
under `pytest -n 2`. The other tests use the single device in-process.
"""
import json
import os
import subprocess
import sys

import flax.linen as nn
import jax
import numpy as np
import pytest
from jax.sharding import AbstractMesh

from bert_jax import parallel
from bert_jax.config import ModelConfig
from bert_jax.models import BertForPreTraining
from bert_jax.models import params as params_lib
from bert_jax.train import pretrain_steps, setup as setup_lib
from configs import common
from tests import mesh_worker
from tests.helpers import subprocess_env

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def meshes():
  env = subprocess_env(devices=8)
  proc = subprocess.run([sys.executable, "-m", "tests.mesh_worker"], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("mesh", ["8x1x1", "1x8x1", "2x2x2", "2x1x4"])
def test_losses_equal_one_device(meshes, mesh):
  ref = np.asarray(meshes["1x1x1"]["losses"])
  got = np.asarray(meshes[mesh]["losses"])
  assert len(got) == mesh_worker.STEPS >= 5
  assert len(set(ref.round(4))) > 1  # the model moves: steps differ
  np.testing.assert_allclose(got, ref, rtol=1e-5, atol=0)


LARGE = ("bert/embeddings/word_embeddings/embedding",
         "bert/embeddings/position_embeddings/embedding",
         "bert/encoder/layers/attention/query/kernel",
         "bert/encoder/layers/attention/output/kernel",
         "bert/encoder/layers/intermediate/kernel",
         "bert/encoder/layers/output/kernel",
         "bert/pooler/kernel",
         "mlm/transform/kernel")


def test_fsdp_holds_an_eighth_of_every_large_matrix(meshes):
  for tree in ("params", "adam_mu"):  # ZeRO-3: optimizer state too
    report = meshes["1x8x1"][tree]
    for name in LARGE:
      r = report[name]
      total = np.prod(r["shape"]) * 4
      assert len(r["device_bytes"]) == 8
      assert all(b == total / 8 for b in r["device_bytes"]), (tree, name, r)
    # All weight matrices (kernels, embedding tables) together: exactly 1/8 each.
    matrices = [r for k, r in report.items() if k.endswith(("kernel", "embedding"))]
    assert len(matrices) == 12  # 3 embeddings, 6 per layer (scanned), 3 in the heads
    held = np.sum([r["device_bytes"] for r in matrices], axis=0)
    total = sum(np.prod(r["shape"]) * 4 for r in matrices)
    np.testing.assert_array_equal(held, total / 8)
  # Pure data parallelism keeps full copies.
  r = meshes["8x1x1"]["params"]["bert/encoder/layers/intermediate/kernel"]
  assert r["shard"] == r["shape"]


def test_tensor_parallel_splits_heads_and_mlp(meshes):
  c = mesh_worker.tiny_config().model
  layers, embed, heads, mlp = c.num_layers, c.hidden_size, c.num_heads, c.intermediate_size
  kv = embed // heads
  report = meshes["2x1x4"]["params"]
  tp = 4
  expected = {
      "attention/query/kernel": [layers, embed, heads // tp, kv],
      "attention/key/kernel": [layers, embed, heads // tp, kv],
      "attention/value/kernel": [layers, embed, heads // tp, kv],
      "attention/query/bias": [layers, heads // tp, kv],
      "attention/output/kernel": [layers, heads // tp, kv, embed],
      "intermediate/kernel": [layers, embed, mlp // tp],
      "intermediate/bias": [layers, mlp // tp],
      "output/kernel": [layers, mlp // tp, embed],
  }
  for name, shard in expected.items():
    assert report[f"bert/encoder/layers/{name}"]["shard"] == shard, name
  # FSDP + tensor: both splits at once.
  r = meshes["2x2x2"]["params"]["bert/encoder/layers/attention/query/kernel"]
  assert r["shard"] == [layers, embed // 2, heads // 2, kv]


# ------------------------------------------------------------------ one-device tests


def small_model_config(**overrides):
  c = mesh_worker.tiny_config()
  c.model.hidden_dropout_prob = 0.0
  c.model.attention_dropout_prob = 0.0
  for k, v in overrides.items():
    c.model[k] = v
  return c


def assert_grads_close(got, ref):
  """<= 1e-5 relative per parameter (atol scaled by its largest entry).

  The key bias adds q.b to every score of a query, which softmax ignores: its
  gradient is exactly zero and only roundoff remains, so it is checked to be ~0.
  """
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(got),
                          jax.tree_util.tree_leaves(ref)):
    name = jax.tree_util.keystr(path)
    if "'key'" in name and "'bias'" in name:
      assert np.abs(a).max() < 1e-9 and np.abs(b).max() < 1e-9, name
      continue
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * np.abs(b).max(), err_msg=name)


def one_device(c):
  c.mesh.shape = (1, 1, 1)
  return parallel.create_mesh(c.mesh, jax.devices()[:1]), parallel.logical_axis_rules(c.mesh)


def test_gradient_accumulation_equals_full_batch():
  c = small_model_config(scan_layers=False)
  mesh, rules = one_device(c)
  batch = mesh_worker.synthetic_batch(3)
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    setup = setup_lib.pretraining(c, mesh, rules)
    fn = jax.jit(lambda p, b, k: pretrain_steps.grads_and_sums(setup.model.apply, p, b,
                                                         setup.dropout_rng, k),
                 static_argnums=2)
    full_g, full_s = fn(setup.state.params, batch, 1)
    g, s = fn(setup.state.params, batch, 4)
    assert_grads_close(g, full_g)
    for name in s:
      np.testing.assert_allclose(s[name], full_s[name], rtol=1e-5)


def _outputs_and_grads(model_cfg, params, b):
  args = (b["input_ids"], b["token_type_ids"], b["attention_mask"])

  def loss(p):
    out = BertForPreTraining(ModelConfig.from_config(model_cfg)).apply(
        {"params": p}, *args, masked_lm_positions=b["masked_lm_positions"])
    return out["mlm_logits"].sum() + out["sequence_output"].sum() ** 2, out

  (_, out), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
  return out, grads


@pytest.fixture(scope="module")
def unscanned():
  """An unscanned model's params, outputs and gradients: the reference layout."""
  c = small_model_config(scan_layers=False).model
  b = mesh_worker.synthetic_batch(1)
  params = nn.meta.unbox(BertForPreTraining(ModelConfig.from_config(c)).init(
      jax.random.PRNGKey(0), b["input_ids"], b["token_type_ids"])["params"])
  return params, b, *_outputs_and_grads(c, params, b)


@pytest.mark.parametrize("remat", ["none", "full", "dots"])
def test_scanned_and_unscanned_give_same_outputs_and_gradients(unscanned, remat):
  params, b, out0, g0 = unscanned
  cs = small_model_config(scan_layers=True, remat_policy=remat).model
  scanned = params_lib.to_scanned(params)
  layers = scanned["bert"]["encoder"]["layers"]
  assert layers["intermediate"]["kernel"].shape == (
      cs.num_layers, cs.hidden_size, cs.intermediate_size)
  shapes = jax.eval_shape(lambda: nn.meta.unbox(BertForPreTraining(
      ModelConfig.from_config(cs)).init(
      jax.random.PRNGKey(0), b["input_ids"])["params"]))
  assert (jax.tree_util.tree_map(lambda x: x.shape, scanned)
          == jax.tree_util.tree_map(lambda x: x.shape, shapes))
  jax.tree_util.tree_map(np.testing.assert_array_equal,
                         params_lib.to_per_layer(scanned), params)

  out1, g1 = _outputs_and_grads(cs, scanned, b)
  for key in ("mlm_logits", "nsp_logits", "sequence_output", "pooled_output"):
    np.testing.assert_allclose(out1[key], out0[key], rtol=1e-5, atol=1e-5)
  assert_grads_close(params_lib.to_per_layer(g1), g0)


def test_scan_layout_converts_optimizer_state():
  import optax
  params = {"bert": {"encoder": {f"layer_{i}": {"w": np.full((2,), i, np.float32)}
                                 for i in range(3)}}}
  opt = optax.adam(1e-3).init(params)
  scanned = params_lib.to_scanned(opt)
  assert scanned[0].mu["bert"]["encoder"]["layers"]["w"].shape == (3, 2)
  back = params_lib.to_per_layer({"params": params_lib.to_scanned(params)})
  np.testing.assert_array_equal(back["params"]["bert"]["encoder"]["layer_2"]["w"], [2, 2])


# ------------------------------------------------------------------------- errors


def test_mesh_not_multiplying_to_device_count():
  cfg = common.mesh_config()
  cfg.shape = (2, 2, 2)
  with pytest.raises(ValueError, match=r"mesh.shape=\(2, 2, 2\) multiplies to 8, but "
                                       r"there are 1 devices"):
    parallel.create_mesh(cfg, jax.devices()[:1])
  with pytest.raises(ValueError, match=r"mesh.shape=\(-1, 3, 1\): 8 devices are not "
                                       r"divisible by the fixed axes' product 3"):
    parallel.resolve_mesh_shape((-1, 3, 1), 8)


def test_batch_not_divisible_by_data_parallel_size():
  mesh = AbstractMesh((2, 2, 2), ("data", "fsdp", "tensor"))
  with pytest.raises(ValueError, match=r"train.global_batch_size=6 is not divisible by "
                                       r"the data-parallel size 4"):
    parallel.check_global_batch(6, mesh)
  with pytest.raises(ValueError, match=r"train.grad_accum_steps=4 x the data-parallel "
                                       r"size 4"):
    parallel.check_global_batch(8, mesh, grad_accum_steps=4)
  parallel.check_global_batch(16, mesh, grad_accum_steps=4)
  with pytest.raises(ValueError, match=r"train.grad_accum_steps=0: expected >= 1"):
    parallel.check_global_batch(16, mesh, grad_accum_steps=0)


def test_heads_not_divisible_by_tensor_axis():
  mesh = AbstractMesh((1, 2, 4), ("data", "fsdp", "tensor"))
  model = common.model_config("tiny")  # 2 heads
  with pytest.raises(ValueError, match=r"model.num_heads=2 is not divisible by the size "
                                       r"4 of mesh axis 'tensor'"):
    parallel.check_model_fits_mesh(model, mesh, parallel.DEFAULT_RULES)


def test_logical_name_without_rule():
  c = small_model_config()
  mesh, _ = one_device(c)
  rules = tuple(r for r in parallel.DEFAULT_RULES if r[0] != "mlp")
  with pytest.raises(ValueError, match=r"no rule in config field mesh.rules: 'mlp' "
                                       r"\(used by params/.*intermediate/"):
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
      setup_lib.pretraining(c, mesh, rules)


def test_indivisible_parameter_dimension_names_the_parameter():
  mesh = AbstractMesh((1, 1, 4), ("data", "fsdp", "tensor"))
  shapes = {"emb": jax.ShapeDtypeStruct((126, 32), np.float32)}
  specs = {"emb": jax.sharding.PartitionSpec("vocab", "embed")}
  with pytest.raises(ValueError, match=r"parameter emb of shape \(126, 32\): dimension 0 "
                                       r"\('vocab', size 126\) is not divisible"):
    parallel.check_divisible(shapes, specs, mesh, parallel.DEFAULT_RULES)


def test_mesh_presets_and_remat_policy_names():
  assert common.mesh_config("dp").shape == (-1, 1, 1)
  assert common.mesh_config("fsdp").shape == (1, -1, 1)
  assert common.mesh_config("fsdp_tp").shape == (1, -1, 2)
  with pytest.raises(ValueError, match="mesh='zero'"):
    common.mesh_config("zero")
  c = small_model_config(scan_layers=True, remat_policy="some").model
  with pytest.raises(ValueError, match=r"model.remat_policy='some'"):
    ModelConfig.from_config(c)


def test_libtpu_flags_are_appended_and_a_users_value_wins():
  env = {}
  parallel.set_libtpu_flags(env)
  assert env["LIBTPU_INIT_ARGS"] == "--xla_tpu_spmd_rng_bit_generator_unsafe=true"
  parallel.set_libtpu_flags(env)   # idempotent
  assert env["LIBTPU_INIT_ARGS"] == "--xla_tpu_spmd_rng_bit_generator_unsafe=true"
  env = {"LIBTPU_INIT_ARGS": "--xla_tpu_spmd_rng_bit_generator_unsafe=false --foo=1"}
  parallel.set_libtpu_flags(env)
  assert env["LIBTPU_INIT_ARGS"] == "--xla_tpu_spmd_rng_bit_generator_unsafe=false --foo=1"


def test_distributed_initialize_only_when_asked():
  cfg = common.distributed_config()
  assert parallel.initialize_distributed(cfg, environ={}) is False       # auto, no cluster
  assert parallel.initialize_distributed(cfg, environ={"SLURM_NTASKS": "1"}) is False
  cfg.mode = "off"
  assert parallel.initialize_distributed(cfg, environ={"SLURM_NTASKS": "4"}) is False
  cfg.mode = "sometimes"
  with pytest.raises(ValueError, match="distributed.mode='sometimes'"):
    parallel.initialize_distributed(cfg, environ={})
