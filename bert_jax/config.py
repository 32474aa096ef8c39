"""`ModelConfig`: the typed, frozen description of a model, validated once.

The fields are declared once, here: the ml_collections `model` sub-config that users
edit (`configs/common.py: model_config`) is built from these defaults, and the entry
point turns it back into a `ModelConfig` with
`ModelConfig.from_config(config.model)` and from then on nothing sees the ConfigDict:
the Flax modules (`bert_jax/models/`), the converters and the checkpoints hold this
dataclass. Every checkpoint saves the resolved config, so a workdir alone says what
model it holds (`bert_jax.train.checkpoint.read_model_config`).

Allowed values live here once (`HIDDEN_ACTS`, `ATTENTION_IMPLS`, ...); an unknown field
or a wrong value is a `ValueError` naming `model.<field>`. A field missing from a dict
(an older checkpoint, say) takes its default, which is always BERT's behaviour.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import jax.numpy as jnp

# The feed-forward / MLM-transform activations (HF names; gelu_new = gelu_tanh =
# gelu_pytorch_tanh, the tanh approximation); geglu / swiglu: gated feed-forwards
# (Shazeer 2020), two input projections, gelu / silu on the gate.
HIDDEN_ACTS = ("gelu", "gelu_new", "gelu_tanh", "gelu_pytorch_tanh", "relu", "geglu",
               "swiglu")
# einsum: softmax(QK^T)V with attention dropout, runs everywhere; xla / cudnn:
# jax.nn.dot_product_attention (cudnn = fused GPU kernel), no attention dropout;
# splash: the Pallas TPU kernel (models/splash.py; interpret mode off TPU), no dropout.
ATTENTION_IMPLS = ("einsum", "xla", "cudnn", "splash")
# none | full (recompute each layer) | dots (keep matmul outputs); see models/bert.py.
REMAT_POLICIES = ("none", "full", "dots")
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}

# Architecture switches (bert_jax/models/bert.py); the first value is BERT's.
NORM_PLACEMENTS = ("post", "pre")        # add & norm (BERT) | norm first + a final norm
NORM_TYPES = ("layernorm", "rmsnorm")
POSITION_EMBEDDINGS = ("learned", "rotary", "none")
SHARE_LAYERS = ("none", "all", "attention", "ffn")   # ALBERT cross-layer sharing
INIT_SCHEMES = ("bert", "depth_scaled")

# HF export (`bert_jax/convert/hf.py`) is an allowlist over the fields of `ModelConfig`:
# a field exports when HF `BertConfig` holds it (`HF_CONFIG_FIELDS`, with its value in
# `HF_VALUES` where HF expresses only some), when it only says how the same function is
# computed (`HOW_COMPUTED_FIELDS`), or when it is at its default (BERT's behaviour). So a
# new switch needs no entry: away from its default it is refused by name
# (`not_in_hf_bert`), never silently exported as a BERT that computes something else.

# model field -> HF `BertConfig` field (config.json); `convert/hf.py` writes and reads these.
HF_CONFIG_FIELDS = {
    "vocab_size": "vocab_size", "hidden_size": "hidden_size",
    "num_layers": "num_hidden_layers", "num_heads": "num_attention_heads",
    "intermediate_size": "intermediate_size", "hidden_act": "hidden_act",
    "max_position_embeddings": "max_position_embeddings",
    "type_vocab_size": "type_vocab_size", "layer_norm_eps": "layer_norm_eps",
    "hidden_dropout_prob": "hidden_dropout_prob",
    "attention_dropout_prob": "attention_probs_dropout_prob",
    "initializer_range": "initializer_range",
    "position_embedding": "position_embedding_type",
    "tie_word_embeddings": "tie_word_embeddings",
}
# The values of HF-mapped fields that HF `BertModel` computes (the rest: every value).
# hidden_act: not the gated geglu / swiglu; position_embedding: 'learned' = 'absolute'.
HF_VALUES = {
    "hidden_act": ("gelu", "gelu_new", "gelu_tanh", "gelu_pytorch_tanh", "relu"),
    "position_embedding": ("learned",),
}
# Fields that say how the function is computed or stored, not which function: precision,
# kernels, layout, recomputation, one product for q/k/v, and how the parameters were
# first drawn (the exported weights are what they are).
HOW_COMPUTED_FIELDS = ("dtype", "param_dtype", "attention_impl", "scan_layers",
                       "remat_policy", "fused_qkv", "init_scheme")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Every model field; defaults are BERT-base (Devlin et al. 2019).

  Field names follow HF `BertConfig` where one exists (`num_layers` =
  num_hidden_layers, `num_heads` = num_attention_heads,
  `attention_dropout_prob` = attention_probs_dropout_prob).
  """
  vocab_size: int = 30522
  hidden_size: int = 768
  num_layers: int = 12
  num_heads: int = 12
  intermediate_size: int = 3072
  # HIDDEN_ACTS: gelu (exact erf) | gelu_new / gelu_tanh (tanh approx.) | relu | geglu | swiglu
  hidden_act: str = "gelu"
  max_position_embeddings: int = 512
  type_vocab_size: int = 2
  layer_norm_eps: float = 1e-12
  hidden_dropout_prob: float = 0.1
  attention_dropout_prob: float = 0.1
  initializer_range: float = 0.02
  dtype: str = "float32"            # compute dtype: float32 | bfloat16 | float16
  param_dtype: str = "float32"      # parameter (and optimizer state) dtype
  attention_impl: str = "einsum"    # einsum | xla | cudnn (dot_product_attention) | splash (TPU)
  # One nn.scan over the layers (params `encoder/layers/...` with a leading [num_layers]
  # axis): compile time flat in depth. False keeps `encoder/layer_{i}/...` (HF layout);
  # bert_jax/models/params.py converts params between the two.
  scan_layers: bool = False
  remat_policy: str = "none"        # none | full (recompute each layer) | dots (keep matmuls)
  # Compute q, k and v with one [hidden, 3 x hidden] product instead of three; the
  # parameters stay the three query/key/value kernels (checkpoints, HF export unchanged).
  fused_qkv: bool = False
  # Architecture switches (bert_jax/models/bert.py); the defaults are BERT. A value HF
  # BertModel cannot express makes HF/Google export fail naming the field.
  norm_placement: str = "post"      # post (BERT: add & norm) | pre (norm first, final norm)
  norm_type: str = "layernorm"      # layernorm | rmsnorm (scale only)
  position_embedding: str = "learned"  # learned (BERT table) | rotary (RoFormer) | none
  use_bias: bool = True             # biases of q/k/v/o, feed-forward and embedding projection
  tie_word_embeddings: bool = True  # MLM decoder = word embeddings; False: mlm/decoder kernel
  embedding_size: int = 0           # ALBERT factorised embeddings; 0 = hidden_size
  share_layers: str = "none"        # ALBERT cross-layer sharing: none | all | attention | ffn
  init_scheme: str = "bert"         # bert (trunc. normal initializer_range) | depth_scaled
  qk_norm: bool = False             # norm (model.norm_type) on q and k per head (ViT-22B)

  def __post_init__(self):
    for f in dataclasses.fields(self):  # types: ints stay ints, floats floats, ...
      value = getattr(self, f.name)
      kind = f.type if isinstance(f.type, str) else f.type.__name__
      want = {"int": int, "float": float, "bool": bool, "str": str}[kind]
      if want is float and isinstance(value, int) and not isinstance(value, bool):
        object.__setattr__(self, f.name, float(value))
      elif not isinstance(value, want) or (want is int and isinstance(value, bool)):
        _fail(f.name, value, f"a {kind}")
    for name in ("vocab_size", "hidden_size", "num_layers", "num_heads",
                 "intermediate_size", "max_position_embeddings", "type_vocab_size"):
      _require(self, getattr(self, name) > 0, name, "a positive integer")
    _require(self, self.hidden_size % self.num_heads == 0, "num_heads",
             f"a divisor of model.hidden_size={self.hidden_size}")
    _require(self, self.hidden_act in HIDDEN_ACTS, "hidden_act", f"one of {HIDDEN_ACTS}")
    _require(self, self.attention_impl in ATTENTION_IMPLS, "attention_impl",
             f"one of {ATTENTION_IMPLS}")
    _require(self, self.remat_policy in REMAT_POLICIES, "remat_policy",
             f"one of {REMAT_POLICIES}")
    for name in ("dtype", "param_dtype"):
      _require(self, getattr(self, name) in DTYPES, name, f"one of {tuple(DTYPES)}")
    for name in ("hidden_dropout_prob", "attention_dropout_prob"):
      _require(self, 0.0 <= getattr(self, name) < 1.0, name, "a probability in [0, 1)")
    _require(self, self.layer_norm_eps > 0, "layer_norm_eps", "> 0")
    _require(self, self.initializer_range > 0, "initializer_range", "> 0")
    for name, allowed in (("norm_placement", NORM_PLACEMENTS), ("norm_type", NORM_TYPES),
                          ("position_embedding", POSITION_EMBEDDINGS),
                          ("share_layers", SHARE_LAYERS), ("init_scheme", INIT_SCHEMES)):
      _require(self, getattr(self, name) in allowed, name, f"one of {allowed}")
    _require(self, self.embedding_size >= 0, "embedding_size",
             ">= 0 (0 = model.hidden_size)")
    _require(self, self.position_embedding != "rotary" or self.head_dim % 2 == 0,
             "position_embedding", f"not 'rotary' with an odd head size {self.head_dim} "
             "(model.hidden_size / model.num_heads)")

  # ------------------------------------------------------------------ building

  @classmethod
  def from_dict(cls, d: Mapping[str, Any], where: str = "") -> "ModelConfig":
    """From a plain dict (a saved config's `model` section); unknown keys are errors."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
      at = f" in {where}" if where else ""
      raise ValueError(f"config field model.{unknown[0]}{at} is not a model field "
                       f"(unknown: {unknown}; known: {sorted(known)})")
    return cls(**dict(d))

  @classmethod
  def from_config(cls, model_config) -> "ModelConfig":
    """From the ml_collections `model` sub-config (or any mapping)."""
    to_dict = getattr(model_config, "to_dict", None)
    return cls.from_dict(to_dict() if to_dict else dict(model_config))

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  def replace(self, **changes) -> "ModelConfig":
    return dataclasses.replace(self, **changes)

  # ------------------------------------------------------------------- derived

  @property
  def compute_dtype(self):
    return DTYPES[self.dtype]

  @property
  def weights_dtype(self):
    return DTYPES[self.param_dtype]

  @property
  def head_dim(self) -> int:
    return self.hidden_size // self.num_heads

  @property
  def embedding_dim(self) -> int:
    """Width of the embedding tables: `embedding_size`, 0 meaning `hidden_size`."""
    return self.embedding_size or self.hidden_size


def _at_default(cfg: ModelConfig, f: dataclasses.Field) -> bool:
  """Whether field `f` of `cfg` computes what its default does (embedding_size: any
  value that makes the tables hidden_size wide, as 0 does)."""
  if f.name == "embedding_size":
    return cfg.embedding_dim == cfg.hidden_size
  if f.default is not dataclasses.MISSING:
    return getattr(cfg, f.name) == f.default
  if f.default_factory is not dataclasses.MISSING:
    return getattr(cfg, f.name) == f.default_factory()
  return False  # no default: nothing says its value is BERT's


def not_in_hf_bert(cfg: ModelConfig) -> list[str]:
  """'model.<field>=<value>' for each field that keeps `cfg` from being HF `BertModel`.

  Those are the fields neither in `HF_CONFIG_FIELDS` nor in `HOW_COMPUTED_FIELDS` that
  are away from their default, and the HF-mapped fields at a value outside
  `HF_VALUES`. Works on subclasses of `ModelConfig` (fields added later) as well.
  """
  bad = []
  for f in dataclasses.fields(cfg):
    value = getattr(cfg, f.name)
    if f.name in HF_CONFIG_FIELDS:
      ok = value in HF_VALUES.get(f.name, (value,))
    else:
      ok = f.name in HOW_COMPUTED_FIELDS or _at_default(cfg, f)
    if not ok:
      bad.append(f"model.{f.name}={value!r}")
  return bad


def _fail(field: str, value, expected: str):
  raise ValueError(f"config field model.{field}={value!r}: expected {expected}")


def _require(cfg: ModelConfig, ok: bool, field: str, expected: str) -> None:
  if not ok:
    _fail(field, getattr(cfg, field), expected)
