"""Where a fine-tuning run starts from: the source model's weights, shape and tokenizer.

`init.checkpoint` names the source:

    'hf:DIR'            an HF BERT directory: config.json (must agree with config field
                        `model`), model.safetensors, vocab.txt
    'bert_jax:WORKDIR'  a bert_jax workdir, pretraining or fine-tuned: the newest
                        checkpoint's `params/bert` in either encoder layout, its
                        tokenizer (task.json, data.tokenizer_path or its SentencePiece
                        model), and its model shape (`with_source_model`)
    ''                  random init (`data.vocab_path` names the tokenizer)

`initial_weights_and_tokenizer` checks the source before anything is written and
returns a loader the job calls for a fresh run only (never on resume);
`merge_params` places the loaded encoder into the task model (its head is always
freshly initialised). The job is `finetune.py`.
"""

from __future__ import annotations

import functools
import json
import os

import ml_collections

from bert_jax import convert
from bert_jax.config import ModelConfig
from bert_jax.convert.common import read_json
from bert_jax.convert.native import TASK_FILE
from bert_jax.data import tokenizers
from bert_jax.data.tasks import common
from bert_jax.models import params as params_lib
from bert_jax.train import checkpoint as checkpoint_lib
from bert_jax.train import logging as log_lib


def check_hf_dir(directory: str, model_cfg) -> ModelConfig:
  """The HF directory's config.json must agree with config field `model`."""
  with open(os.path.join(directory, "config.json"), encoding="utf-8") as f:
    hf = json.load(f)
  pairs = {"vocab_size": "vocab_size", "hidden_size": "hidden_size",
           "num_layers": "num_hidden_layers", "num_heads": "num_attention_heads",
           "intermediate_size": "intermediate_size",
           "max_position_embeddings": "max_position_embeddings",
           "type_vocab_size": "type_vocab_size"}
  model_cfg = ModelConfig.from_config(model_cfg)
  bad = [f"model.{k}={getattr(model_cfg, k)} but {hf[v]} in config.json"
         for k, v in pairs.items() if v in hf and getattr(model_cfg, k) != hf[v]]
  if bad:
    raise ValueError(f"init.checkpoint=hf:{directory}: " + "; ".join(bad))
  return model_cfg


def load_hf_dir(directory: str, model_cfg) -> dict:
  """{'bert': ...} from an HF directory; its config.json must agree with `model`."""
  from safetensors.numpy import load_file
  model_cfg = check_hf_dir(directory, model_cfg)
  params = convert.params_from_hf(load_file(os.path.join(directory, "model.safetensors")),
                                  model_cfg)
  return {"bert": params["bert"]}


# Architecture fields an `init=bert_jax:WORKDIR` run takes from that workdir's config.
SHAPE_FIELDS = ("vocab_size", "hidden_size", "num_layers", "num_heads", "intermediate_size",
                "hidden_act", "max_position_embeddings", "type_vocab_size",
                "layer_norm_eps")


def source_model_fields(workdir: str) -> dict:
  """The architecture fields saved with a bert_jax workdir's newest checkpoint."""
  try:
    saved = checkpoint_lib.read_model_config(os.path.join(workdir, "checkpoints"))
  except FileNotFoundError as e:
    raise FileNotFoundError(f"init.checkpoint=bert_jax:{workdir}: {e}") from None
  return {k: getattr(saved, k) for k in SHAPE_FIELDS}


def with_source_model(config):
  """A copy of `config` whose model shape is the `init=bert_jax:WORKDIR` source's."""
  kind, _, where = config.init.checkpoint.partition(":")
  if kind != "bert_jax":
    return config
  fields = source_model_fields(where)
  config = ml_collections.ConfigDict(config.to_dict())
  changed = {k: v for k, v in fields.items() if config.model[k] != v}
  if changed:
    log_lib.info("model shape from %s: %s", where, changed)
  config.model.update(fields)
  return config


def load_bert_jax_workdir(workdir: str) -> dict:
  """{'bert': ...} from the newest checkpoint of a bert_jax workdir (pretraining or
  fine-tuned), in the layout it was saved in (`merge_params` places either)."""
  try:
    params = checkpoint_lib.restore_params(os.path.join(workdir, "checkpoints"))
  except FileNotFoundError as e:
    raise FileNotFoundError(f"init.checkpoint=bert_jax:{workdir}: {e}") from None
  return {"bert": params["bert"]}


def source_tokenizer(workdir: str, d):
  """(tokenizer, path) a bert_jax workdir used: a fine-tuned one's task.json, a
  pretraining run's data.tokenizer_path, or the SentencePiece model it trained."""
  task_file = os.path.join(workdir, TASK_FILE)
  if os.path.isfile(task_file):
    task = read_json(task_file, ValueError, f"init.checkpoint=bert_jax:{workdir}")
    path, lowercase = os.path.join(workdir, task["tokenizer"]), task["lowercase"]
  else:
    saved = read_json(os.path.join(workdir, "config.json"), ValueError,
                      f"init.checkpoint=bert_jax:{workdir}")
    path = (saved.get("data") or {}).get("tokenizer_path") or os.path.join(
        workdir, "tokenizer", "spm.model")
    lowercase = d.lowercase
  if path.endswith(".model"):
    return common.SentencePieceOffsets(tokenizers.SentencePieceTokenizer.load(path)), path
  return common.WordPiece(path, lowercase), path


def initial_weights_and_tokenizer(config):
  """(load_params, tokenizer, tokenizer file) from `init.checkpoint` / `data.vocab_path`.

  `load_params()` reads the source's weights ({'bert': ...}; None for random init): the
  job calls it for a fresh run only, never on resume. The source's shape is checked
  here, before anything is written.
  """
  ckpt, d = config.init.checkpoint, config.data
  kind, _, where = ckpt.partition(":")
  load_params, tok, path = (lambda: None), None, d.vocab_path
  if kind == "hf":
    check_hf_dir(where, config.model)
    load_params = functools.partial(load_hf_dir, where, config.model)
    path = d.vocab_path or os.path.join(where, "vocab.txt")
    tok = common.WordPiece(path, d.lowercase)
  elif kind == "bert_jax":
    load_params = functools.partial(load_bert_jax_workdir, where)
    if not d.vocab_path:
      tok, path = source_tokenizer(where, d)
  elif ckpt:
    raise ValueError(f"config field init.checkpoint={ckpt!r}: expected '', 'hf:DIR' or "
                     "'bert_jax:WORKDIR'")
  if tok is None:
    if not d.vocab_path:
      raise ValueError("config field data.vocab_path is empty and init.checkpoint names "
                       "no tokenizer; expected a WordPiece vocab.txt")
    tok = common.WordPiece(d.vocab_path, d.lowercase)
  if tok.vocab_size > config.model.vocab_size:
    raise ValueError(f"the tokenizer has {tok.vocab_size} pieces but config field "
                     f"model.vocab_size={config.model.vocab_size}")
  return load_params, tok, path


def merge_params(init: dict, loaded: dict | None) -> dict:
  """`init` with its encoder (and pooler, when present) taken from `loaded`, in either
  layout; the `load` rules of `bert_jax/models/params.py` decide, shapes must agree."""
  if loaded is None:
    return init
  return params_lib.merge_pretrained(init, loaded, "init.checkpoint")
