"""What a model directory holds: its kind, tokenizer, task and pooling settings.

Kinds (the same `from_pretrained(path)` takes each):
  finetune   a bert_jax fine-tuning workdir: `config.json`, `checkpoints/<step>/`,
             `tokenizer/<vocab.txt|spm.model>` and `task.json` =
             {"task", "kind", "label_names", "max_seq_length", "doc_stride",
              "max_query_length", "lowercase", "tokenizer": "tokenizer/<file>"}
  workdir    a bert_jax pretraining workdir (`config.json` + `checkpoints/`)
  hf | tf | bert_jax   an HF directory, a Google checkpoint dir, a converted-params dir
             (`bert_jax.convert` reads them); an HF task model (`architectures`
             BertForSequenceClassification | BertForTokenClassification |
             BertForQuestionAnswering, labels from `id2label`, the sequence kind from
             `problem_type`) or a params dir converted from one serves its task
A sentence-transformers directory (an HF dir with `modules.json`) also gives its
pooling (`1_Pooling/config.json`), normalisation (a `Normalize` module) and
`max_seq_length` (`sentence_bert_config.json`), which `embed` follows.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from bert_jax import storage, workdir as workdir_lib

TASK_KINDS = ("classification", "regression", "multilabel", "span", "token")


class ModelError(ValueError):
  """A model directory that cannot serve a request: says what is missing and where."""


@dataclasses.dataclass
class Source:
  path: str
  kind: str                               # finetune | workdir | hf | tf | bert_jax
  tokenizer_path: str
  lowercase: bool | None = None
  task: dict[str, Any] | None = None      # task.json of a fine-tuning workdir; the
                                          # task record of an HF or params dir's task
                                          # model (`Model.from_pretrained` sets it)
  pooling: str | None = None              # sentence-transformers: cls | mean | max
  normalize: bool = False                 # sentence-transformers Normalize module
  max_length: int | None = None           # sentence-transformers max_seq_length

  def describe(self) -> str:
    if self.kind == "finetune":
      return f"fine-tuning workdir {self.path} (task {self.task['task']}, {self.task['kind']})"
    what = {"workdir": "pretraining workdir", "hf": "HF directory",
            "tf": "Google checkpoint directory", "bert_jax": "converted-params dir"
            }[self.kind] + f" {self.path}"
    if self.task:
      what += f" (task {self.task['task']}, {self.task['kind']})"
    return what


def _read_json(path: str):
  from bert_jax.convert import common
  return common.read_json(path, ModelError)


def read_task(path: str) -> dict:
  """task.json of a fine-tuning workdir, checked."""
  where = str(workdir_lib.task_file(path))
  task = _read_json(where)
  missing = [k for k in ("task", "kind", "label_names", "max_seq_length", "tokenizer")
             if k not in task]
  if missing:
    raise ModelError(f"{where} lacks the fields {missing}")
  if task["kind"] not in TASK_KINDS:
    raise ModelError(f"{where} field kind={task['kind']!r} is not one of {TASK_KINDS}")
  return task


def locate(path: str) -> Source:
  """The kind of `path` and where its tokenizer is; a clear error if it has none."""
  from bert_jax import convert
  if not storage.path(path).is_dir():
    raise ModelError(f"--model {path} is not a directory")
  if workdir_lib.task_file(path).is_file():
    task = read_task(path)
    tok = str(workdir_lib.file(path, task["tokenizer"]))
    return Source(path, "finetune", _existing(tok, str(workdir_lib.task_file(path))),
                  lowercase=task.get("lowercase"), task=task)
  try:
    kind = convert.detect(path)
  except convert.ConversionError as e:
    raise ModelError(str(e)) from None
  if kind == "workdir":
    full = _read_json(str(workdir_lib.config_file(path)))
    d = full.get("data") or {}
    tok = d.get("tokenizer_path") or str(workdir_lib.trained_tokenizer(path))
    lower = {"true": True, "false": False}.get(str(d.get("tokenizer_lowercase", "auto")))
    return Source(path, kind, _existing(tok, f"{path}/config.json data.tokenizer_path"),
                  lowercase=lower)
  found = [f for f in ("vocab.txt", "spm.model", "tokenizer.json")
           if (storage.path(path) / f).is_file()]
  if not found:
    raise ModelError(f"{path} ({kind}) holds no tokenizer: expected vocab.txt, "
                     "spm.model or tokenizer.json beside the weights")
  src = Source(path, kind, storage.join(path, found[0]))
  if kind == "hf" and (storage.path(path) / "modules.json").is_file():
    _sentence_transformers(src)
  return src


def _existing(path: str, named_by: str) -> str:
  if not storage.exists(path):
    raise ModelError(f"the tokenizer {path} (named by {named_by}) does not exist")
  return path


_POOLING_MODES = {"pooling_mode_cls_token": "cls", "pooling_mode_mean_tokens": "mean",
                  "pooling_mode_max_tokens": "max"}


def _sentence_transformers(src: Source) -> None:
  """Pooling, normalisation and max_seq_length of a sentence-transformers dir."""
  modules = _read_json(storage.join(src.path, "modules.json"))
  for m in modules:
    kind = m.get("type", "").rsplit(".", 1)[-1]
    if kind == "Pooling":
      where = storage.join(src.path, m.get("path", ""), "config.json")
      cfg = _read_json(where)
      modes = [ours for theirs, ours in _POOLING_MODES.items() if cfg.get(theirs)]
      other = [k for k, v in cfg.items() if k.startswith("pooling_mode") and v
               and k not in _POOLING_MODES]
      if len(modes) != 1 or other:
        raise ModelError(f"{where}: embed supports exactly one of "
                         f"{sorted(_POOLING_MODES)}, found {modes + other}")
      src.pooling = modes[0]
    elif kind == "Normalize":
      src.normalize = True
  st = storage.join(src.path, "sentence_bert_config.json")
  if storage.path(st).is_file():
    src.max_length = _read_json(st).get("max_seq_length")
