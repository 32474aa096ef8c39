"""Device mesh, logical-axis rules, shardings and multi-host batch assembly.

The model annotates parameters and activations with logical names (batch, length,
embed, heads, kv, mlp, vocab, ...; see bert_jax/models/bert.py). The `mesh` config maps
them onto a `jax.sharding.Mesh` with axes ('data', 'fsdp', 'tensor'). Everything that
touches devices goes through here, so the train loop never builds a sharding by hand.
"""

from __future__ import annotations

import math
import os
from typing import Any, Mapping, MutableMapping, Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from bert_jax.models import params as params_lib

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
    ("layers", None),
)

# Logical names used only on activations (`nn.with_logical_constraint`); the others
# are read off the parameters' partition specs.
ACTIVATION_NAMES = ("batch", "length", "embed", "heads", "kv", "mlp")


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
  try:
    return jax.make_mesh(shape, axes, axis_types=auto, devices=devices)
  except NotImplementedError:
    # A TPU slice's physical mesh (v4-128: 4x4x4) cannot give an axis that is not a
    # product of whole physical axes (fsdp_tp's 2-way tensor axis): split a physical
    # axis instead, as MaxText's `allow_split_physical_axes`. The tensor axis then
    # rides half a ring, still neighbouring chips.
    from jax.experimental import mesh_utils
    grid = mesh_utils.create_device_mesh(shape, devices, allow_split_physical_axes=True)
    return Mesh(grid, axes, axis_types=auto)


def data_axes(mesh: Mesh) -> tuple[str, ...]:
  """Mesh axes the batch dimension is split over."""
  return tuple(a for a in ("data", "fsdp") if a in mesh.axis_names)


def data_parallel_size(mesh: Mesh) -> int:
  return math.prod(mesh.shape[a] for a in data_axes(mesh))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(data_axes(mesh)))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def check_global_batch(global_batch_size: int, mesh, grad_accum_steps: int = 1) -> None:
  """The batch splits evenly over data x fsdp devices (per microbatch) and processes."""
  if grad_accum_steps < 1:
    raise ValueError(f"config field train.grad_accum_steps={grad_accum_steps}: expected >= 1")
  dp = data_parallel_size(mesh)
  if global_batch_size % dp:
    raise ValueError(
        f"config field train.global_batch_size={global_batch_size} is not divisible "
        f"by the data-parallel size {dp} (mesh {dict(mesh.shape)})")
  if global_batch_size % (dp * grad_accum_steps):
    raise ValueError(
        f"config field train.global_batch_size={global_batch_size} is not divisible "
        f"by train.grad_accum_steps={grad_accum_steps} x the data-parallel size {dp} "
        f"(mesh {dict(mesh.shape)}): each microbatch must split evenly over devices")
  if global_batch_size % jax.process_count():
    raise ValueError(
        f"config field train.global_batch_size={global_batch_size} is not divisible "
        f"by the number of processes {jax.process_count()}")


def _spec_leaves(specs):
  return jax.tree_util.tree_leaves_with_path(
      specs, is_leaf=lambda x: isinstance(x, P))


def check_rules(specs, rules) -> None:
  """Every logical name on a parameter (or main activation) has a rule."""
  known = {name for name, _ in rules}
  missing: dict[str, str] = {}
  for path, spec in _spec_leaves(specs):
    for name in spec if isinstance(spec, P) else ():
      for n in (name if isinstance(name, tuple) else (name,)):
        if n is not None and n not in known:
          missing.setdefault(n, params_lib.path_str(path))
  for n in ACTIVATION_NAMES:
    if n not in known:
      missing.setdefault(n, "activations")
  if missing:
    where = ", ".join(f"{n!r} (used by {p})" for n, p in sorted(missing.items()))
    raise ValueError(
        f"logical axis names with no rule in config field mesh.rules: {where}; "
        f"rules are given for {sorted(known)}")


def _mesh_size(mesh, axes) -> int:
  if axes is None:
    return 1
  axes = axes if isinstance(axes, tuple) else (axes,)
  return math.prod(mesh.shape[a] for a in axes)


def check_model_fits_mesh(model_cfg, mesh, rules) -> None:
  """The model's head count and FFN size split evenly over their mesh axes."""
  rule = dict(rules)
  for field, name in (("num_heads", "heads"), ("intermediate_size", "mlp")):
    n = _mesh_size(mesh, rule.get(name))
    if getattr(model_cfg, field) % n:
      raise ValueError(
          f"config field model.{field}={getattr(model_cfg, field)} is not divisible by the "
          f"size {n} of mesh axis {rule.get(name)!r} that the {name!r} rule splits it "
          f"over (mesh {dict(mesh.shape)}); change mesh.shape or model.{field}")


