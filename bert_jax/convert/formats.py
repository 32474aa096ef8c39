"""Format detection, loading into one `Loaded` record, and atomic writing.

Formats (`--from` / `--to`):
  hf        Hugging Face dir: config.json + model.safetensors | pytorch_model.bin
  tf        Google's release dir: bert_config.json + bert_model.ckpt.* (+ vocab.txt)
  workdir   a bert_jax training workdir (read only; the newest checkpoint by default)
  bert_jax  a converted-params dir (see `native.py`)

Loading maps every array, fills the modules the source lacks (pooler, MLM, NSP heads
of a bare `BertModel`; the pooler of a token or span task model) with a fresh init
and says so. A task model (an HF `BertFor...Classification` / `...QuestionAnswering`
dir, a fine-tuned workdir, a params dir converted from either) keeps its head
(`params['classifier']`) and its task record (`Loaded.task`: kind, label names).
Writing goes to a temporary sibling directory renamed into place at the end, so a
failure never leaves a partial output directory behind. An HF export carries a tokenizer that `transformers` loads and
that gives our ids (`hf_tokenizer.py`), or fails saying why it cannot.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from bert_jax import storage, workdir as workdir_lib
from bert_jax.convert import hf, hf_tokenizer, native, tf
from bert_jax.convert.common import ConversionError, complete_heads, flatten

FORMATS = ("hf", "tf", "workdir", "bert_jax")
TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json",
                   "special_tokens_map.json", "spm.model", "spm.json")
SUMMARY_FILE = "conversion.json"


@dataclasses.dataclass
class Loaded:
  """A checkpoint in bert_jax form, with what the conversion did to get there."""
  params: dict
  model_config: Any                     # a bert_jax.config.ModelConfig
  source: str                           # the file or dir the weights came from
  format: str
  tokenizer_files: list[str] = dataclasses.field(default_factory=list)
  initialised: list[str] = dataclasses.field(default_factory=list)  # fresh modules
  skipped: list[str] = dataclasses.field(default_factory=list)      # source names
  task: dict | None = None   # a fine-tuned workdir's task.json (params hold its head)

  def summary(self) -> dict:
    return {"source": self.source, "format": self.format,
            "arrays": sum(1 for _ in flatten(self.params)),
            "parameters": int(sum(v.size for _, v in flatten(self.params))),
            "initialised": self.initialised, "skipped": self.skipped,
            "tokenizer_files": [os.path.basename(p) for p in self.tokenizer_files]}


def detect(src: str) -> str:
  """The format of `src`, from the files it holds."""
  path = storage.path(src)
  if not path.exists() and not storage.path(src + ".index").is_file():
    raise ConversionError(f"--src {src} does not exist")
  is_dir = path.is_dir()
  if is_dir and hf.is_hf_dir(src):
    return "hf"
  if is_dir and native.is_params_dir(src):
    return "bert_jax"
  if is_dir and native.is_workdir(src):
    return "workdir"
  if tf.is_tf_dir(src):
    return "tf"
  raise ConversionError(
      f"cannot tell the format of {src} (found: {hf._listing(src)}); expected "
      "config.json + model.safetensors|pytorch_model.bin (hf), bert_config.json + "
      "*.ckpt.index (tf), config.json + checkpoints/ (workdir) or config.json + "
      "params/ (bert_jax)")


def _tokenizer_files(directory: str) -> list[str]:
  return [storage.join(directory, f) for f in TOKENIZER_FILES
          if (storage.path(directory) / f).is_file()]


def _mapped(state_dict, cfg, weights: str, config_file: str) -> dict:
  try:
    return hf.params_from_hf(state_dict, cfg)
  except ConversionError as e:
    raise ConversionError(f"weights {weights} against {config_file} beside them: "
                          f"{e}") from None


def load(src: str, fmt: str = "auto", *, step: int | str | None = None,
         seed: int = 0) -> Loaded:
  """Reads any supported checkpoint into bert_jax params (heads completed, except for
  a fine-tuned workdir, which keeps its own task head). `step`: a workdir's step,
  'best' (the best-ranked one) or None (the newest)."""
  fmt = detect(src) if fmt == "auto" else fmt
  if fmt == "hf":
    params, cfg, source, task = hf.read_hf_model(src)
    loaded = Loaded(params, cfg, source, fmt, _tokenizer_files(src), task=task)
  elif fmt == "tf":
    sd, cfg, prefix, skipped = tf.read_tf_dir(src)
    loaded = Loaded(_mapped(sd, cfg, prefix, tf.CONFIG_FILE), cfg, prefix, fmt,
                    _tokenizer_files(os.path.dirname(prefix)), skipped=skipped)
  elif fmt == "workdir":
    params, cfg, tokenizer, step, task = native.read_workdir(src, step)
    loaded = Loaded(params, cfg, str(workdir_lib.checkpoint(src, step)), fmt,
                    tokenizer, task=task)
  elif fmt == "bert_jax":
    params, cfg, task = native.read_params_dir(src)
    loaded = Loaded(params, cfg, src, fmt, _tokenizer_files(src), task=task)
  else:
    raise ConversionError(f"--from={fmt!r} is not one of {('auto',) + FORMATS}")
  if loaded.task is None:
    loaded.params, loaded.initialised = complete_heads(loaded.params, cfg, seed)
  elif fmt != "workdir":   # a task model: its pooler may be absent (token, span heads)
    head = loaded.params.pop("classifier")
    full, initialised = complete_heads({"bert": loaded.params["bert"]}, cfg, seed)
    loaded.params = {"bert": full["bert"], "classifier": head}
    loaded.initialised = [m for m in initialised if m.startswith("bert/")]
  return loaded


def save(loaded: Loaded, dst: str, fmt: str) -> dict:
  """Writes `loaded` as `fmt` ('hf' or 'bert_jax') to the new dir `dst`."""
  if fmt not in ("hf", "bert_jax"):
    raise ConversionError(f"--to={fmt!r} is not one of ('hf', 'bert_jax')")
  with storage.atomic_dir(dst, error=ConversionError) as tmp:
    if fmt == "hf":
      written = hf.write_hf_dir(tmp, loaded.params, loaded.model_config, loaded.task)
    else:
      written = native.write_params_dir(tmp, loaded.params, loaded.model_config,
                                        loaded.task)
    for path in loaded.tokenizer_files:
      storage.copy_file(path, storage.join(tmp, os.path.basename(path)))
      written.append(os.path.basename(path))
    if fmt == "hf":  # a tokenizer transformers loads, with our ids (or a clear refusal)
      written += hf_tokenizer.write(tmp, loaded.tokenizer_files,
                                    int(loaded.model_config.max_position_embeddings),
                                    (loaded.task or {}).get("lowercase"))
    if fmt == "bert_jax":
      written.append(SUMMARY_FILE)
    summary = {**loaded.summary(), "to": fmt, "dst": str(storage.absolute(dst)),
               "written": written}
    if fmt == "bert_jax":
      storage.write_json_atomic(storage.join(tmp, SUMMARY_FILE), summary)
  return summary


def convert(src: str, dst: str, src_format: str = "auto", dst_format: str | None = None,
            *, step: int | str | None = None, seed: int = 0) -> dict:
  """Reads `src`, writes `dst`; by default bert_jax sources go to hf, others to bert_jax."""
  loaded = load(src, src_format, step=step, seed=seed)
  if dst_format is None:
    dst_format = "hf" if loaded.format in ("workdir", "bert_jax") else "bert_jax"
  return save(loaded, dst, dst_format)
