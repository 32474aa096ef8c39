"""The BERT encoder in Flax Linen: embeddings, transformer layers, pooler.

Architecture switches (`ModelConfig` fields, defaults = BERT): norm placement and type,
learned / rotary / no positions, gated feed-forwards, biases, ALBERT's factorised
embeddings and cross-layer sharing, depth-scaled init, q/k norms; each is one branch
below (docs/design_notes.md lists the decisions).

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
HF imports). `bert_jax/models/params.py` converts between the two. Parameters shared
across layers (`model.share_layers`) live once in `encoder/shared/...` in both layouts.
`model.remat_policy` recomputes each layer's activations in the backward pass.
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from bert_jax.config import HIDDEN_ACTS, ModelConfig
from bert_jax.models import splash

Dtype = Any


# `model.hidden_act` -> (activation, gated). Gated feed-forwards (Shazeer 2020, "GLU
# Variants Improve Transformer"): act(x W_gate) * (x W), two input projections.
_ACTIVATIONS = {
    "gelu": (lambda x: jax.nn.gelu(x, approximate=False), False),
    "gelu_new": (lambda x: jax.nn.gelu(x, approximate=True), False),
    "gelu_tanh": (lambda x: jax.nn.gelu(x, approximate=True), False),
    "gelu_pytorch_tanh": (lambda x: jax.nn.gelu(x, approximate=True), False),
    "relu": (jax.nn.relu, False),
    "geglu": (lambda x: jax.nn.gelu(x, approximate=False), True),
    "swiglu": (jax.nn.silu, True),
}
assert set(_ACTIVATIONS) == set(HIDDEN_ACTS), "config.HIDDEN_ACTS and models disagree"


def activation(name: str) -> Callable[[jax.Array], jax.Array]:
  """The activation named by `model.hidden_act` (validated by ModelConfig); for a gated
  feed-forward (geglu, swiglu) the one applied to its gate, which the MLM transform
  also uses."""
  return _ACTIVATIONS[name][0]


def is_gated(name: str) -> bool:
  return _ACTIVATIONS[name][1]


def _normal(cfg, axes: tuple[str, ...], std: float | None = None):
  return nn.with_logical_partitioning(
      nn.initializers.truncated_normal(cfg.initializer_range if std is None else std), axes)


def _zeros(axes: tuple[str, ...]):
  return nn.with_logical_partitioning(nn.initializers.zeros_init(), axes)


def _ones(axes: tuple[str, ...]):
  return nn.with_logical_partitioning(nn.initializers.ones_init(), axes)


def residual_std(cfg) -> float | None:
  """Init std of the projections that write into the residual stream.

  'depth_scaled' divides it by sqrt(2 * num_layers), the number of residual branches:
  GPT-2 (Radford et al. 2019, section 2.3) and Megatron-LM's `scaled_init_method_normal`
  (Shoeybi et al. 2019). 'bert': None, i.e. `model.initializer_range` as every kernel.
  """
  if cfg.init_scheme == "depth_scaled":
    return cfg.initializer_range / (2 * cfg.num_layers) ** 0.5
  return None


def layer_norm(cfg, name: str) -> nn.Module:
  """LayerNorm or RMSNorm (Zhang & Sennrich 2019: scale, no bias) by `model.norm_type`.

  `name` ends in 'norm': the weight-decay rule (`models/params.py`) exempts norms by
  their module name.
  """
  assert name.endswith("norm"), f"norm module {name!r}: its name must end in 'norm'"
  # Statistics are computed in float32 by flax whatever the compute dtype.
  common = dict(epsilon=cfg.layer_norm_eps, dtype=cfg.compute_dtype,
                param_dtype=cfg.weights_dtype, scale_init=_ones(("norm",)),
                name=name)
  if cfg.norm_type == "rmsnorm":
    return nn.RMSNorm(**common)
  return nn.LayerNorm(bias_init=_zeros(("norm",)), **common)


class Dense(nn.Module):
  """y = x . kernel + bias over the last `len(kernel_axes) - len(features)` axes of x.

  Unlike `nn.DenseGeneral`, the kernel is created in its final shape (for example
  [embed, heads, kv]), so its logical partitioning names every dimension.
  """
  cfg: ModelConfig
  features: tuple[int, ...]
  kernel_axes: tuple[str | None, ...]
  use_bias: bool = True
  std: float | None = None   # kernel init std; None = model.initializer_range

  @nn.compact
  def __call__(self, x, weights_only: bool = False):
    """y; or with `weights_only` (kernel in the compute dtype, bias or None), for a
    caller that applies several Dense layers' weights as one product (`fused_dense`)."""
    n_out = len(self.features)
    n_in = len(self.kernel_axes) - n_out
    pdt = self.cfg.weights_dtype
    kernel = self.param("kernel", _normal(self.cfg, self.kernel_axes, self.std),
                        tuple(x.shape[-n_in:]) + self.features, pdt)
    bias = (self.param("bias", _zeros(self.kernel_axes[n_in:]), self.features, pdt)
            if self.use_bias else None)
    x, kernel = nn.dtypes.promote_dtype(x, kernel, dtype=self.cfg.compute_dtype)
    if weights_only:
      return kernel, bias
    contract = (tuple(range(x.ndim - n_in, x.ndim)), tuple(range(n_in)))
    y = jax.lax.dot_general(x, kernel, (contract, ((), ())))
    return y if bias is None else add_bias(y, bias)