def check_divisible(abstract_tree, specs, mesh, rules) -> None:
  """Every sharded parameter dimension divides by the size of its mesh axes.

  `abstract_tree` holds shapes (unboxed); `specs` the logical PartitionSpecs.
  """
  rule = dict(rules)
  shapes = dict((params_lib.path_str(p), x.shape) for p, x in
                jax.tree_util.tree_leaves_with_path(abstract_tree))
  for path, spec in _spec_leaves(specs):
    key = params_lib.path_str(path)
    if not isinstance(spec, P) or key not in shapes:
      continue
    for dim, (size, name) in enumerate(zip(shapes[key], spec)):
      n = _mesh_size(mesh, rule.get(name)) if name is not None else 1
      if size % n:
        raise ValueError(
            f"parameter {key} of shape {shapes[key]}: dimension {dim} ({name!r}, "
            f"size {size}) is not divisible by mesh axes {rule.get(name)!r} of size "
            f"{n} (mesh {dict(mesh.shape)}); change mesh.shape or the model field")


def shardings_from_logical(abstract_boxed_tree, mesh: Mesh, rules) -> Any:
  """Boxed (logically partitioned) abstract tree -> NamedSharding tree (unboxed shape)."""
  specs = nn.get_partition_spec(abstract_boxed_tree)
  check_rules(specs, rules)
  is_box = lambda x: isinstance(x, nn.meta.AxisMetadata)
  shapes = jax.tree_util.tree_map(
      lambda x: x.unbox(apply_constraint=False) if is_box(x) else x,
      abstract_boxed_tree, is_leaf=is_box)
  check_divisible(shapes, specs, mesh, rules)
  return nn.logical_to_mesh_sharding(specs, mesh, rules)


# What MaxText's train.py sets on TPU: XLA partitions its RngBitGenerator (the `rbg`
# dropout bits, `train.dropout_prng_impl=auto` on TPU), so that each chip draws the bits
# of its own shard instead of the whole, replicated tensor: XLA's cost model (libtpu
# 0.0.42.1) puts BERT-base's step on a v4-32 at 51.3 ms without it, 37.6 ms with it
# (threefry: 36.4 ms), docs/benchmarks.md. The bits then depend on the mesh, as `rbg`'s
# do anyway (bert_jax/train/pretrain_steps.resolve_prng_impl).
LIBTPU_FLAGS = ("--xla_tpu_spmd_rng_bit_generator_unsafe=true",)


def set_libtpu_flags(environ: MutableMapping[str, str] | None = None) -> None:
  """Appends LIBTPU_FLAGS to LIBTPU_INIT_ARGS in `environ` (default os.environ), each
  unless the caller's value names that flag already; must run before libtpu loads (it
  reads the variable once). Without libtpu nothing reads it."""
  environ = os.environ if environ is None else environ
  args = environ.get("LIBTPU_INIT_ARGS", "")
  for flag in LIBTPU_FLAGS:
    if flag.split("=")[0] not in args:
      args = f"{args} {flag}".strip()
  environ["LIBTPU_INIT_ARGS"] = args


def initialize_distributed(cfg, environ: Mapping[str, str] | None = None) -> bool:
  """`jax.distributed.initialize` as the `distributed` config asks; True if called.

  Must run before anything touches devices. Explicit fields win; fields left at
  ''/-1 are read by JAX from the environment (TPU metadata, SLURM, Open MPI,
  JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID).
  """
  import os
  environ = os.environ if environ is None else environ
  mode = cfg.mode if cfg is not None else "off"
  if mode not in ("auto", "on", "off"):
    raise ValueError(f"config field distributed.mode={mode!r} is not one of auto, on, off")
  cluster = bool(
      cfg is not None and cfg.coordinator_address
      or environ.get("JAX_COORDINATOR_ADDRESS")
      or int(environ.get("SLURM_NTASKS", "1") or 1) > 1
      or int(environ.get("OMPI_COMM_WORLD_SIZE", "1") or 1) > 1)
  if mode == "off" or (mode == "auto" and not cluster):
    return False
  if cfg.cpu_collectives:
    jax.config.update("jax_cpu_collectives_implementation", cfg.cpu_collectives)
  kwargs = {}
  if cfg.coordinator_address:
    kwargs["coordinator_address"] = cfg.coordinator_address
  if cfg.num_processes >= 0:
    kwargs["num_processes"] = cfg.num_processes
  if cfg.process_id >= 0:
    kwargs["process_id"] = cfg.process_id
  ids = str(cfg.get("local_device_ids", "") or "")
  if ids:
    try:
      kwargs["local_device_ids"] = [int(i) for i in ids.split(",")]
    except ValueError:
      raise ValueError(f"config field distributed.local_device_ids={ids!r}: expected "
                       "comma-separated device numbers, e.g. '0,1,2,3'") from None
  jax.distributed.initialize(**kwargs)
  return True


def global_batch(local_batch: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """This process's rows -> global arrays sharded over the data axes.

  Each process passes only its own share (per-host batch); the global batch is the
  concatenation over processes in process order.
  """
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
          for k, v in local_batch.items()}
