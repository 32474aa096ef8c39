"""HF task models, read side: which transformers class a dir holds, its task and head.

`hf_architecture(config)` names the class (config.json `architectures`, checked);
`hf_task(config, where, architecture)` says what task it does as a task.json-like
record (kind, label names, number of labels); `task_head(state_dict, ...)` takes the
head's arrays out of an HF state dict for `hf.params_from_hf`, and the errors for
names bert_jax cannot place say what it reads for that class (`expected_names`).
The export side (`hf.task_hf`, `hf.TASK_CLASSES`) writes what this reads.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

import numpy as np

from bert_jax.convert.common import ConversionError

# What a fine-tuned workdir's export keeps of its run in config.json (as RUN_RECORD),
# so predictions from the export window and answer as the workdir's did.
RUN_RECORD = "bert_jax_task"
RUN_FIELDS = ("task", "max_seq_length", "doc_stride", "max_query_length", "lowercase")

# transformers class -> (task kind, or None for a model without a task head; the
# head's HF name). The sequence kind is refined by `problem_type` (`hf_task`).
ARCHITECTURES = {
    "BertModel": (None, None),
    "BertForPreTraining": (None, None),
    "BertForMaskedLM": (None, None),
    "BertForNextSentencePrediction": (None, None),
    "BertForSequenceClassification": ("sequence", "classifier"),
    "BertForTokenClassification": ("token", "classifier"),
    "BertForQuestionAnswering": ("span", "qa_outputs"),
}
TASK_HEADS = ("classifier", "qa_outputs")
_PRETRAINING_HEADS = {"BertModel": "", "BertForPreTraining": ", cls.predictions.*, "
                      "cls.seq_relationship.*", "BertForMaskedLM": ", cls.predictions.*",
                      "BertForNextSentencePrediction": ", cls.seq_relationship.*"}
_PROBLEM_TYPES = {None: "classification", "single_label_classification": "classification",
                  "multi_label_classification": "multilabel", "regression": "regression"}


def expected_names(architecture: str | None, cfg) -> str:
  """What bert_jax reads from a state dict of `architecture`, for error messages."""
  encoder = (f"bert.embeddings.*, bert.encoder.layer.{{0..{cfg.num_layers - 1}}}.*, "
             "bert.pooler.dense.*")
  if architecture in _PRETRAINING_HEADS:
    return encoder + _PRETRAINING_HEADS[architecture]
  if architecture in ARCHITECTURES:
    name = ARCHITECTURES[architecture][1]
    return f"{encoder} (the pooler optional), {name}.weight, {name}.bias"
  return encoder + ", cls.* and one task head (classifier.* or qa_outputs.*)"


def task_head(sd: dict, cfg, architecture: str | None) -> dict | None:
  """Pops the task head's arrays out of `sd` -> {'kernel' [hidden, labels], 'bias'}."""
  found = {name for name in TASK_HEADS if f"{name}.weight" in sd or f"{name}.bias" in sd}
  want = ARCHITECTURES.get(architecture, (None, None))[1] if architecture else None
  if architecture is None and len(found) == 1:
    want = next(iter(found))
  stray = sorted(k for k in sd for name in found - {want} if k.startswith(name + "."))
  if stray:
    raise ConversionError(unmapped_message(stray, cfg, architecture))
  if want is None:
    return None
  names = (f"{want}.weight", f"{want}.bias")
  missing = [n for n in names if n not in sd]
  if missing:
    raise ConversionError(f"HF state dict lacks {missing} needed for "
                          f"{architecture or 'its task head'} (bert_jax reads "
                          f"{expected_names(architecture, cfg)})")
  weight, bias = (sd.pop(n) for n in names)   # torch Linear: [labels, hidden]
  if weight.ndim != 2 or weight.shape[1] != cfg.hidden_size or bias.shape != weight.shape[:1]:
    raise ConversionError(f"{want}.weight {weight.shape} and {want}.bias {bias.shape}: "
                          f"expected [labels, model.hidden_size={cfg.hidden_size}] and "
                          "[labels]")
  return {"kernel": np.ascontiguousarray(weight.T), "bias": bias}


_LAYER = re.compile(r"(?:bert\.)?encoder\.layer\.(\d+)\.")


def layer_beyond(name: str, cfg) -> bool:
  """Whether `name` is of an encoder layer the config does not have."""
  m = _LAYER.match(name)
  return bool(m) and int(m[1]) >= cfg.num_layers


