"""Losses and metrics of both jobs (pure functions of model outputs and a batch).

Pretraining. MLM: cross-entropy over the masked positions, weighted by
`masked_lm_weights` and normalised by their sum (google-research/bert
`get_masked_lm_output`). NSP: mean cross-entropy over the batch. The total loss is
their sum, as in the paper.

Fine-tuning (`task_loss`): each task kind's loss is a weighted sum over rows (or
tokens) divided by a denominator that depends on the batch alone
(`task_loss_denominator`), so gradient accumulation can divide each microbatch's sum
by the full batch's denominator and add up to the full batch's gradient.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def pretraining_sums(outputs, batch) -> dict[str, jax.Array]:
  """Unnormalised sums, so metrics over several batches/devices add up exactly."""
  mlm_logits = outputs["mlm_logits"].astype(jnp.float32)   # [batch, predictions, vocab]
  labels = batch["masked_lm_ids"]                          # [batch, predictions]
  weights = batch["masked_lm_weights"].astype(jnp.float32)
  mlm_xent = optax.softmax_cross_entropy_with_integer_labels(mlm_logits, labels)
  mlm_correct = (jnp.argmax(mlm_logits, -1) == labels).astype(jnp.float32)
  nsp_logits = outputs["nsp_logits"].astype(jnp.float32)   # [batch, 2]
  nsp_labels = batch["next_sentence_label"]
  nsp_xent = optax.softmax_cross_entropy_with_integer_labels(nsp_logits, nsp_labels)
  return {
      "mlm_loss_sum": jnp.sum(mlm_xent * weights),
      "mlm_correct": jnp.sum(mlm_correct * weights),
      "mlm_weight": jnp.sum(weights),
      "nsp_loss_sum": jnp.sum(nsp_xent),
      "nsp_correct": jnp.sum((jnp.argmax(nsp_logits, -1) == nsp_labels).astype(jnp.float32)),
      "nsp_count": jnp.asarray(nsp_labels.shape[0], jnp.float32),
  }


def metrics_from_sums(s) -> dict:
  """Sums (device or host values) -> losses and accuracies."""
  mlm_w = s["mlm_weight"] + 1e-5
  nsp_n = s["nsp_count"]
  m = {
      "mlm_loss": s["mlm_loss_sum"] / mlm_w,
      "mlm_accuracy": s["mlm_correct"] / mlm_w,
      "nsp_loss": s["nsp_loss_sum"] / nsp_n,
      "nsp_accuracy": s["nsp_correct"] / nsp_n,
  }
  m["loss"] = m["mlm_loss"] + m["nsp_loss"]
  return m


TASK_KINDS = ("classification", "regression", "multilabel", "span", "token")


def task_loss_sum(kind: str, out: dict, batch: dict) -> jax.Array:
  """The weighted loss sum of one batch. Rows with batch['weight'] == 0 are padding."""
  w = batch["weight"].astype(jnp.float32)                      # [batch]
  if kind == "classification":
    xent = optax.softmax_cross_entropy_with_integer_labels(out["logits"], batch["label"])
    return jnp.sum(xent * w)
  if kind == "regression":
    return jnp.sum(jnp.square(out["logits"][:, 0] - batch["label"]) * w)
  if kind == "multilabel":
    bce = optax.sigmoid_binary_cross_entropy(out["logits"], batch["label"]).mean(-1)
    return jnp.sum(bce * w)
  if kind == "span":
    s = optax.softmax_cross_entropy_with_integer_labels(out["start_logits"],
                                                        batch["start_positions"])
    e = optax.softmax_cross_entropy_with_integer_labels(out["end_logits"],
                                                        batch["end_positions"])
    return jnp.sum((s + e) / 2 * w)
  if kind == "token":
    xent = optax.softmax_cross_entropy_with_integer_labels(out["logits"], batch["labels"])
    return jnp.sum(xent * (batch["label_weights"] * w[:, None]))
  raise ValueError(f"task kind {kind!r} is not one of {TASK_KINDS}")


def task_loss_denominator(kind: str, batch: dict) -> jax.Array:
  """What `task_loss_sum` is divided by: the real rows, or the labelled tokens for
  'token' (at least 1)."""
  w = batch["weight"].astype(jnp.float32)
  if kind == "token":
    return jnp.maximum(jnp.sum(batch["label_weights"] * w[:, None]), 1.0)
  return jnp.maximum(jnp.sum(w), 1.0)


def task_loss(kind: str, out: dict, batch: dict) -> jax.Array:
  """Mean loss of one batch."""
  return task_loss_sum(kind, out, batch) / task_loss_denominator(kind, batch)
