"""Train state and its creation directly sharded on the mesh.

`create_sharded_state` follows flax examples/lm1b `setup_initial_state`: trace `init`
abstractly, read the logical partition specs off the boxed parameters, turn them into
mesh shardings with the rules, then run `init` under `jit(out_shardings=...)` so no
device ever holds a full unsharded copy.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import optax
from flax.training import train_state

from bert_jax import parallel


class TrainState(train_state.TrainState):
  """params, opt_state and step (flax TrainState); apply_fn and tx are static."""


def _init_fns(model, tx, dummy_inputs):
  def init_boxed(rng):
    variables = model.init(rng, *dummy_inputs)
    return TrainState.create(apply_fn=model.apply, params=variables["params"], tx=tx)

  def init_unboxed(rng):
    return nn.meta.unbox(init_boxed(rng))
  return init_boxed, init_unboxed


def state_shardings(model: nn.Module, tx: optax.GradientTransformation,
                    dummy_inputs: tuple, rng: jax.Array, mesh, rules) -> Any:
  """The state's NamedShardings, from its logical specs (abstract: nothing allocated).

  Checks every logical name has a rule and every sharded dimension divides evenly.
  """
  init_boxed, _ = _init_fns(model, tx, dummy_inputs)
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    abstract = jax.eval_shape(init_boxed, rng)
    return parallel.shardings_from_logical(abstract, mesh, rules)


def create_sharded_state(model: nn.Module, tx: optax.GradientTransformation,
                         dummy_inputs: tuple, rng: jax.Array, mesh, rules
                         ) -> tuple[TrainState, Any]:
  """Returns (state, state_shardings); state leaves are plain (unboxed) arrays."""
  shardings = state_shardings(model, tx, dummy_inputs, rng, mesh, rules)
  _, init_unboxed = _init_fns(model, tx, dummy_inputs)
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    state = jax.jit(init_unboxed, out_shardings=shardings)(rng)
  return state, shardings


def abstract_state(state_shardings, model, tx, dummy_inputs, rng) -> Any:
  """ShapeDtypeStructs with shardings: the restore target for a checkpoint."""
  _, init_unboxed = _init_fns(model, tx, dummy_inputs)
  shapes = jax.eval_shape(init_unboxed, rng)
  return jax.tree_util.tree_map(
      lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), shapes,
      state_shardings)
