"""Architecture switches (`model.*`, bert_jax/models/bert.py): parameter counts against
closed-form formulas, scanned == per-layer, one sharded train step on a (2, 2, 2) mesh
per switch value (one subprocess for all), and what each switch computes against
independent references (transformers, per-layer copies of shared weights)."""
import json
import os
import subprocess
import sys

import flax.linen as nn
import jax
import numpy as np
import pytest

from bert_jax.config import ModelConfig
from bert_jax.models import BertForPreTraining, BertModel
from bert_jax.models import params as params_lib
from configs import common
from tests import mesh_worker
from tests.helpers import subprocess_env

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
V, H, L, HEADS, I, P, T, E = 64, 32, 3, 4, 48, 24, 2, 16

# Every non-default value of every switch (the defaults are BERT).
SWITCH_VALUES = [
    ("norm_placement", "pre"), ("norm_type", "rmsnorm"),
    ("position_embedding", "rotary"), ("position_embedding", "none"),
    ("hidden_act", "gelu_new"), ("hidden_act", "relu"), ("hidden_act", "geglu"),
    ("hidden_act", "swiglu"), ("use_bias", False), ("tie_word_embeddings", False),
    ("embedding_size", E), ("share_layers", "all"), ("share_layers", "attention"),
    ("share_layers", "ffn"), ("init_scheme", "depth_scaled"), ("qk_norm", True),
    ("fused_qkv", True),   # a speed option, not an architecture: same count, same loss
]
IDS = [f"{k}={v}" for k, v in SWITCH_VALUES]


def model_config(**overrides):
  c = common.model_config("tiny", vocab_size=V)
  c.hidden_size, c.num_layers, c.num_heads, c.intermediate_size = H, L, HEADS, I
  c.max_position_embeddings, c.type_vocab_size = P, T
  c.hidden_dropout_prob = c.attention_dropout_prob = 0.0
  c.update(overrides)
  return ModelConfig.from_config(c)


