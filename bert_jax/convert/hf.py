"""Hugging Face BERT <-> bert_jax: state dicts, config.json, checkpoint directories.

`params_from_hf(state_dict, cfg)` takes numpy arrays keyed by HF names, from a
`BertForPreTraining` (keys under `bert.` and `cls.`) or a bare `BertModel` (no prefix),
and returns the bert_jax parameter tree:

    {'bert': {...}}                          for a BertModel state dict
    {'bert': {...}, 'mlm': {...}, 'nsp': {...}}   when the pretraining heads are present

Task models (`BertForSequenceClassification`, `BertForTokenClassification`:
`classifier.*`; `BertForQuestionAnswering`: `qa_outputs.*`) add their head as
`{'classifier': {'kernel', 'bias'}}`, the tree of `bert_jax.models.make_task_model`;
`hf_tasks.hf_task(config)` reads which task a dir holds (its `architectures`,
`id2label`, `problem_type`) as a task.json-like record.

`hf_state_dict(params, cfg)` is its exact inverse (always `BertForPreTraining` names,
with the tied decoder written out). Layout differences: torch Linear weights are
[out, in] (ours [in, out]); attention kernels are split into [embed, heads, kv] /
[heads, kv, embed]; LayerNorm `weight/bias` (or TF-era `gamma/beta`) become
`scale/bias`. The MLM decoder is tied to the word embeddings in both, so
`cls.predictions.decoder.weight` must equal them.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

import numpy as np

from bert_jax import storage
from bert_jax.config import HF_CONFIG_FIELDS, HF_VALUES, ModelConfig, not_in_hf_bert
from bert_jax.convert.common import (ConversionError, check_shapes, expected_shapes,
                                     flatten, unflatten)
from bert_jax.convert.hf_tasks import (RUN_FIELDS, RUN_RECORD, check_head,  # noqa: F401
                                       hf_architecture, hf_task, layer_beyond, task_head,
                                       unmapped_message)
from bert_jax.models import params as params_lib

# Buffers HF keeps in state dicts that carry no learned weights.
_IGNORED = re.compile(r"(^|\.)(position_ids|token_type_ids)$")

# HF `hidden_act` -> `model.hidden_act`; the tanh approximations are one formula.
_ACT_FROM_HF = {"gelu": "gelu", "gelu_python": "gelu", "gelu_new": "gelu_new",
                "gelu_fast": "gelu_new", "gelu_pytorch_tanh": "gelu_pytorch_tanh",
                "relu": "relu"}
_ACT_TO_HF = {"gelu": "gelu", "gelu_new": "gelu_new", "gelu_tanh": "gelu_pytorch_tanh",
              "gelu_pytorch_tanh": "gelu_pytorch_tanh", "relu": "relu"}

# config.json field -> model config field (`config.HF_CONFIG_FIELDS`): the ones every
# file must hold (Google's bert_config.json too), then the ones taken when present;
# hidden_act, position_embedding_type and tie_word_embeddings are converted by value.
_BY_VALUE = ("hidden_act", "position_embedding", "tie_word_embeddings")
CONFIG_FIELDS = {HF_CONFIG_FIELDS[ours]: ours for ours in (
    "vocab_size", "hidden_size", "num_layers", "num_heads", "intermediate_size",
    "max_position_embeddings", "type_vocab_size")}
_OPTIONAL_FIELDS = {theirs: ours for ours, theirs in HF_CONFIG_FIELDS.items()
                    if theirs not in CONFIG_FIELDS and ours not in _BY_VALUE}
assert set(_ACT_TO_HF) == set(HF_VALUES["hidden_act"]), "config.HF_VALUES and hf disagree"

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
  missing = [k for k in CONFIG_FIELDS if k not in d]
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
  fields = {ours: d[theirs] for theirs, ours in {**CONFIG_FIELDS,
                                                  **_OPTIONAL_FIELDS}.items() if theirs in d}
  fields["hidden_act"] = gelu if act == "gelu" else _ACT_FROM_HF[act]
  fields["tie_word_embeddings"] = bool(d.get("tie_word_embeddings", True))
  try:
    return ModelConfig.from_dict(fields)
  except ValueError as e:
    raise ConversionError(f"{where}: {e}") from None


def check_exportable(cfg) -> None:
  """Raises ConversionError naming every field that keeps `cfg` from HF `BertModel`
  (`config.not_in_hf_bert`)."""
  bad = not_in_hf_bert(cfg)
  if bad:
    raise ConversionError(
        f"{', '.join(bad)} cannot be exported to HF BertModel: a field HF BertConfig "
        "lacks exports only at its default, an HF field only at a value HF computes "
        f"({HF_VALUES}; bert_jax/config.py HF_CONFIG_FIELDS, HOW_COMPUTED_FIELDS). "
        "Export the bert_jax params dir instead: --to=bert_jax")


def config_json(cfg, architectures=("BertForPreTraining",)) -> dict:
  """A `ModelConfig` -> an HF config.json dict (`transformers.BertConfig`)."""
  check_exportable(cfg)
  out = {theirs: getattr(cfg, ours) for theirs, ours in {**CONFIG_FIELDS,
                                                **_OPTIONAL_FIELDS}.items()}
  out.update(architectures=list(architectures), model_type="bert",
             hidden_act=_ACT_TO_HF[cfg.hidden_act], pad_token_id=0,
             position_embedding_type="absolute",
             tie_word_embeddings=cfg.tie_word_embeddings)
  return out


# ------------------------------------------------------------------- weights
# Names come from the `hf` rows of `bert_jax/models/params.py`; this section only knows
# how each kind of module lays out its arrays in torch.

_TORCH_LEAF = {"kernel": "weight", "scale": "weight", "embedding": "weight", "bias": "bias"}
_OUR_LEAF = {("linear", "weight"): "kernel", ("heads_in", "weight"): "kernel",
             ("heads_out", "weight"): "kernel", ("norm", "weight"): "scale",
             ("embedding", "weight"): "embedding"}
_TF_ERA = {"gamma": "weight", "beta": "bias"}  # LayerNorm names of older checkpoints


def _split_heads(w, shape, name):
  try:
    return w.reshape(shape)
  except ValueError:
    raise ConversionError(f"{name}: shape {w.T.shape} does not split into "
                          f"model.num_heads heads as {shape}") from None


def _from_torch(kind: str, leaf: str, w: np.ndarray, heads: int, name: str
                ) -> tuple[str, np.ndarray]:
  """One HF array -> (our leaf name, array in our layout)."""
  ours = _OUR_LEAF.get((kind, leaf), leaf)
  if kind == "heads_in":   # q/k/v: [heads*kv, embed] -> [embed, heads, kv]
    return ours, (_split_heads(w.T, (w.shape[1], heads, -1), name) if ours == "kernel"
                  else _split_heads(w, (heads, -1), name))
  if kind == "heads_out" and ours == "kernel":   # [embed, heads*kv] -> [heads, kv, embed]
    return ours, _split_heads(w.T, (heads, -1, w.shape[0]), name)
  if kind == "linear" and ours == "kernel":
    return ours, w.T
  return ours, w


def _to_torch(kind: str, leaf: str, x) -> tuple[str, np.ndarray]:
  """One of our arrays -> (HF leaf name, array in torch's layout)."""
  x = np.asarray(x, np.float32)
  if kind == "array":
    return "", x
  name = _TORCH_LEAF[leaf]
  if leaf == "kernel" and kind == "heads_in":
    return name, x.reshape(x.shape[0], -1).T
  if leaf == "kernel" and kind == "heads_out":
    return name, x.reshape(-1, x.shape[-1]).T
  if leaf == "kernel":
    return name, x.T
  return name, x.ravel() if kind == "heads_in" else x


def _hf_path(name: str) -> tuple[str, str, str] | None:
  """HF array name -> (our module path, kind, HF leaf), by the params.py rows."""
  hit = params_lib.path_from_hf(name)
  if hit is not None:
    return hit[0], hit[1], ""
  module, _, leaf = name.rpartition(".")
  hit = params_lib.path_from_hf(module)
  return (hit[0], hit[1], _TF_ERA.get(leaf, leaf)) if hit else None


def params_from_hf(state_dict: Mapping[str, Any], cfg, architecture: str | None = None
                   ) -> dict:
  """HF BERT state dict (numpy or torch tensors by HF name) -> bert_jax params.

  `architecture`: the transformers class the state dict is of (config.json
  `architectures`, `hf_tasks.ARCHITECTURES`); it decides which head names belong, and errors
  name what bert_jax reads for it. None: any BERT state dict, a task head included.
  """
  sd = {k: np.asarray(v.detach().cpu().float().numpy() if hasattr(v, "detach") else v,
                      dtype=np.float32)
        for k, v in state_dict.items() if not _IGNORED.search(k)}
  head = task_head(sd, cfg, architecture)
  bare = not any(k.startswith("bert.") for k in sd)   # a BertModel: no 'bert.' prefix
  full = {(f"bert.{k}" if bare and not k.startswith("cls.") else k): k for k in sd}
  sd.pop("cls.predictions.decoder.bias", None)  # an alias of cls.predictions.bias
  decoder = sd.get("cls.predictions.decoder.weight")
  if decoder is not None and getattr(cfg, "tie_word_embeddings", True):
    sd.pop("cls.predictions.decoder.weight")
  flat, unknown = {}, []
  for name, key in full.items():
    if key not in sd:
      continue
    hit = _hf_path(name)
    if hit is None or layer_beyond(name, cfg):
      unknown.append(key)
      continue
    path, kind, leaf = hit
    ours, value = _from_torch(kind, leaf, sd.pop(key), cfg.num_heads, key)
    flat[f"{path}/{ours}" if ours else path] = value
  if unknown:
    raise ConversionError(unmapped_message(unknown, cfg, architecture))
  expected = expected_shapes(cfg)
  heads = {p.split("/")[0] for p in flat} - {"bert"}
  missing = [p for p in expected if p not in flat and (
      params_lib.lookup(p, "load")[0] == "required" or p.split("/")[0] in heads)]
  if missing:
    module, _, leaf = params_lib.hf_module(missing[0])
    name = f"{module}.{_TORCH_LEAF.get(leaf, leaf)}".rstrip(".")
    name = name[len("bert."):] if bare and name.startswith("bert.") else name
    raise ConversionError(f"HF state dict lacks {name!r} needed for model.num_layers="
                          f"{cfg.num_layers} ({len(missing)} arrays missing)")
  params = unflatten(flat)
  if decoder is not None and "mlm" in params and getattr(cfg, "tie_word_embeddings", True):
    word = params["bert"]["embeddings"]["word_embeddings"]["embedding"]
    if not np.array_equal(decoder, word):
      raise ConversionError(
          "cls.predictions.decoder.weight differs from the word embeddings; set "
          "model.tie_word_embeddings=False to import an untied decoder")
  check_shapes(params, cfg, "HF state dict")
  if head is not None:
    params["classifier"] = head
  return params


def _mapped_state_dict(params: Mapping[str, Any]) -> dict[str, np.ndarray]:
  """Every array of `params` under its HF name (the params.py rows), per-layer."""
  sd: dict[str, np.ndarray] = {}
  for path, x in flatten(params_lib.to_per_layer(dict(params))):
    hit = params_lib.hf_module(path)
    if hit is None:
      raise ConversionError(f"{path} has no name in HF BertForPreTraining")
    module, kind, leaf = hit
    name, value = _to_torch(kind, leaf, x)
    sd[f"{module}.{name}" if name else module] = np.ascontiguousarray(value)
  return sd


def hf_state_dict(params: Mapping[str, Any], cfg) -> dict[str, np.ndarray]:
  """bert_jax params -> `BertForPreTraining` state dict (numpy, float32).

  The exact inverse of `params_from_hf`; the tied decoder weight and bias are
  written out as copies, so loaders that do not tie weights still find them.
  """
  check_exportable(cfg)
  sd = _mapped_state_dict(params)
  if "cls.predictions.decoder.weight" not in sd:  # tied: write the copy out
    sd["cls.predictions.decoder.weight"] = sd["bert.embeddings.word_embeddings.weight"].copy()
  sd["cls.predictions.decoder.bias"] = sd["cls.predictions.bias"].copy()
  return sd


# task.json kind -> (transformers class, its head's name, pooler kept, problem_type)
TASK_CLASSES = {
    "classification": ("BertForSequenceClassification", "classifier", True,
                       "single_label_classification"),
    "regression": ("BertForSequenceClassification", "classifier", True, "regression"),
    "multilabel": ("BertForSequenceClassification", "classifier", True,
                   "multi_label_classification"),
    "token": ("BertForTokenClassification", "classifier", False, None),
    "span": ("BertForQuestionAnswering", "qa_outputs", False, None),
}


def task_hf(params: Mapping[str, Any], cfg, task: Mapping[str, Any]
            ) -> tuple[dict[str, np.ndarray], dict]:
  """A fine-tuned tree {'bert', 'classifier'} and its task.json -> (state dict,
  config.json) of the matching transformers class (`TASK_CLASSES`); label names
  become `id2label`. Token and span heads drop the pooler, as HF builds them."""
  kind = task["kind"]
  if kind not in TASK_CLASSES:
    raise ConversionError(f"task.json kind={kind!r} is not one of {sorted(TASK_CLASSES)}")
  architecture, head, pooler, problem_type = TASK_CLASSES[kind]
  check_exportable(cfg)
  sd = {k: v for k, v in _mapped_state_dict({"bert": params["bert"]}).items()
        if pooler or not k.startswith("bert.pooler.")}
  kernel = np.asarray(params["classifier"]["kernel"], np.float32)   # [hidden, labels]
  sd[f"{head}.weight"] = np.ascontiguousarray(kernel.T)
  sd[f"{head}.bias"] = np.asarray(params["classifier"]["bias"], np.float32)
  config = config_json(cfg, architectures=(architecture,))
  num_labels = int(np.shape(params["classifier"]["kernel"])[-1])
  names = list(task.get("label_names") or []) or [f"LABEL_{i}" for i in range(num_labels)]
  if len(names) != num_labels:
    raise ConversionError(f"task.json has {len(names)} label_names but the head has "
                          f"{num_labels} outputs")
  config.update(id2label={str(i): n for i, n in enumerate(names)},
                label2id={n: i for i, n in enumerate(names)}, num_labels=num_labels)
  if problem_type:
    config["problem_type"] = problem_type
  kept = {k: task[k] for k in RUN_FIELDS if task.get(k) is not None}
  if kept:   # transformers keeps unknown config fields; `hf_task` reads them back
    config[RUN_RECORD] = kept
  return sd, config


# --------------------------------------------------------------- directories


def is_hf_dir(path: str) -> bool:
  d = storage.path(path)
  return (d / CONFIG_FILE).is_file() and any(
      (d / f).is_file() for f in (SAFETENSORS_FILE, TORCH_FILE))


def read_hf_model(path: str) -> tuple[dict, ModelConfig, str, dict | None]:
  """HF checkpoint dir -> (bert_jax params, model config, weights file, task).

  `task`: `hf_task`'s record for a task model (its head is `params['classifier']`),
  else None. Errors name the weights file and the config beside it.
  """
  sd, cfg, source = read_hf_dir(path)
  config_path = storage.join(path, CONFIG_FILE)
  d = storage.read_json(config_path)
  where = f"weights {source} against {CONFIG_FILE} beside them"
  try:
    architecture = hf_architecture(d, config_path, sd)
    task = hf_task(d, config_path, architecture)
    params = params_from_hf(sd, cfg, architecture)
  except ConversionError as e:
    raise ConversionError(f"{where}: {e}") from None
  if task is not None:
    check_head(params, task, where)
  return params, cfg, source, task


def read_hf_dir(path: str) -> tuple[dict[str, np.ndarray], ModelConfig, str]:
  """HF checkpoint dir -> (state dict of numpy arrays, model config, weights file)."""
  config_path = storage.join(path, CONFIG_FILE)
  if not storage.path(config_path).is_file():
    raise ConversionError(f"{path} has no {CONFIG_FILE} (found: {_listing(path)})")
  cfg = model_config_from_json(storage.read_json(config_path), config_path)
  st, pt = storage.join(path, SAFETENSORS_FILE), storage.join(path, TORCH_FILE)
  if storage.path(st).is_file():
    with storage.local_copy(st) as local:   # safetensors and torch read local files
      return _read_safetensors(local, st), cfg, st
  if storage.path(pt).is_file():
    torch = _need_torch(pt)
    with storage.local_copy(pt) as local:
      return _floats(torch.load(local, map_location="cpu", weights_only=True)), cfg, pt
  raise ConversionError(f"{path} has neither {SAFETENSORS_FILE} nor {TORCH_FILE} "
                        f"(found: {_listing(path)})")


def _read_safetensors(local: str, named: str) -> dict[str, np.ndarray]:
  from safetensors.numpy import load_file
  try:
    return dict(load_file(local))
  except TypeError:  # bfloat16, which numpy cannot hold: read through torch
    from safetensors.torch import load_file as load_torch
    return _floats(_need_torch(named) and load_torch(local))


def _need_torch(path: str):
  try:
    import torch
  except ImportError:
    raise ConversionError(f"reading {path} needs torch (pip install torch)") from None
  return torch


def _floats(torch_sd) -> dict[str, np.ndarray]:
  return {k: (v.float() if v.is_floating_point() else v).numpy()
          for k, v in torch_sd.items()}


def write_hf_dir(path: str, params, cfg, task: Mapping[str, Any] | None = None
                 ) -> list[str]:
  """Writes config.json and model.safetensors into the existing dir `path`:
  `BertForPreTraining`, or with `task` (a fine-tuned workdir's task.json) the task's
  class (`task_hf`)."""
  from safetensors.numpy import save
  if task is None:
    sd, config = hf_state_dict(params, cfg), config_json(cfg)
  else:
    sd, config = task_hf(params, cfg, task)
  storage.write_json_atomic(storage.join(path, CONFIG_FILE), config)
  storage.write_bytes_atomic(storage.join(path, SAFETENSORS_FILE),
                             save(sd, metadata={"format": "pt"}))
  return [CONFIG_FILE, SAFETENSORS_FILE]


def _listing(path: str) -> str:
  d = storage.path(path)
  if not d.is_dir():
    return "the directory does not exist"
  return ", ".join(sorted(p.name for p in d.iterdir())) or "nothing"
