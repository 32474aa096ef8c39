"""Synthetic pretraining batches (NumPy only, so PyTorch and JAX workers share them)."""

from __future__ import annotations

import numpy as np


def mlm_predictions(seq: int) -> int:
  """Masked-LM predictions per row: round(0.15 * seq), as the paper's 20 at 128."""
  return max(1, int(round(0.15 * seq)))


def synthetic_batch(rng: np.random.Generator, batch: int, seq: int, predictions: int,
                    vocab: int) -> dict[str, np.ndarray]:
  """Random ids, two segments, `predictions` distinct sorted masked positions per row
  (never position 0, the [CLS]), random NSP labels; the bert_jax batch layout."""
  positions = np.sort(np.stack([rng.choice(np.arange(1, seq), predictions, replace=False)
                                for _ in range(batch)]), 1)
  return {
      "input_ids": rng.integers(5, vocab, (batch, seq)).astype(np.int32),
      "token_type_ids": (np.arange(seq)[None, :] >= seq // 2).repeat(batch, 0).astype(np.int32),
      "attention_mask": np.ones((batch, seq), np.int32),
      "masked_lm_positions": positions.astype(np.int32),
      "masked_lm_ids": rng.integers(5, vocab, (batch, predictions)).astype(np.int32),
      "masked_lm_weights": np.ones((batch, predictions), np.float32),
      "next_sentence_label": rng.integers(0, 2, (batch,)).astype(np.int32),
  }


def dense_mlm_labels(batch: dict[str, np.ndarray]) -> np.ndarray:
  """[batch, seq] labels in HF's layout: the masked id at masked positions, else -100."""
  labels = np.full(batch["input_ids"].shape, -100, np.int64)
  rows = np.arange(labels.shape[0])[:, None]
  labels[rows, batch["masked_lm_positions"]] = np.where(
      batch["masked_lm_weights"] > 0, batch["masked_lm_ids"], -100)
  return labels
