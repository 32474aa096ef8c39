"""Hugging Face BERT <-> bert_jax: state dicts, config.json, checkpoint directories.

`params_from_hf(state_dict, cfg)` takes numpy arrays keyed by HF names, from a
`BertForPreTraining` (keys under `bert.` and `cls.`) or a bare `BertModel` (no prefix),
and returns the bert_jax parameter tree:

    {'bert': {...}}                          for a BertModel state dict
    {'bert': {...}, 'mlm': {...}, 'nsp': {...}}   when the pretraining heads are present

`hf_state_dict(params, cfg)` is its exact inverse (always `BertForPreTraining` names,
with the tied decoder written out). Layout differences: torch Linear weights are
[out, in] (ours [in, out]); attention kernels are split into [embed, heads, kv] /
[heads, kv, embed]; LayerNorm `weight/bias` (or TF-era `gamma/beta`) become
`scale/bias`. The MLM decoder is tied to the word embeddings in both, so
`cls.predictions.decoder.weight` must equal them.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any, Mapping

import numpy as np

from bert_jax.config import ModelConfig
from bert_jax.convert.common import ConversionError, check_shapes

# Buffers HF keeps in state dicts that carry no learned weights.
_IGNORED = re.compile(r"(^|\.)(position_ids|token_type_ids)$")

# HF `hidden_act` -> `model.hidden_act`; the tanh approximations are one formula.
_ACT_FROM_HF = {"gelu": "gelu", "gelu_python": "gelu", "gelu_new": "gelu_new",
                "gelu_fast": "gelu_new", "gelu_pytorch_tanh": "gelu_pytorch_tanh",
                "relu": "relu"}
_ACT_TO_HF = {"gelu": "gelu", "gelu_new": "gelu_new", "gelu_tanh": "gelu_pytorch_tanh",
              "gelu_pytorch_tanh": "gelu_pytorch_tanh", "relu": "relu"}

# config.json field -> model config field (Google's bert_config.json uses the same).
_CONFIG_FIELDS = {"vocab_size": "vocab_size", "hidden_size": "hidden_size",
                  "num_hidden_layers": "num_layers", "num_attention_heads": "num_heads",
                  "intermediate_size": "intermediate_size",
                  "max_position_embeddings": "max_position_embeddings",
                  "type_vocab_size": "type_vocab_size"}
_OPTIONAL_FIELDS = {"layer_norm_eps": "layer_norm_eps",
                    "hidden_dropout_prob": "hidden_dropout_prob",
                    "attention_probs_dropout_prob": "attention_dropout_prob",
                    "initializer_range": "initializer_range"}

CONFIG_FILE = "config.json"
SAFETENSORS_FILE = "model.safetensors"
TORCH_FILE = "pytorch_model.bin"

# ------------------------------------------------------------------- configs


def model_config_from_json(d: Mapping[str, Any], where: str,
                           gelu: str = "gelu") -> ModelConfig:
  """An HF config.json (or Google bert_config.json) dict -> a `ModelConfig`.

  `gelu`: what hidden_act 'gelu' means in this file: 'gelu' (erf) for HF, 'gelu_new'
  (tanh approximation) for Google's bert_config.json, whose modeling.py computes it so.
  """
  missing = [k for k in _CONFIG_FIELDS if k not in d]
  if missing:
    raise ConversionError(f"{where} lacks the fields {missing}")
  act = d.get("hidden_act", "gelu")
  if act not in _ACT_FROM_HF:
    raise ConversionError(f"{where} field hidden_act={act!r} is not one of "
                          f"{sorted(_ACT_FROM_HF)} (model.hidden_act)")
  position = d.get("position_embedding_type", "absolute")
  if position != "absolute":
    raise ConversionError(f"{where} field position_embedding_type={position!r}: bert_jax "
                          "has absolute position embeddings only")
  fields = {ours: d[theirs] for theirs, ours in {**_CONFIG_FIELDS,
                                                  **_OPTIONAL_FIELDS}.items() if theirs in d}
  fields["hidden_act"] = gelu if act == "gelu" else _ACT_FROM_HF[act]
  try:
    return ModelConfig.from_dict(fields)
  except ValueError as e:
    raise ConversionError(f"{where}: {e}") from None


def config_json(cfg, architectures=("BertForPreTraining",)) -> dict:
  """A `ModelConfig` -> an HF config.json dict (`transformers.BertConfig`)."""
  out = {theirs: getattr(cfg, ours) for theirs, ours in {**_CONFIG_FIELDS,
                                                **_OPTIONAL_FIELDS}.items()}
  out.update(architectures=list(architectures), model_type="bert",
             hidden_act=_ACT_TO_HF[cfg.hidden_act], pad_token_id=0,
             position_embedding_type="absolute", tie_word_embeddings=True)
  return out


# ------------------------------------------------------------------- weights


def _linear(sd, prefix):
  return {"kernel": sd.pop(prefix + ".weight").T, "bias": sd.pop(prefix + ".bias")}


def _layer_norm(sd, prefix):
  scale = sd.pop(prefix + ".weight", None)
  bias = sd.pop(prefix + ".bias", None)
  if scale is None:  # TF-era names
    scale, bias = sd.pop(prefix + ".gamma"), sd.pop(prefix + ".beta")
  return {"scale": scale, "bias": bias}


def _split_heads(w, shape, name):
  try:
    return w.reshape(shape)
  except ValueError:
    raise ConversionError(f"{name}: shape {w.T.shape} does not split into "
                          f"model.num_heads heads as {shape}") from None


def _attention(sd, prefix, heads):
  out = {}
  for name in ("query", "key", "value"):
    key = f"{prefix}.self.{name}.weight"
    w = sd.pop(key)  # [out=heads*kv, in]
    b = sd.pop(f"{prefix}.self.{name}.bias")
    hidden = w.shape[1]
    out[name] = {"kernel": _split_heads(w.T, (hidden, heads, -1), key),
                 "bias": _split_heads(b, (heads, -1), key)}
  key = f"{prefix}.output.dense.weight"
  w = sd.pop(key)  # [hidden, heads*kv]
  out["output"] = {"kernel": _split_heads(w.T, (heads, -1, w.shape[0]), key),
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


def params_from_hf(state_dict: Mapping[str, Any], cfg) -> dict:
  """HF BERT state dict (numpy or torch tensors by HF name) -> bert_jax params."""
  sd = {k: np.asarray(v.detach().cpu().float().numpy() if hasattr(v, "detach") else v,
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
  check_shapes(params, cfg, "HF state dict")
  return params


def hf_state_dict(params: Mapping[str, Any], cfg) -> dict[str, np.ndarray]:
  """bert_jax params -> `BertForPreTraining` state dict (numpy, float32).

  The exact inverse of `params_from_hf`; the tied decoder weight and bias are
  written out as copies, so loaders that do not tie weights still find them.
  """
  f32 = lambda x: np.ascontiguousarray(np.asarray(x, np.float32))
  sd: dict[str, np.ndarray] = {}

  def linear(name, p):
    sd[name + ".weight"] = f32(np.asarray(p["kernel"]).T)
    sd[name + ".bias"] = f32(p["bias"])

  def norm(name, p):
    sd[name + ".weight"], sd[name + ".bias"] = f32(p["scale"]), f32(p["bias"])

  bert = params["bert"]
  emb = bert["embeddings"]
  for name in ("word_embeddings", "position_embeddings", "token_type_embeddings"):
    sd[f"bert.embeddings.{name}.weight"] = f32(emb[name]["embedding"])
  norm("bert.embeddings.LayerNorm", emb["layer_norm"])
  for i in range(cfg.num_layers):
    lp, layer = f"bert.encoder.layer.{i}", bert["encoder"][f"layer_{i}"]
    att = layer["attention"]
    for name in ("query", "key", "value"):
      k = np.asarray(att[name]["kernel"])  # [embed, heads, kv]
      sd[f"{lp}.attention.self.{name}.weight"] = f32(k.reshape(k.shape[0], -1).T)
      sd[f"{lp}.attention.self.{name}.bias"] = f32(np.asarray(att[name]["bias"]).ravel())
    k = np.asarray(att["output"]["kernel"])  # [heads, kv, embed]
    sd[f"{lp}.attention.output.dense.weight"] = f32(k.reshape(-1, k.shape[-1]).T)
    sd[f"{lp}.attention.output.dense.bias"] = f32(att["output"]["bias"])
    norm(f"{lp}.attention.output.LayerNorm", layer["attention_layer_norm"])
    linear(f"{lp}.intermediate.dense", layer["intermediate"])
    linear(f"{lp}.output.dense", layer["output"])
    norm(f"{lp}.output.LayerNorm", layer["output_layer_norm"])
  linear("bert.pooler.dense", bert["pooler"])
  mlm = params["mlm"]
  linear("cls.predictions.transform.dense", mlm["transform"])
  norm("cls.predictions.transform.LayerNorm", mlm["transform_layer_norm"])
  sd["cls.predictions.bias"] = f32(mlm["output_bias"])
  sd["cls.predictions.decoder.weight"] = sd["bert.embeddings.word_embeddings.weight"].copy()
  sd["cls.predictions.decoder.bias"] = sd["cls.predictions.bias"].copy()
  linear("cls.seq_relationship", params["nsp"])
  return sd


# --------------------------------------------------------------- directories


def is_hf_dir(path: str) -> bool:
  return os.path.isfile(os.path.join(path, CONFIG_FILE)) and any(
      os.path.isfile(os.path.join(path, f)) for f in (SAFETENSORS_FILE, TORCH_FILE))


def read_hf_dir(path: str) -> tuple[dict[str, np.ndarray], ModelConfig, str]:
  """HF checkpoint dir -> (state dict of numpy arrays, model config, weights file)."""
  config_path = os.path.join(path, CONFIG_FILE)
  if not os.path.isfile(config_path):
    raise ConversionError(f"{path} has no {CONFIG_FILE} (found: {_listing(path)})")
  with open(config_path, encoding="utf-8") as f:
    cfg = model_config_from_json(json.load(f), config_path)
  st, pt = os.path.join(path, SAFETENSORS_FILE), os.path.join(path, TORCH_FILE)
  if os.path.isfile(st):
    from safetensors.numpy import load_file
    try:
      return dict(load_file(st)), cfg, st
    except TypeError:  # bfloat16, which numpy cannot hold: read through torch
      from safetensors.torch import load_file as load_torch
      return _floats(_need_torch(st) and load_torch(st)), cfg, st
  if os.path.isfile(pt):
    torch = _need_torch(pt)
    return _floats(torch.load(pt, map_location="cpu", weights_only=True)), cfg, pt
  raise ConversionError(f"{path} has neither {SAFETENSORS_FILE} nor {TORCH_FILE} "
                        f"(found: {_listing(path)})")


def _need_torch(path: str):
  try:
    import torch
  except ImportError:
    raise ConversionError(f"reading {path} needs torch (pip install torch)") from None
  return torch


def _floats(torch_sd) -> dict[str, np.ndarray]:
  return {k: (v.float() if v.is_floating_point() else v).numpy()
          for k, v in torch_sd.items()}


def write_hf_dir(path: str, params, cfg) -> list[str]:
  """Writes config.json and model.safetensors into the existing dir `path`."""
  from safetensors.numpy import save_file
  with open(os.path.join(path, CONFIG_FILE), "w", encoding="utf-8") as f:
    json.dump(config_json(cfg), f, indent=2, sort_keys=True)
  save_file(hf_state_dict(params, cfg), os.path.join(path, SAFETENSORS_FILE),
            metadata={"format": "pt"})
  return [CONFIG_FILE, SAFETENSORS_FILE]


def _listing(path: str) -> str:
  if not os.path.isdir(path):
    return "the directory does not exist"
  return ", ".join(sorted(os.listdir(path))) or "nothing"
