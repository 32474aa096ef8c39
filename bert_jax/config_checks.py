"""Checks of a resolved config before any work starts: errors name the field.

Unknown fields are already rejected by `config_flags` (the config is locked), so these
checks cover values: ranges, divisibility and consistency between fields.
"""

from __future__ import annotations

import os

_DTYPES = ("float32", "bfloat16", "float16")
_ACTS = ("gelu", "gelu_new", "gelu_tanh", "gelu_pytorch_tanh", "relu")
_ATTN = ("einsum", "xla", "cudnn")


def _require(ok: bool, field: str, value, expected: str) -> None:
  if not ok:
    raise ValueError(f"config field {field}={value!r}: expected {expected}")


def check_model_config(m) -> None:
  for name in ("vocab_size", "hidden_size", "num_layers", "num_heads",
               "intermediate_size", "max_position_embeddings", "type_vocab_size"):
    _require(int(m[name]) > 0, f"model.{name}", m[name], "a positive integer")
  _require(m.hidden_size % m.num_heads == 0, "model.num_heads", m.num_heads,
           f"a divisor of model.hidden_size={m.hidden_size}")
  _require(m.hidden_act in _ACTS, "model.hidden_act", m.hidden_act, f"one of {_ACTS}")
  _require(m.dtype in _DTYPES, "model.dtype", m.dtype, f"one of {_DTYPES}")
  _require(m.param_dtype in _DTYPES, "model.param_dtype", m.param_dtype, f"one of {_DTYPES}")
  _require(m.attention_impl in _ATTN, "model.attention_impl", m.attention_impl,
           f"one of {_ATTN}")
  for name in ("hidden_dropout_prob", "attention_dropout_prob"):
    _require(0.0 <= m[name] < 1.0, f"model.{name}", m[name], "a probability in [0, 1)")
  _require(m.layer_norm_eps > 0, "model.layer_norm_eps", m.layer_norm_eps, "> 0")


def check_pretrain_config(c) -> None:
  check_model_config(c.model)
  d, t = c.data, c.train
  _require(8 <= d.max_seq_length <= c.model.max_position_embeddings,
           "data.max_seq_length", d.max_seq_length,
           f"between 8 and model.max_position_embeddings={c.model.max_position_embeddings}")
  _require(1 <= d.max_predictions_per_seq <= d.max_seq_length,
           "data.max_predictions_per_seq", d.max_predictions_per_seq,
           f"between 1 and data.max_seq_length={d.max_seq_length}")
  _require(0.0 < d.masked_lm_prob < 1.0, "data.masked_lm_prob", d.masked_lm_prob,
           "a probability in (0, 1)")
  _require(0.0 <= d.short_seq_prob <= 1.0, "data.short_seq_prob", d.short_seq_prob,
           "a probability in [0, 1]")
  _require(d.dupe_factor >= 1, "data.dupe_factor", d.dupe_factor, ">= 1")
  _require(0.0 < d.eval_fraction < 1.0, "data.eval_fraction", d.eval_fraction,
           "a fraction in (0, 1)")
  _require(bool(d.corpus), "data.corpus", d.corpus, "'embedded' or a file glob")
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


def prepare_workdir(workdir: str) -> str:
  """Creates the workdir; an unwritable one is an error before any training."""
  if not workdir:
    raise ValueError("--workdir is required")
  workdir = os.path.abspath(workdir)
  try:
    os.makedirs(workdir, exist_ok=True)
  except OSError as e:
    raise ValueError(f"cannot create workdir {workdir}: {e.strerror}") from None
  if not os.access(workdir, os.W_OK):
    raise ValueError(f"workdir {workdir} is not writable")
  return workdir
