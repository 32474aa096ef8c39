"""`Model.from_pretrained(path)`: any model directory -> a jitted, length-bucketed apply.

    model = Model.from_pretrained("workdir/sst2")
    out = model(**tok(["a sentence"]))     # numpy
    out["sequence_output"]  [batch, length, hidden]
    out["pooled_output"]    [batch, hidden]
    out["logits"]           task models: [batch, labels] or [batch, length, labels]
    out["start_logits"], out["end_logits"]   QA models: [batch, length]
    model(..., masked_lm_positions=P)["mlm_logits"]   models with an MLM head

Batches are padded (rows masked out) to a power-of-two length (at least 16, at most
`model.max_position_embeddings`) and a power-of-two number of rows, so a stream of
texts of every length compiles a handful of shapes; outputs are cut back to the
input's shape. Params are jit arguments, not constants baked into the program.
"""

from __future__ import annotations

import functools

import jax
import numpy as np

from bert_jax import workdir as workdir_lib
from bert_jax.inference import source as source_lib
from bert_jax.inference.source import ModelError

MIN_BUCKET = 16
_INIT_PREFIX = {"hf": "hf", "workdir": "bert_jax"}  # fine-tuning's init= for each kind
PER_POSITION = ("sequence_output", "start_logits", "end_logits")  # [batch, length, ...]


def bucket(n: int, cap: int | None = None, minimum: int = 1) -> int:
  """Smallest power of two >= max(n, minimum), but at most `cap` (when n <= cap)."""
  b = max(minimum, 1 << max(0, int(n - 1).bit_length()))
  return min(b, cap) if cap is not None and n <= cap else b


class Model:
  """Params + module of a loaded model; `kind` is 'pretraining' or a task kind."""

  def __init__(self, module, params: dict, model_config, kind: str,
               src: source_lib.Source, initialised: tuple[str, ...] = ()):
    self.module, self.params, self.config = module, params, model_config
    self.kind, self.source, self.initialised = kind, src, tuple(initialised)
    self.task = src.task
    self.max_length = int(model_config.max_position_embeddings)
    self._encode = jax.jit(functools.partial(_apply, module, encoder_only=kind == "pretraining"))
    self._mlm = jax.jit(functools.partial(_apply, module, encoder_only=False))

  @classmethod
  def from_pretrained(cls, path: str, step: int | None = None) -> Model:
    """Loads a fine-tuning or pretraining workdir, an HF, Google or params dir; an HF
    task model (or a params dir converted from one) with its head and labels.

    `step`: a workdir's checkpoint; default: for a fine-tuning workdir whose task.json
    names a `best_metric`, the best-ranked step (the one its test predictions used),
    else the newest.
    """
    src = source_lib.locate(path)
    if src.kind == "finetune":
      return _load_finetune(src, step)
    from bert_jax import convert
    from bert_jax.models import BertForPreTraining, make_task_model
    try:
      loaded = convert.load(path, src.kind, step=step)
    except convert.ConversionError as e:
      raise ModelError(str(e)) from None
    cfg = loaded.model_config
    if loaded.task is not None:   # an HF task model, or a params dir converted from one
      src.task = loaded.task
      kind, num_labels = loaded.task["kind"], int(loaded.task["num_labels"])
      return cls(make_task_model(kind, cfg, num_labels), loaded.params, cfg, kind, src,
                 loaded.initialised)
    return cls(BertForPreTraining(cfg), loaded.params, cfg, "pretraining", src,
               loaded.initialised)

  @property
  def label_names(self) -> list[str]:
    return list(self.task["label_names"]) if self.task else []

  def require(self, kinds: tuple[str, ...], pipeline: str) -> None:
    """Raises ModelError unless this model's head is one of `kinds`."""
    if self.kind in kinds:
      return
    if self.kind == "pretraining":
      raise ModelError(
          f"{pipeline} needs a fine-tuned {'/'.join(kinds)} model, but "
          f"{self.source.describe()} has no task head (no {workdir_lib.TASK_FILE}); "
          "fine-tune it first (python -m bert_jax.main --config=configs/finetune_glue.py"
          f":init={_INIT_PREFIX.get(self.source.kind, 'hf')}:{self.source.path} ...)")
    raise ModelError(f"{pipeline} needs a {'/'.join(kinds)} model, but "
                     f"{self.source.describe()} is a {self.kind} model")

  def __call__(self, input_ids, token_type_ids=None, attention_mask=None,
               masked_lm_positions=None) -> dict[str, np.ndarray]:
    """Runs one batch (numpy int [batch, length]); see the module docstring."""
    ids = np.asarray(input_ids, np.int32)
    if ids.ndim != 2:
      raise ValueError(f"input_ids: expected [batch, length], found shape {ids.shape}")
    rows, length = ids.shape
    types = np.zeros_like(ids) if token_type_ids is None else np.asarray(token_type_ids)
    mask = np.ones_like(ids) if attention_mask is None else np.asarray(attention_mask)
    used = int(np.max(np.flatnonzero(mask.any(0))) + 1) if mask.any() else 1
    if used > self.max_length:
      raise ValueError(f"inputs of {used} tokens exceed model.max_position_embeddings="
                       f"{self.max_length}; the pipelines window long texts")
    b, n = bucket(rows), bucket(used, self.max_length, MIN_BUCKET)
    pad = lambda x: _pad(np.asarray(x, np.int32)[:, :n], b, n)  # noqa: E731
    args = (pad(ids), pad(types), pad(mask))
    if masked_lm_positions is None:
      out = self._encode(self.params, *args)
    else:
      if "mlm" in self.initialised or "mlm" not in self.params:
        raise ModelError(f"fill_mask needs a trained MLM head, but "
                         f"{self.source.describe()} has none (its 'mlm' module was "
                         "freshly initialised)")
      positions = _pad(np.asarray(masked_lm_positions, np.int32), b,
                       np.shape(masked_lm_positions)[1])
      out = self._mlm(self.params, *args, positions)
    out = jax.device_get(out)
    return {k: _unpad(v, rows, length) if k in PER_POSITION or (
        k == "logits" and v.ndim == 3) else np.asarray(v)[:rows] for k, v in out.items()}


