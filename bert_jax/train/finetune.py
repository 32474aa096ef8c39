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
model.safetensors, vocab.txt; a task model's head is continued when its labels are
the task's, else replaced by a new one, and the log says which), a bert_jax workdir
(`'bert_jax:WORKDIR'`, pretraining or fine-tuned: the newest checkpoint's
`params/bert` in either encoder layout, its tokenizer, and its model shape from its
config.json), or random init (`''`). Other task heads are freshly initialised.

This file is the job alone (config check, the order of things, the loop's wiring);
each piece it puts together has one home:

    finetune_source.py  the source model: weights, shape, tokenizer; the merge
    finetune_data.py    features -> this process's rows of each batch (train, predict)
    finetune_steps.py   the pure train and predict steps; each kind's batch keys
    finetune_eval.py    evaluation, task.json + tokenizer/, results.json
    setup.py            the task model, optimizer and jitted step (`setup.finetuning`)
    optim.py            the fine-tuning optimizer (warmup proportion, layer-wise decay)
    losses.py           each task kind's loss
    models/heads.py     each task kind's head (`make_task_model`)
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import ml_collections

from bert_jax import config_checks, observe, parallel, perf, workdir as workdir_lib
from bert_jax.data import tasks as tasks_lib
from bert_jax.train import logging as log_lib
from bert_jax.train import checkpoint as checkpoint_lib
from bert_jax.train import finetune_eval, finetune_source, setup as setup_lib, trainer
from bert_jax.train.finetune_data import EpochBatches
from bert_jax.train.finetune_steps import INPUT_KEYS, LABEL_KEYS, predict_step

# The fields of a fine-tuning config that may differ on resume (beyond the trainer's):
# more epochs extend the run; test predictions are written at its end.
MAY_CHANGE_ON_RESUME = trainer.MAY_CHANGE_ON_RESUME + ("train.num_epochs",
                                                       "data.predict_test")


def check_finetune_config(c) -> None:
  """Every fine-tuning config field the job reads, checked before anything runs."""
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


def _report_start(state) -> None:
  log_lib.info("parameters per module:\n%s",
               observe.format_param_summary(observe.param_summary(state.params)))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Fine-tunes, evaluates every epoch, predicts the test splits; returns results.

  Rerunning a finished command prints the stored results and writes nothing.
  """
  log_lib.quiet_libraries()  # orbax logs every file operation at INFO
  check_finetune_config(config)
  workdir = config_checks.prepare_workdir(workdir)
  config = finetune_source.with_source_model(config)
  d, t = config.data, config.train
  mesh = parallel.create_mesh(config.mesh)
  rules = parallel.logical_axis_rules(config.mesh)
  parallel.check_global_batch(t.global_batch_size, mesh, t.grad_accum_steps)

  load_params, tok, tokenizer_file = finetune_source.initial_weights_and_tokenizer(config)
  task = tasks_lib.get_task(d, tok)
  if task.train_split is None:
    raise ValueError(f"config field data.task={task.name!r} has no training split; "
                     "data.task='mnli' trains on MNLI and predicts AX (AX.tsv)")
  train_examples = task.load(task.train_split)
  keep_head = finetune_source.source_head(config, task)   # label names known: loaded
  train_features = task.featurize(train_examples, task.train_split)
  batches = EpochBatches(train_features, INPUT_KEYS + LABEL_KEYS[task.kind],
                         t.global_batch_size, config.seed)
  num_steps = max(1, int(round(t.num_epochs * batches.steps_per_epoch)))
  stored = trainer.finished(workdir, workdir_lib.RESULTS_FILE, num_steps, config,
                            MAY_CHANGE_ON_RESUME)
  if stored is not None:
    finetune_eval.print_results(stored)
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
    if not keep_head:
      loaded.pop("classifier", None)
    params = finetune_source.merge_params(state.params, loaded)
    return state.replace(params=params, opt_state=jax.jit(
        job.tx.init, out_shardings=created.shardings.opt_state)(params))

  keys = INPUT_KEYS + LABEL_KEYS[task.kind]
  select = config.eval.select_metric or finetune_eval.DEFAULT_SELECT[task.kind]
  best_metric = f"{task.eval_splits[0]}/{select}"
  spe = batches.steps_per_epoch

  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    p_predict = jax.jit(functools.partial(predict_step, kind=task.kind),
                        in_shardings=(created.shardings, parallel.batch_sharding(mesh)),
                        out_shardings=parallel.replicated(mesh))

    def evaluate(state, step) -> dict[str, float]:
      epoch = -(-step // spe)
      results = finetune_eval.evaluate(
          task, p_predict, state, evals, keys, t.global_batch_size, mesh,
          workdir_lib.epoch_predictions(workdir, epoch))
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
        on_start=lambda: finetune_eval.write_task_files(
            workdir, finetune_eval.task_description(task, d, tokenizer_file, best_metric),
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
    best_step = checkpoint_lib.best_step(workdir_lib.checkpoints(workdir), best_metric,
                                         "max")
    if tests:
      state = result.state
      if best_step != result.step:
        ckpt = checkpoint_lib.Checkpointer(workdir_lib.checkpoints(workdir))
        state, _ = ckpt.restore(best_step, created.abstract_state())
        ckpt.close()
      finetune_eval.evaluate(task, p_predict, state, tests, keys, t.global_batch_size,
                             mesh, workdir_lib.test_predictions(workdir))
  out = finetune_eval.write_results(workdir, task, select, best_step, spe, num_steps)
  finetune_eval.print_results(out)
  return out
