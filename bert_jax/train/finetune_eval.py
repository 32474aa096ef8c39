"""A fine-tuning run's evaluation and the files it leaves in its workdir.

    predict / evaluate   the jitted prediction over `finetune_data.padded_batches`, then
                         the task's own scoring (`task.evaluate`, which writes its
                         prediction files under `predictions/...` on process 0)
    task.json, tokenizer/  what inference needs without the training config
                         (`task_description`, `write_task_files`)
    results.json         every epoch's scores from `metrics.jsonl` and the best epoch
                         (`eval_history`, `write_results`)

`DEFAULT_SELECT` is each task kind's metric for picking the best epoch when config
field `eval.select_metric` is empty. The job is `finetune.py`.
"""

from __future__ import annotations

import json
import os

import jax
import numpy as np

from bert_jax import parallel, storage
from bert_jax.convert.native import TASK_FILE
from bert_jax.train import checkpoint as checkpoint_lib
from bert_jax.train import finetune_data

DEFAULT_SELECT = {"classification": "score", "regression": "score", "multilabel": "score",
                  "span": "f1", "token": "f1"}
RESULTS_FILE = "results.json"


# ----------------------------------------------------------------------- evaluation


def predict(p_predict, state, features, keys, batch_size: int, mesh) -> dict:
  """Outputs for every feature, in order (the last batch padded with weight 0)."""
  n = len(features["input_ids"])
  outs = [jax.device_get(p_predict(state, parallel.global_batch(batch, mesh)))
          for batch in finetune_data.padded_batches(features, keys, batch_size)]
  return {k: np.concatenate([o[k] for o in outs])[:n] for k in outs[0]}


def evaluate(task, p_predict, state, data, keys, batch_size, mesh, out_dir) -> dict:
  """{split: the task's scores} for each split of `data` ({split: (examples,
  features)}); process 0 writes the prediction files under `out_dir`."""
  results = {}
  for split, (examples, features) in data.items():
    outputs = predict(p_predict, state, features, keys, batch_size, mesh)
    writes = jax.process_index() == 0   # every process scores, process 0 writes
    if writes:
      os.makedirs(out_dir, exist_ok=True)
    results[split] = task.evaluate(examples, features, outputs, split,
                                   out_dir if writes else None)
  return results


# ------------------------------------------------------------ the workdir's files


def task_description(task, d, tokenizer_file: str, best_metric: str) -> dict:
  """`task.json`: what a fine-tuned workdir needs to be used without the training
  config and data (the inference side reads exactly these keys)."""
  return {"task": task.name, "kind": task.kind, "label_names": task.label_names(),
          "max_seq_length": d.max_seq_length, "doc_stride": d.doc_stride,
          "max_query_length": d.max_query_length,
          "lowercase": bool(d.lowercase) and not tokenizer_file.endswith(".model"),
          "tokenizer": f"tokenizer/{os.path.basename(tokenizer_file)}",
          "best_metric": best_metric}


def write_task_files(workdir: str, task_json: dict, tokenizer_file: str) -> None:
  """Copies the tokenizer into `workdir/tokenizer/` and writes `task.json` (process 0)."""
  if jax.process_index() != 0:
    return
  directory = storage.path(workdir) / "tokenizer"
  options = os.path.splitext(tokenizer_file)[0] + ".json"   # spm.json beside spm.model
  for src in map(storage.path, (tokenizer_file, options)):
    dst = directory / src.name
    if src.is_file() and not storage.same_path(src, dst):
      storage.write_bytes_atomic(dst, src.read_bytes())
  storage.write_json_atomic(storage.join(workdir, TASK_FILE), task_json)


def eval_history(workdir: str, eval_splits, steps_per_epoch: int) -> list[dict]:
  """One row per evaluation, from `metrics.jsonl` (the last row of a re-run step wins),
  with the mean logged train loss since the previous evaluation."""
  rows: dict[int, dict] = {}
  with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
    for line in f:
      row = json.loads(line)
      rows.setdefault(row["step"], {}).update(row)
  history, losses = [], []
  for step in sorted(rows):
    row = rows[step]
    if "train/loss" in row:
      losses.append(row["train/loss"])
    evals = {split: {k.split("/", 2)[2]: v for k, v in row.items()
                     if k.startswith(f"eval/{split}/")} for split in eval_splits}
    if any(evals.values()):
      history.append({"epoch": -(-step // steps_per_epoch), "step": step,
                      "train_loss": float(np.mean(losses)) if losses else float("nan"),
                      "eval": evals})
      losses = []
  return history


def write_results(workdir: str, task, select: str, best_step: int, steps_per_epoch: int,
                  num_steps: int) -> dict:
  """The run's results (every epoch's scores, the best epoch's), written to
  `results.json` by process 0 and returned."""
  spe = steps_per_epoch
  history = eval_history(workdir, task.eval_splits, spe) if jax.process_index() == 0 else []
  best = next((row for row in history if row["step"] == best_step), None)
  if best is None:   # metrics.jsonl lost its row: the scores saved with the checkpoint
    saved = checkpoint_lib.saved_metrics(os.path.join(workdir, "checkpoints"))[best_step]
    best = {"epoch": -(-best_step // spe), "step": best_step, "eval": {
        split: {k.split("/", 1)[1]: v for k, v in saved.items()
                if k.startswith(f"{split}/")}
        for split in task.eval_splits}}
  out = {"task": task.name, "select_metric": select, "best": best, "epochs": history,
         "best_step": best_step, "step": num_steps}
  if jax.process_index() == 0:
    storage.write_json_atomic(storage.join(workdir, RESULTS_FILE), out)
  return out


def print_results(out: dict) -> None:
  """The best epoch and its scores, on process 0."""
  if jax.process_index() == 0:
    best = out["best"]
    print(f"best epoch {best['epoch']} (step {best['step']}) by {out['select_metric']}: "
          f"{json.dumps(best['eval'])}", flush=True)
