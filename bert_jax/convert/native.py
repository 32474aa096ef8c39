"""bert_jax's own checkpoints: training workdirs (read) and converted-params dirs.

A training workdir (`bert_jax.main --workdir=DIR`) holds `config.json` (the resolved
config), `checkpoints/<step>/state` (orbax: step, params, opt_state) and the tokenizer;
a fine-tuned one also `task.json` (task kind, label names, tokenizer file), and its
params carry the task head ('classifier').
Only the params are restored, as host numpy arrays, so the optimizer state is never
read and no mesh is needed.

A params dir is what `python -m bert_jax.convert --to=bert_jax` writes:

    config.json      {"model": {...the model sub-config...}} (+ "task": {kind,
                     label_names, num_labels, ...} for a task model, whose params/
                     hold its encoder and head 'classifier')
    params/          orbax checkpoint of the parameter tree
    vocab.txt | spm.model | tokenizer.json ...   tokenizer files of the source
    conversion.json  what was mapped, initialised and skipped
"""

from __future__ import annotations

import os

import jax
import numpy as np

from bert_jax import storage, workdir as workdir_lib
from bert_jax.config import ModelConfig
from bert_jax.convert.common import (ConversionError, check_shapes, expected_shapes,
                                     read_json, unflatten)

CONFIG_FILE = workdir_lib.CONFIG_FILE   # a params dir's config.json, named as a workdir's
PARAMS_DIR = "params"
CHECKPOINTS_DIR = workdir_lib.CHECKPOINTS_DIR


def _model_config(d: dict, where: str) -> ModelConfig:
  if not isinstance(d.get("model"), dict):
    raise ConversionError(f"{where} has no 'model' section")
  try:
    return ModelConfig.from_dict(d["model"], where)
  except ValueError as e:
    raise ConversionError(str(e)) from None


def _restore_params(path: storage.PathLike, cfg, head: tuple[int, int] | None = None
                    ) -> dict:
  """Restores a params dir's orbax tree as numpy, with the shapes `cfg` implies; a
  task model's (`head`: [hidden, labels]) is its encoder and 'classifier'."""
  import orbax.checkpoint as ocp  # local: `import bert_jax.convert` stays light
  expected = expected_shapes(cfg)
  if head is not None:
    expected = {p: s for p, s in expected.items() if p.startswith("bert/")}
    expected.update({"classifier/kernel": head, "classifier/bias": head[1:]})
  shapes = unflatten({p: jax.ShapeDtypeStruct(s, np.float32)
                      for p, s in expected.items()})
  args = jax.tree_util.tree_map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray),
                                shapes)
  try:
    with ocp.PyTreeCheckpointer() as ckptr:
      return ckptr.restore(path, args=ocp.args.PyTreeRestore(
          item=shapes, restore_args=args, partial_restore=True))
  except (FileNotFoundError, KeyError, ValueError) as e:
    raise ConversionError(f"cannot restore params from {path} with the shapes that "
                          f"its config.json implies: {e}") from None


def is_params_dir(path: str) -> bool:
  d = storage.path(path)
  return (d / CONFIG_FILE).is_file() and (d / PARAMS_DIR).is_dir()


def is_workdir(path: str) -> bool:
  return (workdir_lib.config_file(path).is_file()
          and workdir_lib.checkpoints(path).is_dir())


TASK_FILE = workdir_lib.TASK_FILE   # a fine-tuned workdir's task file (train/finetune_eval.py)


def _best_step(workdir: str, full: dict) -> int:
  """The step `--step=best` names: the best by the metric the run ranked checkpoints
  with (task.json `best_metric` for fine-tuning, train.checkpoint_best_metric else)."""
  from bert_jax.train import checkpoint as checkpoint_lib
  task_path = workdir_lib.task_file(workdir)
  if task_path.is_file():
    metric, mode = read_json(task_path).get("best_metric", ""), "max"
  else:
    train = full.get("train") or {}
    metric = train.get("checkpoint_best_metric", "")
    mode = train.get("checkpoint_best_mode", "max")
  if not metric:
    raise ConversionError(f"--step=best: {workdir} ranks no checkpoints (its run set no "
                          "train.checkpoint_best_metric)")
  directory = workdir_lib.checkpoints(workdir)
  step = checkpoint_lib.best_step(directory, metric, mode)
  if step is None:
    raise ConversionError(f"--step=best: no checkpoint in {directory} "
                          f"has the eval metric {metric!r}")
  return step


