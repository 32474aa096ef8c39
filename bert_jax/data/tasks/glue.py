"""GLUE: task table, loading (tfds `glue/*` or the original TSV files), submission files.

Splits are the tfds names (`train`, `validation`, `test`; MNLI has `validation_matched`,
`validation_mismatched`, `test_matched`, `test_mismatched`; AX only `test`). Label ids
follow tfds (`label_names`); TSV label strings map onto them through `tsv_labels`.
An MNLI run also predicts the diagnostic set AX (split name `ax`), as the GLUE server
wants AX predictions from the MNLI model. Test-set predictions are written in the GLUE server's format: `<Task>.tsv` with an
`index<TAB>prediction` header, labels written as the server expects (strings for the
NLI tasks, 0/1 otherwise, a float for STS-B).
"""

from __future__ import annotations

import csv
import dataclasses
import sys
from typing import Sequence

import numpy as np

from bert_jax import metrics, storage
from bert_jax.data.tasks import common

NLI3 = ("entailment", "neutral", "contradiction")
NLI2 = ("entailment", "not_entailment")


@dataclasses.dataclass(frozen=True)
class GlueTask:
  name: str
  text_fields: tuple[str, str | None]          # tfds feature names
  label_names: tuple[str, ...]                 # () for regression
  tsv_dir: str                                 # directory name in the GLUE download
  submission: dict[str, str]                   # test split -> file name
  eval_splits: tuple[str, ...] = ("validation",)
  tsv_labels: tuple[str, ...] = ("0", "1")     # TSV label string per label id

  @property
  def kind(self) -> str:
    return "classification" if self.label_names else "regression"

  @property
  def num_labels(self) -> int:
    return len(self.label_names) or 1


TASKS = {t.name: t for t in [
    GlueTask("cola", ("sentence", None), ("unacceptable", "acceptable"), "CoLA",
             {"test": "CoLA.tsv"}),
    GlueTask("sst2", ("sentence", None), ("negative", "positive"), "SST-2",
             {"test": "SST-2.tsv"}),
    GlueTask("mrpc", ("sentence1", "sentence2"), ("not_equivalent", "equivalent"), "MRPC",
             {"test": "MRPC.tsv"}),
    GlueTask("stsb", ("sentence1", "sentence2"), (), "STS-B", {"test": "STS-B.tsv"},
             tsv_labels=()),
    GlueTask("qqp", ("question1", "question2"), ("not_duplicate", "duplicate"), "QQP",
             {"test": "QQP.tsv"}),
    GlueTask("mnli", ("premise", "hypothesis"), NLI3, "MNLI",
             {"test_matched": "MNLI-m.tsv", "test_mismatched": "MNLI-mm.tsv",
              "ax": "AX.tsv"},
             eval_splits=("validation_matched", "validation_mismatched"), tsv_labels=NLI3),
    GlueTask("qnli", ("question", "sentence"), NLI2, "QNLI", {"test": "QNLI.tsv"},
             tsv_labels=NLI2),
    GlueTask("rte", ("sentence1", "sentence2"), NLI2, "RTE", {"test": "RTE.tsv"},
             tsv_labels=NLI2),
    GlueTask("wnli", ("sentence1", "sentence2"), ("not_entailment", "entailment"), "WNLI",
             {"test": "WNLI.tsv"}),
    GlueTask("ax", ("premise", "hypothesis"), NLI3, "diagnostic", {"test": "AX.tsv"},
             eval_splits=(), tsv_labels=NLI3),
]}


def get(name: str) -> GlueTask:
  if name not in TASKS:
    raise ValueError(f"GLUE task {name!r} is not one of {sorted(TASKS)}")
  return TASKS[name]


def is_test_split(split: str) -> bool:
  """Unlabelled splits; 'ax' is the diagnostic set an MNLI model predicts."""
  return split.startswith("test") or split == "ax"


def from_tfds_record(task: GlueTask, r: dict) -> dict:
  a, b = task.text_fields
  label = r["label"].item() if hasattr(r["label"], "item") else r["label"]
  return {"text_a": common.as_text(r[a]),
          "text_b": common.as_text(r[b]) if b else None,
          "label": float(label) if task.kind == "regression" else int(label),
          "idx": int(np.asarray(r["idx"]))}


