"""Where a fine-tuning run starts from: the source model's weights, shape and tokenizer.

`init.checkpoint` names the source:

    'hf:DIR'            an HF BERT directory: config.json (its shape becomes config
                        field `model`'s, `with_source_model`), model.safetensors |
                        pytorch_model.bin, vocab.txt or tokenizer.json; any BERT class
                        (BertModel, BertForPreTraining, BertForMaskedLM, a task model)
    'bert_jax:WORKDIR'  a bert_jax workdir, pretraining or fine-tuned: the newest
                        checkpoint's `params/bert` in either encoder layout, its
                        tokenizer (task.json, data.tokenizer_path or its SentencePiece
                        model), and its model shape (`with_source_model`)
    ''                  random init (`data.vocab_path` names the tokenizer)

`initial_weights_and_tokenizer` checks the source before anything is written and
returns a loader the job calls for a fresh run only (never on resume);
`merge_params` places the loaded encoder into the task model. The task head is
freshly initialised, except from an HF task model whose labels are the task's
(`source_head`: the log says which). The job is `finetune.py`.
"""

from __future__ import annotations

import functools

import ml_collections
import numpy as np

from bert_jax import convert, storage, workdir as workdir_lib
from bert_jax.config import HF_CONFIG_FIELDS, ModelConfig
from bert_jax.convert import hf as hf_format, hf_tasks
from bert_jax.convert.common import read_json
from bert_jax.data import tokenizers
from bert_jax.data.tasks import common
from bert_jax.models import params as params_lib
from bert_jax.train import checkpoint as checkpoint_lib
from bert_jax.train import logging as log_lib


def check_hf_dir(directory: str, model_cfg) -> ModelConfig:
  """The HF directory's config.json must agree with config field `model`."""
  hf = storage.read_json(storage.join(directory, hf_format.CONFIG_FILE))
  model_cfg = ModelConfig.from_config(model_cfg)
  bad = [f"model.{k}={getattr(model_cfg, k)} but {hf[v]} in config.json"
         for v, k in hf_format.CONFIG_FIELDS.items()
         if v in hf and getattr(model_cfg, k) != hf[v]]
  if bad:
    raise ValueError(f"init.checkpoint=hf:{directory}: " + "; ".join(bad))
  return model_cfg


def load_hf_dir(directory: str, model_cfg) -> dict:
  """{'bert': ...} from an HF directory (any BERT class: a task model's head comes as
  'classifier' too); its config.json must agree with `model`."""
  check_hf_dir(directory, model_cfg)
  try:
    params, _, _, _ = hf_format.read_hf_model(directory)
  except convert.ConversionError as e:
    raise ValueError(f"init.checkpoint=hf:{directory}: {e}") from None
  return {k: v for k, v in params.items() if k in ("bert", "classifier")}


def _generic_names(names) -> bool:
  """transformers' default id2label ('LABEL_0', 'LABEL_1', ...): no names given."""
  return list(names) == [f"LABEL_{i}" for i in range(len(names))]


def source_head(config, task) -> bool:
  """Whether a fresh run continues from the source model's task head, said in the log.

  Only an HF task model (`init.checkpoint='hf:DIR'` of a BertFor...Classification /
  ...QuestionAnswering) has one. It is continued when its labels are the task's: the
  same kind ('classification', 'multilabel', 'regression', 'token', 'span'), as many
  outputs, and the same label names in the same order (transformers' generic
  `LABEL_i` names match any); else the task gets a new head.
  """
  kind, _, where = config.init.checkpoint.partition(":")
  if kind != "hf":
    return False
  config_path = storage.join(where, hf_format.CONFIG_FILE)
  d = read_json(config_path, ValueError, f"init.checkpoint=hf:{where}")
  try:
    src = hf_tasks.hf_task(d, config_path, hf_tasks.hf_architecture(d, config_path))
  except convert.ConversionError as e:
    raise ValueError(f"init.checkpoint=hf:{where}: {e}") from None
  if src is None:
    return False
  names, theirs = list(task.label_names()), list(src["label_names"])
  same = (src["kind"] == task.kind and src["num_labels"] == task.num_labels
          and (names == theirs or _generic_names(theirs) or not names))
  described = f"{src['architecture']} head ({src['kind']}, labels {theirs or src['num_labels']})"
  if same:
    log_lib.info("init.checkpoint=hf:%s: its %s fits task %s: a fresh run continues "
                 "from that head", where, described, task.name)
  else:
    log_lib.info("init.checkpoint=hf:%s: its %s differs from task %s (%s, labels %s): "
                 "the task gets a new head", where, described, task.name, task.kind,
                 names or task.num_labels)
  return same


# Architecture fields a run takes from its source model (`init=hf:DIR`'s config.json,
# `init=bert_jax:WORKDIR`'s newest checkpoint): the shape, the activation, the norm
# epsilon. Everything else (dtypes, attention_impl, dropout, scan, remat) stays the run's.
SHAPE_FIELDS = ("vocab_size", "hidden_size", "num_layers", "num_heads", "intermediate_size",
                "hidden_act", "max_position_embeddings", "type_vocab_size",
                "layer_norm_eps")


