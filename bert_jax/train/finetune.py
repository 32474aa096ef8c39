"""The fine-tuning job: task -> features -> sharded train loop -> eval each epoch.

The paper's recipe (Devlin et al. 2019, section 4 and appendix A.3): AdamW with the
pretraining optimizer's settings (`train/optim.py`), linear warmup over
`train.warmup_proportion` of the steps then linear decay, `train.num_epochs` epochs,
evaluation after every epoch, and the best epoch (by `eval.select_metric` on the first
eval split) kept; test-split predictions come from the best parameters.

The loop is `train/trainer.py`'s, as for pretraining: checkpoints with the data
position (`EpochBatches`: epoch and batch), so a killed run resumes bit for bit; a
SIGTERM saves and exits; retention keeps the newest and the best epoch. The workdir
is self-contained:

    config.json        the resolved config (model shape included)
    task.json          task, kind, label names, lengths, lowercase, tokenizer file
    tokenizer/         a copy of the tokenizer file
    checkpoints/<step> orbax: state, data position, config (+ eval metrics)
    metrics.jsonl, tensorboard/, predictions/epoch_N/, predictions/test/
    results.json       every epoch's scores and the best one (written at the end)

`python -m bert_jax.convert --src=WORKDIR --dst=DIR --step=best` exports the best
checkpoint to Hugging Face (the encoder with the matching task head class).
Optional layer-wise LR decay (`train.layerwise_lr_decay` < 1): the update of layer `l`
of `L` is scaled by `decay ** (L + 1 - l)` (embeddings l = 0, heads and pooler L + 1).

Start from: an HF BERT directory (`init.checkpoint='hf:DIR'`: config.json,
model.safetensors, vocab.txt), a bert_jax workdir (`'bert_jax:WORKDIR'`, pretraining
or fine-tuned: the newest checkpoint's `params/bert` in either encoder layout, its
tokenizer, and its model shape from its config.json), or random init (`''`). The
task head is always freshly initialised.
"""

from __future__ import annotations

import functools
import json
import os
from typing import Any

import flax.linen as nn
import jax
import ml_collections
import numpy as np

from bert_jax import config_checks, observe, parallel, perf, storage
from bert_jax.config import ModelConfig
from bert_jax.convert.native import TASK_FILE
from bert_jax.data import tasks as tasks_lib
from bert_jax.data.tasks import common
from bert_jax.models import params as params_lib
from bert_jax.train import logging as log_lib
from bert_jax.train import checkpoint as checkpoint_lib
from bert_jax.train import setup as setup_lib, trainer
from bert_jax.train.finetune_steps import INPUT_KEYS, LABEL_KEYS, predict_step

DEFAULT_SELECT = {"classification": "score", "regression": "score", "multilabel": "score",
                  "span": "f1", "token": "f1"}
# The fields of a fine-tuning config that may differ on resume (beyond the trainer's):
# more epochs extend the run; test predictions are written at its end.
MAY_CHANGE_ON_RESUME = trainer.MAY_CHANGE_ON_RESUME + ("train.num_epochs",
                                                       "data.predict_test")


# ---------------------------------------------------------------- initial weights


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
  from bert_jax import convert
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
  from bert_jax.train import checkpoint as checkpoint_lib
  try:
    saved = checkpoint_lib.read_model_config(os.path.join(workdir, "checkpoints"))
  except FileNotFoundError as e:
    raise FileNotFoundError(f"init.checkpoint=bert_jax:{workdir}: {e}") from None
  return {k: getattr(saved, k) for k in SHAPE_FIELDS}


def load_bert_jax_workdir(workdir: str) -> dict:
  """{'bert': ...} from the newest checkpoint of a bert_jax workdir (pretraining or
  fine-tuned), in the layout it was saved in (`merge_params` places either)."""
  from bert_jax.train import checkpoint as checkpoint_lib
  try:
    params = checkpoint_lib.restore_params(os.path.join(workdir, "checkpoints"))
  except FileNotFoundError as e:
    raise FileNotFoundError(f"init.checkpoint=bert_jax:{workdir}: {e}") from None
  return {"bert": params["bert"]}


def source_tokenizer(workdir: str, d):
  """(tokenizer, path) a bert_jax workdir used: a fine-tuned one's task.json, a
  pretraining run's data.tokenizer_path, or the SentencePiece model it trained."""
  from bert_jax.convert.common import read_json
  from bert_jax.data import tokenizers
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


# ------------------------------------------------------------------------- batching


