r"""What a run will hold, before it runs: parameters per module and memory per device.

`param_summary` / `format_param_summary`: parameters per module (path prefix), with
array count, parameter count and share; printed at start.

`estimate_memory(config, mesh)` -> `MemoryEstimate`, per device, in bytes, before any
compile (shapes only: the parameters' logical axes resolved by the mesh rules of
bert_jax/parallel.py). With p = this device's parameter bytes (each array divided by
the mesh axes its dimensions are split over), b = activation dtype bytes, h = hidden,
f = FFN size, a = heads / tensor-parallel size, s = sequence length, L = layers,
t = tokens per device per microbatch (global batch / (data x fsdp) / grad_accum x s):

  params       p
  optimizer    2p                 (Adam / LAMB first and second moments, param dtype)
  gradients    p                  (x2 with grad_accum_steps > 1: the accumulator)
  gathered     (1 - 1/fsdp) x (non-layer params + one layer's), unsharded bytes
               (FSDP all-gathers the weights in use: embeddings + the current layer)
  activations  X = t x b x (12h + 4f/tp + 2·a·s), one layer's saved and transient tensors
               remat none: (L + 0.8) X
               remat full: L x t x b x 1.2h (layer inputs) + 1.3 X (one layer recomputed)
               remat dots: L x t x b x (1.2h + 5h + f/tp) (+ matmul outputs) + 1.3 X
  batch        the int32/float32 inputs of one step on this device
The constants are XLA's buffer assignment on CPU for the real float32 train step
(bert_jax/train/setup.py: the trainer's jitted step, scanned layers, no dropout) fitted over
tiny..large, batch 8..64, length 128..512 and the three remat policies;
tests/test_observe.py holds the estimate within 15% of `compiled_memory` for tiny, base
and large on 1 device and on 8 with FSDP. Dropout masks, bf16 activations and tensor
parallelism are counted by the same formula but not checked against XLA; other
backends fuse differently (TPU/GPU usually need less temporary memory than CPU).

`compiled_memory(compiled)` reads XLA's own analysis of a compiled executable
(`compiled.memory_analysis()`): argument, output, alias (donated) and temp bytes;
peak = argument + output - alias + temp. `lower_train_step(config, mesh)` lowers the
real pretraining step from ShapeDtypeStructs (nothing allocated) to compare with.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from bert_jax import parallel
from bert_jax.config import ModelConfig
from bert_jax.models import BertForPreTraining
from bert_jax.models import params as params_lib
from bert_jax.train import setup as setup_lib

GIB = 2 ** 30
# Fitted constants (see the module docstring).
LAYER_H, LAYER_F, LAYER_ATTENTION = 12.0, 4.0, 2.0
EXTRA_LAYERS_NO_REMAT = 0.8
REMAT_SAVED_H = 1.2
REMAT_WORKING_LAYERS = 1.3
LAYER_PATH = re.compile(r"(^|/)encoder/(layers|layer_\d+)(/|$)")


# ------------------------------------------------------------------ parameter summary


def param_summary(params, depth: int = 2) -> list[dict[str, Any]]:
  """[{'module', 'arrays', 'params', 'percent'}] per path prefix of `depth` parts
  (e.g. 'bert/encoder'), in tree order, then a 'total' row."""
  rows: dict[str, dict[str, Any]] = {}
  total = 0
  for path, leaf in jax.tree_util.tree_leaves_with_path(params):
    module = "/".join(params_lib.path_str(path).split("/")[:depth])
    row = rows.setdefault(module, {"module": module, "arrays": 0, "params": 0})
    row["arrays"] += 1
    row["params"] += int(math.prod(leaf.shape))
    total += int(math.prod(leaf.shape))
  out = list(rows.values()) + [{"module": "total", "arrays": sum(
      r["arrays"] for r in rows.values()), "params": total}]
  for r in out:
    r["percent"] = 100.0 * r["params"] / max(total, 1)
  return out


def format_param_summary(rows: Sequence[dict[str, Any]]) -> str:
  width = max(len(r["module"]) for r in rows)
  lines = [f"{'module':<{width}}  {'arrays':>6}  {'params':>13}  {'%':>6}"]
  lines += [f"{r['module']:<{width}}  {r['arrays']:>6}  {r['params']:>13,}  "
            f"{r['percent']:>6.2f}" for r in rows]
  return "\n".join(lines)


# ------------------------------------------------------------------ memory estimate


@dataclasses.dataclass(frozen=True)
class MemoryEstimate:
  """Bytes per device (see the module docstring for each term)."""
  params: float
  optimizer: float
  gradients: float
  gathered: float
  activations: float
  batch: float
  remat_policy: str = "none"
  devices: int = 1

  @property
  def total(self) -> float:
    return (self.params + self.optimizer + self.gradients + self.gathered
            + self.activations + self.batch)

  def describe(self) -> str:
    g = lambda x: f"{x / GIB:.2f}"
    return (f"memory per device ~{g(self.total)} GiB ({self.devices} devices): params "
            f"{g(self.params)}, optimizer {g(self.optimizer)}, gradients "
            f"{g(self.gradients)}, gathered weights {g(self.gathered)}, activations "
            f"{g(self.activations)} (remat {self.remat_policy}), batch {g(self.batch)}")


def _model(config):
  return BertForPreTraining(ModelConfig.from_config(config.model))


def _abstract_params(config):
  """The boxed (logically annotated) parameter shapes; nothing is allocated."""
  length = config.data.max_seq_length
  dummy = np.zeros((1, length), np.int32)
  return jax.eval_shape(lambda rng: _model(config).init(rng, dummy, dummy, dummy),
                        jax.random.PRNGKey(0))["params"]


def _mesh_sizes(mesh) -> dict[str, int]:
  return dict(mesh.shape) if hasattr(mesh, "shape") else dict(mesh)


def _axis_size(sizes: dict[str, int], axes) -> int:
  if axes is None:
    return 1
  return math.prod(sizes.get(a, 1) for a in (axes if isinstance(axes, tuple) else (axes,)))


def estimate_memory(config, mesh, rules=None) -> MemoryEstimate:
  """The per-device estimate for the pretraining step of `config` on `mesh` (a Mesh or
  {'data': n, 'fsdp': n, 'tensor': n}); `rules` default to the config's mesh rules."""
  rules = dict(rules if rules is not None else parallel.logical_axis_rules(config.mesh))
  sizes = _mesh_sizes(mesh)
  m, t = ModelConfig.from_config(config.model), config.train
  boxed = _abstract_params(config)
  specs = nn.get_partition_spec(boxed)
  shapes = nn.meta.unbox(boxed)
  shape_of = {params_lib.path_str(path): leaf
              for path, leaf in jax.tree_util.tree_leaves_with_path(shapes)}
  per_device = full_other = full_layers = 0.0
  for path, spec in jax.tree_util.tree_leaves_with_path(
      specs, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec)):
    key = params_lib.path_str(path)
    leaf = shape_of[key]
    nbytes = math.prod(leaf.shape) * leaf.dtype.itemsize
    split = math.prod(_axis_size(sizes, rules.get(name)) if name else 1 for name in spec)
    per_device += nbytes / split
    if LAYER_PATH.search(key):
      full_layers += nbytes
    else:
      full_other += nbytes
  fsdp = sizes.get("fsdp", 1)
  tensor = sizes.get("tensor", 1)
  dp = sizes.get("data", 1) * fsdp
  accum = t.get("grad_accum_steps", 1)
  seq = config.data.max_seq_length
  tokens = t.global_batch_size / dp / accum * seq
  act_bytes = jnp.dtype(m.dtype).itemsize
  h, f, heads = m.hidden_size, m.intermediate_size, m.num_heads / tensor
  layer = tokens * (act_bytes * (LAYER_H * h + LAYER_F * f / tensor)
                    + 4 * LAYER_ATTENTION * heads * seq)    # scores/softmax in float32
  policy = m.remat_policy
  if policy == "none":
    activations = (m.num_layers + EXTRA_LAYERS_NO_REMAT) * layer
  else:
    saved_h = REMAT_SAVED_H * h + (5 * h + f / tensor if policy == "dots" else 0)
    activations = (m.num_layers * tokens * act_bytes * saved_h
                   + REMAT_WORKING_LAYERS * layer)
  predictions = config.data.max_predictions_per_seq
  batch = t.global_batch_size / dp * 4 * (3 * seq + 3 * predictions + 1)
  gathered = (1 - 1 / fsdp) * (full_other + full_layers / m.num_layers)
  return MemoryEstimate(
      params=per_device, optimizer=2 * per_device,
      gradients=per_device * (2 if accum > 1 else 1), gathered=gathered,
      activations=activations, batch=batch, remat_policy=policy,
      devices=math.prod(sizes.values()))


