"""Fine-tuning tasks behind one interface, for `bert_jax/train/finetune.py`.

`get_task(data_config, tokenizer)` returns a `Task` with:

    name, kind ('classification' | 'regression' | 'multilabel' | 'span' | 'token'),
    num_labels, train_split, eval_splits, test_splits
    load(split) -> examples                 (tfds `data_source` or local files)
    featurize(examples, split) -> features  (numpy arrays, one row per window)
    evaluate(examples, features, outputs, split, out_dir) -> metrics (and writes the
        official prediction files into out_dir unless it is None, as on processes
        other than 0; `outputs` are the model's numpy outputs per feature)

Task names: the GLUE tasks (`cola sst2 mrpc stsb qqp mnli qnli rte wnli ax`),
`squad_v1.1`, `squad_v2.0`, `conll2003`, and `jsonl` (your own sentence(-pair) task
from JSON-lines files; `data.kind` and `data.num_labels` say what the labels are,
`data.label_names` what they are called). `label_names()` are the names of the head's
outputs, which the fine-tuned workdir's task.json keeps.
"""

from __future__ import annotations


import numpy as np

from bert_jax import storage
from bert_jax.data.tasks import classification, common, glue, ner, squad

TASK_NAMES = tuple(glue.TASKS) + ("squad_v1.1", "squad_v2.0", "conll2003", "jsonl")


class Task:
  """Shared loading: tfds (`data.source='tfds'`) or local files (`'local'`); a task
  with no tfds dataset (`jsonl`) always reads its local files."""
  kind = ""
  tfds_name = ""
  num_labels = 1
  train_split = "train"
  eval_splits: tuple[str, ...] = ("validation",)
  test_splits: tuple[str, ...] = ()

  def __init__(self, name, d, tok):
    self.name, self.d, self.tok = name, d, tok

  def label_names(self) -> list[str]:
    """Names of the head's outputs, in label-id order ([] for regression and spans)."""
    return []

  def load(self, split: str) -> list[dict]:
    if self.d.source not in ("tfds", "local"):
      raise ValueError(f"config field data.source={self.d.source!r} is not one of "
                       "'tfds', 'local'")
    if self.d.source == "tfds" and self.tfds_name:
      records = common.tfds_split(self.tfds_name, split, self.d.data_dir,
                                  download=self.d.get("tfds_download", False))
      out = [self.from_record(records[i], i) for i in range(len(records))]
    else:
      out = self.load_local(split)
    common.check_nonempty(out, f"task {self.name} split {split!r}")
    return out

  def _local_file(self, names: dict, split: str) -> str:
    if split not in names:
      raise ValueError(f"task {self.name} has no local split {split!r}; expected "
                       f"one of {sorted(names)}")
    return storage.join(self.d.data_dir, names[split])


class SequenceTask(Task):
  """GLUE and JSON-lines sentence(-pair) tasks: one prediction per example."""

  def __init__(self, name, d, tok):
    super().__init__(name, d, tok)
    if name == "jsonl":
      self.spec = None
      self.kind, self.num_labels = d.kind, d.num_labels
      if self.kind not in classification.KINDS:
        raise ValueError(f"config field data.kind={d.kind!r} is not one of "
                         f"{classification.KINDS}")
      if self.kind == "regression":
        self.num_labels = 1
      # None: named after the train file's string labels, or '0', '1', ... (integers)
      self._names = classification.parse_label_names(d.get("label_names", "")) or None
      if self._names and self.kind == "regression":
        raise ValueError(f"config field data.label_names={d.label_names!r}: a "
                         "regression task has no label names; expected ''")
      if self._names:
        self._check_count(f"config field data.label_names={d.label_names!r}")
      self.eval_splits = ("validation",)
      self.test_splits = ("test",) if d.test_file else ()
    else:
      self.spec = glue.get(name)
      self.kind, self.num_labels = self.spec.kind, self.spec.num_labels
      self.tfds_name = f"glue/{name}"
      self.eval_splits = self.spec.eval_splits
      self.test_splits = tuple(self.spec.submission)
      if name == "ax":
        self.train_split = None  # AX has only a test set: an MNLI run predicts it

  def load(self, split):
    if self.name == "mnli" and split == "ax":   # AX is predicted by the MNLI model
      ax = SequenceTask("ax", self.d, self.tok)
      return ax.load("test")
    return super().load(split)

  def _check_count(self, source: str) -> None:
    n = len(self._names)
    if n != self.num_labels:
      raise ValueError(f"{source} has {n} labels {self._names} but config field "
                       f"data.num_labels={self.num_labels}; expected as many")

  def label_names(self) -> list[str]:
    if self.spec is not None:
      return list(self.spec.label_names)
    if self.kind == "regression":
      return []
    if self._names is None:   # integer labels (or, before loading, not known yet)
      return [str(i) for i in range(self.num_labels)]
    return list(self._names)

  def from_record(self, r, i):
    return glue.from_tfds_record(self.spec, r)

  def load_local(self, split):
    if self.spec is None:
      files = {"train": self.d.train_file, "validation": self.d.eval_file,
               "test": self.d.test_file}
      if not files.get(split):
        raise ValueError(f"task jsonl split {split!r} needs config field "
                         f"data.{'eval' if split == 'validation' else split}_file")
      examples = classification.load_jsonl(files[split])
      if self.kind == "regression" or not self.labelled(split):
        return examples
      return self._named_labels(examples, split, files[split])
    return glue.load_tsv(self.spec, self.d.data_dir, split)

  def _named_labels(self, examples, split, path):
    """String labels -> their ids: by `data.label_names`, else by the train file's."""
    if self._names is None:
      strings = classification.string_labels(examples, self.kind, path)
      if not strings:
        return examples
      if split == self.train_split:
        self._names = strings
        self._check_count(f"config field data.train_file={path!r} (string labels, "
                          "data.label_names unset)")
      else:
        self.load(self.train_split)   # names the labels
        if self._names is None:
          raise ValueError(f"{path} has string labels but config field data.train_file="
                           f"{self.d.train_file!r} has numbers; name the labels with "
                           "config field data.label_names")
    return classification.label_ids(examples, self._names, self.kind, path)

  def labelled(self, split):
    return not glue.is_test_split(split)

  def featurize(self, examples, split):
    return classification.featurize(
        examples, self.tok, self.d.max_seq_length, self.d.doc_stride, self.kind,
        self.num_labels, labelled=self.labelled(split),
        where=f"task {self.name} split {split!r}")

  def evaluate(self, examples, features, outputs, split, out_dir):
    logits = classification.combine(outputs["logits"], features["example_index"],
                                    len(examples))
    preds = classification.predictions(logits, self.kind)
    if out_dir and self.spec is not None and not self.labelled(split):
      glue.write_submission(self.spec, split, examples, preds, out_dir)
    elif out_dir and self.spec is None:
      _write_jsonl(storage.join(out_dir, f"{split}_predictions.jsonl"), examples,
                   preds)
    if not self.labelled(split):
      return {}
    labels = [ex["label"] for ex in examples]
    if self.spec is not None:
      return glue.score(self.spec, split, preds, labels)
    return _jsonl_metrics(self.kind, preds, labels)


