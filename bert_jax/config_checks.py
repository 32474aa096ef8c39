"""Checks of a resolved config before any work starts: errors name the field.

Unknown fields are already rejected by `config_flags` (the config is locked), so these
checks cover values: ranges, divisibility and consistency between fields.
"""

from __future__ import annotations

import os

from bert_jax import storage
from bert_jax.config import ModelConfig
from bert_jax.data import masking


def _require(ok: bool, field: str, value, expected: str) -> None:
  if not ok:
    raise ValueError(f"config field {field}={value!r}: expected {expected}")


def check_model_config(m) -> ModelConfig:
  """The `model` sub-config as a validated `ModelConfig` (errors name the field)."""
  return ModelConfig.from_config(m)


def check_pretrain_config(c) -> None:
  check_model_config(c.model)
  d, t = c.data, c.train
  _require(8 <= d.max_seq_length <= c.model.max_position_embeddings,
           "data.max_seq_length", d.max_seq_length,
           f"between 8 and model.max_position_embeddings={c.model.max_position_embeddings}")
  _require(1 <= d.max_predictions_per_seq <= d.max_seq_length,
           "data.max_predictions_per_seq", d.max_predictions_per_seq,
           f"between 1 and data.max_seq_length={d.max_seq_length}")
  _require(0.0 <= d.short_seq_prob <= 1.0, "data.short_seq_prob", d.short_seq_prob,
           "a probability in [0, 1]")
  _require(d.dupe_factor >= 1, "data.dupe_factor", d.dupe_factor, ">= 1")
  masking.MaskingConfig.from_config(d)   # the masking fields (typed, checked there)
  _require(0.0 < d.eval_fraction < 1.0, "data.eval_fraction", d.eval_fraction,
           "a fraction in (0, 1)")
  _require(bool(d.corpus), "data.corpus", d.corpus, "'embedded' or a file glob")
  check_packing(d)
  _require(t.global_batch_size >= 1, "train.global_batch_size", t.global_batch_size, ">= 1")
  _require(t.num_train_steps >= 1, "train.num_train_steps", t.num_train_steps, ">= 1")
  _require(0 <= t.warmup_steps <= t.num_train_steps, "train.warmup_steps", t.warmup_steps,
           f"between 0 and train.num_train_steps={t.num_train_steps}")
  _require(t.learning_rate > 0, "train.learning_rate", t.learning_rate, "> 0")
  _require(t.max_grad_norm > 0, "train.max_grad_norm", t.max_grad_norm, "> 0")
  for name in ("log_every_steps", "eval_every_steps", "checkpoint_every_steps",
               "checkpoint_keep"):
    _require(t[name] >= 1, f"train.{name}", t[name], ">= 1")
  _require(t.checkpoint_best_mode in ("max", "min"), "train.checkpoint_best_mode",
           t.checkpoint_best_mode, "'max' or 'min'")


def check_packing(d) -> None:
  """`data.packing` is a bool, and only with the MLM-only objective: the NSP/SOP head
  reads a row's first [CLS], which in a packed row is one example's of several."""
  packing = d.get("packing", False)
  _require(isinstance(packing, bool), "data.packing", packing, "True or False")
  _require(not (packing and d.objective in ("nsp", "sop")), "data.packing", packing,
           f"data.objective='none' (found data.objective={d.objective!r}): the NSP/SOP "
           "head reads only a packed row's first [CLS]; set data.objective='none' or "
           "data.packing=False")


def prepare_workdir(workdir: str) -> str:
  """Creates the workdir (absolute when local; a `gs://...` one as given); an
  unwritable local one is an error before any training.

  An object store has no directories to create or permissions to ask: a remote
  workdir is returned as it is, and its first write says what is wrong.
  """
  if not workdir:
    raise ValueError("--workdir is required")
  if storage.is_remote(workdir):
    return str(workdir).rstrip("/")
  workdir = os.path.abspath(workdir)
  try:
    os.makedirs(workdir, exist_ok=True)
  except OSError as e:
    raise ValueError(f"cannot create workdir {workdir}: {e.strerror}") from None
  if not os.access(workdir, os.W_OK):
    raise ValueError(f"workdir {workdir} is not writable")
  return workdir
