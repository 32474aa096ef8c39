"""The pretraining job: corpus -> tokenizer -> examples -> sharded train loop.

This is the one place that knows data, model and training together. Steps are pure
jitted functions; I/O (logging, checkpoints, printing) happens only in the loop, on
process 0 where it writes files.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

from bert_jax import config_checks, observe, parallel, perf, storage
from bert_jax import workdir as workdir_lib
from bert_jax.data import corpora, grain_loader, masking, pretraining, tokenizers
from bert_jax.train import logging as log_lib
from bert_jax.train import checkpoint as checkpoint_lib
from bert_jax.train import losses, pretrain_steps, setup as setup_lib, trainer

# ------------------------------------------------------------------------------ data


class PretrainingData:
  """Tokenizer, train/eval examples and the most frequent token of the train corpus."""

  def __init__(self, tokenizer, train_examples, eval_examples, most_frequent_token):
    self.tokenizer = tokenizer
    self.train_examples = train_examples
    self.eval_examples = eval_examples
    self.most_frequent_token = most_frequent_token


_LOWERCASE = {"auto": None, "true": True, "false": False}


def _lowercase(d):
  if d.tokenizer_lowercase not in _LOWERCASE:
    raise ValueError(f"config field data.tokenizer_lowercase={d.tokenizer_lowercase!r}: "
                     f"expected one of {sorted(_LOWERCASE)}")
  return _LOWERCASE[d.tokenizer_lowercase]


def load_tokenizer(d, model_cfg, documents, workdir: str, path: str = "",
                   lowercase: bool | None = None):
  """The tokenizer at `path` (else data.tokenizer_path: SentencePiece .model or
  WordPiece vocab.txt), or one trained on `documents` (process 0, cached).
  `lowercase` is the default when data.tokenizer_lowercase is 'auto'."""
  path = path or d.tokenizer_path
  if path:
    lower = _lowercase(d)
    tok = tokenizers.load_tokenizer(path, lowercase=lowercase if lower is None else lower)
    where = f"the tokenizer {path}" if path != d.tokenizer_path else (
        f"data.tokenizer_path={path!r}")
  else:
    directory = workdir_lib.tokenizer_dir(workdir)
    if jax.process_index() == 0:
      tokenizers.get_or_train_tokenizer(
          documents, directory, vocab_size=model_cfg.vocab_size,
          model_type=d.tokenizer_model_type, seed=0,
          input_sentence_size=d.tokenizer_input_sentence_size)
    multihost_utils.sync_global_devices("tokenizer ready")
    tok = tokenizers.SentencePieceTokenizer.load(workdir_lib.trained_tokenizer(workdir))
    where = f"the tokenizer trained in {directory}"
  if tok.vocab_size != model_cfg.vocab_size:
    raise ValueError(
        f"{where} has {tok.vocab_size} pieces but config field model.vocab_size="
        f"{model_cfg.vocab_size}; they must match")
  return tok


def _phases(d) -> list[tuple[int, str, int]]:
  """(first step, prepared dir, max predictions) from data.phases / data.prepared_dir."""
  if not d.phases:
    return [(0, d.prepared_dir, d.max_predictions_per_seq)] if d.prepared_dir else []
  phases = []
  for part in filter(None, (p.strip() for p in d.phases.split(","))):
    fields = part.split(":")
    try:
      start, directory = int(fields[0]), fields[1]
      max_predictions = int(fields[2]) if len(fields) > 2 else d.max_predictions_per_seq
      if len(fields) > 3:
        raise ValueError
    except (ValueError, IndexError):
      raise ValueError(f"config field data.phases={d.phases!r}: expected "
                       f"'STEP:DIR[:MAX_PREDICTIONS],...', found {part!r}") from None
    phases.append((start, directory, max_predictions))
  return phases


def _prepared_data(config, workdir: str, phases) -> PretrainingData:
  """Tokenizer and splits of prepared directories (`python -m bert_jax.data.prepare`)."""
  d = config.data
  splits = [grain_loader.PreparedSplit(directory) for _, directory, _ in phases]
  hashes = {s.manifest["tokenizer"]["sha256"] for s in splits}
  if len(hashes) > 1:
    raise ValueError(f"config field data.phases: the prepared directories use different "
                     f"tokenizers ({[s.tokenizer_path for s in splits]}); expected one")
  if splits[0].max_seq_length != d.max_seq_length:
    raise ValueError(
        f"config field data.max_seq_length={d.max_seq_length}, but {splits[0].directory} was "
        f"prepared with max_seq_length={splits[0].max_seq_length}; they must match")
  tok = load_tokenizer(d, config.model, None, workdir, path=splits[0].tokenizer_path,
                       lowercase=splits[0].manifest["tokenizer"]["lowercase"])
  train = splits[0] if len(splits) == 1 else grain_loader.PhasedSplits(
      [grain_loader.Phase(start, split, max_predictions)
       for (start, _, max_predictions), split in zip(phases, splits)])
  evals = grain_loader.PreparedSplit(splits[0].directory, "eval")
  return PretrainingData(tok, train, evals, splits[0].most_frequent_token)


def prepare_data(config, workdir: str) -> PretrainingData:
  d = config.data
  phases = _phases(d)
  if phases:
    return _prepared_data(config, workdir, phases)
  if d.objective not in pretraining.OBJECTIVES:
    raise ValueError(f"config field data.objective={d.objective!r}: expected one of "
                     f"{pretraining.OBJECTIVES}")
  if d.on_bad_utf8 not in corpora.BAD_UTF8_POLICIES:
    raise ValueError(f"config field data.on_bad_utf8={d.on_bad_utf8!r}: expected one of "
                     f"{corpora.BAD_UTF8_POLICIES}")
  stats = {}
  docs = corpora.load_corpus(d.corpus, on_bad_utf8=d.on_bad_utf8, stats=stats)
  if stats:
    log_lib.info("corpus %s: %s", d.corpus, stats)
  train_docs, eval_docs = corpora.split_documents(docs, d.eval_fraction, config.seed)
  tok = load_tokenizer(d, config.model, train_docs, workdir)
  make = functools.partial(
      pretraining.create_pretraining_examples, max_seq_length=d.max_seq_length,
      short_seq_prob=d.short_seq_prob, cls_id=tok.cls_id, sep_id=tok.sep_id,
      pad_id=tok.pad_id, objective=d.objective)
  train_tok = pretraining.tokenize_corpus(train_docs, tok)
  eval_tok = pretraining.tokenize_corpus(eval_docs, tok)
  train = make(train_tok, dupe_factor=d.dupe_factor,
               rng=np.random.default_rng([config.seed, 1]))
  evals = make(eval_tok, dupe_factor=1, rng=np.random.default_rng([config.seed, 2]))
  counts = np.bincount(np.concatenate([np.asarray(s, np.int64) for doc in train_tok
                                       for s in doc]), minlength=tok.vocab_size)
  counts[:tok.first_normal_id] = 0
  return PretrainingData(tok, train, evals, int(np.argmax(counts)))


def _num_examples(examples) -> int:
  """In-memory examples are a dict of [N, ...] arrays; prepared splits have len()."""
  return len(examples["input_ids"]) if isinstance(examples, dict) else len(examples)


def make_loader(examples, data: PretrainingData, config, *, seed: int, shuffle: bool,
                repeat: bool):
  """The grain loader over in-memory examples (dict of arrays), a prepared split, or
  phases of prepared splits; `data.packing` packs each batch's rows (`packing.py`)."""
  d = config.data
  options = masking.MaskingConfig.from_config(d)

  def loader(split, max_predictions):
    return grain_loader.GrainPretrainingLoader(
        split, config.train.global_batch_size, seed=seed, shuffle=shuffle,
        process_index=jax.process_index(), process_count=jax.process_count(),
        repeat=repeat, prefetch_threads=d.loader_prefetch_threads,
        masker=options.replace(max_predictions_per_seq=max_predictions).bind(
            data.tokenizer),
        pack=d.get("packing", False))

  if isinstance(examples, grain_loader.PhasedSplits):
    return grain_loader.PhasedLoader([(p.start_step, loader(p.split, p.max_predictions))
                                      for p in examples.phases])
  return loader(examples, d.max_predictions_per_seq)