def add_bias(y: jax.Array, bias: jax.Array) -> jax.Array:
  """y + bias, added at the bias's (parameter) precision and cast back to y's dtype.

  So the bias gradient, a sum over every batch token, is reduced in float32: adding
  in bfloat16 made it a bfloat16 reduce_sum (XLA accumulates in the operand type).
  """
  return (y.astype(bias.dtype) + bias).astype(y.dtype)


def dense(cfg, features, axes: tuple[str | None, ...], name: str, use_bias: bool = True,
          std: float | None = None) -> Dense:
  """A `Dense` to `features` (int or tuple) whose kernel axes are `axes` (in then out)."""
  features = (features,) if isinstance(features, int) else tuple(features)
  return Dense(cfg, features, tuple(axes), use_bias, std, name=name)


def fused_dense(cfg, x, names: tuple[str, ...], features: tuple[int, ...],
                axes: tuple[str | None, ...], use_bias: bool) -> list[jax.Array]:
  """`[dense(cfg, features, axes, n, use_bias)(x) for n in names]` as ONE product.

  Same parameters (names, shapes, init), so checkpoints and converters see no
  difference: the kernels are stacked on a new axis after the input one ([embed,
  len(names), *features]) for a single GEMM whose output is split again. x's last
  axis is the only contracted one.
  """
  weights = [dense(cfg, features, axes, n, use_bias)(x, weights_only=True) for n in names]
  kernel = jnp.stack([w for w, _ in weights], axis=1)        # [in, n, *features]
  y = jax.lax.dot_general(x.astype(kernel.dtype), kernel, (((x.ndim - 1,), (0,)), ((), ())))
  if use_bias:
    y = add_bias(y, jnp.stack([b for _, b in weights]))     # [..., n, *features]
  axis = x.ndim - 1
  return [jax.lax.index_in_dim(y, i, axis, keepdims=False) for i in range(len(names))]


