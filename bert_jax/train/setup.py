"""The one job setup: model, optimizer, sharded state and the jitted train step.

Both jobs (`pretrain.py`, `finetune.py`), the memory estimate's XLA check
(`observe.lower_train_step`), the benchmarks and the compile-only entry point
(`bert_jax/aot.py`) build what they train here, so they all compile the same program:

    job = setup.pretraining(config, mesh, rules)                # allocates the state
    job = setup.finetuning(config, mesh, rules, kind=..., num_labels=...,
                           num_train_steps=...)
    job = setup.pretraining(config, mesh, rules, allocate=False)  # shapes only
    job.lower()   # the jitted step lowered from abstract state, batch and key

`allocate=False` builds only the state's shardings and ShapeDtypeStructs, for meshes
of devices this host cannot run on (compile-only TPU topologies) or to read XLA's
memory analysis without allocating anything.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from bert_jax import parallel
from bert_jax.config import ModelConfig
from bert_jax.models import BertForPreTraining, make_task_model
from bert_jax.train import finetune_steps, optim, pretrain_steps, trainer
from bert_jax.train import state as state_lib


def check_fits_mesh(config, mesh, rules) -> None:
  """Batch (per microbatch), heads and FFN size split evenly over the mesh."""
  t = config.train
  parallel.check_global_batch(t.global_batch_size, mesh, t.get("grad_accum_steps", 1))
  parallel.check_model_fits_mesh(config.model, mesh, rules)


@dataclasses.dataclass
class JobSetup:
  """What a job trains, on `mesh`: model, optimizer, state shardings, jitted step.

  `created` holds the allocated state (None with `allocate=False`); `batch_shapes` is
  one global batch's {name: (shape, dtype)}, which `abstract_batch` shards as the loop
  does.
  """
  model_config: ModelConfig
  model: Any
  tx: optax.GradientTransformation
  schedule: optax.Schedule
  mesh: Mesh
  rules: Any
  shardings: Any
  abstract_state: Callable[[], Any]
  p_train_step: Any
  dropout_rng: Any
  batch_shapes: dict[str, tuple[tuple[int, ...], Any]]
  created: trainer.Created | None = None

  @property
  def state(self):
    if self.created is None:
      raise ValueError("this job setup was built with allocate=False: it has no state")
    return self.created.state

  def abstract_batch(self) -> dict[str, jax.ShapeDtypeStruct]:
    sharding = parallel.batch_sharding(self.mesh)
    return {k: jax.ShapeDtypeStruct(shape, dtype, sharding=sharding)
            for k, (shape, dtype) in self.batch_shapes.items()}

  def abstract_key(self) -> jax.ShapeDtypeStruct:
    key = jax.eval_shape(lambda: self.dropout_rng) if isinstance(
        self.dropout_rng, jax.Array) else self.dropout_rng
    return jax.ShapeDtypeStruct(key.shape, key.dtype, sharding=parallel.replicated(self.mesh))

  def lower(self):
    """The jitted train step lowered from abstract state, batch and key (nothing
    allocated): `.compile()` it for XLA's memory and cost analysis."""
    import flax.linen as nn
    with jax.set_mesh(self.mesh), nn.logical_axis_rules(self.rules):
      return self.p_train_step.lower(self.abstract_state(), self.abstract_batch(),
                                     self.abstract_key())


def _build(model_config, model, tx, schedule, step_fn, batch_shapes, config, mesh, rules,
           allocate: bool) -> JobSetup:
  seq = config.data.max_seq_length
  dummy = (np.zeros((1, seq), np.int32),) * 3
  make_dropout_key = functools.partial(
      pretrain_steps.dropout_key, config.seed, config.train.get("dropout_prng_impl", "auto"),
      mesh.devices.flat[0].platform)
  created = None
  if allocate:
    created = trainer.create_state(model, tx, dummy, config.seed, mesh, rules,
                                   dropout_rng=make_dropout_key())
    shardings, abstract_state = created.shardings, created.abstract_state
    dropout_rng = created.dropout_rng
  else:
    init_rng = jax.random.split(jax.random.PRNGKey(config.seed))[0]
    shardings = state_lib.state_shardings(model, tx, dummy, init_rng, mesh, rules)
    abstract_state = functools.partial(state_lib.abstract_state, shardings, model, tx,
                                       dummy, init_rng)
    dropout_rng = jax.eval_shape(make_dropout_key)
  return JobSetup(model_config, model, tx, schedule, mesh, rules, shardings,
                  abstract_state, trainer.jit_train_step(step_fn, shardings, mesh),
                  dropout_rng, batch_shapes, created)


