"""Pretraining losses and metrics (pure functions of model outputs and a batch).

MLM: cross-entropy over the masked positions, weighted by `masked_lm_weights` and
normalised by their sum (google-research/bert `get_masked_lm_output`). NSP:
mean cross-entropy over the batch. The total loss is their sum, as in the paper.
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