class EpochBatches:
  """This process's rows of each global batch, epoch after epoch (each epoch shuffled
  by PRNG [seed, epoch], its last batch wrapping around). Resumable: `state()` is the
  (epoch, position) of the next batch, so a restored run reads the same batches."""

  def __init__(self, features: dict, keys, batch_size: int, seed: int):
    self.features, self.keys, self.batch_size, self.seed = features, keys, batch_size, seed
    self.num_rows = len(features["input_ids"])
    self.steps_per_epoch = -(-self.num_rows // batch_size)
    self.epoch, self.position = 1, 0

  def state(self) -> dict:
    return {"epoch": self.epoch, "position": self.position}

  def restore(self, state: dict) -> None:
    self.epoch, self.position = int(state["epoch"]), int(state["position"])

  def __iter__(self):
    per = self.batch_size // jax.process_count()
    lo = jax.process_index() * per
    while True:
      order = np.resize(np.random.default_rng([self.seed, self.epoch]).permutation(
          self.num_rows), self.steps_per_epoch * self.batch_size)
      while self.position < self.steps_per_epoch:
        s = self.position
        rows = order[s * self.batch_size:(s + 1) * self.batch_size][lo:lo + per]
        batch = {k: self.features[k][rows] for k in self.keys}
        batch["weight"] = np.ones(per, np.float32)
        self.position += 1
        yield batch
      self.epoch, self.position = self.epoch + 1, 0


def predict(p_predict, state, features, keys, batch_size: int, mesh) -> dict:
  """Outputs for every feature, in order (the last batch padded with weight 0)."""
  n = len(features["input_ids"])
  per = batch_size // jax.process_count()
  lo = jax.process_index() * per
  outs = []
  for start in range(0, n, batch_size):
    rows = np.arange(start, start + batch_size)
    valid = rows < n
    rows = np.where(valid, rows, 0)[lo:lo + per]
    batch = {k: features[k][rows] for k in keys}
    batch["weight"] = valid[lo:lo + per].astype(np.float32)
    outs.append(jax.device_get(p_predict(state, parallel.global_batch(batch, mesh))))
  return {k: np.concatenate([o[k] for o in outs])[:n] for k in outs[0]}


# ------------------------------------------------------------------------------ job


def check_finetune_config(c) -> None:
  config_checks.check_model_config(c.model)
  req = config_checks._require  # noqa: SLF001  (the shared check helper)
  d, t = c.data, c.train
  req(d.task in tasks_lib.TASK_NAMES, "data.task", d.task, f"one of {tasks_lib.TASK_NAMES}")
  req(8 <= d.max_seq_length <= c.model.max_position_embeddings, "data.max_seq_length",
      d.max_seq_length,
      f"between 8 and model.max_position_embeddings={c.model.max_position_embeddings}")
  req(d.doc_stride >= 1, "data.doc_stride", d.doc_stride, ">= 1")
  req(d.max_query_length >= 1, "data.max_query_length", d.max_query_length, ">= 1")
  req(t.num_epochs > 0, "train.num_epochs", t.num_epochs, "> 0")
  req(t.global_batch_size >= 1, "train.global_batch_size", t.global_batch_size, ">= 1")
  req(t.grad_accum_steps >= 1, "train.grad_accum_steps", t.grad_accum_steps, ">= 1")
  req(t.learning_rate > 0, "train.learning_rate", t.learning_rate, "> 0")
  req(0 <= t.warmup_proportion < 1, "train.warmup_proportion", t.warmup_proportion,
      "a fraction in [0, 1)")
  req(0 < t.layerwise_lr_decay <= 1, "train.layerwise_lr_decay", t.layerwise_lr_decay,
      "in (0, 1]")
  for name in ("log_every_steps", "checkpoint_every_steps", "checkpoint_keep"):
    req(t[name] >= 1, f"train.{name}", t[name], ">= 1")


def _evaluate(task, p_predict, state, data, keys, batch_size, mesh, out_dir) -> dict:
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

RESULTS_FILE = "results.json"


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


def _report_start(state) -> None:
  log_lib.info("parameters per module:\n%s",
               observe.format_param_summary(observe.param_summary(state.params)))


def _print_results(out: dict) -> None:
  if jax.process_index() == 0:
    best = out["best"]
    print(f"best epoch {best['epoch']} (step {best['step']}) by {out['select_metric']}: "
          f"{json.dumps(best['eval'])}", flush=True)


# ------------------------------------------------------------------------------ job


def _with_source_model(config):
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


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Fine-tunes, evaluates every epoch, predicts the test splits; returns results.

  Rerunning a finished command prints the stored results and writes nothing.
  """
  log_lib.quiet_libraries()  # orbax logs every file operation at INFO
  check_finetune_config(config)
  workdir = config_checks.prepare_workdir(workdir)
  config = _with_source_model(config)
  d, t = config.data, config.train
  mesh = parallel.create_mesh(config.mesh)
  rules = parallel.logical_axis_rules(config.mesh)
  parallel.check_global_batch(t.global_batch_size, mesh, t.grad_accum_steps)

  load_params, tok, tokenizer_file = initial_weights_and_tokenizer(config)
  task = tasks_lib.get_task(d, tok)
  if task.train_split is None:
    raise ValueError(f"config field data.task={task.name!r} has no training split; "
                     "data.task='mnli' trains on MNLI and predicts AX (AX.tsv)")
  train_examples = task.load(task.train_split)
  train_features = task.featurize(train_examples, task.train_split)
  batches = EpochBatches(train_features, INPUT_KEYS + LABEL_KEYS[task.kind],
                         t.global_batch_size, config.seed)
  num_steps = max(1, int(round(t.num_epochs * batches.steps_per_epoch)))
  stored = trainer.finished(workdir, RESULTS_FILE, num_steps, config, MAY_CHANGE_ON_RESUME)
  if stored is not None:
    _print_results(stored)
    return stored

  evals = {s: task.load(s) for s in task.eval_splits}
  evals = {s: (ex, task.featurize(ex, s)) for s, ex in evals.items()}
  tests = {}
  if d.predict_test:
    tests = {s: task.load(s) for s in task.test_splits}
    tests = {s: (ex, task.featurize(ex, s)) for s, ex in tests.items()}
  log_lib.info("task %s (%s): %d train examples -> %d features; eval %s", task.name,
               task.kind, len(train_examples), len(train_features["input_ids"]),
               {s: len(ex) for s, (ex, _) in evals.items()})

  job = setup_lib.finetuning(config, mesh, rules, kind=task.kind,
                             num_labels=task.num_labels, num_train_steps=num_steps)
  created = job.created

  def fresh_start(state):
    """A new run starts from the source model's weights (never read on resume)."""
    loaded = load_params()
    if loaded is None:
      return state
    params = merge_params(state.params, loaded)
    return state.replace(params=params, opt_state=jax.jit(
        job.tx.init, out_shardings=created.shardings.opt_state)(params))

  keys = INPUT_KEYS + LABEL_KEYS[task.kind]
  select = config.eval.select_metric or DEFAULT_SELECT[task.kind]
  best_metric = f"{task.eval_splits[0]}/{select}"
  spe = batches.steps_per_epoch

  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    p_predict = jax.jit(functools.partial(predict_step, kind=task.kind),
                        in_shardings=(created.shardings, parallel.batch_sharding(mesh)),
                        out_shardings=parallel.replicated(mesh))

    def evaluate(state, step) -> dict[str, float]:
      epoch = -(-step // spe)
      results = _evaluate(task, p_predict, state, evals, keys, t.global_batch_size, mesh,
                          os.path.join(workdir, "predictions", f"epoch_{epoch}"))
      if select not in results[task.eval_splits[0]]:
        raise ValueError(f"config field eval.select_metric={select!r} is not among the "
                         f"metrics {sorted(results[task.eval_splits[0]])}")
      log_lib.info("epoch %d (step %d): %s", epoch, step, results)
      return {f"{split}/{k}": v for split, res in results.items() for k, v in res.items()
              if isinstance(v, (int, float))}

    result = trainer.train(
        workdir=workdir, config=config, mesh=mesh, rules=rules, created=created,
        p_train_step=job.p_train_step, batches=batches, evaluate=evaluate,
        fresh_start=fresh_start, may_change_on_resume=MAY_CHANGE_ON_RESUME,
        start_report=_report_start,
        on_start=lambda: write_task_files(
            workdir, task_description(task, d, tokenizer_file, best_metric),
            tokenizer_file),
        loop=trainer.Loop(
            num_train_steps=num_steps, log_every_steps=t.log_every_steps,
            eval_every_steps=spe, checkpoint_every_steps=t.checkpoint_every_steps,
            sequences_per_step=t.global_batch_size, tokens_per_sequence=d.max_seq_length,
            checkpoint_keep=t.checkpoint_keep, best_metric=best_metric, best_mode="max",
            profile_steps=t.get("profile_steps", ""),
            # The encoder's FLOPs (no MLM predictions); the task head is negligible.
            flops_per_step=perf.train_flops(job.model_config, t.global_batch_size,
                                            d.max_seq_length, 0),
            peak_tflops=t.get("peak_tflops", 0.0)))
    if result.preempted:
      return {"task": task.name, "preempted_at": result.step}
    best_step = checkpoint_lib.best_step(os.path.join(workdir, "checkpoints"),
                                         best_metric, "max")
    if tests:
      state = result.state
      if best_step != result.step:
        ckpt = checkpoint_lib.Checkpointer(os.path.join(workdir, "checkpoints"))
        state, _ = ckpt.restore(best_step, created.abstract_state())
        ckpt.close()
      _evaluate(task, p_predict, state, tests, keys, t.global_batch_size, mesh,
                os.path.join(workdir, "predictions", "test"))
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
  _print_results(out)
  return out
