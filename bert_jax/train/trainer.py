"""The one training loop, shared by pretraining (`pretrain.py`) and fine-tuning
(`finetune.py`).

A job supplies its model and optimizer (`create_state`), a pure train step
(`jit_train_step`), a batch iterator with `state()`/`restore()`, an `evaluate(state,
step)` returning scalars, and a `Loop` (how long, how often). `train` does the rest:

    restore the newest checkpoint (state + data position; another mesh or encoder
        layout is converted), check and write `workdir/config.json`,
    loop: batch -> global array -> jitted step (state donated) -> every N steps
        eval, log, checkpoint (orbax, async; retention: newest K + best by metric),
    SIGTERM -> save at the next step boundary, exit cleanly.

Metrics of step s are fetched after step s+1 has been dispatched (MaxText), so the
host never waits on the device for logging; a NaN loss stops the run naming its step.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Callable, Iterator, Protocol

import flax.linen as nn
import jax
import numpy as np

from bert_jax import parallel, perf, storage, workdir as workdir_lib
from bert_jax.train import checkpoint as checkpoint_lib
from bert_jax.train import logging as log_lib
from bert_jax.train import preemption, state as state_lib

# Fields of every job's config that may differ from a resumed run's config.json: they
# change how long the run goes, how often it logs/saves, where it runs, or the
# encoder's memory layout, not what a finished step means. Extending a run (more
# steps) also moves the LR schedule's end (and, through the size argument,
# `warmup_steps`): allowed. Each job adds its own (`pretrain.MAY_CHANGE_ON_RESUME`,
# `finetune.MAY_CHANGE_ON_RESUME`) and passes the whole tuple to `train`/`finished`.
MAY_CHANGE_ON_RESUME = (
    "train.num_train_steps", "train.warmup_steps",
    "train.log_every_steps", "train.eval_every_steps", "train.eval_batches",
    "train.checkpoint_every_steps", "train.checkpoint_keep", "train.profile_steps",
    "mesh.", "distributed.", "data.loader_prefetch_threads",
    "model.scan_layers", "model.remat_policy", "model.attention_impl", "model.fused_qkv",
)


class Batches(Protocol):
  """A resumable batch iterator (this process's rows of each global batch)."""

  def __iter__(self) -> Iterator[dict[str, np.ndarray]]: ...
  def state(self) -> dict: ...
  def restore(self, state: dict) -> None: ...


@dataclasses.dataclass(frozen=True)
class Loop:
  """How long the loop runs and how often it logs, evaluates and saves."""
  num_train_steps: int
  log_every_steps: int
  eval_every_steps: int               # and always at the last step
  checkpoint_every_steps: int         # and at the last step, on SIGTERM, and at eval
                                      # steps when best_metric ranks checkpoints
  sequences_per_step: int             # the global batch size (for seq/s)
  tokens_per_sequence: int            # max_seq_length (for tokens/s)
  checkpoint_keep: int = 3
  best_metric: str = ""               # an eval metric ranking checkpoints ('' = none)
  best_mode: str = "max"
  profile_steps: str = ""             # train.profile_steps (bert_jax/train/profiling.py)
  flops_per_step: float = 0.0         # model FLOPs of one step (bert_jax/perf.py), for MFU
  peak_tflops: float = 0.0            # train.peak_tflops; 0 = perf.peak_tflops() (device kind)


@dataclasses.dataclass
class Created:
  """A sharded train state and what restoring and stepping it needs."""
  state: Any
  shardings: Any
  dropout_rng: jax.Array
  abstract_state: Callable[[], Any]   # ShapeDtypeStructs with shardings (restore target)


@dataclasses.dataclass
class Result:
  state: Any
  step: int                           # the last step reached
  eval_metrics: dict                  # the last evaluation of this call ({} if none)
  preempted: bool


def create_state(model: nn.Module, tx, dummy_inputs: tuple, seed: int, mesh, rules,
                 dropout_rng: jax.Array | None = None) -> Created:
  """init under jit with out_shardings; the init and (by default) dropout keys split
  PRNGKey(seed)."""
  init_rng, default_dropout = jax.random.split(jax.random.PRNGKey(seed))
  dropout_rng = default_dropout if dropout_rng is None else dropout_rng
  state, shardings = state_lib.create_sharded_state(model, tx, dummy_inputs, init_rng,
                                                    mesh, rules)
  return Created(state, shardings, dropout_rng, lambda: state_lib.abstract_state(
      shardings, model, tx, dummy_inputs, init_rng))


def jit_train_step(step_fn, state_shardings, mesh):
  """`step_fn(state, batch, rng) -> (state, metrics)` under jit: explicit shardings,
  the state donated. Call (and first run) it under `jax.set_mesh(mesh)` and the rules."""
  return jax.jit(step_fn, in_shardings=(state_shardings, parallel.batch_sharding(mesh),
                                        parallel.replicated(mesh)),
                 out_shardings=(state_shardings, parallel.replicated(mesh)),
                 donate_argnums=0)


# ------------------------------------------------------------- the run's config


def _flat(tree: dict, prefix: str = "") -> dict:
  out = {}
  for k, v in tree.items():
    if isinstance(v, dict):
      out.update(_flat(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out


def config_differences(old: dict, new: dict,
                       may_change: tuple[str, ...] = MAY_CHANGE_ON_RESUME) -> list[str]:
  """Fields (dotted) whose values differ, except those in `may_change` (a field, or a
  prefix ending in '.')."""
  a, b = _flat(old), _flat(new)
  changed = [k for k in sorted(set(a) | set(b))
             if a.get(k, "<absent>") != b.get(k, "<absent>")]
  return [k for k in changed if not any(
      k == f or (f.endswith(".") and k.startswith(f)) for f in may_change)]


def config_json(config) -> str:
  return config.to_json_best_effort(indent=2, sort_keys=True)


def check_same_run(workdir: str, config,
                   may_change: tuple[str, ...] = MAY_CHANGE_ON_RESUME) -> None:
  """An existing `workdir/config.json` that differs (outside `may_change`) is an error
  naming the fields; the file is kept as it is."""
  path = workdir_lib.config_file(workdir)
  if not path.is_file():
    return
  old = storage.read_json(path)
  new = json.loads(config_json(config))
  bad = config_differences(old, new, may_change)
  if bad:
    shown = ", ".join(f"{k}: {_flat(old).get(k, '<absent>')!r} -> "
                      f"{_flat(new).get(k, '<absent>')!r}" for k in bad[:8])
    raise ValueError(
        f"{path} records another run in this workdir; these config fields differ "
        f"({shown}{', ...' if len(bad) > 8 else ''}); use a new --workdir or the same "
        "config (config.json is kept as it is)")


def check_and_write_config(workdir: str, config, resuming: bool,
                           may_change: tuple[str, ...] = MAY_CHANGE_ON_RESUME) -> None:
  """Writes `workdir/config.json`, after `check_same_run` when resuming.

  Called once the run is about to start (every input checked), so a run that fails
  validation leaves the workdir's config.json as it was.
  """
  if resuming:
    check_same_run(workdir, config, may_change)
  if jax.process_index() == 0:
    storage.write_json_atomic(workdir_lib.config_file(workdir),
                              json.loads(config_json(config)))


def finished(workdir: str, filename: str, num_train_steps: int, config,
             may_change: tuple[str, ...] = MAY_CHANGE_ON_RESUME) -> dict | None:
  """The stored final figures of a run that reached `num_train_steps` (and still holds
  that step's checkpoint).

  Rerunning a finished command returns them and writes nothing; the same workdir
  with other settings is an error (`check_same_run`).
  """
  path = workdir_lib.root(workdir) / filename
  if not path.is_file():
    return None
  stored = storage.read_json(path)
  if stored.get("step") != num_train_steps:
    return None
  ckpt = checkpoint_lib.Checkpointer(workdir_lib.checkpoints(workdir))
  last_kept = ckpt.readable(num_train_steps)
  ckpt.close()
  if not last_kept:   # its last checkpoint was lost: the run redoes the last steps
    return None
  check_same_run(workdir, config, may_change)
  return stored


# ------------------------------------------------------------------ start hooks


def _step_profiler(workdir: str, loop: Loop):
  """`bert_jax.train.profiling.StepProfiler(workdir, spec)`, or None without it."""
  if not loop.profile_steps:
    return None
  try:
    from bert_jax.train import profiling
  except ImportError:
    return None
  return profiling.StepProfiler(workdir, loop.profile_steps)


# ------------------------------------------------------------------------ loop


def log_train(writer, progress, step: int, metrics: dict,
              flops_per_step: float = 0.0, peak_tflops: float = 0.0) -> None:
  """Writes one step's train metrics with throughput and MFU; a NaN loss is an error.

  MFU (`train/mfu`, a fraction) is written when the device's peak is known
  (`peak_tflops`, else `bert_jax.perf.PEAK_TFLOPS` by device kind; none for CPUs) and
  the job gave `flops_per_step`.
  """
  m = {k: float(v) for k, v in jax.device_get(metrics).items()}
  if not np.isfinite(m["loss"]):
    parts = ", ".join(f"{k} {v:.4g}" for k, v in m.items() if "loss" in k and k != "loss")
    raise FloatingPointError(
        f"training loss is {m['loss']} at step {step}{f' ({parts})' if parts else ''}; "
        "lower config field train.learning_rate or check the data. The last complete "
        "checkpoint is kept.")
  m["seq_per_s"] = progress.update(step, m["loss"])
  m["tokens_per_s"] = m["seq_per_s"] * getattr(progress, "tokens_per_sequence", 0)
  peak = peak_tflops or perf.peak_tflops()
  unit = getattr(progress, "unit_per_step", 0)
  if flops_per_step and unit and m["seq_per_s"] > 0 and np.isfinite(peak):
    m["mfu"] = perf.mfu(flops_per_step, unit / m["seq_per_s"], peak)
  writer.write(step, m, prefix="train/")


def train(*, workdir: str, config, mesh, rules, created: Created, p_train_step,
          batches: Batches, evaluate: Callable[[Any, int], dict[str, float]],
          loop: Loop, on_start: Callable[[], None] | None = None,
          fresh_start: Callable[[Any], Any] | None = None,
          start_report: Callable[[Any], None] | None = None,
          may_change_on_resume: tuple[str, ...] = MAY_CHANGE_ON_RESUME) -> Result:
  """Restores, checks/writes config.json, then trains to `loop.num_train_steps`.

  `evaluate(state, step)` returns flat scalars (written as `eval/<name>`; the one
  named `loop.best_metric` ranks checkpoints). `on_start()` writes the job's own
  workdir files once the config check passed. `fresh_start(state) -> state` adjusts
  the initial state of a run with no checkpoint to resume (e.g. params from another
  run, a fine-tuning source model): it is not called on resume. `start_report(state)`
  logs what the job wants known before the first compile (parameters, memory).
  `may_change_on_resume`: the config fields a resumed run may change (this module's
  MAY_CHANGE_ON_RESUME plus the job's own). Every process runs this; files are
  written by process 0.
  """
  log_lib.quiet_libraries()
  state = created.state
  ckpt = checkpoint_lib.Checkpointer(
      workdir_lib.checkpoints(workdir), keep=loop.checkpoint_keep,
      best_metric=loop.best_metric, best_mode=loop.best_mode)
  resumed = ckpt.restore_latest(created.abstract_state())
  if resumed is not None:
    state, data_state, latest = resumed
    batches.restore(data_state)
    log_lib.info("resumed from %s/%d (data position %s)", ckpt.directory, latest,
                 data_state)
  else:
    if ckpt.incomplete():
      log_lib.info("no complete checkpoint in %s: starting from scratch", ckpt.directory)
    if fresh_start is not None:
      state = fresh_start(state)
  check_and_write_config(workdir, config, resuming=resumed is not None,
                         may_change=may_change_on_resume)
  if on_start is not None:
    on_start()

  start = int(jax.device_get(state.step))
  if start_report is not None:
    start_report(state)
  profiler = _step_profiler(workdir, loop)
  saved_config = json.dumps(json.loads(config_json(config)))
  writer = log_lib.MetricWriter(workdir)
  progress = log_lib.Progress(loop.num_train_steps, start, loop.sequences_per_step,
                              loop.tokens_per_sequence)
  watcher = preemption.PreemptionWatcher()
  eval_metrics: dict[str, float] = {}
  pending = None   # (step, metrics) fetched one step late so the host never blocks
  preempted = False
  step = start
  try:
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
      iterator = iter(batches)
      for step in range(start + 1, loop.num_train_steps + 1):
        batch = parallel.global_batch(next(iterator), mesh)
        if profiler is not None:
          profiler.step_start(step)
        state, metrics = p_train_step(state, batch, created.dropout_rng)
        if profiler is not None:
          profiler.step_end(step, block_on=metrics)
        progress.advance(step)
        if pending is not None:
          log_train(writer, progress, *pending, flops_per_step=loop.flops_per_step,
                    peak_tflops=loop.peak_tflops)
          pending = None
        last = step == loop.num_train_steps
        if step % loop.log_every_steps == 0 or last:
          pending = (step, metrics)
        evaluated = step % loop.eval_every_steps == 0 or last
        if evaluated:
          eval_metrics = evaluate(state, step)
          writer.write(step, eval_metrics, prefix="eval/")
        preempted = watcher.reached(step)
        # Eval steps are saved when they rank checkpoints (best-by-metric retention).
        if (preempted or last or step % loop.checkpoint_every_steps == 0
            or (evaluated and loop.best_metric)):
          ckpt.save(step, state, batches.state(), saved_config,
                    metrics=eval_metrics if evaluated else None)
        if preempted:
          log_lib.info("preemption signal: saved step %d, exiting; rerun the same "
                       "command to resume", step)
          break
      if pending is not None:
        log_train(writer, progress, *pending, flops_per_step=loop.flops_per_step,
                  peak_tflops=loop.peak_tflops)
  finally:
    if profiler is not None:
      profiler.close()
    watcher.close()
    progress.close()
    ckpt.close()
    writer.close()
  return Result(state, step, eval_metrics, preempted)
