"""Subprocess helper for tests/test_parallel.py: trains on several meshes, prints JSON.

Run as `python -m tests.mesh_worker` with XLA_FLAGS=--xla_force_host_platform_device_count=8
set before JAX starts (pytest's process already holds a 1-device JAX, so the test
launches this in a fresh process). For every mesh in MESHES it trains the same tiny
model for STEPS steps on the same synthetic batches (dropout on: with
`jax_threefry_partitionable` the dropout bits do not depend on the sharding) and
reports the losses and, per parameter (scanned encoder: `encoder/layers/...`), the global and per-device shard shapes read
from `addressable_shards`.

`python -m tests.mesh_worker switches` instead trains every combination in
SWITCH_COMBOS (together they set every architecture switch to every non-default
value, in both layouts) for SWITCH_STEPS steps on the (2, 2, 2) mesh and reports the
losses; SWITCH_REFERENCE (the untied decoder next to factorised embeddings, the
sharding the tied decoder once got wrong; and fused QKV) also runs on one device for
comparison. A
one-device run of every combination would double the test's time.
"""
import json
import os
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")
jax.config.update("jax_threefry_partitionable", True)

from bert_jax import parallel  # noqa: E402
from bert_jax.models import params as params_lib  # noqa: E402
from bert_jax.train import setup as setup_lib  # noqa: E402
from configs import pretrain as pretrain_config  # noqa: E402

MESHES = [(1, 1, 1), (8, 1, 1), (1, 8, 1), (2, 2, 2), (2, 1, 4)]
STEPS = 5
BATCH, LENGTH, PREDICTIONS, VOCAB = 16, 16, 4, 128


def tiny_config():
  c = pretrain_config.get_config(f"tiny,vocab={VOCAB},seq={LENGTH},batch={BATCH},steps=50")
  c.model.hidden_size = 32
  c.model.num_heads = 4
  c.model.intermediate_size = 64
  c.model.max_position_embeddings = 64
  c.model.scan_layers = True  # the scanned encoder under every sharding
  c.train.warmup_steps = 0
  return c


def synthetic_batch(step: int) -> dict[str, np.ndarray]:
  r = np.random.default_rng(step)
  weights = (r.random((BATCH, PREDICTIONS)) < 0.8).astype(np.float32)
  mask = np.ones((BATCH, LENGTH), np.int32)
  mask[::3, LENGTH - 4:] = 0  # some padding
  return {
      "input_ids": r.integers(5, VOCAB, (BATCH, LENGTH)).astype(np.int32),
      "token_type_ids": np.repeat((np.arange(LENGTH) >= LENGTH // 2)[None], BATCH,
                                  0).astype(np.int32),
      "attention_mask": mask,
      "masked_lm_positions": r.integers(1, LENGTH - 4, (BATCH, PREDICTIONS)).astype(np.int32),
      "masked_lm_ids": r.integers(5, VOCAB, (BATCH, PREDICTIONS)).astype(np.int32),
      "masked_lm_weights": weights,
      "next_sentence_label": r.integers(0, 2, (BATCH,)).astype(np.int32),
  }


def shard_report(tree) -> dict:
  """path -> (global shape, shard shapes of device 0, bytes held by each device)."""
  out = {}
  for path, x in jax.tree_util.tree_leaves_with_path(tree):
    key = params_lib.path_str(path)
    shards = x.addressable_shards
    out[key] = {
        "shape": list(x.shape),
        "shard": list(shards[0].data.shape),
        "device_bytes": [s.data.nbytes for s in sorted(shards, key=lambda s: s.device.id)],
    }
  return out


# name -> model overrides; every non-default switch value occurs in one of them.
SWITCH_COMBOS = {
    "pre_rms_rotary_geglu_nobias_share_attention": dict(
        norm_placement="pre", norm_type="rmsnorm", position_embedding="rotary",
        hidden_act="geglu", use_bias=False, share_layers="attention", scan_layers=True,
        fused_qkv=True),
    "nopos_swiglu_untied_factorised_share_ffn_depth_init": dict(
        position_embedding="none", hidden_act="swiglu", tie_word_embeddings=False,
        embedding_size=16, share_layers="ffn", init_scheme="depth_scaled",
        scan_layers=False, fused_qkv=True),
    "relu_share_all_qk_norm": dict(hidden_act="relu", share_layers="all", qk_norm=True,
                                   scan_layers=True),
    "gelu_new_untied_factorised_per_layer": dict(
        hidden_act="gelu_new", tie_word_embeddings=False, embedding_size=16,
        scan_layers=False),
}
SWITCH_MESH = (2, 2, 2)
SWITCH_REFERENCE = "nopos_swiglu_untied_factorised_share_ffn_depth_init"
SWITCH_STEPS = 2


def run(mesh_shape, steps: int = STEPS, **model_overrides) -> dict:
  config = tiny_config()
  config.model.update(model_overrides)
  config.mesh.shape = mesh_shape
  devices = jax.devices()[:int(np.prod(mesh_shape))]
  mesh = parallel.create_mesh(config.mesh, devices)
  rules = parallel.logical_axis_rules(config.mesh)
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    setup = setup_lib.pretraining(config, mesh, rules)
    state, losses = setup.state, []
    for step in range(steps):
      batch = parallel.global_batch(synthetic_batch(step), mesh)
      state, metrics = setup.p_train_step(state, batch, setup.dropout_rng)
      losses.append(metrics["loss"])
    return {"losses": [float(x) for x in jax.device_get(losses)],
            "params": shard_report(state.params),
            "adam_mu": shard_report(state.opt_state[1][0].mu)}


if __name__ == "__main__":
  if jax.device_count() < 8:
    sys.exit(f"needs 8 devices, found {jax.device_count()}: set XLA_FLAGS="
             "--xla_force_host_platform_device_count=8 before JAX starts")
  if sys.argv[1:] == ["switches"]:
    runs = {name: run(SWITCH_MESH, SWITCH_STEPS, **combo)["losses"]
            for name, combo in SWITCH_COMBOS.items()}
    runs["one_device"] = run((1, 1, 1), SWITCH_STEPS,
                             **SWITCH_COMBOS[SWITCH_REFERENCE])["losses"]
    print(json.dumps(runs))
  else:
    print(json.dumps({"x".join(map(str, m)): run(m) for m in MESHES}))
