"""The fine-tuning job's pure steps: the task loss's optimizer step and prediction.

`train_step` accumulates over `grad_accum_steps` microbatches like pretraining
(`grad_accum.accumulate`): each microbatch's loss sum is divided by the full batch's
denominator (`losses.task_loss_denominator`), so the sum is the full batch's gradient.
"""

from __future__ import annotations

import jax

from bert_jax.train import grad_accum, losses

INPUT_KEYS = ("input_ids", "token_type_ids", "attention_mask")
LABEL_KEYS = {"classification": ("label",), "regression": ("label",),
              "multilabel": ("label",), "span": ("start_positions", "end_positions"),
              "token": ("labels", "label_weights")}


def output_keys(kind: str) -> tuple[str, ...]:
  return ("start_logits", "end_logits") if kind == "span" else ("logits",)


def loss_and_grads(apply_fn, params, batch, rng, *, kind: str, grad_accum_steps: int = 1):
  """(mean loss, its gradient) over the global batch, dropout from `rng`."""
  denominator = losses.task_loss_denominator(kind, batch)

  def one(params, mb, rng):
    def loss_fn(params):
      out = apply_fn({"params": params}, *(mb[k] for k in INPUT_KEYS),
                     deterministic=False, rngs={"dropout": rng})
      return losses.task_loss_sum(kind, out, mb) / denominator
    loss, grads = jax.value_and_grad(loss_fn)(params)
    return loss, grads

  return grad_accum.accumulate(one, params, batch, rng, grad_accum_steps)


def train_step(state, batch, rng, *, kind, schedule, grad_accum_steps: int = 1):
  """One optimizer step. Pure: (state, global batch, rng) -> (state, metrics)."""
  dropout_rng = jax.random.fold_in(rng, state.step)
  loss, grads = loss_and_grads(state.apply_fn, state.params, batch, dropout_rng,
                               kind=kind, grad_accum_steps=grad_accum_steps)
  return state.apply_gradients(grads=grads), {"loss": loss,
                                              "learning_rate": schedule(state.step)}


def predict_step(state, batch, *, kind):
  out = state.apply_fn({"params": state.params}, *(batch[k] for k in INPUT_KEYS),
                       deterministic=True)
  return {k: out[k] for k in output_keys(kind)}