def closed_form_count(c) -> int:
  """The parameter count of BertForPreTraining(c), from the architecture's definition."""
  e = c.embedding_size or c.hidden_size
  h, i = c.hidden_size, c.intermediate_size
  norm = lambda n: n if c.norm_type == "rmsnorm" else 2 * n   # noqa: E731  scale (+ bias)
  b = 1 if c.use_bias else 0
  embeddings = (c.vocab_size + c.type_vocab_size) * e + norm(e)
  embeddings += c.max_position_embeddings * e if c.position_embedding == "learned" else 0
  embeddings += e * h + b * h if e != h else 0                      # factorised: projection
  attention = 4 * h * h + b * 4 * h + norm(h)                       # q, k, v, o + norm
  attention += 2 * norm(h // c.num_heads) if c.qk_norm else 0       # per-head q, k norms
  inputs = 2 if c.hidden_act in ("geglu", "swiglu") else 1          # gated: two projections
  ffn = inputs * (h * i + b * i) + i * h + b * h + norm(h)
  copies = {"none": (c.num_layers, c.num_layers), "all": (1, 1),
            "attention": (1, c.num_layers), "ffn": (c.num_layers, 1)}[c.share_layers]
  encoder = copies[0] * attention + copies[1] * ffn
  encoder += norm(h) if c.norm_placement == "pre" else 0            # final norm
  pooler = h * h + h
  mlm = h * e + e + norm(e) + c.vocab_size                          # transform, norm, bias
  mlm += e * c.vocab_size if not c.tie_word_embeddings else 0       # untied decoder
  nsp = 2 * h + 2
  return embeddings + encoder + pooler + mlm + nsp


def init_params(c, seed=0):
  ids = np.zeros((1, 8), np.int32)
  return nn.meta.unbox(BertForPreTraining(c).init(jax.random.PRNGKey(seed), ids)["params"])


def batch(seed=0, batch_size=3, length=12):
  r = np.random.default_rng(seed)
  ids = r.integers(5, V, (batch_size, length)).astype(np.int32)
  types = (np.arange(length) >= length // 2).astype(np.int32)[None].repeat(batch_size, 0)
  mask = np.ones_like(ids)
  mask[1, 8:] = 0
  return ids, types, mask


def loss(c, params, seed=0):
  ids, types, mask = batch(seed)
  out = BertForPreTraining(c).apply({"params": params}, ids, types, mask)
  logp = jax.nn.log_softmax(out["mlm_logits"])
  labels = np.random.default_rng(seed + 1).integers(0, V, ids.shape)
  mlm = -np.take_along_axis(np.asarray(logp), labels[..., None], -1)[..., 0]
  return float((mlm * mask).sum() / mask.sum() + jax.nn.logsumexp(out["nsp_logits"]).mean())


@pytest.mark.parametrize("field,value", [("norm_placement", "post")] + SWITCH_VALUES,
                         ids=["bert"] + IDS)
def test_parameter_count_is_the_closed_form(field, value):
  for scan in (False, True):
    c = model_config(**{field: value, "scan_layers": scan})
    shapes = jax.eval_shape(lambda c=c: init_params(c))
    count = sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(shapes))
    assert count == closed_form_count(c), (field, value, scan)


@pytest.mark.parametrize("field,value", SWITCH_VALUES, ids=IDS)
def test_scanned_and_per_layer_give_the_same_loss(field, value):
  c = model_config(**{field: value})
  params = init_params(c)
  scanned = params_lib.to_scanned(params)
  want = loss(c, params)
  got = loss(model_config(**{field: value, "scan_layers": True}), scanned)
  assert np.isfinite(want)
  assert abs(got - want) <= 1e-5 * abs(want), (got, want)


@pytest.fixture(scope="module")
def mesh_runs():
  env = subprocess_env(devices=8)
  proc = subprocess.run([sys.executable, "-m", "tests.mesh_worker", "switches"], cwd=REPO,
                        env=env, capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("field,value", SWITCH_VALUES, ids=IDS)
def test_train_steps_run_on_a_2x2x2_mesh(mesh_runs, field, value):
  tiny = {"embedding_size": 16}   # mesh_worker's model is 32 wide: 16 factorises it
  names = [n for n, combo in mesh_worker.SWITCH_COMBOS.items()
           if combo.get(field) == tiny.get(field, value)]
  assert names, f"no combination in tests/mesh_worker.py sets model.{field}={value!r}"
  for name in names:
    losses = np.asarray(mesh_runs[name])
    assert len(losses) == mesh_worker.SWITCH_STEPS and np.isfinite(losses).all(), name
    assert losses[1] != losses[0], name   # the first step moved the model
    # Untrained: about ln(vocab) for the MLM plus ln(2) for NSP.
    assert abs(losses[0] - np.log(mesh_worker.VOCAB) - np.log(2)) < 0.1, (name, losses)


def test_untied_factorised_combination_on_2x2x2_equals_one_device(mesh_runs):
  np.testing.assert_allclose(mesh_runs[mesh_worker.SWITCH_REFERENCE],
                             mesh_runs["one_device"], rtol=1e-5, atol=0)


# ------------------------------------------------------- what the switches compute


@pytest.mark.parametrize("share", ["all", "attention", "ffn"])
def test_shared_layers_equal_per_layer_copies_of_the_shared_weights(share):
  """share_layers=X is a per-layer model whose X sublayers all hold the same weights."""
  shared_cfg = model_config(share_layers=share)
  params = init_params(shared_cfg, seed=1)
  encoder = params["bert"]["encoder"]
  layers = {f"layer_{i}": {**encoder.get(f"layer_{i}", {}), **encoder["shared"]}
            for i in range(L)}
  copies = {**params, "bert": {**params["bert"], "encoder": layers}}
  ids, types, mask = batch()
  want = BertForPreTraining(model_config()).apply({"params": copies}, ids, types, mask)
  got = BertForPreTraining(shared_cfg).apply({"params": params}, ids, types, mask)
  np.testing.assert_allclose(got["mlm_logits"], want["mlm_logits"], rtol=1e-6, atol=1e-6)


def test_untied_decoder_holding_the_embeddings_equals_the_tied_one():
  params = init_params(model_config())
  untied = model_config(tie_word_embeddings=False)
  table = params["bert"]["embeddings"]["word_embeddings"]["embedding"]
  copy = {**params, "mlm": {**params["mlm"], "decoder": {"kernel": table.T}}}
  ids, types, mask = batch()
  want = BertForPreTraining(model_config()).apply({"params": params}, ids, types, mask)
  got = BertForPreTraining(untied).apply({"params": copy}, ids, types, mask)
  np.testing.assert_allclose(got["mlm_logits"], want["mlm_logits"], rtol=1e-6, atol=1e-6)


def test_rotary_matches_transformers_llama():
  import torch
  from transformers import LlamaConfig
  from transformers.models.llama import modeling_llama
  from bert_jax.models.bert import rotary
  b, n, heads, d = 2, 10, 3, 8
  r = np.random.default_rng(0)
  q, k = r.normal(size=(2, b, n, heads, d)).astype(np.float32)
  positions = np.stack([np.arange(n), np.arange(n) + 5])          # [batch, length]
  hf = modeling_llama.LlamaRotaryEmbedding(LlamaConfig(
      hidden_size=heads * d, num_attention_heads=heads, max_position_embeddings=64))
  tq, tk = (torch.from_numpy(x).transpose(1, 2) for x in (q, k))   # [b, heads, n, d]
  cos, sin = hf(tq, torch.from_numpy(positions))
  want_q, want_k = modeling_llama.apply_rotary_pos_emb(tq, tk, cos, sin)
  got_q, got_k = rotary(q, positions), rotary(k, positions)
  np.testing.assert_allclose(got_q, want_q.transpose(1, 2).numpy(), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(got_k, want_k.transpose(1, 2).numpy(), rtol=1e-5, atol=1e-5)


def test_depth_scaled_init_divides_output_projections_by_sqrt_2n():
  c = model_config(init_scheme="depth_scaled", hidden_size=64, intermediate_size=256,
                   num_heads=4)
  layer = init_params(c)["bert"]["encoder"]["layer_1"]
  ratio = np.std(layer["output"]["kernel"]) / np.std(layer["intermediate"]["kernel"])
  attn = (np.std(layer["attention"]["output"]["kernel"])
          / np.std(layer["attention"]["query"]["kernel"]))
  for got in (ratio, attn):
    assert abs(got - 1 / np.sqrt(2 * L)) < 0.05 / np.sqrt(2 * L), got


class TorchNames:
  """Arrays of a transformers state dict by name, in our layouts (for the parity tests)."""

  def __init__(self, model):
    self.sd = {k: v.numpy() for k, v in model.state_dict().items()}

  def linear(self, name):
    return {"kernel": self.sd[name + ".weight"].T, "bias": self.sd[name + ".bias"]}

  def norm(self, name):
    return {"scale": self.sd[name + ".weight"], "bias": self.sd[name + ".bias"]}

  def embeddings(self, prefix):
    return {f"{n}_embeddings": {"embedding": self.sd[f"{prefix}{n}_embeddings.weight"]}
            for n in ("word", "position", "token_type")}

  def attention(self, prefix, output):
    """q, k, v under `prefix` + {query,key,value}, the output projection `output`."""
    out = {}
    for q in ("query", "key", "value"):
      w = self.linear(prefix + q)
      out[q] = {"kernel": w["kernel"].reshape(H, HEADS, -1),
                "bias": w["bias"].reshape(HEADS, -1)}
    w = self.linear(output)
    out["output"] = {"kernel": w["kernel"].reshape(HEADS, -1, H), "bias": w["bias"]}
    return out


def perturbed(model):
  """`model` in eval mode with every parameter moved off its init (no slip hides)."""
  import torch
  torch.manual_seed(0)
  with torch.no_grad():
    for p in model.parameters():
      p.add_(0.05 * torch.randn_like(p))
  return model.eval()


def assert_matches_torch(cfg_overrides, params, torch_model, **torch_kwargs):
  import torch
  ids, types, mask = batch()
  with torch.no_grad():
    ref = torch_model(input_ids=torch.tensor(ids), token_type_ids=torch.tensor(types),
                      attention_mask=torch.tensor(mask), **torch_kwargs)
  for scan in (False, True):
    c = model_config(**cfg_overrides, scan_layers=scan)
    p = params_lib.to_scanned(params) if scan else params
    got = BertModel(c).apply({"params": p}, ids, types, mask)
    np.testing.assert_allclose(got["sequence_output"], ref.last_hidden_state.numpy(),
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got["pooled_output"], ref.pooler_output.numpy(),
                               rtol=1e-5, atol=1e-5)


def test_factorised_embeddings_with_all_layers_shared_match_transformers_albert():
  """embedding_size + share_layers='all' is ALBERT (Lan et al. 2020): HF AlbertModel."""
  import transformers
  hf_cfg = transformers.AlbertConfig(
      vocab_size=V, embedding_size=E, hidden_size=H, num_hidden_layers=L,
      num_attention_heads=HEADS, intermediate_size=I, hidden_act="gelu_new",
      max_position_embeddings=P, type_vocab_size=T, layer_norm_eps=1e-12,
      hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
  hf_cfg.attn_implementation = "eager"
  hf = perturbed(transformers.AlbertModel(hf_cfg))
  t = TorchNames(hf)
  layer = "encoder.albert_layer_groups.0.albert_layers.0."
  params = {
      "embeddings": {**t.embeddings("embeddings."), "layer_norm": t.norm("embeddings.LayerNorm"),
                     "projection": t.linear("encoder.embedding_hidden_mapping_in")},
      "encoder": {"shared": {
          "attention": t.attention(layer + "attention.", layer + "attention.dense"),
          "attention_layer_norm": t.norm(layer + "attention.LayerNorm"),
          "intermediate": t.linear(layer + "ffn"), "output": t.linear(layer + "ffn_output"),
          "output_layer_norm": t.norm(layer + "full_layer_layer_norm")}},
      "pooler": t.linear("pooler")}
  assert_matches_torch(dict(embedding_size=E, share_layers="all", hidden_act="gelu_new"),
                       params, hf)


def test_pre_layer_norm_matches_transformers_roberta_prelayernorm():
  """norm_placement='pre' is HF RobertaPreLayerNormModel (given BERT's position ids)."""
  import torch
  import transformers
  hf_cfg = transformers.RobertaPreLayerNormConfig(
      vocab_size=V, hidden_size=H, num_hidden_layers=L, num_attention_heads=HEADS,
      intermediate_size=I, max_position_embeddings=P, type_vocab_size=T,
      layer_norm_eps=1e-12, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
  hf_cfg.attn_implementation = "eager"
  hf = perturbed(transformers.RobertaPreLayerNormModel(hf_cfg))
  t = TorchNames(hf)
  layers = {}
  for i in range(L):
    lp = f"encoder.layer.{i}."
    layers[f"layer_{i}"] = {
        "attention": t.attention(lp + "attention.self.", lp + "attention.output.dense"),
        "attention_layer_norm": t.norm(lp + "attention.LayerNorm"),
        "intermediate": t.linear(lp + "intermediate.dense"),
        "output": t.linear(lp + "output.dense"),
        "output_layer_norm": t.norm(lp + "intermediate.LayerNorm")}
  params = {
      "embeddings": {**t.embeddings("embeddings."), "layer_norm": t.norm("embeddings.LayerNorm")},
      "encoder": {**layers, "final_layer_norm": t.norm("LayerNorm")},
      "pooler": t.linear("pooler.dense")}
  length = batch()[0].shape[1]
  assert_matches_torch(dict(norm_placement="pre"), params, hf,
                       position_ids=torch.arange(length)[None])
