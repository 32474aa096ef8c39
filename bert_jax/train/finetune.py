"""The fine-tuning job: task -> features -> sharded train loop -> eval each epoch.

The paper's recipe (Devlin et al. 2019, section 4 and appendix A.3): AdamW with the
pretraining optimizer's settings (`train/optim.py`), linear warmup over
`train.warmup_proportion` of the steps then linear decay, `train.num_epochs` epochs,
evaluation after every epoch, and the best epoch (by `eval.select_metric` on the first
eval split) kept: its parameters in `workdir/best_params/` and its scores in
`workdir/results.json`; test-split predictions come from the best parameters.
Optional layer-wise LR decay (`train.layerwise_lr_decay` < 1): the update of layer `l`
of `L` is scaled by `decay ** (L + 1 - l)` (embeddings l = 0, heads and pooler L + 1).

Start from: an HF BERT directory (`init.checkpoint='hf:DIR'`: config.json,
model.safetensors, vocab.txt), a bert_jax pretraining workdir (`'bert_jax:WORKDIR'`:
the newest orbax checkpoint's `params/bert`, and its SentencePiece tokenizer), or
random init (`''`). The task head is always freshly initialised.
"""

from __future__ import annotations

import functools
import json
import os
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from bert_jax import config_checks, parallel
from bert_jax.config import ModelConfig
from bert_jax.data import tasks as tasks_lib
from bert_jax.data.tasks import common
from bert_jax.models import (BertForQuestionAnswering, BertForSequenceClassification,
                             BertForTokenClassification)
from bert_jax.models import params as params_lib
from bert_jax.train import logging as log_lib
from bert_jax.train import optim, profiling, state as state_lib

INPUT_KEYS = ("input_ids", "token_type_ids", "attention_mask")
LABEL_KEYS = {"classification": ("label",), "regression": ("label",),
              "multilabel": ("label",), "span": ("start_positions", "end_positions"),
              "token": ("labels", "label_weights")}
DEFAULT_SELECT = {"classification": "score", "regression": "score", "multilabel": "score",
                  "span": "f1", "token": "f1"}


# ---------------------------------------------------------------------------- model


def make_model(kind: str, model_cfg, num_labels: int) -> nn.Module:
  if kind == "span":
    return BertForQuestionAnswering(model_cfg)
  if kind == "token":
    return BertForTokenClassification(model_cfg, num_labels)
  return BertForSequenceClassification(model_cfg, num_labels)


def task_loss(kind: str, out: dict, batch: dict) -> jax.Array:
  """Mean loss of one batch (pure). Rows with batch['weight'] == 0 are padding."""
  w = batch["weight"].astype(jnp.float32)                      # [batch]
  denom = jnp.maximum(jnp.sum(w), 1.0)
  if kind == "classification":
    xent = optax.softmax_cross_entropy_with_integer_labels(out["logits"], batch["label"])
    return jnp.sum(xent * w) / denom
  if kind == "regression":
    return jnp.sum(jnp.square(out["logits"][:, 0] - batch["label"]) * w) / denom
  if kind == "multilabel":
    bce = optax.sigmoid_binary_cross_entropy(out["logits"], batch["label"]).mean(-1)
    return jnp.sum(bce * w) / denom
  if kind == "span":
    s = optax.softmax_cross_entropy_with_integer_labels(out["start_logits"],
                                                        batch["start_positions"])
    e = optax.softmax_cross_entropy_with_integer_labels(out["end_logits"],
                                                        batch["end_positions"])
    return jnp.sum((s + e) / 2 * w) / denom
  if kind == "token":
    xent = optax.softmax_cross_entropy_with_integer_labels(out["logits"], batch["labels"])
    tw = batch["label_weights"] * w[:, None]
    return jnp.sum(xent * tw) / jnp.maximum(jnp.sum(tw), 1.0)
  raise ValueError(f"task kind {kind!r} is not one of {sorted(LABEL_KEYS)}")


def output_keys(kind: str) -> tuple[str, ...]:
  return ("start_logits", "end_logits") if kind == "span" else ("logits",)


def train_step(state, batch, rng, *, kind, schedule):
  dropout_rng = jax.random.fold_in(rng, state.step)

  def loss_fn(params):
    out = state.apply_fn({"params": params}, *(batch[k] for k in INPUT_KEYS),
                         deterministic=False, rngs={"dropout": dropout_rng})
    return task_loss(kind, out, batch)

  loss, grads = jax.value_and_grad(loss_fn)(state.params)
  return state.apply_gradients(grads=grads), {"loss": loss,
                                              "learning_rate": schedule(state.step)}


def predict_step(state, batch, *, kind):
  out = state.apply_fn({"params": state.params}, *(batch[k] for k in INPUT_KEYS),
                       deterministic=True)
  return {k: out[k] for k in output_keys(kind)}


# ------------------------------------------------------------------------ optimizer