class Embeddings(nn.Module):
  """Word + position + token-type embeddings, LayerNorm, dropout.

  `model.position_embedding` other than 'learned' drops the position table (rotary
  positions act in attention). `model.embedding_size` smaller than the hidden size
  factorises the tables (ALBERT, Lan et al. 2020): [vocab, embedding_size] tables,
  then a `projection` to the hidden size after the norm.

  The rows are looked up and summed at the tables' own precision (`model.param_dtype`),
  and the LayerNorm casts to the compute dtype, as HF BERT under autocast does. So the
  backward pass accumulates the tables' gradients in float32: looking up in bfloat16
  made them bfloat16 scatter-adds, 32k updates per batch of 256 x 128 summed in an
  8-bit mantissa (and, on GPUs, contended bf16 atomics). Token types are one-hot
  (as google-research/bert `embedding_postprocessor`: "always faster for a small
  vocabulary"), whose gradient is a reduction rather than a scatter into two rows;
  default positions are a slice of the table, not a gather.
  """
  cfg: ModelConfig

  def setup(self):
    cfg = self.cfg
    pdt, width = cfg.weights_dtype, cfg.embedding_dim
    embed = lambda rows, axes: nn.Embed(  # noqa: E731
        rows, width, param_dtype=pdt, dtype=cfg.compute_dtype,
        embedding_init=_normal(cfg, axes))
    self.word_embeddings = embed(cfg.vocab_size, ("vocab", "embed"))
    if cfg.position_embedding == "learned":
      self.position_embeddings = embed(cfg.max_position_embeddings, ("position", "embed"))
    self.token_type_embeddings = embed(cfg.type_vocab_size, ("type_vocab", "embed"))
    self.layer_norm = layer_norm(cfg, "layer_norm")
    self.dropout = nn.Dropout(cfg.hidden_dropout_prob)
    if width != cfg.hidden_size:
      self.projection = dense(cfg, cfg.hidden_size, (None, "embed"), "projection",
                              cfg.use_bias)

  def __call__(self, input_ids, token_type_ids, position_ids, deterministic: bool):
    """`position_ids` [batch, length], or None for 0..length-1."""
    x = jnp.take(self.word_embeddings.embedding, input_ids, axis=0)
    if self.cfg.position_embedding == "learned":
      length = input_ids.shape[-1]
      if length > self.cfg.max_position_embeddings:
        raise ValueError(
            f"sequence length {length} exceeds model.max_position_embeddings="
            f"{self.cfg.max_position_embeddings}")
      table = self.position_embeddings.embedding
      x = x + (table[None, :length] if position_ids is None
               else jnp.take(table, position_ids, axis=0))
    x = x + one_hot_lookup(self.token_type_embeddings.embedding, token_type_ids)
    x = nn.with_logical_constraint(self.layer_norm(x), ("batch", "length", "embed"))
    x = self.dropout(x, deterministic=deterministic)
    if self.cfg.embedding_dim != self.cfg.hidden_size:
      x = nn.with_logical_constraint(self.projection(x), ("batch", "length", "embed"))
    return x

  def attend(self, x):
    """Scores against the word-embedding table (the tied MLM decoder)."""
    return self.word_embeddings.attend(pin_to_embed(x))


def one_hot_lookup(table: jax.Array, ids: jax.Array) -> jax.Array:
  """table[ids] as sum_k one_hot(ids)_k * table[k]: exact (every other term is 0), and
  its gradient is a reduction per row instead of a scatter; for tables of a few rows
  (token types). Elementwise rather than a matmul, so no TF32/bf16 matmul passes and
  no FLOPs that MFU would have to leave out. An id outside the table gives NaN rows,
  as `jnp.take` does for the word table, so bad ids surface as a NaN loss."""
  one_hot = jax.nn.one_hot(ids, table.shape[0], dtype=table.dtype)   # [..., rows]
  rows = jnp.sum(one_hot[..., None] * table, axis=-2)
  valid = (ids >= 0) & (ids < table.shape[0])
  return jnp.where(valid[..., None], rows, jnp.nan)


def pin_to_embed(x):
  """Pins x to [batch, ..., embed] sharding before a [embed, vocab] product: without it
  XLA (jax 0.10, Shardy) computed wrong gradients on meshes with data, fsdp and tensor
  all > 1 (tests/test_parallel.py, mesh (2, 2, 2))."""
  return nn.with_logical_constraint(x, ("batch",) + (None,) * (x.ndim - 2) + ("embed",))


