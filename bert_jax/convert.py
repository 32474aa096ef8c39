"""Checkpoint conversion: Hugging Face BERT state dicts -> bert_jax params.

`params_from_hf(state_dict, cfg)` takes numpy arrays keyed by HF names, from a
`BertForPreTraining` (keys under `bert.` and `cls.`) or a bare `BertModel` (no prefix),
and returns the bert_jax parameter tree:

    {'bert': {...}}                          for a BertModel state dict
    {'bert': {...}, 'mlm': {...}, 'nsp': {...}}   when the pretraining heads are present

Layout differences handled here: torch Linear weights are [out, in] (ours [in, out]);
attention kernels are split into [embed, heads, kv] / [heads, kv, embed]; LayerNorm
`weight/bias` (or TF-era `gamma/beta`) become `scale/bias`. The MLM decoder is tied to
the word embeddings in both, so `cls.predictions.decoder.weight` must equal them.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

import numpy as np

# Buffers HF keeps in state dicts that carry no learned weights.
_IGNORED = re.compile(r"(^|\.)(position_ids|token_type_ids)$")


class ConversionError(ValueError):
  """A state dict that does not fit the config: names every key or shape at fault."""


def _linear(sd, prefix):
  return {"kernel": sd.pop(prefix + ".weight").T, "bias": sd.pop(prefix + ".bias")}


def _layer_norm(sd, prefix):
  scale = sd.pop(prefix + ".weight", None)
  bias = sd.pop(prefix + ".bias", None)
  if scale is None:  # TF-era names
    scale, bias = sd.pop(prefix + ".gamma"), sd.pop(prefix + ".beta")
  return {"scale": scale, "bias": bias}


def _attention(sd, prefix, heads):
  out = {}
  for name in ("query", "key", "value"):
    w = sd.pop(f"{prefix}.self.{name}.weight")  # [out=heads*kv, in]
    b = sd.pop(f"{prefix}.self.{name}.bias")
    hidden = w.shape[1]
    out[name] = {"kernel": w.T.reshape(hidden, heads, -1),
                 "bias": b.reshape(heads, -1)}
  w = sd.pop(f"{prefix}.output.dense.weight")  # [hidden, heads*kv]
  out["output"] = {"kernel": w.T.reshape(heads, -1, w.shape[0]),
                   "bias": sd.pop(f"{prefix}.output.dense.bias")}
  return out


def _encoder_params(sd, p, cfg):
  layers = {}
  for i in range(cfg.num_layers):
    lp = f"{p}encoder.layer.{i}"
    layers[f"layer_{i}"] = {
        "attention": _attention(sd, f"{lp}.attention", cfg.num_heads),
        "attention_layer_norm": _layer_norm(sd, f"{lp}.attention.output.LayerNorm"),
        "intermediate": _linear(sd, f"{lp}.intermediate.dense"),
        "output": _linear(sd, f"{lp}.output.dense"),
        "output_layer_norm": _layer_norm(sd, f"{lp}.output.LayerNorm"),
    }
  bert = {
      "embeddings": {
          "word_embeddings": {"embedding": sd.pop(f"{p}embeddings.word_embeddings.weight")},
          "position_embeddings": {
              "embedding": sd.pop(f"{p}embeddings.position_embeddings.weight")},
          "token_type_embeddings": {
              "embedding": sd.pop(f"{p}embeddings.token_type_embeddings.weight")},
          "layer_norm": _layer_norm(sd, f"{p}embeddings.LayerNorm"),
      },
      "encoder": layers,
  }
  if f"{p}pooler.dense.weight" in sd:
    bert["pooler"] = _linear(sd, f"{p}pooler.dense")
  return bert


def _check_shapes(params, cfg):
  """Compares every array with the shape `cfg` implies; one error lists them all."""
  import jax  # local: keeps this module importable without initialising a backend
  from bert_jax.models import BertForPreTraining
  ids = np.zeros((1, 1), np.int32)
  expected = jax.eval_shape(
      lambda: BertForPreTraining(cfg).init(jax.random.PRNGKey(0), ids, ids, ids))
  expected = jax.tree_util.tree_map(lambda x: x, _unbox(expected["params"]))
  bad = []
  flat_exp = dict(_flatten(expected))
  for path, value in _flatten(params):
    want = flat_exp.get(path)
    if want is None:
      bad.append(f"{path}: not a parameter of the model")
    elif tuple(value.shape) != tuple(want.shape):
      bad.append(f"{path}: checkpoint shape {tuple(value.shape)}, "
                 f"config implies {tuple(want.shape)}")
  if bad:
    raise ConversionError("state dict does not match the model config:\n  "
                          + "\n  ".join(bad))


def _unbox(tree):
  import flax.linen as nn
  return nn.meta.unbox(tree)


def _flatten(tree, prefix=""):
  for k, v in tree.items():
    path = f"{prefix}/{k}" if prefix else k
    if isinstance(v, Mapping):
      yield from _flatten(v, path)
    else:
      yield path, v


def params_from_hf(state_dict: Mapping[str, Any], cfg) -> dict:
  """HF BERT state dict (numpy or torch tensors by HF name) -> bert_jax params."""
  sd = {k: np.asarray(v.detach().cpu().numpy() if hasattr(v, "detach") else v,
                      dtype=np.float32)
        for k, v in state_dict.items() if not _IGNORED.search(k)}
  prefix = "bert." if any(k.startswith("bert.") for k in sd) else ""
  try:
    params = {"bert": _encoder_params(sd, prefix, cfg)}
    if "cls.predictions.bias" in sd:
      decoder = sd.pop("cls.predictions.decoder.weight", None)
      word = params["bert"]["embeddings"]["word_embeddings"]["embedding"]
      if decoder is not None and not np.array_equal(decoder, word):
        raise ConversionError(
            "cls.predictions.decoder.weight differs from the word embeddings; bert_jax "
            "ties them (as BERT does)")
      sd.pop("cls.predictions.decoder.bias", None)  # an alias of cls.predictions.bias
      params["mlm"] = {
          "transform": _linear(sd, "cls.predictions.transform.dense"),
          "transform_layer_norm": _layer_norm(sd, "cls.predictions.transform.LayerNorm"),
          "output_bias": sd.pop("cls.predictions.bias"),
      }
    if "cls.seq_relationship.weight" in sd:
      params["nsp"] = _linear(sd, "cls.seq_relationship")
  except KeyError as e:
    raise ConversionError(
        f"HF state dict lacks {e.args[0]!r} needed for model.num_layers="
        f"{cfg.num_layers}") from None
  if sd:
    raise ConversionError(
        "HF state dict has names bert_jax does not map (wrong num_layers or not a "
        "BERT checkpoint?): " + ", ".join(sorted(sd)))
  _check_shapes(params, cfg)
  return params