def layer_scales(params, num_layers: int, decay: float):
  """Per-leaf update scale for layer-wise LR decay (see the module docstring); a
  scanned encoder gets one scale per layer along its stacked axis."""
  return params_lib.lr_depth_scales(params, num_layers, decay)


def scale_by_tree(scales_fn) -> optax.GradientTransformation:
  """Multiplies each update by the matching leaf of `scales_fn(params)` (no state)."""
  def init_fn(params):
    del params
    return optax.EmptyState()

  def update_fn(updates, state, params=None):
    scales = scales_fn(updates)
    return jax.tree_util.tree_map(lambda u, s: u * s.astype(u.dtype), updates,
                                  scales), state
  return optax.GradientTransformation(init_fn, update_fn)


def create_optimizer(t, num_train_steps: int, num_layers: int):
  oc = ml_collections.ConfigDict(t.to_dict())
  oc.num_train_steps = num_train_steps
  oc.warmup_steps = int(round(t.warmup_proportion * num_train_steps))
  tx, schedule = optim.create_optimizer(oc)
  if t.layerwise_lr_decay < 1.0:
    decay = t.layerwise_lr_decay
    tx = optax.chain(tx, scale_by_tree(
        lambda tree: layer_scales(tree, num_layers, decay)))
  return tx, schedule


# ---------------------------------------------------------------- initial weights


def load_hf_dir(directory: str, model_cfg) -> dict:
  """{'bert': ...} from an HF directory; its config.json must agree with `model`."""
  from safetensors.numpy import load_file
  from bert_jax import convert
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
  params = convert.params_from_hf(load_file(os.path.join(directory, "model.safetensors")),
                                  model_cfg)
  return {"bert": params["bert"]}


def load_bert_jax_workdir(workdir: str) -> dict:
  """{'bert': ...} from the newest checkpoint of a bert_jax pretraining workdir."""
  from bert_jax.train import checkpoint as checkpoint_lib
  try:
    params = checkpoint_lib.restore_params(os.path.join(workdir, "checkpoints"))
  except FileNotFoundError as e:
    raise FileNotFoundError(f"init.checkpoint=bert_jax:{workdir}: {e}") from None
  return {"bert": params["bert"]}


def initial_weights_and_tokenizer(config):
  """(params {'bert': ...} or None, tokenizer) from `init.checkpoint` / `data.vocab_path`."""
  ckpt, d = config.init.checkpoint, config.data
  kind, _, where = ckpt.partition(":")
  params, tok = None, None
  if kind == "hf":
    params = load_hf_dir(where, config.model)
    tok = common.WordPiece(d.vocab_path or os.path.join(where, "vocab.txt"), d.lowercase)
  elif kind == "bert_jax":
    from bert_jax.data import tokenizers
    params = load_bert_jax_workdir(where)
    spm = os.path.join(where, "tokenizer", "spm.model")
    tok = (common.WordPiece(d.vocab_path, d.lowercase) if d.vocab_path else
           common.SentencePieceOffsets(tokenizers.SentencePieceTokenizer.load(spm)))
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
  return params, tok


def merge_params(init: dict, loaded: dict | None) -> dict:
  """`init` with its encoder (and pooler, when present) taken from `loaded`, in either
  layout; the `load` rules of `bert_jax/models/params.py` decide, shapes must agree."""
  if loaded is None:
    return init
  return params_lib.merge_pretrained(init, loaded, "init.checkpoint")


# ------------------------------------------------------------------------- batching


