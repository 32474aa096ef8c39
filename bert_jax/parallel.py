"""Device mesh, logical-axis rules, shardings and multi-host batch assembly.

The model annotates parameters and activations with logical names (batch, length,
embed, heads, kv, mlp, vocab, ...; see bert_jax/models/bert.py). The `mesh` config maps
them onto a `jax.sharding.Mesh` with axes ('data', 'fsdp', 'tensor'). Everything that
touches devices goes through here, so the train loop never builds a sharding by hand.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

# Logical name -> mesh axis (or axes, or None = replicated). Follows t5x
# `standard_logical_axis_rules`: the batch is split over data and fsdp, parameters are
# split over fsdp on their embed dimension (ZeRO-3-like) and over tensor on their
# heads / mlp / vocab dimension (Megatron-like). A mesh axis of size 1 makes its rule
# a no-op, so the default (-1, 1, 1) mesh is plain data parallelism.
DEFAULT_RULES: tuple[tuple[str, Any], ...] = (
    ("batch", ("data", "fsdp")),
    ("length", None),
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("kv", None),
    ("mlp", "tensor"),
    ("vocab", "tensor"),
    ("position", None),
    ("type_vocab", None),
    ("norm", None),
    ("classes", None),
)


def logical_axis_rules(mesh_cfg=None) -> tuple[tuple[str, Any], ...]:
  """The rules in force: `mesh.rules` from the config when set, else DEFAULT_RULES."""
  rules = getattr(mesh_cfg, "rules", None) if mesh_cfg is not None else None
  return tuple((k, tuple(v) if isinstance(v, list) else v) for k, v in (rules or DEFAULT_RULES))


def resolve_mesh_shape(shape: Sequence[int], num_devices: int) -> tuple[int, ...]:
  """Fills one -1 with the rest of the devices; errors name `mesh.shape`."""
  shape = tuple(int(s) for s in shape)
  if shape.count(-1) > 1:
    raise ValueError(f"config field mesh.shape={shape} may hold at most one -1")
  known = math.prod(s for s in shape if s != -1)
  if any(s == 0 or s < -1 for s in shape):
    raise ValueError(f"config field mesh.shape={shape} must hold positive sizes or -1")
  if -1 in shape:
    if num_devices % known:
      raise ValueError(
          f"config field mesh.shape={shape}: {num_devices} devices are not divisible "
          f"by the fixed axes' product {known}")
    shape = tuple(num_devices // known if s == -1 else s for s in shape)
  if math.prod(shape) != num_devices:
    raise ValueError(
        f"config field mesh.shape={shape} multiplies to {math.prod(shape)}, but there "
        f"are {num_devices} devices")
  return shape


def create_mesh(mesh_cfg, devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A mesh with `Auto` axes (Linen's logical constraints need them)."""
  devices = list(devices if devices is not None else jax.devices())
  axes = tuple(mesh_cfg.axes)
  shape = resolve_mesh_shape(mesh_cfg.shape, len(devices))
  if len(shape) != len(axes):
    raise ValueError(f"config fields mesh.shape={shape} and mesh.axes={axes} differ in length")
  auto = (jax.sharding.AxisType.Auto,) * len(axes)
  return jax.make_mesh(shape, axes, axis_types=auto, devices=devices)


def data_axes(mesh: Mesh) -> tuple[str, ...]:
  """Mesh axes the batch dimension is split over."""
  return tuple(a for a in ("data", "fsdp") if a in mesh.axis_names)


def data_parallel_size(mesh: Mesh) -> int:
  return math.prod(mesh.shape[a] for a in data_axes(mesh))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(data_axes(mesh)))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def check_global_batch(global_batch_size: int, mesh: Mesh) -> None:
  dp = data_parallel_size(mesh)
  if global_batch_size % dp:
    raise ValueError(
        f"config field train.global_batch_size={global_batch_size} is not divisible "
        f"by the data-parallel size {dp} (mesh {dict(mesh.shape)})")
  if global_batch_size % jax.process_count():
    raise ValueError(
        f"config field train.global_batch_size={global_batch_size} is not divisible "
        f"by the number of processes {jax.process_count()}")


def shardings_from_logical(abstract_boxed_tree, mesh: Mesh, rules) -> Any:
  """Boxed (logically partitioned) abstract tree -> NamedSharding tree (unboxed shape)."""
  specs = nn.get_partition_spec(abstract_boxed_tree)
  return nn.logical_to_mesh_sharding(specs, mesh, rules)


def global_batch(local_batch: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """This process's rows -> global arrays sharded over the data axes.

  Each process passes only its own share (per-host batch); the global batch is the
  concatenation over processes in process order.
  """
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
          for k, v in local_batch.items()}