def source_model_fields(config) -> dict:
  """The `SHAPE_FIELDS` of `init.checkpoint`'s source model ({} for random init).

  An HF directory gives those its config.json holds (`hidden_act` converted as
  `bert_jax convert` reads it; a field the file lacks keeps the config's value); a
  bert_jax workdir the ones saved with its newest checkpoint. Read when the job starts,
  not when the config is built: configs/ reads no files.
  """
  kind, _, where = config.init.checkpoint.partition(":")
  if kind == "hf":
    path = storage.join(where, hf_format.CONFIG_FILE)
    d = read_json(path, ValueError, f"init.checkpoint=hf:{where}")
    try:
      source = hf_format.model_config_from_json(d, path)
    except convert.ConversionError as e:
      raise ValueError(f"init.checkpoint=hf:{where}: {e}") from None
    return {k: getattr(source, k) for k in SHAPE_FIELDS
            if k == "hidden_act" or HF_CONFIG_FIELDS[k] in d}
  if kind == "bert_jax":
    try:
      saved = checkpoint_lib.read_model_config(workdir_lib.checkpoints(where))
    except FileNotFoundError as e:
      raise FileNotFoundError(f"init.checkpoint=bert_jax:{where}: {e}") from None
    return {k: getattr(saved, k) for k in SHAPE_FIELDS}
  return {}


def with_source_model(config):
  """A copy of `config` whose model shape is its source model's (`source_model_fields`);
  `config` itself when it starts from random weights. The log names what changed."""
  fields = source_model_fields(config)
  if not fields:
    return config
  config = ml_collections.ConfigDict(config.to_dict())
  changed = {k: v for k, v in fields.items() if config.model[k] != v}
  if changed:
    log_lib.info("model shape from %s: %s", config.init.checkpoint, changed)
  config.model.update(fields)
  return config


def load_bert_jax_workdir(workdir: str) -> dict:
  """{'bert': ...} from the newest checkpoint of a bert_jax workdir (pretraining or
  fine-tuned), in the layout it was saved in (`merge_params` places either)."""
  try:
    params = checkpoint_lib.restore_params(workdir_lib.checkpoints(workdir))
  except FileNotFoundError as e:
    raise FileNotFoundError(f"init.checkpoint=bert_jax:{workdir}: {e}") from None
  return {"bert": params["bert"]}


def source_tokenizer(workdir: str, d):
  """(tokenizer, path) a bert_jax workdir used: a fine-tuned one's task.json, a
  pretraining run's data.tokenizer_path, or the SentencePiece model it trained."""
  task_file = workdir_lib.task_file(workdir)
  if task_file.is_file():
    task = read_json(task_file, ValueError, f"init.checkpoint=bert_jax:{workdir}")
    path = str(workdir_lib.file(workdir, task["tokenizer"]))
    lowercase = task["lowercase"]
  else:
    saved = read_json(workdir_lib.config_file(workdir), ValueError,
                      f"init.checkpoint=bert_jax:{workdir}")
    path = (saved.get("data") or {}).get("tokenizer_path") or str(
        workdir_lib.trained_tokenizer(workdir))
    lowercase = d.lowercase
  if path.endswith(".model"):
    return common.SentencePieceOffsets(tokenizers.SentencePieceTokenizer.load(path)), path
  return common.wordpiece_file(path, lowercase), path


def hf_tokenizer_file(directory: str) -> str:
  """The tokenizer beside an HF model: vocab.txt, else tokenizer.json (transformers 5
  saves only the latter)."""
  for name in ("vocab.txt", "tokenizer.json"):
    if (storage.path(directory) / name).is_file():
      return storage.join(directory, name)
  raise FileNotFoundError(f"init.checkpoint=hf:{directory} holds no tokenizer: expected "
                          "vocab.txt or tokenizer.json (or set data.vocab_path)")


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
    path = d.vocab_path or hf_tokenizer_file(where)
    tok = common.wordpiece_file(path, d.lowercase)
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
  layout; the `load` rules of `bert_jax/models/params.py` decide, shapes must agree.
  A head in `loaded` ('classifier', kept by `source_head`) replaces the new one."""
  if loaded is None:
    return init
  merged = params_lib.merge_pretrained(init, loaded, "init.checkpoint")
  if "classifier" in loaded:
    import jax
    import jax.numpy as jnp
    head = {}
    for name, leaf in init["classifier"].items():
      value = loaded["classifier"][name]
      if tuple(np.shape(value)) != tuple(leaf.shape):
        raise ValueError(f"classifier/{name}: init.checkpoint shape "
                         f"{tuple(np.shape(value))}, model {tuple(leaf.shape)}")
      value = jnp.asarray(value, leaf.dtype)
      head[name] = (jax.device_put(value, leaf.sharding) if hasattr(leaf, "sharding")
                    else value)
    merged["classifier"] = head
  return merged
