"""Optimizer and learning-rate schedule from the `train` config (all optax).

BERT's recipe (Devlin et al. 2019, google-research/bert optimization.py): AdamW with
weight decay 0.01 that skips biases and LayerNorm parameters, linear warmup then linear
decay to zero, global-norm clipping at 1.0. `train.optimizer='lamb'` swaps AdamW for
LAMB (You et al. 2019, "Large Batch Optimization for Deep Learning", `optax.lamb`): the
same moments and the same weight-decay mask, each layer's update rescaled by its trust
ratio ||w|| / ||update||, which keeps batches of 32k-64k stable.
"""

from __future__ import annotations

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