# TSV column names (header rows) per task; CoLA train/dev files have no header.
_TSV_TEXT = {"CoLA": ("sentence", None), "SST-2": ("sentence", None),
             "MRPC": ("#1 String", "#2 String"), "STS-B": ("sentence1", "sentence2"),
             "QQP": ("question1", "question2"), "MNLI": ("sentence1", "sentence2"),
             "QNLI": ("question", "sentence"), "RTE": ("sentence1", "sentence2"),
             "WNLI": ("sentence1", "sentence2"), "diagnostic": ("sentence1", "sentence2")}
_TSV_LABEL = ("label", "gold_label", "Quality", "is_duplicate", "score")
_TSV_FILE = {"train": "train", "validation": "dev", "test": "test",
             "validation_matched": "dev_matched", "validation_mismatched": "dev_mismatched",
             "test_matched": "test_matched", "test_mismatched": "test_mismatched"}


def load_tsv(task: GlueTask, directory: str, split: str) -> list[dict]:
  """Examples from the original GLUE download (`directory/<TsvDir>/<split>.tsv`)."""
  if split not in _TSV_FILE:
    raise ValueError(f"GLUE split {split!r} is not one of {sorted(_TSV_FILE)}")
  name = "diagnostic.tsv" if task.name == "ax" else _TSV_FILE[split] + ".tsv"
  path = storage.join(directory, task.tsv_dir, name)
  if not storage.path(path).is_file():
    raise FileNotFoundError(f"config field data.data_dir={directory!r}: no {path}")
  csv.field_size_limit(sys.maxsize)
  with storage.open_text(path, encoding="utf-8-sig", newline="") as f:
    rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
  labelled = not is_test_split(split)
  if task.name == "cola" and labelled:   # source, label, original label, sentence
    header, rows = ["source", "label", "star", "sentence"], rows
  else:
    header, rows = rows[0], rows[1:]
  col = {h: i for i, h in enumerate(header)}
  a, b = _TSV_TEXT[task.tsv_dir]
  label_col = next((col[c] for c in _TSV_LABEL if c in col), None)
  if labelled and label_col is None:
    raise ValueError(f"{path}: no label column among {_TSV_LABEL}; header {header}")
  out = []
  for n, row in enumerate(rows):
    label = -1
    if labelled:
      raw = row[-1] if task.name == "mnli" else row[label_col]
      if task.kind == "regression":
        label = float(raw)
      elif raw in task.tsv_labels:
        label = task.tsv_labels.index(raw)
      else:
        raise ValueError(f"{path} row {n + 2}: label {raw!r} is not one of "
                         f"{task.tsv_labels}")
    idx = int(row[col["index"]]) if "index" in col and not labelled else n
    if "id" in col and not labelled:
      idx = int(row[col["id"]])
    out.append({"text_a": row[col[a]], "text_b": row[col[b]] if b else None,
                "label": label, "idx": idx})
  return out


def score(task: GlueTask, split: str, predictions, labels) -> dict[str, float]:
  name = task.name
  if name == "mnli":
    name = "mnli_mismatched" if split.endswith("mismatched") else "mnli_matched"
  return metrics.glue_metrics(name, predictions, labels)


def write_submission(task: GlueTask, split: str, examples: Sequence[dict], predictions,
                     directory: str) -> str:
  """`<Task>.tsv` in the GLUE server's format (index, prediction)."""
  if split not in task.submission:
    raise ValueError(f"GLUE task {task.name} has no test split {split!r}; "
                     f"expected one of {sorted(task.submission)}")
  path = storage.join(directory, task.submission[split])
  with storage.open_atomic(path, text=True) as f:
    f.write("index\tprediction\n")
    for ex, p in zip(examples, predictions):
      value = f"{float(p):.3f}" if task.kind == "regression" else task.tsv_labels[int(p)]
      f.write(f"{ex['idx']}\t{value}\n")
  return path
