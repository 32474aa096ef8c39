"""bert_jax/perf.py: the FLOP formula against the dot products of the real model, and
the peak table lookup."""
import math

import jax
import jax.extend
import numpy as np
import pytest

from bert_jax import perf
from bert_jax.config import ModelConfig
from bert_jax.models import BertForPreTraining


def dot_flops(jaxpr) -> float:
  """2 * output size * contracted size, summed over every dot_general in `jaxpr`
  (sub-jaxprs of jit, custom_jvp, remat, scan... included, scan bodies x length)."""
  total = 0.0
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == "dot_general":
      (lhs_contract, _), _ = eqn.params["dimension_numbers"]
      lhs = eqn.invars[0].aval.shape
      total += 2 * np.prod(eqn.outvars[0].aval.shape) * np.prod([lhs[d] for d in lhs_contract])
    times = eqn.params.get("length", 1) if eqn.primitive.name == "scan" else 1
    for sub in jax.extend.core.jaxprs_in_params(eqn.params):
      total += times * dot_flops(sub)
  return total


@pytest.mark.parametrize("switches", [
    dict(), dict(scan_layers=True), dict(hidden_act="swiglu", fused_qkv=True),
    dict(embedding_size=16, tie_word_embeddings=False, share_layers="all")])
def test_forward_flops_equal_the_models_matmuls(switches):
  cfg = ModelConfig(vocab_size=96, hidden_size=32, num_heads=4, intermediate_size=80,
                    num_layers=3, **switches)
  batch, seq, predictions = 2, 16, 3
  ids = np.ones((batch, seq), np.int32)
  positions = np.tile(np.arange(1, predictions + 1, dtype=np.int32), (batch, 1))
  model = BertForPreTraining(cfg)
  params = model.init(jax.random.PRNGKey(0), ids, ids, ids)["params"]
  jaxpr = jax.make_jaxpr(lambda p: model.apply({"params": p}, ids, ids, ids,
                                               masked_lm_positions=positions))(params)
  nsp_head = batch * 2 * cfg.hidden_size * 2  # [hidden] -> 2 classes: left out of MFU
  assert dot_flops(jaxpr.jaxpr) == perf.forward_flops(cfg, batch, seq, predictions) + nsp_head
  assert perf.train_flops(cfg, batch, seq, predictions) == 3 * perf.forward_flops(
      cfg, batch, seq, predictions)


def test_a_gated_activation_added_to_the_model_alone_gets_its_flops(monkeypatch):
  """A new gated feed-forward declared where the model declares activations (and in
  config.HIDDEN_ACTS, which validates the field) is counted with its third matrix."""
  from bert_jax import config
  from bert_jax.models import bert
  monkeypatch.setitem(bert._ACTIVATIONS, "reglu", (jax.nn.relu, True))  # noqa: SLF001
  monkeypatch.setattr(config, "HIDDEN_ACTS", config.HIDDEN_ACTS + ("reglu",))
  test_forward_flops_equal_the_models_matmuls(dict(hidden_act="reglu"))


@pytest.mark.parametrize("kind, peak", [
    ("NVIDIA H100 80GB HBM3", 989.0), ("NVIDIA H200", 989.0), ("NVIDIA A100-SXM4-80GB", 312.0),
    ("TPU v4", 275.0), ("TPU v5 lite", 197.0), ("TPU v5e", 197.0), ("TPU v5p", 459.0),
    ("TPU v5", 459.0), ("TPU v6 lite", 918.0), ("TPU v6e", 918.0)])
def test_peak_by_device_kind(kind, peak):
  assert perf.peak_tflops(kind) == peak


def test_cpu_has_no_peak_and_mfu_reads_na():
  assert math.isnan(perf.peak_tflops("cpu"))
  assert perf.format_mfu(perf.mfu(1e12, 1.0, perf.peak_tflops("cpu"))) == "n/a"
  assert perf.format_mfu(perf.mfu(494.5e12, 1.0, 989.0)) == "50.0%"


def test_train_log_carries_mfu_where_the_peak_is_known(monkeypatch):
  """train/mfu = flops per step / seconds per step / peak, written only with a peak."""
  from bert_jax.train import trainer

  class Bar:
    unit_per_step, tokens_per_sequence = 32, 128

    def update(self, step, loss):
      return 64.0   # sequences/s -> 0.5 s per step of 32 sequences

  class Writer:
    def write(self, step, scalars, prefix=""):
      self.row = {prefix + k: v for k, v in scalars.items()}

  metrics = {"loss": np.float32(2.0)}
  writer = Writer()
  monkeypatch.setattr(perf, "peak_tflops", lambda kind=None: 100.0)
  trainer.log_train(writer, Bar(), 5, metrics, flops_per_step=1e13)
  assert writer.row["train/mfu"] == pytest.approx(1e13 / 0.5 / 100e12)
  assert writer.row["train/tokens_per_s"] == pytest.approx(64.0 * 128)
  monkeypatch.setattr(perf, "peak_tflops", lambda kind=None: float("nan"))   # a CPU
  trainer.log_train(writer, Bar(), 6, metrics, flops_per_step=1e13)
  assert "train/mfu" not in writer.row
