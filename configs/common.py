"""Pieces shared by every config: the model sizes table and the mesh defaults.

Sizes: tiny/mini/small/medium from Turc et al. 2019 ("Well-Read Students Learn
Better", the 24 small BERTs); base/large from Devlin et al. 2019. Heads = hidden/64 and
intermediate = 4*hidden throughout, as in both papers.
"""

import ml_collections

# name: (num_layers, hidden_size, num_heads)
SIZES = {
    "tiny": (2, 128, 2),
    "mini": (4, 256, 4),
    "small": (4, 512, 8),
    "medium": (8, 512, 8),
    "base": (12, 768, 12),
    "large": (24, 1024, 16),
}


def parse_arg(arg: str | None, **defaults) -> ml_collections.ConfigDict:
  """Parses 'tiny,seq=128,vocab=8192' into {'size': 'tiny', 'seq': 128, ...}.

  A bare word is the size; `key=value` pairs override `defaults` (values are cast to
  the default's type). Unknown keys are an error naming the key.
  """
  out = dict(defaults)
  for part in filter(None, (arg or "").split(",")):
    if "=" not in part:
      key, value = "size", part
    else:
      key, value = part.split("=", 1)
    if key not in out:
      raise ValueError(f"config argument {key!r} is not one of {sorted(out)}")
    out[key] = type(out[key])(value) if out[key] is not None else value
  if out.get("size") not in SIZES:
    raise ValueError(f"config argument size={out.get('size')!r} is not one of {list(SIZES)}")
  return ml_collections.ConfigDict(out)


def model_config(size: str, vocab_size: int = 30522) -> ml_collections.ConfigDict:
  """The `model` sub-config. Field names follow HF `BertConfig` where one exists."""
  num_layers, hidden, heads = SIZES[size]
  m = ml_collections.ConfigDict()
  m.vocab_size = vocab_size
  m.hidden_size = hidden
  m.num_layers = num_layers
  m.num_heads = heads
  m.intermediate_size = 4 * hidden
  m.hidden_act = "gelu"              # gelu (exact erf) | gelu_new / gelu_tanh | relu
  m.max_position_embeddings = 512
  m.type_vocab_size = 2
  m.layer_norm_eps = 1e-12
  m.hidden_dropout_prob = 0.1
  m.attention_dropout_prob = 0.1
  m.initializer_range = 0.02
  m.dtype = "float32"                # compute dtype: float32 | bfloat16
  m.param_dtype = "float32"          # parameter (and optimizer state) dtype
  m.attention_impl = "einsum"        # einsum | xla | cudnn (jax.nn.dot_product_attention)
  return m


def mesh_config() -> ml_collections.ConfigDict:
  """Device mesh and logical-axis rules (see bert_jax/parallel.py).

  mesh_shape: sizes of the ('data', 'fsdp', 'tensor') axes; -1 = the rest of devices.
  The default is pure data parallelism over every device.
  """
  c = ml_collections.ConfigDict()
  c.axes = ("data", "fsdp", "tensor")
  c.shape = (-1, 1, 1)
  return c