def attention_keep(attention_mask: jax.Array) -> jax.Array:
  """[batch, length] segment ids -> boolean [batch, 1, query, key]: may query see key.

  0 marks padding; 1..k the k examples packed in a row (`bert_jax/data/packing.py`).
  A query attends to the non-padding keys of its own segment; a padding query to
  every non-padding key. A 1/0 mask is the one-segment case: every query sees the
  non-padding keys, as HF BERT.
  """
  key = attention_mask[:, None, None, :]
  query = attention_mask[:, None, :, None]
  return (key != 0) & ((query == key) | (query == 0))


def attention_bias(attention_mask: jax.Array, dtype: Dtype) -> jax.Array:
  """[batch, length] segment ids -> additive [batch, 1, query, key] bias (`attention_keep`)."""
  return jnp.where(attention_keep(attention_mask), jnp.zeros((), dtype),
                   jnp.finfo(dtype).min)


def rotary(x: jax.Array, positions: jax.Array, base: float = 10000.0) -> jax.Array:
  """Rotary position embedding (RoFormer, Su et al. 2021) of [batch, length, heads, kv].

  Pairs dimension i with i + kv/2 (the GPT-NeoX / HF `rotate_half` convention) and
  rotates the pair by positions * base ** (-2i / kv). positions: [batch or 1, length].
  """
  half = x.shape[-1] // 2
  freq = base ** (-jnp.arange(half, dtype=jnp.float32) / half)          # [half]
  angle = positions.astype(jnp.float32)[..., None, None] * freq            # [b, l, 1, half]
  sin, cos = jnp.sin(angle), jnp.cos(angle)
  x1, x2 = x[..., :half].astype(jnp.float32), x[..., half:].astype(jnp.float32)
  return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1).astype(x.dtype)


class SelfAttention(nn.Module):
  """Multi-head self-attention; q/k/v kernels are [embed, heads, kv]."""
  cfg: ModelConfig

  @nn.compact
  def __call__(self, x, mask, positions, deterministic: bool):
    cfg = self.cfg
    head_dim = cfg.head_dim
    shape = (cfg.num_heads, head_dim)
    axes = ("embed", "heads", "kv")
    if cfg.fused_qkv:  # one [embed, 3 x heads x kv] product (same parameters)
      q, k, v = fused_dense(cfg, x, ("query", "key", "value"), shape, axes, cfg.use_bias)
    else:
      q = dense(cfg, shape, axes, "query", cfg.use_bias)(x)  # [batch, length, heads, kv]
      k = dense(cfg, shape, axes, "key", cfg.use_bias)(x)
      v = dense(cfg, shape, axes, "value", cfg.use_bias)(x)
    if cfg.qk_norm:  # over each head's kv (Dehghani et al. 2023, ViT-22B; OLMo 2)
      q, k = layer_norm(cfg, "query_norm")(q), layer_norm(cfg, "key_norm")(k)
    if cfg.position_embedding == "rotary":
      q, k = rotary(q, positions), rotary(k, positions)
    q = nn.with_logical_constraint(q, ("batch", "length", "heads", "kv"))
    k = nn.with_logical_constraint(k, ("batch", "length", "heads", "kv"))
    v = nn.with_logical_constraint(v, ("batch", "length", "heads", "kv"))
    if cfg.attention_impl != "einsum" and not deterministic and cfg.attention_dropout_prob > 0:
      raise ValueError(
          f"model.attention_impl={cfg.attention_impl!r} has no attention dropout; "
          "set model.attention_dropout_prob=0.0 or use attention_impl='einsum'")
    if cfg.attention_impl == "einsum":
      scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) / jnp.sqrt(head_dim).astype(q.dtype)
      scores = scores.astype(jnp.float32) + attention_bias(mask, jnp.float32)  # float32
      probs = jax.nn.softmax(scores, axis=-1).astype(q.dtype)
      probs = nn.Dropout(cfg.attention_dropout_prob)(probs, deterministic=deterministic)
      context = jnp.einsum("bhqk,bkhd->bqhd", probs, v)
    elif cfg.attention_impl in ("xla", "cudnn"):
      # A boolean mask rather than the additive bias: cuDNN's fused kernel takes it
      # natively (and skips fully masked blocks).
      context = jax.nn.dot_product_attention(
          q, k, v, mask=attention_keep(mask), implementation=cfg.attention_impl)
    elif cfg.attention_impl == "splash":  # the Pallas TPU kernel (models/splash.py)
      context = splash.attention(q, k, v, mask)
    else:
      raise AssertionError(cfg.attention_impl)  # ModelConfig validated it
    context = nn.with_logical_constraint(context, ("batch", "length", "heads", "kv"))
    return dense(cfg, cfg.hidden_size, ("heads", "kv", "embed"), "output", cfg.use_bias,
                 residual_std(cfg))(context)