# ------------------------------------------------------------------ XLA's own figures


@dataclasses.dataclass(frozen=True)
class CompiledMemory:
  """XLA's memory analysis of one executable, bytes per device."""
  argument: int
  output: int
  alias: int
  temp: int

  @property
  def total(self) -> int:
    """Peak: arguments and outputs live together, less what is donated, plus temps."""
    return self.argument + self.output - self.alias + self.temp

  def describe(self) -> str:
    g = lambda x: f"{x / GIB:.2f}"
    return (f"XLA memory per device {g(self.total)} GiB: arguments {g(self.argument)}, "
            f"outputs {g(self.output)}, donated {g(self.alias)}, temporaries {g(self.temp)}")


def compiled_memory(compiled) -> CompiledMemory:
  m = compiled.memory_analysis()
  return CompiledMemory(int(m.argument_size_in_bytes), int(m.output_size_in_bytes),
                        int(m.alias_size_in_bytes), int(m.temp_size_in_bytes))


def lower_train_step(config, mesh, rules=None):
  """The real pretraining step (`bert_jax/train/setup.py`, the one the trainer runs)
  lowered from abstract state and batch: call `.compile()` on the result for XLA's
  memory analysis. Allocates nothing."""
  rules = rules if rules is not None else parallel.logical_axis_rules(config.mesh)
  return setup_lib.pretraining(config, mesh, rules, allocate=False).lower()
