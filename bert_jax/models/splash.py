"""Splash attention (`model.attention_impl=splash`): the Pallas TPU kernel of
`jax.experimental.pallas.ops.tpu.splash_attention`, for BERT's bidirectional attention.

What it computes: softmax(q k^T / sqrt(d)) v per head, each query attending to the keys
of its own segment, from the [batch, length] attention mask the model takes (0 =
padding, 1..k = the examples packed in a row; `bert_jax/data/packing.py`). The kernel
is told this as `SegmentIds`: keys carry the mask, queries the mask with padding
moved to segment 1. So for unpacked rows (a 1/0 mask) it is exactly the `einsum` path:
padding queries see the non-padding keys, as in HF BERT. In packed rows a padding query
sees segment 1 only, where `einsum` lets it see every non-padding key: those rows differ,
and no loss, pooler or later layer ever reads them (keys never include padding).

Where it runs: on TPU the Mosaic kernel; anywhere else (CPU tests, a CPU demo) the
same kernel in Pallas interpret mode, which is exact and slow. Which one is decided by
the platform of the mesh in context (`jax.set_mesh`), so a deviceless TPU compile
(`bert_jax/aot.py`) on a CPU host gets the real kernel.

Sharding: a Pallas call is opaque to XLA's partitioner, so the kernel runs under
`jax.shard_map` over the mesh in context: batch split as the logical rules split
`batch`, heads as they split `heads`; a rule that splits `length` or `kv` is refused
(the kernel needs whole sequences and whole heads). No attention dropout (as for cuDNN):
training with `model.attention_dropout_prob > 0` is refused in `models/bert.py`.

Block sizes: the kernel tiles queries and keys in blocks that are multiples of 128, so
the sequence length must be one (BERT's 128 and 512 are); the largest of 512/256/128
that divides it is used.
"""
from __future__ import annotations

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.experimental.pallas.ops.tpu import splash_attention as splash
from jax.sharding import PartitionSpec as P

BLOCKS = (512, 256, 128)


def block_size(length: int) -> int:
  """The largest kernel block (a multiple of 128) that divides `length`."""
  for b in BLOCKS:
    if length % b == 0:
      return b
  raise ValueError(
      f"model.attention_impl='splash' needs a sequence length that is a multiple of 128 "
      f"(the kernel's block); got {length}: set data.max_seq_length (or the task's "
      "max_seq_length) to a multiple of 128, or use another model.attention_impl")


def segment_ids(attention_mask: jax.Array) -> splash.SegmentIds:
  """[batch, length] mask -> the kernel's query and key segment ids (module docstring)."""
  mask = attention_mask.astype(jnp.int32)
  return splash.SegmentIds(q=jnp.where(mask == 0, 1, mask), kv=mask)


def _kernel_call(q, k, v, seg: splash.SegmentIds, interpret: bool):
  """The kernel over one shard: q, k, v [batch, heads, length, kv] (q already scaled)."""
  heads, length = q.shape[1], q.shape[2]
  b = block_size(length)
  blocks = splash.BlockSizes(block_q=b, block_kv=b, block_kv_compute=b,
                             block_q_dkv=b, block_kv_dkv=b, block_kv_dkv_compute=b,
                             block_q_dq=b, block_kv_dq=b)
  mask = splash.MultiHeadMask([splash.FullMask((length, length))] * heads)
  kernel = splash.make_splash_mha(mask, block_sizes=blocks, head_shards=1,
                                  q_seq_shards=1, interpret=interpret)
  return jax.vmap(kernel)(q, k, v, segment_ids=seg)


def _mesh_axes(logical: str):
  """The mesh axes the logical rules in context map `logical` to (None: unsplit)."""
  return nn.logical_to_mesh_axes((logical,))[0]


def _split(mesh, logical: str, size: int):
  """`logical`'s mesh axes, or None where they do not divide `size` (the batch of 1 that
  model initialisation traces with: the step itself is checked to divide the mesh)."""
  axes = _mesh_axes(logical)
  names = (axes,) if isinstance(axes, str) else tuple(axes or ())
  return axes if size % math.prod(mesh.shape[a] for a in names) == 0 else None


def attention(q: jax.Array, k: jax.Array, v: jax.Array,
              attention_mask: jax.Array) -> jax.Array:
  """Splash attention of q, k, v [batch, length, heads, kv] -> [batch, length, heads, kv].

  Args:
    q: queries (not yet scaled by 1/sqrt(kv)).
    k: keys.
    v: values.
    attention_mask: [batch, length] segment ids, 0 = padding.

  Returns:
    The attention context, in q's dtype.
  """
  head_dim = q.shape[-1]
  block_size(q.shape[1])  # a clear error before the kernel's own
  scale = jnp.asarray(1.0 / head_dim ** 0.5, q.dtype)
  to_heads = lambda x: jnp.swapaxes(x, 1, 2)  # noqa: E731  [b, l, h, d] -> [b, h, l, d]
  qh, kh, vh = to_heads(q * scale), to_heads(k), to_heads(v)
  seg = segment_ids(attention_mask)
  mesh = jax.sharding.get_abstract_mesh()
  platform = (mesh.abstract_device.platform if not mesh.empty and mesh.abstract_device
              else jax.default_backend())
  call = functools.partial(_kernel_call, interpret=platform != "tpu")
  if mesh.empty:
    out = call(qh, kh, vh, seg)
  else:
    for name in ("length", "kv"):
      if _mesh_axes(name) is not None:
        raise ValueError(
            f"model.attention_impl='splash' needs whole sequences and heads on each "
            f"device; the logical rules map {name!r} to mesh axes {_mesh_axes(name)} "
            "(mesh.rules): map it to None or use another model.attention_impl")
    batch, heads = _split(mesh, "batch", q.shape[0]), _split(mesh, "heads", q.shape[2])
    qkv_spec, seg_spec = P(batch, heads, None, None), P(batch, None)
    out = jax.shard_map(call, mesh=mesh,
                        in_specs=(qkv_spec, qkv_spec, qkv_spec,
                                  splash.SegmentIds(q=seg_spec, kv=seg_spec)),
                        out_specs=qkv_spec, check_vma=False)(qh, kh, vh, seg)
  return jnp.swapaxes(out, 1, 2).astype(q.dtype)