def unmapped_message(names, cfg, architecture: str | None) -> str:
  """Says which names bert_jax cannot place, and why: layers beyond the config's, or
  names that are not part of `architecture` (what bert_jax reads for it)."""
  deeper = sorted(n for n in names if layer_beyond(n, cfg))
  other = sorted(set(names) - set(deeper))
  parts = []
  if deeper:
    parts.append(f"{', '.join(deeper)} (encoder layers beyond num_hidden_layers="
                 f"{cfg.num_layers} of the config)")
  if other:
    parts.append(", ".join(other))
  what = architecture or "a BERT model"
  return (f"HF state dict has names bert_jax does not map for {what}: "
          f"{'; '.join(parts)}; for {what} bert_jax reads {expected_names(architecture, cfg)}")


def hf_architecture(d: Mapping[str, Any], where: str, names=()) -> str | None:
  """The transformers class a config.json names (`architectures`), checked.

  Without `architectures`, the weight `names` decide where they can: `qa_outputs.*`
  is `BertForQuestionAnswering`, no task head a pretraining model (None);
  `classifier.*` alone is ambiguous (sequence or token head) and an error.
  """
  archs = list(dict.fromkeys(d.get("architectures") or []))
  if len(archs) > 1:
    raise ConversionError(f"{where} field architectures={archs} names several classes; "
                          f"bert_jax reads a dir of one: one of {sorted(ARCHITECTURES)}")
  if archs:
    if archs[0] not in ARCHITECTURES:
      raise ConversionError(f"{where} field architectures={archs}: bert_jax reads "
                            f"{sorted(ARCHITECTURES)}")
    return archs[0]
  heads = {n.split(".")[0] for n in names} & set(TASK_HEADS)
  if heads == {"qa_outputs"}:
    return "BertForQuestionAnswering"
  if heads:
    raise ConversionError(f"{where} has no 'architectures' and its weights hold "
                          f"{sorted(heads)}: ambiguous (classifier.* is the head of "
                          "BertForSequenceClassification and of BertForTokenClassification); "
                          "add \"architectures\": [\"BertFor...\"] to it")
  return None


def hf_task(d: Mapping[str, Any], where: str, architecture: str | None
            ) -> dict | None:
  """The task a config.json's task model does, as a task.json-like record.

  {'task': 'hf:<class>', 'kind', 'label_names', 'num_labels', 'architecture'}, and
  for a bert_jax export the run's task name and lengths (`RUN_RECORD`);
  None for a model without a task head. The sequence kind comes from `problem_type`
  (transformers' rule when it is unset: one label = regression); label names from
  `id2label` (none for regression and spans, as fine-tuning's task.json).
  """
  kind = ARCHITECTURES.get(architecture, (None, None))[0]
  if kind is None:
    return None
  id2label = d.get("id2label") or {}
  try:
    names = [id2label[k] for k in sorted(id2label, key=int)]
  except ValueError:
    raise ConversionError(f"{where} field id2label has keys that are not label ids: "
                          f"{sorted(id2label)}") from None
  if names and [int(k) for k in sorted(id2label, key=int)] != list(range(len(names))):
    raise ConversionError(f"{where} field id2label: expected ids 0..{len(names) - 1}, "
                          f"found {sorted(id2label, key=int)}")
  num_labels = len(names) or int(d.get("num_labels", 2))
  if kind == "sequence":
    problem = d.get("problem_type")
    if problem not in _PROBLEM_TYPES:
      raise ConversionError(f"{where} field problem_type={problem!r} is not one of "
                            f"{sorted(k for k in _PROBLEM_TYPES if k)}")
    kind = "regression" if problem is None and num_labels == 1 else _PROBLEM_TYPES[problem]
  if kind == "span":
    names, num_labels = [], 2
  if kind == "regression":
    names = []
  run = d.get(RUN_RECORD) or {}   # a bert_jax export: its run's task and lengths
  return {"task": f"hf:{architecture}", **{k: run[k] for k in RUN_FIELDS if k in run},
          "kind": kind, "label_names": names, "num_labels": num_labels,
          "architecture": architecture}


def check_head(params: Mapping[str, Any], task: Mapping[str, Any], where: str) -> None:
  """The head's number of outputs must be the task's (`num_labels`, id2label)."""
  outputs = int(np.shape(params["classifier"]["bias"])[-1])
  if outputs != task["num_labels"]:
    raise ConversionError(f"{where}: the {task['architecture']} head has {outputs} "
                          f"outputs but the config says {task['num_labels']} labels "
                          "(id2label / num_labels)")
