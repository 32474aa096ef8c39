"""The BERT encoder in Flax Linen: embeddings, post-LN transformer layers, pooler.

The modules are driven by a `ModelConfig` (`bert_jax/config.py`, built once from the
`model` sub-config); an architecture ablation is one field there and one local branch
here, never a copied module. Every parameter carries logical axis names (`nn.with_logical_partitioning`) and
the main activations carry logical constraints, so the same code shards over any mesh
once `bert_jax/parallel.py` maps the names to mesh axes. Without a mesh the
annotations are inert.

Logical axis names:
  batch, length            activations
  vocab, embed, mlp        embedding table, hidden size, feed-forward size
  heads, kv                attention heads, size per head
  type_vocab, position     token-type and position embedding rows
  norm                     LayerNorm scale and bias
  layers                   the stacked-layer axis of a scanned encoder

With `model.scan_layers` the encoder runs one `nn.scan` over a single layer whose
parameters carry a leading [num_layers] axis (`encoder/layers/...`), so compile time
stays flat in depth; unscanned, the layers are `encoder/layer_{i}/...` (the layout of
HF imports). `bert_jax/models/params.py` converts between the two.
`model.remat_policy` recomputes each layer's activations in the backward pass.
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from bert_jax.config import HIDDEN_ACTS, ModelConfig

Dtype = Any


_ACTIVATIONS = {
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "relu": jax.nn.relu,
}
assert set(_ACTIVATIONS) == set(HIDDEN_ACTS), "config.HIDDEN_ACTS and models disagree"


def activation(name: str) -> Callable[[jax.Array], jax.Array]:
  """The feed-forward activation named by `model.hidden_act` (validated by ModelConfig)."""
  return _ACTIVATIONS[name]


def _normal(cfg, axes: tuple[str, ...]):
  return nn.with_logical_partitioning(
      nn.initializers.truncated_normal(cfg.initializer_range), axes)


def _zeros(axes: tuple[str, ...]):
  return nn.with_logical_partitioning(nn.initializers.zeros_init(), axes)


def _ones(axes: tuple[str, ...]):
  return nn.with_logical_partitioning(nn.initializers.ones_init(), axes)


def layer_norm(cfg: ModelConfig, name: str) -> nn.LayerNorm:
  # Statistics are computed in float32 by flax whatever the compute dtype.
  return nn.LayerNorm(
      epsilon=cfg.layer_norm_eps, dtype=cfg.compute_dtype,
      param_dtype=cfg.weights_dtype, scale_init=_ones(("norm",)),
      bias_init=_zeros(("norm",)), name=name)


class Dense(nn.Module):
  """y = x . kernel + bias over the last `len(kernel_axes) - len(features)` axes of x.

  Unlike `nn.DenseGeneral`, the kernel is created in its final shape (for example
  [embed, heads, kv]), so its logical partitioning names every dimension.
  """
  cfg: ModelConfig
  features: tuple[int, ...]
  kernel_axes: tuple[str, ...]

  @nn.compact
  def __call__(self, x):
    n_out = len(self.features)
    n_in = len(self.kernel_axes) - n_out
    pdt = self.cfg.weights_dtype
    kernel = self.param("kernel", _normal(self.cfg, self.kernel_axes),
                        tuple(x.shape[-n_in:]) + self.features, pdt)
    bias = self.param("bias", _zeros(self.kernel_axes[n_in:]), self.features, pdt)
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias,
                                              dtype=self.cfg.compute_dtype)
    contract = (tuple(range(x.ndim - n_in, x.ndim)), tuple(range(n_in)))
    return jax.lax.dot_general(x, kernel, (contract, ((), ()))) + bias


def dense(cfg: ModelConfig, features, axes: tuple[str, ...], name: str) -> Dense:
  """A `Dense` to `features` (int or tuple) whose kernel axes are `axes` (in then out)."""
  features = (features,) if isinstance(features, int) else tuple(features)
  return Dense(cfg, features, tuple(axes), name=name)


class Embeddings(nn.Module):
  """Word + position + token-type embeddings, LayerNorm, dropout."""
  cfg: ModelConfig

  def setup(self):
    cfg = self.cfg
    pdt, cdt = cfg.weights_dtype, cfg.compute_dtype
    self.word_embeddings = nn.Embed(
        cfg.vocab_size, cfg.hidden_size, param_dtype=pdt,
        dtype=cdt, embedding_init=_normal(cfg, ("vocab", "embed")))
    self.position_embeddings = nn.Embed(
        cfg.max_position_embeddings, cfg.hidden_size, param_dtype=pdt,
        dtype=cdt, embedding_init=_normal(cfg, ("position", "embed")))
    self.token_type_embeddings = nn.Embed(
        cfg.type_vocab_size, cfg.hidden_size, param_dtype=pdt,
        dtype=cdt, embedding_init=_normal(cfg, ("type_vocab", "embed")))
    self.layer_norm = layer_norm(cfg, "layer_norm")
    self.dropout = nn.Dropout(cfg.hidden_dropout_prob)

  def __call__(self, input_ids, token_type_ids, deterministic: bool):
    length = input_ids.shape[-1]
    if length > self.cfg.max_position_embeddings:
      raise ValueError(
          f"sequence length {length} exceeds model.max_position_embeddings="
          f"{self.cfg.max_position_embeddings}")
    x = (self.word_embeddings(input_ids)
         + self.position_embeddings(jnp.arange(length)[None, :])
         + self.token_type_embeddings(token_type_ids))
    x = self.layer_norm(x)
    x = nn.with_logical_constraint(x, ("batch", "length", "embed"))
    return self.dropout(x, deterministic=deterministic)

  def attend(self, x):
    """Scores against the word-embedding table (the tied MLM decoder)."""
    # Pin x to [batch, ..., embed] sharding before the [vocab, embed] table: without it
    # XLA (jax 0.10, Shardy) computed wrong gradients on meshes with data, fsdp and
    # tensor all > 1 (tests/test_parallel.py, mesh (2, 2, 2)).
    x = nn.with_logical_constraint(x, ("batch",) + (None,) * (x.ndim - 2) + ("embed",))
    return self.word_embeddings.attend(x)


def attention_bias(attention_mask: jax.Array, dtype: Dtype) -> jax.Array:
  """[batch, length] 1/0 mask -> additive [batch, 1, 1, length] bias (as HF BERT)."""
  keep = attention_mask[:, None, None, :] != 0
  return jnp.where(keep, jnp.zeros((), dtype), jnp.finfo(dtype).min)


class SelfAttention(nn.Module):
  """Multi-head self-attention; q/k/v kernels are [embed, heads, kv]."""
  cfg: ModelConfig

  @nn.compact
  def __call__(self, x, bias, deterministic: bool):
    cfg = self.cfg
    head_dim = cfg.head_dim
    shape = (cfg.num_heads, head_dim)
    axes = ("embed", "heads", "kv")
    q = dense(cfg, shape, axes, "query")(x)  # [batch, length, heads, kv]
    k = dense(cfg, shape, axes, "key")(x)
    v = dense(cfg, shape, axes, "value")(x)
    q = nn.with_logical_constraint(q, ("batch", "length", "heads", "kv"))
    k = nn.with_logical_constraint(k, ("batch", "length", "heads", "kv"))
    v = nn.with_logical_constraint(v, ("batch", "length", "heads", "kv"))
    if cfg.attention_impl == "einsum":
      scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) / jnp.sqrt(head_dim).astype(q.dtype)
      scores = scores.astype(jnp.float32) + bias  # softmax in float32
      probs = jax.nn.softmax(scores, axis=-1).astype(q.dtype)
      probs = nn.Dropout(cfg.attention_dropout_prob)(probs, deterministic=deterministic)
      context = jnp.einsum("bhqk,bkhd->bqhd", probs, v)
    elif cfg.attention_impl in ("xla", "cudnn"):
      if not deterministic and cfg.attention_dropout_prob > 0:
        raise ValueError(
            f"model.attention_impl={cfg.attention_impl!r} has no attention dropout; "
            "set model.attention_dropout_prob=0.0 or use attention_impl='einsum'")
      # A boolean padding mask rather than the additive bias: cuDNN's fused kernel
      # takes it natively (and skips fully masked blocks).
      keep = bias > jnp.finfo(jnp.float32).min / 2   # [batch, 1, 1, length]
      keep = jnp.broadcast_to(keep, (keep.shape[0], 1, q.shape[1], k.shape[1]))
      context = jax.nn.dot_product_attention(
          q, k, v, mask=keep, implementation=cfg.attention_impl)
    else:
      raise AssertionError(cfg.attention_impl)  # ModelConfig validated it
    context = nn.with_logical_constraint(context, ("batch", "length", "heads", "kv"))
    return dense(cfg, cfg.hidden_size, ("heads", "kv", "embed"), "output")(context)


class TransformerLayer(nn.Module):
  """One post-LN BERT layer: attention -> add & norm -> FFN -> add & norm.

  `scan_carry=True` returns `(x, None)`, the (carry, output) pair `nn.scan` expects.
  """
  cfg: ModelConfig
  scan_carry: bool = False

  @nn.compact
  def __call__(self, x, bias, deterministic: bool):
    cfg = self.cfg
    drop = nn.Dropout(cfg.hidden_dropout_prob)
    h = SelfAttention(cfg, name="attention")(x, bias, deterministic)
    x = layer_norm(cfg, "attention_layer_norm")(x + drop(h, deterministic=deterministic))
    h = dense(cfg, cfg.intermediate_size, ("embed", "mlp"), "intermediate")(x)
    h = nn.with_logical_constraint(h, ("batch", "length", "mlp"))
    h = activation(cfg.hidden_act)(h)
    h = dense(cfg, cfg.hidden_size, ("mlp", "embed"), "output")(h)
    x = layer_norm(cfg, "output_layer_norm")(x + drop(h, deterministic=deterministic))
    x = nn.with_logical_constraint(x, ("batch", "length", "embed"))
    return (x, None) if self.scan_carry else x


# `model.remat_policy` -> jax.checkpoint policy ("none" = no remat at all).
REMAT_POLICIES = {
    "full": None,  # save nothing: recompute the whole layer in the backward pass
    "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,  # keep matmul outputs
}


def layer_class(cfg: ModelConfig, scan_carry: bool = False):
  """TransformerLayer, wrapped in `nn.remat` as `model.remat_policy` asks."""
  if cfg.remat_policy == "none":
    return TransformerLayer
  # static_argnums counts `self`: (self, x, bias, deterministic).
  return nn.remat(TransformerLayer, policy=REMAT_POLICIES[cfg.remat_policy],
                  static_argnums=(3,), prevent_cse=not scan_carry)


class Encoder(nn.Module):
  """`num_layers` transformer layers: layer_0 ... layer_{N-1}, or one scanned `layers`."""
  cfg: ModelConfig

  @nn.compact
  def __call__(self, x, bias, deterministic: bool):
    cfg = self.cfg
    if cfg.scan_layers:
      scanned = nn.scan(
          layer_class(cfg, scan_carry=True),
          variable_axes={"params": 0}, split_rngs={"params": True, "dropout": True},
          in_axes=(nn.broadcast, nn.broadcast), length=cfg.num_layers,
          metadata_params={nn.PARTITION_NAME: "layers"})
      x, _ = scanned(cfg, scan_carry=True, name="layers")(x, bias, deterministic)
      return x
    layer = layer_class(cfg)
    for i in range(cfg.num_layers):
      x = layer(cfg, name=f"layer_{i}")(x, bias, deterministic)
    return x


class BertModel(nn.Module):
  """Embeddings -> encoder -> pooler. Returns sequence and pooled outputs."""
  cfg: ModelConfig

  def setup(self):
    self.embeddings = Embeddings(self.cfg)
    self.encoder = Encoder(self.cfg)
    self.pooler = dense(self.cfg, self.cfg.hidden_size, ("embed", "mlp"), "pooler")

  def __call__(self, input_ids, token_type_ids=None, attention_mask=None,
               deterministic: bool = True):
    if token_type_ids is None:
      token_type_ids = jnp.zeros_like(input_ids)
    if attention_mask is None:
      attention_mask = jnp.ones_like(input_ids)
    x = self.embeddings(input_ids, token_type_ids, deterministic)
    bias = attention_bias(attention_mask, jnp.float32)
    sequence_output = self.encoder(x, bias, deterministic)
    pooled_output = jnp.tanh(self.pooler(sequence_output[:, 0]))
    return {"sequence_output": sequence_output, "pooled_output": pooled_output}
