"""Model FLOPs and MFU: one formula and one peak table for every benchmark and log.

    peak = perf.peak_tflops()                        # this host's first device, or NaN
    flops = perf.train_flops(model_cfg, batch, seq, predictions)
    print(perf.mfu(flops, step_seconds, peak))       # fraction of peak, NaN if unknown

FLOPs formula (model FLOPs: no rematerialisation counted; a multiply-add is 2 FLOPs),
per step of B sequences of length s with P masked-LM predictions each, L layers,
hidden H, feed-forward I, vocab V:

  forward = B*s*L*(8*H^2 + 4*H*I)      q, k, v, o projections and the FFN
          + B*L*4*s^2*H                attention scores (QK^T) and context (PV)
          + B*P*(2*H^2 + 2*H*V)        MLM transform and decoder, masked rows only
          + B*2*H^2                    pooler
  train   = 3 * forward                backward = 2x forward

Switches (`ModelConfig`): a gated feed-forward (geglu, swiglu) has a third H x I
matrix (6*H*I instead of 4*H*I); factorised embeddings of width E < H (ALBERT) add
the B*s*2*E*H embedding projection and make the MLM head B*P*(2*H*E + 2*E*V); the
decoder costs the same tied or untied; fused q/k/v and shared layers change no FLOPs.

Every implementation is credited the same useful work, even one (HF) that scores all
s positions against the vocabulary instead of the P masked ones.
"""

from __future__ import annotations

import math

# Dense bf16 peak TFLOP/s per chip, from the vendors' datasheets (no sparsity).
# Keys are matched as substrings of the lower-cased `device_kind`, longest key first,
# so 'tpu v5 lite' wins over 'tpu v5' ('TPU v5 lite' is v5e, 'TPU v5' / 'TPU v5p' v5p).
PEAK_TFLOPS: dict[str, float] = {
    "h100": 989.0,
    "h200": 989.0,
    "gh200": 989.0,
    "a100": 312.0,
    "tpu v4": 275.0,
    "tpu v5 lite": 197.0,
    "tpu v5e": 197.0,
    "tpu v5p": 459.0,
    "tpu v5": 459.0,
    "tpu v6 lite": 918.0,
    "tpu v6e": 918.0,
}


# Memory per chip (one JAX device), GiB, from the vendors' datasheets. Matched as
# PEAK_TFLOPS is. For TPUs, libtpu's compiler reports a little less as usable (a v5e
# chip: 15.75 of 16 GiB), and it is the compiler that refuses a program that does not
# fit; `bert_jax/aot.py` prints both.
HBM_GIB: dict[str, float] = {
    "h100": 80.0,
    "h200": 141.0,
    "gh200": 96.0,
    "a100": 40.0,
    "a100-sxm4-80gb": 80.0,
    "a100 80gb": 80.0,
    "tpu v4": 32.0,
    "tpu v5 lite": 16.0,
    "tpu v5e": 16.0,
    "tpu v5p": 95.0,
    "tpu v5": 95.0,
    "tpu v6 lite": 32.0,
    "tpu v6e": 32.0,
}


def _lookup(table: dict[str, float], device_kind: str | None) -> float:
  """`table`'s value for the longest key inside the lower-cased `device_kind`
  (default: `jax.devices()[0]`'s), NaN if none."""
  if device_kind is None:
    import jax  # here, so that PyTorch-only processes can use this module without JAX
    device_kind = jax.devices()[0].device_kind
  kind = device_kind.lower()
  for key in sorted(table, key=len, reverse=True):
    if key in kind:
      return table[key]
  return math.nan


def hbm_gib(device_kind: str | None = None) -> float:
  """Memory of one `device_kind` chip in GiB (HBM_GIB), NaN if unknown (CPUs).

  >>> hbm_gib("TPU v5 lite"), hbm_gib("NVIDIA A100-SXM4-80GB"), hbm_gib("TPU v4")
  (16.0, 80.0, 32.0)
  """
  return _lookup(HBM_GIB, device_kind)


def peak_tflops(device_kind: str | None = None) -> float:
  """Dense bf16 peak TFLOP/s of `device_kind` (default: `jax.devices()[0]`'s); NaN if
  unknown (CPUs), so MFU comes out NaN rather than a made-up figure.

  >>> peak_tflops("NVIDIA H100 80GB HBM3"), peak_tflops("TPU v5 lite")
  (989.0, 197.0)
  """
  return _lookup(PEAK_TFLOPS, device_kind)


def attention_flops(model_cfg, batch: int, seq: int) -> float:
  """FLOPs of the attention products of one forward pass: QK^T and PV, 2*s*s*H each
  per sequence and layer (the part an attention kernel such as splash computes)."""
  return float(batch * model_cfg.num_layers * 4 * seq * seq * model_cfg.hidden_size)


def forward_flops(model_cfg, batch: int, seq: int, predictions: int) -> float:
  """Model FLOPs of one forward pass (module docstring); `model_cfg` is a ModelConfig
  or the `model` ConfigDict (fields hidden_size, num_layers, intermediate_size,
  vocab_size; hidden_act and embedding_size when present)."""
  h, layers = model_cfg.hidden_size, model_cfg.num_layers
  ffn, vocab = model_cfg.intermediate_size, model_cfg.vocab_size
  from bert_jax.models import bert   # the model's own answer, not a copied list of names
  ffn_matrices = 3 if bert.is_gated(getattr(model_cfg, "hidden_act", "gelu")) else 2
  width = getattr(model_cfg, "embedding_size", 0) or h   # E: the embedding tables' width
  encoder = batch * seq * layers * (8 * h * h + 2 * ffn_matrices * h * ffn)
  attention = attention_flops(model_cfg, batch, seq)
  projection = batch * seq * 2 * width * h if width != h else 0
  mlm_head = batch * predictions * (2 * h * width + 2 * width * vocab)
  pooler = batch * 2 * h * h
  return float(encoder + attention + projection + mlm_head + pooler)


def train_flops(model_cfg, batch: int, seq: int, predictions: int) -> float:
  """Model FLOPs of one training step: forward + backward (2x forward)."""
  return 3.0 * forward_flops(model_cfg, batch, seq, predictions)


def mfu(flops: float, seconds: float, peak: float) -> float:
  """Model FLOPs utilisation: `flops` done in `seconds` over `peak` TFLOP/s (a
  fraction; NaN when the peak is unknown)."""
  return flops / seconds / (peak * 1e12)


def format_mfu(value: float) -> str:
  """'41.3%', or 'n/a' for NaN (unknown peak)."""
  return "n/a" if math.isnan(value) else f"{100 * value:.1f}%"
