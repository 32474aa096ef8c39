"""Converts parameters between the unscanned and scanned encoder layouts.

Unscanned (`model.scan_layers=False`, the layout of HF imports):
    .../encoder/layer_0/attention/query/kernel      [embed, heads, kv]
    .../encoder/layer_1/...
Scanned (`model.scan_layers=True`, one `nn.scan` over the layers):
    .../encoder/layers/attention/query/kernel       [num_layers, embed, heads, kv]

Both functions walk any nested dict (a params tree, or a checkpoint's state dict with
params and optimizer moments), so an unscanned checkpoint restores into a scanned run
and back. They work on numpy or jax arrays and never copy to one device explicitly.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

import jax
import jax.numpy as jnp

_LAYER = re.compile(r"layer_(\d+)$")


def _layer_indices(tree: Mapping) -> list[int] | None:
  """Sorted i of the `layer_{i}` keys, when they are all the keys and 0..N-1."""
  found = [_LAYER.match(k) for k in tree]
  if not tree or not all(found):
    return None
  idx = sorted(int(m.group(1)) for m in found)
  if idx != list(range(len(idx))):
    raise ValueError(f"encoder layers are not numbered 0..{len(idx) - 1}: {sorted(tree)}")
  return idx


def _map_children(fn, tree: Any) -> Any:
  """fn over the children of a tuple / namedtuple / list (optimizer states)."""
  if isinstance(tree, tuple) and hasattr(tree, "_fields"):
    return type(tree)(*(fn(x) for x in tree))
  if isinstance(tree, (tuple, list)):
    return type(tree)(fn(x) for x in tree)
  return tree


def is_scanned(params: Mapping) -> bool:
  """True when a params tree holds the scanned encoder (`encoder/layers/...`)."""
  if not isinstance(params, Mapping):
    return False
  for key, value in params.items():
    if key == "encoder" and isinstance(value, Mapping):
      return set(value) == {"layers"}
    if isinstance(value, Mapping) and is_scanned(value):
      return True
  return False


def to_scanned(tree: Any) -> Any:
  """`layer_0..layer_{N-1}` dicts -> one `layers` dict with a leading [N] axis."""
  if not isinstance(tree, Mapping):
    return _map_children(to_scanned, tree)
  out = {}
  for key, value in tree.items():
    if key == "encoder" and isinstance(value, Mapping) and _layer_indices(value):
      layers = [value[f"layer_{i}"] for i in _layer_indices(value)]
      out[key] = {"layers": jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *layers)}
    else:
      out[key] = to_scanned(value)
  return out


def to_unscanned(tree: Any) -> Any:
  """One `layers` dict with a leading [N] axis -> `layer_0..layer_{N-1}` dicts."""
  if not isinstance(tree, Mapping):
    return _map_children(to_unscanned, tree)
  out = {}
  for key, value in tree.items():
    if key == "encoder" and isinstance(value, Mapping) and set(value) == {"layers"}:
      stacked = value["layers"]
      n = jax.tree_util.tree_leaves(stacked)[0].shape[0]
      out[key] = {f"layer_{i}": jax.tree_util.tree_map(lambda x, i=i: x[i], stacked)
                  for i in range(n)}
    else:
      out[key] = to_unscanned(value)
  return out
