"""Orbax checkpoints: train state, data-loader position and config in one manager.

Each checkpoint `workdir/checkpoints/<step>/` holds three items:
  state   {'step', 'params', 'opt_state'}: sharded arrays, restored onto the target
          shardings of the *current* mesh, so a run saved on (8,1,1) restores on (2,2,2)
          or on one device;
  data    the loader position (JSON), so a resumed run reads the exact next batch;
  config  the resolved config (JSON), for provenance and params-only restores.
The dropout RNG needs no item: the key of step s is fold_in(PRNGKey(seed), s).

Saves are asynchronous. Locally orbax writes a step into `<step>.orbax-checkpoint-tmp-*`
and renames it when complete; on GCS (no atomic directory rename) it writes `<step>/`
in place and marks it complete with a `commit_success.txt` written last. Either way a
run killed mid-save leaves a step that is never restored from (the manager lists
finalized steps only; we also say so), and orbax replaces it when it saves that step
again. Directories are `epath.Path`s (`bert_jax.storage`): a `gs://` directory is never
made absolute into a local path.
Retention: the newest `keep` checkpoints plus, optionally, the best one by an eval metric.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Mapping

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils
from orbax.checkpoint import checkpoint_managers

from bert_jax import storage
from bert_jax.config import ModelConfig
from bert_jax.models import params as params_lib
from bert_jax.train import logging as log_lib

_TMP_MARK = ".orbax-checkpoint-tmp"


class _NoMetricsWarning(logging.Filter):
  """Drops orbax's warning for saves without metrics: with a best metric, only eval
  steps carry metrics, by design (the others are kept by recency)."""

  def filter(self, record: logging.LogRecord) -> bool:
    return "Requested `tracked_metric`; did not provide metrics" not in record.getMessage()


logging.getLogger("absl").addFilter(_NoMetricsWarning())


def _item_handlers() -> dict:
  return {"state": ocp.StandardCheckpointHandler(), "data": ocp.JsonCheckpointHandler(),
          "config": ocp.JsonCheckpointHandler()}


def _state_dict(state) -> dict:
  return {"step": state.step, "params": state.params, "opt_state": state.opt_state}


def _in_layout(tree, scanned: bool):
  """`tree` (arrays or ShapeDtypeStructs) in the scanned or per-layer encoder layout."""
  return params_lib.in_layout(tree, scanned)


def _flatten(tree, prefix=""):
  if isinstance(tree, Mapping):
    for k, v in tree.items():
      yield from _flatten(v, f"{prefix}/{k}" if prefix else str(k))
  elif isinstance(tree, (list, tuple)) and not hasattr(tree, "shape"):
    for i, v in enumerate(tree):
      yield from _flatten(v, f"{prefix}/{i}")
  else:
    yield prefix, tree


class Checkpointer:
  """One orbax CheckpointManager; the train loop decides when to save."""

  def __init__(self, directory: storage.PathLike, keep: int = 3, best_metric: str = "",
               best_mode: str = "max"):
    self.directory = storage.absolute(directory)
    if best_mode not in ("max", "min"):
      raise ValueError(f"config field train.checkpoint_best_mode={best_mode!r}: "
                       "expected 'max' or 'min'")
    policies = [checkpoint_managers.LatestN(n=keep)]
    if best_metric:
      policies.append(checkpoint_managers.BestN(
          get_metric_fn=lambda m: m[best_metric], reverse=best_mode == "min", n=1,
          keep_checkpoints_without_metrics=False))
    # best_fn makes orbax write each step's metrics to disk (item 'metrics'), so the
    # ranking survives a restart and `best_step` can read it back.
    options = ocp.CheckpointManagerOptions(
        create=True,
        preservation_policy=checkpoint_managers.AnyPreservationPolicy(policies),
        best_fn=(lambda m: m[best_metric]) if best_metric else None,
        best_mode=best_mode)
    self.best_metric = best_metric
    self.manager = ocp.CheckpointManager(self.directory, options=options,
                                         item_handlers=_item_handlers())

  # ---------------------------------------------------------------------------- save

  def save(self, step: int, state, data_state: dict, config_json: str = "{}",
           metrics: dict | None = None) -> bool:
    """Starts an asynchronous save of `step`; `metrics` rank it for best-N retention."""
    if metrics is not None and self.best_metric and self.best_metric not in metrics:
      raise ValueError(f"config field train.checkpoint_best_metric={self.best_metric!r} "
                       f"is not an eval metric; have {sorted(metrics)}")
    return self.manager.save(
        int(step),
        args=ocp.args.Composite(state=ocp.args.StandardSave(_state_dict(state)),
                                data=ocp.args.JsonSave(data_state),
                                config=ocp.args.JsonSave(json.loads(config_json))),
        metrics={k: float(v) for k, v in metrics.items()} if metrics else None,
        force=True)

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()

  # ------------------------------------------------------------------------- restore

  def steps(self) -> list[int]:
    self.manager.reload()
    return sorted(self.manager.all_steps())

  def latest_step(self) -> int | None:
    steps = self.steps()
    return steps[-1] if steps else None

  def incomplete(self) -> list[str]:
    """Directories of saves that never finished (a run killed mid-save): orbax's tmp
    directories, and step directories it does not list as finalized (on GCS, those
    without their commit file)."""
    if not self.directory.is_dir():
      return []
    finished = {str(s) for s in self.steps()}
    return sorted(p.name for p in self.directory.iterdir()
                  if _TMP_MARK in p.name or (p.name.isdigit() and p.name not in finished))

  def readable(self, step: int) -> bool:
    """`step` is a finished checkpoint whose metadata reads (its files not lost)."""
    return step in self.steps() and self._saved_param_shapes(step) is not None

  def _saved_param_shapes(self, step: int) -> dict[str, tuple] | None:
    """Shapes of the saved params (they decide; the optimizer state mirrors them)."""
    try:
      meta = self.manager.item_metadata(step)["state"]
      saved = dict(meta)["params"]
    except Exception:  # missing or unreadable metadata: a broken checkpoint
      return None
    return {k: tuple(v.shape) for k, v in _flatten(dict(saved)) if hasattr(v, "shape")}

  def check_compatible(self, step: int, state_target) -> None:
    """Compares saved array shapes with the model's; one error lists every mismatch."""
    saved_shapes = self._saved_param_shapes(step)
    if saved_shapes is None:
      raise ValueError(f"checkpoint {self.directory}/{step} has no readable metadata")
    params = _in_layout(dict(state_target.params), self._saved_is_scanned(step))
    want = {k: tuple(v.shape) for k, v in _flatten(params) if hasattr(v, "shape")}
    bad = [f"{k}: checkpoint {saved_shapes.get(k, 'missing')}, model {want[k]}"
           for k in sorted(want) if saved_shapes.get(k) != want[k]]
    extra = sorted(set(saved_shapes) - set(want))
    bad += [f"{k}: in the checkpoint, not in the model" for k in extra]
    if bad:
      raise ValueError(
          f"checkpoint {self.directory}/{step} does not fit the configured model "
          f"({len(bad)} mismatches; a different model size or layout?):\n  "
          + "\n  ".join(bad[:20]) + ("\n  ..." if len(bad) > 20 else ""))

  def restore(self, step: int, state_target) -> tuple[Any, dict]:
    """`state_target`: a TrainState of ShapeDtypeStructs carrying target shardings.

    A checkpoint in the other encoder layout (scanned vs per-layer, `model.scan_layers`)
    is restored in its own layout on the host, converted, then placed on the target
    shardings.
    """
    self.check_compatible(step, state_target)
    target = _state_dict(state_target)
    saved_scanned = self._saved_is_scanned(step)
    if saved_scanned == params_lib.is_scanned(state_target.params):
      item = target
    else:
      item = jax.tree_util.tree_map(lambda x: np.zeros(x.shape, x.dtype),
                                    _in_layout(target, saved_scanned))
      log_lib.info("checkpoint %s/%d is in the %s layout: converting", self.directory,
                   step, "scanned" if saved_scanned else "per-layer")
    restored = self.manager.restore(
        int(step),
        args=ocp.args.Composite(state=ocp.args.StandardRestore(item),
                                data=ocp.args.JsonRestore()))
    s = restored["state"]
    if item is not target:
      s = _in_layout(s, not saved_scanned)
      s = jax.device_put(s, jax.tree_util.tree_map(lambda x: x.sharding, target))
    return state_target.replace(step=s["step"], params=s["params"],
                                opt_state=s["opt_state"]), dict(restored["data"])

  def _saved_is_scanned(self, step: int) -> bool:
    return params_lib.is_scanned(params_lib.unflatten(self._saved_param_shapes(step) or {}))

  def restore_latest(self, state_target) -> tuple[Any, dict, int] | None:
    """Newest checkpoint that restores; older ones are tried if a newer one is broken.

    Returns None when there is no complete checkpoint. A shape mismatch is not a
    broken checkpoint: it is raised at once (the config is wrong, not the file).
    """
    for name in self.incomplete():
      log_lib.info("ignoring %s/%s: a save that never finished (run killed mid-save)",
                   self.directory, name)
    result = None
    broken = []
    for step in reversed(self.steps()):
      if self._saved_param_shapes(step) is None:
        log_lib.info("checkpoint %s/%d cannot be restored (its metadata is missing or "
                     "unreadable); trying an older one", self.directory, step)
        broken.append(step)
        continue
      self.check_compatible(step, state_target)
      try:
        state, data = self.restore(step, state_target)
      except Exception as e:  # a corrupt or truncated step: fall back to an older one
        log_lib.info("checkpoint %s/%d cannot be restored (%s: %s); trying an older one",
                     self.directory, step, type(e).__name__, str(e).splitlines()[0][:200])
        broken.append(step)
        continue
      result = (state, data, step)
      break
    if broken:
      self._set_aside(broken)
    return result

  def _set_aside(self, steps: list[int]) -> None:
    """Renames unrestorable steps to `<step>.unrestorable` (kept for inspection, never
    deleted) so that the run can save those step numbers again."""
    if jax.process_index() == 0:
      for step in steps:
        src = self.directory / str(step)
        dst = self.directory / f"{step}.unrestorable"
        suffix = 1
        while dst.exists():
          dst, suffix = self.directory / f"{step}.unrestorable{suffix}", suffix + 1
        src.rename(dst)   # on GCS a copy of each object, then a delete
        log_lib.info("moved the unrestorable checkpoint %s to %s", src, dst)
    multihost_utils.sync_global_devices("checkpoints set aside")
    self.manager.reload()


