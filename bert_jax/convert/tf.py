"""Google's original TF BERT checkpoints (google-research/bert) -> bert_jax params.

A release directory holds `bert_config.json`, `vocab.txt` and the checkpoint
`bert_model.ckpt.{index,data-00000-of-00001}` (the 24 small BERTs of Turc et al. use
the same names). Variables are named as in the original `modeling.py`:

    bert/embeddings/{word,position,token_type}_embeddings, bert/embeddings/LayerNorm/gamma
    bert/encoder/layer_N/attention/self/{query,key,value}/{kernel,bias}   kernel [in, out]
    bert/encoder/layer_N/attention/output/{dense,LayerNorm}/...
    bert/encoder/layer_N/{intermediate,output}/dense/..., .../output/LayerNorm/...
    bert/pooler/dense/...
    cls/predictions/transform/{dense,LayerNorm}/..., cls/predictions/output_bias
    cls/seq_relationship/output_weights [2, hidden], cls/seq_relationship/output_bias

`hidden_act: "gelu"` in bert_config.json becomes `gelu_new`: the original
`modeling.py` computes gelu with the tanh approximation (HF's `gelu_new`), so the
imported model reproduces the original TF outputs (an erf gelu would differ by ~1e-4).

They are renamed to Hugging Face names (kernels transposed to torch's [out, in]) and
mapped by `hf.params_from_hf`, so both imports share one mapping and one set of
checks. Optimizer slots (`.../adam_m`, `.../adam_v`) and `global_step`, present in
checkpoints written by the original `run_pretraining.py`, are skipped and reported.
The checkpoint is read by `tf_bundle.py` (no TensorFlow needed); TensorFlow
(`pip install -e '.[tf]'`) is the fallback for features it does not handle
(partitioned variables, compressed or big-endian files).
"""

from __future__ import annotations

import os
import re

import numpy as np

from bert_jax import storage
from bert_jax.convert import hf, tf_bundle
from bert_jax.convert.common import ConversionError

CONFIG_FILE = "bert_config.json"

_KNOWN = [re.compile(p) for p in (
    r"bert/embeddings/(word|position|token_type)_embeddings",
    r"bert/embeddings/LayerNorm/(gamma|beta)",
    r"bert/encoder/layer_\d+/attention/self/(query|key|value)/(kernel|bias)",
    r"bert/encoder/layer_\d+/(attention/output|intermediate|output)/dense/(kernel|bias)",
    r"bert/encoder/layer_\d+/(attention/output|output)/LayerNorm/(gamma|beta)",
    r"bert/pooler/dense/(kernel|bias)",
    r"cls/predictions/transform/dense/(kernel|bias)",
    r"cls/predictions/transform/LayerNorm/(gamma|beta)",
    r"cls/predictions/output_bias",
    r"cls/seq_relationship/output_(weights|bias)",
)]
_SKIPPED = re.compile(r"(^global_step$|/adam_[mv]$|^(good|bad)_steps$|^loss_scale$)")
_RENAMED = {"cls/predictions/output_bias": "cls.predictions.bias",
            "cls/seq_relationship/output_weights": "cls.seq_relationship.weight",
            "cls/seq_relationship/output_bias": "cls.seq_relationship.bias"}


def hf_name(tf_name: str) -> str:
  """'bert/encoder/layer_3/output/dense/kernel' -> 'bert.encoder.layer.3.output.dense.weight'."""
  if tf_name in _RENAMED:
    return _RENAMED[tf_name]
  name = re.sub(r"layer_(\d+)", r"layer.\1", tf_name).replace("/", ".")
  if name.endswith("_embeddings"):
    return name + ".weight"
  return re.sub(r"\.kernel$", ".weight", name)


def hf_state_dict_from_tf(variables: dict[str, np.ndarray]
                          ) -> tuple[dict[str, np.ndarray], list[str]]:
  """TF variables by original name -> (HF state dict, skipped names).

  Raises ConversionError listing every name that is neither a BERT weight nor a
  known optimizer/bookkeeping variable.
  """
  skipped = sorted(n for n in variables if _SKIPPED.search(n))
  unknown = sorted(n for n in variables
                   if n not in skipped and not any(p.fullmatch(n) for p in _KNOWN))
  if unknown:
    raise ConversionError(
        f"TF checkpoint has {len(unknown)} variables that are not BERT weights in the "
        "google-research/bert naming: " + ", ".join(unknown))
  sd = {}
  for name, value in variables.items():
    if name in skipped:
      continue
    value = np.asarray(value, np.float32)
    sd[hf_name(name)] = value.T if name.endswith("/kernel") else value
  return sd, skipped


# --------------------------------------------------------------- directories


def checkpoint_prefix(path: str) -> str | None:
  """The checkpoint prefix in dir `path` (or `path` itself when it is a prefix)."""
  if storage.path(path + ".index").is_file():
    return path
  if not storage.path(path).is_dir():
    return None
  preferred = storage.join(path, "bert_model.ckpt")
  if storage.path(preferred + ".index").is_file():
    return preferred
  indexes = sorted(str(p) for p in storage.path(path).glob("*.index"))
  if len(indexes) > 1:
    raise ConversionError(f"{path} holds several TF checkpoints "
                          f"({', '.join(os.path.basename(i) for i in indexes)}); "
                          "pass the prefix of one as --src")
  return indexes[0][:-len(".index")] if indexes else None


def is_tf_dir(path: str) -> bool:
  return checkpoint_prefix(path) is not None


def read_variables(prefix: str) -> dict[str, np.ndarray]:
  """Every variable of the checkpoint: the built-in reader, else TensorFlow."""
  try:
    return tf_bundle.read_checkpoint(prefix)
  except FileNotFoundError as e:
    raise ConversionError(f"TF checkpoint {prefix}: missing file {e.filename}") from None
  except tf_bundle.Unsupported as e:
    reason = str(e)
  except ValueError as e:
    raise ConversionError(f"cannot read the TF checkpoint {prefix}: {e}") from None
  try:
    import tensorflow as tf
  except ImportError:
    raise ConversionError(
        f"the TF checkpoint {prefix} needs TensorFlow to read ({reason}): "
        "pip install -e '.[tf]'") from None
  try:
    reader = tf.train.load_checkpoint(prefix)
  except Exception as e:  # tf raises several types for missing/corrupt files
    raise ConversionError(f"cannot read the TF checkpoint {prefix}: {e}") from None
  return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}


def read_tf_dir(path: str):
  """Release dir (or prefix) -> (HF-named state dict, model config, prefix, skipped)."""
  prefix = checkpoint_prefix(path)
  if prefix is None:
    raise ConversionError(f"{path} holds no TF checkpoint (*.index); found: "
                          f"{hf._listing(path)}")
  directory = os.path.dirname(prefix)
  config_path = storage.join(directory, CONFIG_FILE)
  if not storage.path(config_path).is_file():
    raise ConversionError(f"{directory} has no {CONFIG_FILE} next to the checkpoint "
                          f"(found: {hf._listing(directory)})")
  cfg = hf.model_config_from_json(storage.read_json(config_path), config_path,
                                  gelu="gelu_new")
  with storage.local_copy(directory) as local:   # the readers memory-map local files
    variables = read_variables(os.path.join(local, os.path.basename(prefix)))
  sd, skipped = hf_state_dict_from_tf(variables)
  return sd, cfg, prefix, skipped