def pretraining_batch_shapes(config) -> dict[str, tuple[tuple[int, ...], Any]]:
  """One global pretraining batch: {name: (shape, dtype)}; packed batches
  (`data.packing`) add `position_ids`."""
  b, s = config.train.global_batch_size, config.data.max_seq_length
  p = config.data.max_predictions_per_seq
  shapes = {"input_ids": ((b, s), jnp.int32), "token_type_ids": ((b, s), jnp.int32),
            "attention_mask": ((b, s), jnp.int32),
            "masked_lm_positions": ((b, p), jnp.int32), "masked_lm_ids": ((b, p), jnp.int32),
            "masked_lm_weights": ((b, p), jnp.float32),
            "next_sentence_label": ((b,), jnp.int32)}
  if config.data.get("packing", False):
    shapes["position_ids"] = ((b, s), jnp.int32)
  return shapes


def pretraining(config, mesh, rules, *, allocate: bool = True) -> JobSetup:
  """BertForPreTraining, `train.optimizer` over `train.num_train_steps`, and
  `pretrain_steps.train_step` (grad accumulation, NSP unless data.objective='none')."""
  t = config.train
  check_fits_mesh(config, mesh, rules)
  model_config = ModelConfig.from_config(config.model)
  tx, schedule = optim.create_optimizer(t)
  step = functools.partial(pretrain_steps.train_step, schedule=schedule,
                           grad_accum_steps=t.get("grad_accum_steps", 1),
                           use_nsp=config.data.get("objective", "nsp") != "none")
  return _build(model_config, BertForPreTraining(model_config), tx, schedule, step,
                pretraining_batch_shapes(config), config, mesh, rules, allocate)


def finetuning_batch_shapes(config, kind: str, num_labels: int
                            ) -> dict[str, tuple[tuple[int, ...], Any]]:
  """One global fine-tuning batch of task `kind`: {name: (shape, dtype)}."""
  b, s = config.train.global_batch_size, config.data.max_seq_length
  shapes = {k: ((b, s), jnp.int32) for k in finetune_steps.INPUT_KEYS}
  shapes.update({
      "classification": {"label": ((b,), jnp.int32)},
      "regression": {"label": ((b,), jnp.float32)},
      "multilabel": {"label": ((b, num_labels), jnp.float32)},
      "span": {"start_positions": ((b,), jnp.int32), "end_positions": ((b,), jnp.int32)},
      "token": {"labels": ((b, s), jnp.int32), "label_weights": ((b, s), jnp.float32)},
  }[kind])
  shapes["weight"] = ((b,), jnp.float32)
  return shapes


def finetuning(config, mesh, rules, *, kind: str, num_labels: int, num_train_steps: int,
               allocate: bool = True) -> JobSetup:
  """The task model of `kind`, the fine-tuning optimizer over `num_train_steps`
  (warmup proportion, layer-wise decay) and `finetune_steps.train_step`."""
  t = config.train
  check_fits_mesh(config, mesh, rules)
  model_config = ModelConfig.from_config(config.model)
  tx, schedule = optim.create_finetune_optimizer(t, num_train_steps,
                                                 model_config.num_layers)
  step = functools.partial(finetune_steps.train_step, kind=kind, schedule=schedule,
                           grad_accum_steps=t.get("grad_accum_steps", 1))
  return _build(model_config, make_task_model(kind, model_config, num_labels), tx,
                schedule, step, finetuning_batch_shapes(config, kind, num_labels), config,
                mesh, rules, allocate)