# ------------------------------------------------------------------------------ loop


def evaluate(p_eval_step, state, data, config, mesh) -> dict[str, float]:
  loader = make_loader(data.eval_examples, data, config, seed=config.seed + 7,
                       shuffle=False, repeat=False)
  totals = None
  for i, batch in enumerate(loader):
    if config.train.eval_batches and i >= config.train.eval_batches:
      break
    sums = p_eval_step(state, parallel.global_batch(batch, mesh))
    totals = sums if totals is None else jax.tree_util.tree_map(jnp.add, totals, sums)
  totals = jax.device_get(totals)
  m = {k: float(v) for k, v in losses.metrics_from_sums(totals).items()}
  m["mlm_accuracy_most_frequent_token"] = float(
      totals["baseline_correct"] / (totals["mlm_weight"] + 1e-5))
  return m


def fill_mask(state, tokenizer, text: str, top_k: int = 5) -> list[tuple[str, float]]:
  """Top-k pieces for the single [MASK] in `text` (every process runs it: SPMD)."""
  if text.count("[MASK]") != 1:
    raise ValueError(f"config field fill_mask_text={text!r} must hold exactly one [MASK]")
  from bert_jax.inference.tokenizer import masked_ids  # the rule `fill_mask` pipelines use
  ids = ([tokenizer.cls_id] + masked_ids(tokenizer.encode, text, tokenizer.mask_id)
         + [tokenizer.sep_id])
  ids = np.asarray([ids], np.int32)
  position = np.asarray([[int(np.argmax(ids[0] == tokenizer.mask_id))]], np.int32)
  logits = jax.jit(lambda p: state.apply_fn(
      {"params": p}, ids, np.zeros_like(ids), np.ones_like(ids),
      masked_lm_positions=position)["mlm_logits"])(state.params)
  probs = np.asarray(jax.nn.softmax(jax.device_get(logits)[0, 0]))
  best = np.argsort(-probs)[:top_k]
  return [(tokenizer.id_to_piece(int(i)), float(probs[i])) for i in best]