def _saved_model_config(directory: str, step: int, full: dict, where: str) -> ModelConfig:
  """The ModelConfig saved with checkpoint `step`, else config.json's `model`."""
  from bert_jax.train import checkpoint as checkpoint_lib
  try:
    return checkpoint_lib.read_model_config(directory, step)
  except (FileNotFoundError, ValueError):   # a checkpoint without a config item
    return _model_config(full, where)


def read_workdir(workdir: str, step: int | str | None = None):
  """-> (params, model config, tokenizer files, step, task) of a training workdir.

  The one reader of a workdir: `bert_jax.convert` and `bert_jax.inference` load
  through it. Params come through `checkpoint.restore_params` (the newest complete
  step unless `step` is given; 'best' = the best-ranked one), in the per-layer layout
  whatever `model.scan_layers` was; the model config is the one saved with that
  checkpoint (config.json's for checkpoints without one). A fine-tuned workdir
  (task.json) keeps its task head ('classifier') and returns its task.json; else
  `task` is None.
  """
  from bert_jax.models import params as params_lib
  from bert_jax.train import checkpoint as checkpoint_lib
  where = workdir_lib.config_file(workdir)
  full = read_json(where)
  directory = workdir_lib.checkpoints(workdir)
  if step == "best":
    step = _best_step(workdir, full)
  if step is not None and not (workdir_lib.checkpoint(workdir, step) / "state").is_dir():
    raise ConversionError(f"missing checkpoint directory {directory}/{step}/state")
  try:
    params, step = checkpoint_lib.restore_params(directory, step, with_step=True)
  except FileNotFoundError as e:
    raise ConversionError(f"{directory} holds no finished checkpoint ({e})") from None
  params = params_lib.to_per_layer(params)
  cfg = _saved_model_config(directory, step, full, where).replace(scan_layers=False)
  task = None
  task_path = workdir_lib.task_file(workdir)
  if task_path.is_file():
    task = read_json(task_path)
    if "classifier" not in params:
      raise ConversionError(f"checkpoint {directory}/{step} holds no task head "
                            f"('classifier' params), but {task_path} says {workdir} is "
                            "a fine-tuned workdir")
    head = params.pop("classifier")
    check_shapes(params, cfg, f"checkpoint {directory}/{step}")
    params["classifier"] = head
    tokenizer = [str(workdir_lib.file(workdir, task["tokenizer"]))]
  else:
    check_shapes(params, cfg, f"checkpoint {directory}/{step}")
    tok_path = (full.get("data") or {}).get("tokenizer_path") or str(
        workdir_lib.trained_tokenizer(workdir))
    tokenizer = [p for p in (tok_path, os.path.splitext(tok_path)[0] + ".json")
                 if storage.path(p).is_file()]
  return params, cfg, tokenizer, step, task


def read_params_dir(path: str):
  """-> (params, model config, task) of a converted-params dir; `task` (config.json's
  'task', see `write_params_dir`) is None unless it holds a task model."""
  where = storage.join(path, CONFIG_FILE)
  full = read_json(where)
  cfg = _model_config(full, where)
  task = full.get("task")
  head = None
  if task is not None:
    if not isinstance(task, dict) or not isinstance(task.get("num_labels"), int):
      raise ConversionError(f"{where} field task: expected a record with kind, "
                            f"label_names and num_labels, found {task!r}")
    head = (cfg.hidden_size, task["num_labels"])
  params = _restore_params(storage.absolute(path) / PARAMS_DIR, cfg, head)
  return params, cfg, task


# Fields of a task record a params dir keeps (task.json's, less the workdir's files).
TASK_FIELDS = ("task", "kind", "label_names", "num_labels", "architecture",
               "max_seq_length", "doc_stride", "max_query_length", "lowercase")


def write_params_dir(path: str, params, cfg, task: dict | None = None) -> list[str]:
  """Writes config.json and params/ into the existing dir `path`.

  A task model (`task`: a fine-tuned workdir's task.json or an HF dir's task record)
  keeps its head in params/ and its task in config.json's 'task' (with `num_labels`).
  """
  full = {"model": cfg.to_dict()}
  if task is not None:
    num_labels = int(np.shape(params["classifier"]["bias"])[-1])
    full["task"] = {k: v for k, v in {**task, "num_labels": num_labels}.items()
                    if k in TASK_FIELDS}
  storage.write_json_atomic(storage.join(path, CONFIG_FILE), full)
  import orbax.checkpoint as ocp
  params = jax.tree_util.tree_map(lambda x: np.asarray(x, np.float32), params)
  with ocp.PyTreeCheckpointer() as ckptr:
    ckptr.save(storage.absolute(path) / PARAMS_DIR, params)
  return [CONFIG_FILE, PARAMS_DIR]