def _residual(cfg, x, sublayer: Callable, norm_name: str, deterministic: bool):
  """x + sublayer, normed after (post-LN, BERT) or before (pre-LN) by `model.norm_placement`.

  Called from a compact module, whose child the norm becomes.
  """
  drop = nn.Dropout(cfg.hidden_dropout_prob)
  norm = layer_norm(cfg, norm_name)
  if cfg.norm_placement == "pre":
    return x + drop(sublayer(norm(x)), deterministic=deterministic)
  return norm(x + drop(sublayer(x), deterministic=deterministic))


def attention_sublayer(cfg, x, mask, positions, deterministic: bool):
  """Self-attention with its residual and norm ('attention', 'attention_layer_norm')."""
  attend = lambda h: SelfAttention(cfg, name="attention")(h, mask, positions,  # noqa: E731
                                                          deterministic)
  return _residual(cfg, x, attend, "attention_layer_norm", deterministic)


def ffn_sublayer(cfg, x, mask, positions, deterministic: bool):
  """Feed-forward with its residual and norm ('intermediate', [gated: 'intermediate_gate'],
  'output', 'output_layer_norm')."""
  del mask, positions

  def ffn(h):
    up = dense(cfg, cfg.intermediate_size, ("embed", "mlp"), "intermediate", cfg.use_bias)
    act = activation(cfg.hidden_act)
    if is_gated(cfg.hidden_act):
      gate = dense(cfg, cfg.intermediate_size, ("embed", "mlp"), "intermediate_gate",
                   cfg.use_bias)
      y = act(gate(h)) * up(h)
    else:
      y = act(up(h))
    y = nn.with_logical_constraint(y, ("batch", "length", "mlp"))
    return dense(cfg, cfg.hidden_size, ("mlp", "embed"), "output", cfg.use_bias,
                 residual_std(cfg))(y)
  return _residual(cfg, x, ffn, "output_layer_norm", deterministic)


SUBLAYERS = {"attention": attention_sublayer, "ffn": ffn_sublayer}
# `model.share_layers` -> the sublayers one set of parameters serves in every layer
# (ALBERT, Lan et al. 2020: cross-layer sharing of all, attention or feed-forward).
SHARED_SUBLAYERS = {"none": (), "all": ("attention", "ffn"), "attention": ("attention",),
                    "ffn": ("ffn",)}


class SharedSublayers(nn.Module):
  """The sublayers in `parts` with their own parameters (the shared ones, applied
  functionally inside every layer: an `nn.scan` cannot broadcast part of a layer)."""
  cfg: ModelConfig
  parts: tuple[str, ...]

  @nn.compact
  def __call__(self, x, mask, positions, deterministic: bool):
    for part in self.parts:
      x = SUBLAYERS[part](self.cfg, x, mask, positions, deterministic)
    return x


class TransformerLayer(nn.Module):
  """One BERT layer: attention -> add & norm -> FFN -> add & norm (post-LN), or the
  pre-LN order. Sublayers named by `model.share_layers` use the encoder's `shared`
  parameters instead of their own.

  `scan_carry=True` returns `(x, None)`, the (carry, output) pair `nn.scan` expects.
  """
  cfg: ModelConfig
  scan_carry: bool = False

  @nn.compact
  def __call__(self, x, mask, positions, shared, deterministic: bool):
    cfg = self.cfg
    shared_parts = SHARED_SUBLAYERS[cfg.share_layers]
    for part in ("attention", "ffn"):
      if part in shared_parts:
        rngs = {} if deterministic else {"dropout": self.make_rng("dropout")}
        x = SharedSublayers(cfg, (part,), parent=None).apply(
            {"params": shared}, x, mask, positions, deterministic, rngs=rngs)
      else:
        x = SUBLAYERS[part](cfg, x, mask, positions, deterministic)
    x = nn.with_logical_constraint(x, ("batch", "length", "embed"))
    return (x, None) if self.scan_carry else x


