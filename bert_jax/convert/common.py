"""Pieces every converter shares: the error type, JSON files, tree flattening, the
model's shapes.

The bert_jax parameter tree is addressed by '/'-joined paths here
('bert/encoder/layer_0/attention/query/kernel'), so an error can list exactly the
arrays that do not fit.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from bert_jax import storage

from bert_jax.models.params import flatten, unflatten  # noqa: F401  (the one tree flattening)


class ConversionError(ValueError):
  """Input that does not fit: names every file, key or shape at fault."""


def read_json(path: str, error: type[Exception] = ConversionError, what: str = "") -> Any:
  """The JSON value in `path`; a missing or unparsable file raises `error`, naming the
  file (after `what`, e.g. the config field that named it, when given)."""
  prefix = f"{what}: " if what else ""
  try:
    return storage.read_json(path)
  except FileNotFoundError:
    raise error(f"{prefix}missing file {path}") from None
  except ValueError as e:
    raise error(f"{prefix}{path} is not valid JSON: {e}") from None


def expected_shapes(cfg) -> dict[str, tuple[int, ...]]:
  """{path: shape} of every parameter `BertForPreTraining(cfg)` has (no compute)."""
  import flax.linen as nn
  import jax  # local: keeps this module importable without initialising a backend
  from bert_jax.models import BertForPreTraining
  ids = np.zeros((1, 1), np.int32)
  tree = jax.eval_shape(lambda: nn.meta.unbox(BertForPreTraining(cfg).init(
      jax.random.PRNGKey(0), ids, ids, ids)["params"]))
  return {path: tuple(leaf.shape) for path, leaf in flatten(tree)}


def fresh_param(cfg, path: str, shape: tuple[int, ...], rng) -> np.ndarray:
  """One parameter drawn as `models/bert.py` initialises it.

  Kernels and embedding tables: truncated normal with std `model.initializer_range`;
  biases zero; LayerNorm scales one. Per array, so filling a missing head costs
  milliseconds instead of compiling the whole model's init.
  """
  import jax
  leaf = path.rsplit("/", 1)[-1]
  if leaf in ("kernel", "embedding"):
    init = jax.nn.initializers.truncated_normal(cfg.initializer_range)
    return np.asarray(init(rng, shape, np.float32))
  if leaf in ("bias", "output_bias"):
    return np.zeros(shape, np.float32)
  if leaf == "scale":
    return np.ones(shape, np.float32)
  raise ConversionError(f"no initializer known for the missing parameter {path}")


def check_shapes(params: Mapping[str, Any], cfg, source: str = "checkpoint") -> None:
  """Compares every array with the shape `cfg` implies; one error lists them all."""
  expected = expected_shapes(cfg)
  bad = []
  for path, value in flatten(params):
    want = expected.get(path)
    if want is None:
      bad.append(f"{path}: not a parameter of the model")
    elif tuple(value.shape) != want:
      bad.append(f"{path}: {source} shape {tuple(value.shape)}, config implies {want}")
  if bad:
    raise ConversionError(f"{source} does not match the model config "
                          f"({len(bad)} array{'s' if len(bad) > 1 else ''}):\n  " + "\n  ".join(bad))


def complete_heads(params: dict, cfg, seed: int = 0) -> tuple[dict, list[str]]:
  """Adds freshly initialised modules the checkpoint lacks (pooler, MLM, NSP heads).

  Returns (full params, sorted module paths that were initialised). Only whole
  top-level modules are filled; a missing encoder weight stays an error elsewhere.
  """
  have = dict(flatten(params))
  expected = expected_shapes(cfg)
  missing = sorted(p for p in expected if p not in have)
  if not missing:
    return params, []
  import jax
  rngs = jax.random.split(jax.random.PRNGKey(seed), len(missing))
  for p, rng in zip(missing, rngs):
    have[p] = fresh_param(cfg, p, expected[p], rng)
  return unflatten(have), sorted({_module_of(p) for p in missing})


def _module_of(path: str) -> str:
  parts = path.split("/")
  return "/".join(parts[:2]) if parts[0] == "bert" else parts[0]
