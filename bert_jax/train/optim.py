"""Optimizer and learning-rate schedule from the `train` config (all optax).

BERT's recipe (Devlin et al. 2019, google-research/bert optimization.py): AdamW with
weight decay 0.01 that skips biases and LayerNorm parameters, linear warmup then linear
decay to zero, global-norm clipping at 1.0. `train.optimizer='lamb'` swaps AdamW for
LAMB (You et al. 2019, "Large Batch Optimization for Deep Learning", `optax.lamb`): the
same moments and the same weight-decay mask, each layer's update rescaled by its trust
ratio ||w|| / ||update||, which keeps batches of 32k-64k stable.

Fine-tuning (`create_finetune_optimizer`): the same optimizer over a schedule of
`num_train_steps` with `train.warmup_proportion` of them warming up, and optional
layer-wise LR decay (`train.layerwise_lr_decay` < 1): the update of layer `l` of `L`
is scaled by `decay ** (L + 1 - l)` (embeddings l = 0, heads and pooler L + 1).
"""

from __future__ import annotations

import jax
import ml_collections
import optax

from bert_jax.models import params as params_lib


def learning_rate_schedule(t) -> optax.Schedule:
  """Linear warmup from 0 to `t.learning_rate` over `t.warmup_steps`, then linear to 0."""
  warmup = optax.linear_schedule(0.0, t.learning_rate, max(t.warmup_steps, 1))
  decay = optax.linear_schedule(
      t.learning_rate, 0.0, max(t.num_train_steps - t.warmup_steps, 1))
  return optax.join_schedules([warmup, decay], [t.warmup_steps])


def decay_mask(params):
  """True for weights that get weight decay: every kernel/embedding, not biases/norms
  (the `decay` rules of `bert_jax/models/params.py`)."""
  return params_lib.weight_decay_mask(params)


OPTIMIZERS = {"adamw": optax.adamw, "lamb": optax.lamb}


def create_optimizer(t) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """Clipping, then `train.optimizer` (adamw | lamb; default adamw) with the schedule."""
  name = t.get("optimizer", "adamw")
  if name not in OPTIMIZERS:
    raise ValueError(f"config field train.optimizer={name!r} is not one of {sorted(OPTIMIZERS)}")
  schedule = learning_rate_schedule(t)
  tx = optax.chain(
      optax.clip_by_global_norm(t.max_grad_norm),
      OPTIMIZERS[name](schedule, b1=t.adam_b1, b2=t.adam_b2, eps=t.adam_eps,
                       weight_decay=t.weight_decay, mask=decay_mask),
  )
  return tx, schedule


def scale_by_tree(scales_fn) -> optax.GradientTransformation:
  """Multiplies each update by the matching leaf of `scales_fn(updates)` (no state)."""
  def init_fn(params):
    del params
    return optax.EmptyState()

  def update_fn(updates, state, params=None):
    del params
    scales = scales_fn(updates)
    return jax.tree_util.tree_map(lambda u, s: u * s.astype(u.dtype), updates,
                                  scales), state
  return optax.GradientTransformation(init_fn, update_fn)


def create_finetune_optimizer(t, num_train_steps: int, num_layers: int):
  """`create_optimizer` for a fine-tuning run of `num_train_steps` steps, warmup over
  `t.warmup_proportion` of them, then layer-wise LR decay when asked."""
  oc = ml_collections.ConfigDict(t.to_dict())
  oc.num_train_steps = num_train_steps
  oc.warmup_steps = int(round(t.warmup_proportion * num_train_steps))
  tx, schedule = create_optimizer(oc)
  if t.layerwise_lr_decay < 1.0:
    decay = t.layerwise_lr_decay
    tx = optax.chain(tx, scale_by_tree(
        lambda tree: params_lib.lr_depth_scales(tree, num_layers, decay)))
  return tx, schedule