# `model.remat_policy` -> jax.checkpoint policy ("none" = no remat at all).
REMAT_POLICIES = {
    "full": None,  # save nothing: recompute the whole layer in the backward pass
    "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,  # keep matmul outputs
}


def layer_class(cfg, scan_carry: bool = False):
  """TransformerLayer, wrapped in `nn.remat` as `model.remat_policy` asks."""
  if cfg.remat_policy == "none":
    return TransformerLayer
  # static_argnums counts `self`: (self, x, mask, positions, shared, deterministic).
  return nn.remat(TransformerLayer, policy=REMAT_POLICIES[cfg.remat_policy],
                  static_argnums=(5,), prevent_cse=not scan_carry)


class Encoder(nn.Module):
  """`num_layers` transformer layers: layer_0 ... layer_{N-1}, or one scanned `layers`;
  parameters shared across layers (`model.share_layers`) in `shared`; pre-LN ends
  with `final_layer_norm`."""
  cfg: ModelConfig

  @nn.compact
  def __call__(self, x, mask, positions, deterministic: bool):
    cfg = self.cfg
    shared = None
    if SHARED_SUBLAYERS[cfg.share_layers]:
      block = SharedSublayers(cfg, SHARED_SUBLAYERS[cfg.share_layers])
      shared = self.param("shared", lambda rng: block.init(
          {"params": rng}, x, mask, positions, True)["params"])
    if cfg.scan_layers:
      scanned = nn.scan(
          layer_class(cfg, scan_carry=True),
          variable_axes={"params": 0}, split_rngs={"params": True, "dropout": True},
          in_axes=(nn.broadcast,) * 4, length=cfg.num_layers,
          metadata_params={nn.PARTITION_NAME: "layers"})
      x, _ = scanned(cfg, scan_carry=True, name="layers")(x, mask, positions, shared,
                                                          deterministic)
    else:
      layer = layer_class(cfg)
      for i in range(cfg.num_layers):
        x = layer(cfg, name=f"layer_{i}")(x, mask, positions, shared, deterministic)
    if cfg.norm_placement == "pre":
      x = layer_norm(cfg, "final_layer_norm")(x)
    return x


class BertModel(nn.Module):
  """Embeddings -> encoder -> pooler. Returns sequence and pooled outputs."""
  cfg: ModelConfig

  def setup(self):
    self.embeddings = Embeddings(self.cfg)
    self.encoder = Encoder(self.cfg)
    self.pooler = dense(self.cfg, self.cfg.hidden_size, ("embed", "mlp"), "pooler")

  def __call__(self, input_ids, token_type_ids=None, attention_mask=None,
               deterministic: bool = True, position_ids=None):
    """`attention_mask` holds 1/0 or segment ids (`attention_keep`); `position_ids`
    [batch, length] (packed rows: restarting at each segment) default to 0..length-1."""
    if token_type_ids is None:
      token_type_ids = jnp.zeros_like(input_ids)
    if attention_mask is None:
      attention_mask = jnp.ones_like(input_ids)
    positions = position_ids
    if positions is None:
      positions = jnp.arange(input_ids.shape[-1])[None, :]   # [1, length]
    x = self.embeddings(input_ids, token_type_ids, position_ids, deterministic)
    sequence_output = self.encoder(x, attention_mask, positions, deterministic)
    pooled_output = jnp.tanh(self.pooler(sequence_output[:, 0]))
    return {"sequence_output": sequence_output, "pooled_output": pooled_output}