def train_batches(features: dict, keys, batch_size: int, epoch: int, seed: int):
  """This process's rows of each global batch of one epoch (shuffled, wrapping)."""
  n = len(features["input_ids"])
  steps = -(-n // batch_size)
  order = np.resize(np.random.default_rng([seed, epoch]).permutation(n), steps * batch_size)
  per = batch_size // jax.process_count()
  lo = jax.process_index() * per
  for s in range(steps):
    rows = order[s * batch_size:(s + 1) * batch_size][lo:lo + per]
    batch = {k: features[k][rows] for k in keys}
    batch["weight"] = np.ones(per, np.float32)
    yield batch


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
  req(t.learning_rate > 0, "train.learning_rate", t.learning_rate, "> 0")
  req(0 <= t.warmup_proportion < 1, "train.warmup_proportion", t.warmup_proportion,
      "a fraction in [0, 1)")
  req(0 < t.layerwise_lr_decay <= 1, "train.layerwise_lr_decay", t.layerwise_lr_decay,
      "in (0, 1]")


def _write_json(path, obj):
  if jax.process_index() == 0:
    with open(path, "w", encoding="utf-8") as f:
      json.dump(obj, f, indent=2, default=float)


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


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Fine-tunes, evaluates every epoch, predicts the test splits; returns results."""
  check_finetune_config(config)
  workdir = config_checks.prepare_workdir(workdir)
  _write_json(os.path.join(workdir, "config.json"), json.loads(config.to_json_best_effort()))
  d, t = config.data, config.train
  mesh = parallel.create_mesh(config.mesh)
  rules = parallel.logical_axis_rules(config.mesh)
  parallel.check_global_batch(t.global_batch_size, mesh)

  loaded, tok = initial_weights_and_tokenizer(config)
  task = tasks_lib.get_task(d, tok)
  if task.train_split is None:
    raise ValueError(f"config field data.task={task.name!r} has no training split; "
                     "data.task='mnli' trains on MNLI and predicts AX (AX.tsv)")
  train_examples = task.load(task.train_split)
  train_features = task.featurize(train_examples, task.train_split)
  evals = {s: task.load(s) for s in task.eval_splits}
  evals = {s: (ex, task.featurize(ex, s)) for s, ex in evals.items()}
  tests = {}
  if d.predict_test:
    tests = {s: task.load(s) for s in task.test_splits}
    tests = {s: (ex, task.featurize(ex, s)) for s, ex in tests.items()}
  log_lib.info("task %s (%s): %d train examples -> %d features; eval %s", task.name,
               task.kind, len(train_examples), len(train_features["input_ids"]),
               {s: len(ex) for s, (ex, _) in evals.items()})

  steps_per_epoch = -(-len(train_features["input_ids"]) // t.global_batch_size)
  num_steps = max(1, int(round(t.num_epochs * steps_per_epoch)))
  model = make_model(task.kind, ModelConfig.from_config(config.model), task.num_labels)
  tx, schedule = create_optimizer(t, num_steps, config.model.num_layers)
  dummy = np.zeros((1, d.max_seq_length), np.int32)
  rng = jax.random.PRNGKey(config.seed)
  init_rng, dropout_rng = jax.random.split(rng)
  state, shardings = state_lib.create_sharded_state(
      model, tx, (dummy, dummy, dummy), init_rng, mesh, rules)
  if loaded is not None:
    params = merge_params(state.params, loaded)
    state = state.replace(params=params, opt_state=jax.jit(
        tx.init, out_shardings=shardings.opt_state)(params))

  keys = INPUT_KEYS + LABEL_KEYS[task.kind]
  repl, bsh = parallel.replicated(mesh), parallel.batch_sharding(mesh)
  select = config.eval.select_metric or DEFAULT_SELECT[task.kind]
  writer = log_lib.MetricWriter(workdir)
  history, best = [], None
  import orbax.checkpoint as ocp
  best_dir = os.path.join(workdir, "best_params")
  saver = ocp.StandardCheckpointer()
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    p_train = jax.jit(functools.partial(train_step, kind=task.kind, schedule=schedule),
                      in_shardings=(shardings, bsh, repl), out_shardings=(shardings, repl),
                      donate_argnums=0)
    p_predict = jax.jit(functools.partial(predict_step, kind=task.kind),
                        in_shardings=(shardings, bsh), out_shardings=repl)
    step, epoch = 0, 0
    profiler = profiling.StepProfiler(workdir, t.profile_steps)
    while step < num_steps:
      epoch += 1
      losses = []
      for batch in train_batches(train_features, keys, t.global_batch_size, epoch,
                                 config.seed):
        if step >= num_steps:
          break
        step += 1
        profiler.step_start(step)
        state, m = p_train(state, parallel.global_batch(batch, mesh), dropout_rng)
        profiler.step_end(step, m)
        losses.append(m["loss"])
        if step % t.log_every_steps == 0:
          writer.write(step, jax.device_get(m), prefix="train/")
      mean_loss = float(np.mean(jax.device_get(losses)))
      if not np.isfinite(mean_loss):
        raise FloatingPointError(f"training loss is {mean_loss} in epoch {epoch}; lower "
                                 "config field train.learning_rate or check the labels")
      results = _evaluate(task, p_predict, state, evals, keys, t.global_batch_size, mesh,
                          os.path.join(workdir, "predictions", f"epoch_{epoch}"))
      row = {"epoch": epoch, "step": step, "train_loss": mean_loss, "eval": results}
      history.append(row)
      first = results[task.eval_splits[0]]
      if select not in first:
        raise ValueError(f"config field eval.select_metric={select!r} is not among the "
                         f"metrics {sorted(first)}")
      for split, res in results.items():
        writer.write(step, {k: v for k, v in res.items()
                            if isinstance(v, (int, float))}, prefix=f"eval/{split}/")
      log_lib.info("epoch %d: train loss %.4f, %s", epoch, mean_loss, results)
      if best is None or first[select] > best["eval"][task.eval_splits[0]][select]:
        best = row
        saver.save(best_dir, state.params, force=True)
        saver.wait_until_finished()
    profiler.close()
    if tests:
      if best["epoch"] != epoch:
        params = saver.restore(best_dir, jax.tree_util.tree_map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
            state.params))
        state = state.replace(params=params)
      _evaluate(task, p_predict, state, tests, keys, t.global_batch_size, mesh,
                os.path.join(workdir, "predictions", "test"))
  saver.close()
  writer.close()
  out = {"task": task.name, "select_metric": select, "best": best, "epochs": history}
  _write_json(os.path.join(workdir, "results.json"), out)
  return out