def _apply(module, params, ids, types, mask, positions=None, *, encoder_only: bool):
  from bert_jax.models import BertModel
  if encoder_only and positions is None:  # skip the [length, vocab] MLM projection
    return BertModel(module.cfg).apply({"params": params["bert"]}, ids, types, mask)
  kwargs = {} if positions is None else {"masked_lm_positions": positions}
  out = module.apply({"params": params}, ids, types, mask, **kwargs)
  return {k: v for k, v in out.items() if k != "nsp_logits"}


def _pad(x: np.ndarray, rows: int, length: int) -> np.ndarray:
  out = np.zeros((rows, length), x.dtype)
  out[:x.shape[0], :x.shape[1]] = x
  return out


def _unpad(v: np.ndarray, rows: int, length: int) -> np.ndarray:
  """Drops padded rows; per-position outputs go back to `length` (zeros beyond)."""
  v = np.asarray(v)[:rows]
  if v.shape[1] >= length:
    return v[:, :length]
  out = np.zeros((rows, length) + v.shape[2:], v.dtype)
  out[:, :v.shape[1]] = v
  return out


def _load_finetune(src: source_lib.Source, step: int | None) -> Model:
  """A fine-tuning workdir: params of `checkpoints/<step>` with its task head."""
  from bert_jax.convert import ConversionError, native
  from bert_jax.train import checkpoint as checkpoint_lib
  from bert_jax.models import make_task_model
  if step is None and src.task.get("best_metric"):   # the run's test-prediction epoch
    step = checkpoint_lib.best_step(workdir_lib.checkpoints(src.path),
                                    src.task["best_metric"], "max")
  try:
    params, cfg, _, _, _ = native.read_workdir(src.path, step)
  except ConversionError as e:
    raise ModelError(f"fine-tuning workdir {src.path}: {e}") from None
  kind = src.task["kind"]
  num_labels = int(np.shape(params["classifier"]["bias"])[-1])
  names = src.task["label_names"]
  if kind not in ("span", "regression") and len(names) != num_labels:
    raise ModelError(f"{workdir_lib.task_file(src.path)} has {len(names)} label_names "
                     f"but the head has {num_labels} labels")
  return Model(make_task_model(kind, cfg, num_labels), params, cfg, kind, src)