# The fields of a pretraining config that may differ on resume (beyond the trainer's).
MAY_CHANGE_ON_RESUME = trainer.MAY_CHANGE_ON_RESUME + ("fill_mask_text",)


def _report_start(config, mesh, rules, state) -> None:
  """Before the first compile: parameters per module and the memory estimate per
  device (`bert_jax/observe.py`)."""
  log_lib.info("parameters per module:\n%s",
               observe.format_param_summary(observe.param_summary(state.params)))
  with nn.logical_axis_rules(()):      # abstract init: not under the caller's rules
    estimate = observe.estimate_memory(config, mesh, rules)
  log_lib.info("%s", estimate.describe())


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Runs pretraining; returns the final eval metrics (also written to the workdir).

  A run that already reached `train.num_train_steps` prints its stored final figures
  (`final_eval.json`) and changes nothing.
  """
  log_lib.quiet_libraries()  # orbax logs every file operation at INFO
  config_checks.check_pretrain_config(config)
  workdir = config_checks.prepare_workdir(workdir)
  t = config.train
  stored = trainer.finished(workdir, workdir_lib.FINAL_EVAL_FILE, t.num_train_steps,
                            config, MAY_CHANGE_ON_RESUME)
  if stored is not None:
    _report(stored, config)
    return {"eval": stored["eval"], "fill_mask": stored["fill_mask"]}

  mesh = parallel.create_mesh(config.mesh)
  rules = parallel.logical_axis_rules(config.mesh)
  setup_lib.check_fits_mesh(config, mesh, rules)  # before any data work
  log_lib.info("mesh %s over %d devices, %d processes", dict(mesh.shape),
               jax.device_count(), jax.process_count())

  data = prepare_data(config, workdir)
  log_lib.info("examples: %d train, %d eval; vocab %d",
               _num_examples(data.train_examples), _num_examples(data.eval_examples),
               data.tokenizer.vocab_size)
  setup = setup_lib.pretraining(config, mesh, rules)
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    p_eval_step = jax.jit(functools.partial(pretrain_steps.eval_step,
                                            baseline_token=data.most_frequent_token),
                          in_shardings=(setup.shardings, parallel.batch_sharding(mesh)),
                          out_shardings=parallel.replicated(mesh))

    def evaluate_fn(state, step):
      del step
      return evaluate(p_eval_step, state, data, config, mesh)

    result = trainer.train(
        workdir=workdir, config=config, mesh=mesh, rules=rules, created=setup.created,
        p_train_step=setup.p_train_step, fresh_start=_params_from_init_from(config, setup),
        may_change_on_resume=MAY_CHANGE_ON_RESUME,
        start_report=functools.partial(_report_start, config, mesh, rules),
        batches=make_loader(data.train_examples, data, config, seed=config.seed,
                            shuffle=True, repeat=True),
        evaluate=evaluate_fn, loop=trainer.Loop(
            num_train_steps=t.num_train_steps, log_every_steps=t.log_every_steps,
            eval_every_steps=t.eval_every_steps,
            checkpoint_every_steps=t.checkpoint_every_steps,
            sequences_per_step=t.global_batch_size,
            tokens_per_sequence=config.data.max_seq_length,
            checkpoint_keep=t.checkpoint_keep, best_metric=t.checkpoint_best_metric,
            best_mode=t.checkpoint_best_mode, profile_steps=t.get("profile_steps", ""),
            flops_per_step=perf.train_flops(
                setup.model_config, t.global_batch_size, config.data.max_seq_length,
                config.data.max_predictions_per_seq),
            peak_tflops=t.get("peak_tflops", 0.0)))
    if result.preempted:
      return {"eval": result.eval_metrics, "fill_mask": [], "preempted_at": result.step}
    # A run resumed at its last step (killed before writing its figures) evaluates the
    # restored state, so the figures are never empty.
    eval_metrics = result.eval_metrics or evaluate_fn(result.state, result.step)
    fill = fill_mask(result.state, data.tokenizer, config.fill_mask_text)
  final = {"eval": eval_metrics, "fill_mask": fill, "step": result.step}
  if jax.process_index() == 0:
    storage.write_json_atomic(workdir_lib.final_eval_file(workdir), final)
  _report(final, config)
  return {"eval": eval_metrics, "fill_mask": fill}


def _params_from_init_from(config, setup):
  """`train.init_from` (e.g. phase 2 of the LAMB recipe): a fresh run's params come
  from another run's newest checkpoint (fresh optimizer state and schedule)."""
  init_from = config.train.get("init_from", "")
  if not init_from:
    return None

  def fresh_start(state):
    log_lib.info("params from %s (fresh optimizer state and schedule)", init_from)
    return state.replace(params=checkpoint_lib.restore_params(
        workdir_lib.checkpoints(init_from), target=setup.abstract_state().params))
  return fresh_start


def _report(final: dict, config) -> None:
  if jax.process_index() != 0:
    return
  eval_metrics, fill = final["eval"], final["fill_mask"]
  lines = [
      "",
      f"final eval (held-out documents, step {final.get('step', '?')}):",
      f"  MLM accuracy {eval_metrics.get('mlm_accuracy', float('nan')):.4f}   vs   "
      f"always predicting the most frequent token "
      f"{eval_metrics.get('mlm_accuracy_most_frequent_token', float('nan')):.4f}",
      f"  MLM loss {eval_metrics.get('mlm_loss', float('nan')):.4f}   NSP accuracy "
      f"{eval_metrics.get('nsp_accuracy', float('nan')):.4f}",
      f"fill-mask: {config.fill_mask_text}",
  ] + [f"  {i + 1}. {piece!r:>16}  p={p:.3f}" for i, (piece, p) in enumerate(fill)]
  print("\n".join(lines), flush=True)