def saved_metrics(checkpoint_dir: storage.PathLike) -> dict[int, dict]:
  """{step: eval metrics} of the kept steps that were saved with metrics (on disk for
  runs whose Checkpointer had a `best_metric`)."""
  manager = ocp.CheckpointManager(storage.absolute(checkpoint_dir),
                                  item_handlers=_item_handlers())
  out = {step: dict(manager.metrics(step) or {}) for step in manager.all_steps()}
  manager.close()
  return {step: m for step, m in out.items() if m}


def best_step(checkpoint_dir: storage.PathLike, metric: str, mode: str = "max") -> int | None:
  """The kept step whose saved eval `metric` is best (None if no step has it)."""
  scored = {step: m[metric] for step, m in saved_metrics(checkpoint_dir).items()
            if metric in m}
  if not scored:
    return None
  sign = 1.0 if mode == "max" else -1.0   # ties: the later step, as orbax's BestN keeps
  return max(scored, key=lambda step: (sign * scored[step], step))


def restore_params(checkpoint_dir: storage.PathLike, step: int | None = None,
                   target: Any | None = None, with_step: bool = False):
  """Params only, from a pretraining run's `workdir/checkpoints` (for fine-tuning).

  `target`: optional tree of ShapeDtypeStructs (with shardings) for a sharded restore,
  in either encoder layout (a scanned checkpoint is converted to a per-layer target
  and back); without it the arrays come back as host numpy arrays in the saved
  layout. `with_step=True` returns (params, step).
  """
  directory = storage.absolute(checkpoint_dir)
  if not directory.is_dir():
    raise FileNotFoundError(f"no checkpoint directory {directory}")
  # Through the manager that wrote the step (its metadata file is the step's, not the
  # item's: a bare Checkpointer on `<step>/state` warns that it is missing); the
  # 'state' item read as a PyTree, for a partial restore of its params.
  handlers = {**_item_handlers(), "state": ocp.PyTreeCheckpointHandler()}
  with ocp.CheckpointManager(directory, item_handlers=handlers) as manager:
    step = manager.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no complete checkpoint in {directory}")
    if step not in manager.all_steps():
      raise FileNotFoundError(f"no complete checkpoint {directory}/{step}")
    saved = dict(manager.item_metadata(step)["state"])["params"]
    saved = jax.tree_util.tree_map(lambda m: np.zeros(m.shape, m.dtype), dict(saved))
    relayout = target is not None and (params_lib.is_scanned(target)
                                       != params_lib.is_scanned(saved))
    if target is None or relayout:
      item = saved
      restore_args = jax.tree_util.tree_map(
          lambda _: ocp.RestoreArgs(restore_type=np.ndarray), item)
    else:
      item = target
      restore_args = ocp.checkpoint_utils.construct_restore_args(target)
    restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
        item={"params": item}, restore_args={"params": restore_args},
        partial_restore=True)))
  params = restored["state"]["params"]
  if relayout:  # restored on the host in the saved layout, placed in the target's
    params = params_lib.in_layout(params, params_lib.is_scanned(target))
    params = jax.device_put(params, jax.tree_util.tree_map(lambda x: x.sharding, target))
  return (params, step) if with_step else params


def read_model_config(checkpoint_dir: storage.PathLike,
                      step: int | None = None) -> ModelConfig:
  """The `ModelConfig` saved with a checkpoint (its `config` item; newest step by default).

  A workdir alone says what model it holds: nothing outside the checkpoint is needed.
  """
  directory = storage.absolute(checkpoint_dir)
  if not directory.is_dir():
    raise FileNotFoundError(f"no checkpoint directory {directory}")
  with ocp.CheckpointManager(directory, item_handlers=_item_handlers()) as manager:
    step = manager.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no complete checkpoint in {directory}")
    try:
      saved = manager.restore(step, args=ocp.args.Composite(
          config=ocp.args.JsonRestore()))["config"]
    except (FileNotFoundError, KeyError, ValueError) as e:
      raise FileNotFoundError(f"checkpoint {directory}/{step} holds no readable config "
                              f"item: {e}") from None
  where = f"{directory}/{step}/config"
  if not isinstance(saved, dict) or not isinstance(saved.get("model"), dict):
    raise ValueError(f"{where} has no 'model' section")
  return ModelConfig.from_dict(saved["model"], where)