def _jsonl_metrics(kind, preds, labels) -> dict:
  """Metrics of a jsonl task; 'score' is their mean (as for GLUE)."""
  from bert_jax import metrics
  if kind == "regression":
    out = {"pearson": metrics.pearson(preds, labels),
           "spearman": metrics.spearman(preds, labels)}
  elif kind == "multilabel":
    hot = np.zeros_like(preds)
    for i, lab in enumerate(labels):
      hot[i, [int(v) for v in lab]] = 1
    out = {"exact_match": float(np.mean((hot == preds).all(-1))),
           "label_accuracy": metrics.accuracy(preds.ravel(), hot.ravel())}
  else:
    out = {"accuracy": metrics.accuracy(preds, labels)}
  out["score"] = float(np.mean(list(out.values())))
  return out


def _write_jsonl(path, examples, preds):
  import json
  with storage.open_atomic(path, text=True) as f:
    for ex, p in zip(examples, preds):
      f.write(json.dumps({"idx": ex["idx"], "prediction": np.asarray(p).tolist()})
              + "\n")


class SquadTask(Task):
  kind = "span"
  num_labels = 2

  def __init__(self, name, d, tok):
    super().__init__(name, d, tok)
    self.version = name.split("_")[1]
    self.tfds_name = f"squad/{self.version}"

  def from_record(self, r, i):
    return squad.from_tfds_record(r)

  def load_local(self, split):
    v = self.version
    return squad.load_json(self._local_file(
        {"train": f"train-{v}.json", "validation": f"dev-{v}.json"}, split))

  def featurize(self, examples, split):
    return squad.featurize(examples, self.tok, self.d.max_seq_length,
                           self.d.doc_stride, self.d.max_query_length)

  def evaluate(self, examples, features, outputs, split, out_dir):
    d = self.d
    preds, odds, nbest = squad.postprocess(
        examples, features, outputs["start_logits"], outputs["end_logits"],
        version=self.version, n_best_size=d.n_best_size,
        max_answer_length=d.max_answer_length,
        null_score_diff_threshold=d.null_score_diff_threshold)
    if out_dir:
      squad.write_predictions(storage.join(out_dir, split), preds, odds, nbest,
                              self.version)
    return squad.score(examples, preds, self.version, odds, d.null_score_diff_threshold)


class NerTask(Task):
  kind = "token"
  num_labels = len(ner.LABELS)
  test_splits = ("test",)
  tfds_name = "conll2003"

  def label_names(self):
    return list(ner.LABELS)

  def from_record(self, r, i):
    return ner.from_tfds_record(r, i)

  def load_local(self, split):
    return ner.load_conll(self._local_file(
        {"train": "train.txt", "validation": "valid.txt", "test": "test.txt"}, split))

  def featurize(self, examples, split):
    return ner.featurize(examples, self.tok, self.d.max_seq_length, self.d.doc_stride,
                         where=f"task conll2003 split {split!r}")

  def evaluate(self, examples, features, outputs, split, out_dir):
    preds = ner.postprocess(examples, features, outputs["logits"])
    if out_dir:
      ner.write_predictions(examples, preds, storage.join(out_dir, f"{split}.conll"))
    return ner.score(examples, preds)


def get_task(d, tok) -> Task:
  """The task named by config field `data.task`."""
  name = d.task
  if name in glue.TASKS or name == "jsonl":
    task = SequenceTask(name, d, tok)
  elif name in ("squad_v1.1", "squad_v2.0"):
    task = SquadTask(name, d, tok)
  elif name == "conll2003":
    task = NerTask(name, d, tok)
  else:
    raise _unknown_task(name)
  configured = classification.parse_label_names(d.get("label_names", ""))
  if name != "jsonl" and configured and configured != task.label_names():
    raise ValueError(f"config field data.label_names={d.label_names!r}: task {name} "
                     f"names its labels {task.label_names()}; expected '' (or those)")
  return task


def _unknown_task(name) -> ValueError:
  import difflib
  close = difflib.get_close_matches(name, TASK_NAMES)
  hint = f" (did you mean {close[0]!r}?)" if close else ""
  return ValueError(f"config field data.task={name!r} is not one of {TASK_NAMES}{hint}")
