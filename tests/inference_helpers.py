"""Fine-tuning workdirs for the inference tests, in the layout the fine-tuning job
writes (`bert_jax/inference/source.py`): config.json, checkpoints/<step>/,
tokenizer/<file>, task.json; and a BERT whose weights are set by hand so that what it
predicts is known in advance (`keyword_params`)."""
import json
import os
import shutil
import types

import jax
import numpy as np

from bert_jax.train import checkpoint

NER_LABELS = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC",
              "I-MISC")


def write_finetune_workdir(workdir, params, model_cfg, task: dict, tokenizer_file: str,
                           step: int = 1) -> str:
  """Writes a fine-tuning workdir holding `params` (a task model's tree); a
  config.json already there (the run's own) is kept."""
  workdir = str(workdir)
  os.makedirs(os.path.join(workdir, "tokenizer"), exist_ok=True)
  name = os.path.basename(tokenizer_file)
  shutil.copy(tokenizer_file, os.path.join(workdir, "tokenizer", name))
  full = {"model": model_cfg.to_dict(), "data": {"task": task["task"]}}
  if not os.path.isfile(os.path.join(workdir, "config.json")):
    with open(os.path.join(workdir, "config.json"), "w", encoding="utf-8") as f:
      json.dump(full, f)
  task = {"doc_stride": 128, "max_query_length": 64, "lowercase": True, **task,
          "tokenizer": f"tokenizer/{name}"}
  with open(os.path.join(workdir, "task.json"), "w", encoding="utf-8") as f:
    json.dump(task, f)
  state = types.SimpleNamespace(step=np.int32(step), params=params, opt_state={})
  ck = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"))
  ck.save(step, state, {}, json.dumps(full))
  ck.close()
  return workdir


def keyword_params(model, cfg, keyword_id: int, head: str, seed: int = 0) -> dict:
  """Weights under which a 1-layer BERT detects one word (`keyword_id`).

  Word and position embeddings are zero-mean rows with 0 in dimension 0, except the
  keyword's row, which points along dimension 0; attention is uniform (zero query and
  key kernels) with identity value/output maps; the MLP adds nothing. So after the
  layer, dimension 0 is large at the keyword, small but positive at every other
  position of a window that holds the keyword, and 0 in windows without it. Heads read
  dimension 0 (`head`): 'sequence' says label 1 iff a window holds the keyword,
  'token' tags the keyword B-LOC, 'span' points start and end at it.
  """
  rng = np.random.default_rng(seed)
  dummy = np.zeros((1, 8), np.int32)
  import flax.linen as nn
  params = jax.tree_util.tree_map(np.array, nn.meta.unbox(
      model.init(jax.random.PRNGKey(seed), dummy, dummy, dummy)["params"]))
  h, heads = cfg.hidden_size, cfg.num_heads

  def zero_mean_rows(n):
    x = rng.normal(size=(n, h)).astype(np.float32)
    x[:, 0] = 0
    x[:, 1:] -= x[:, 1:].mean(1, keepdims=True)
    return x

  emb = params["bert"]["embeddings"]
  words = zero_mean_rows(cfg.vocab_size)
  words[keyword_id] = -10.0 / (h - 1)
  words[keyword_id, 0] = 10.0
  emb["word_embeddings"]["embedding"] = words
  emb["position_embeddings"]["embedding"] = 0.1 * zero_mean_rows(cfg.max_position_embeddings)
  emb["token_type_embeddings"]["embedding"][:] = 0
  layer = params["bert"]["encoder"]["layer_0"]
  eye = np.eye(h, dtype=np.float32)
  for name in ("query", "key"):
    layer["attention"][name]["kernel"][:] = 0
  layer["attention"]["value"]["kernel"] = eye.reshape(h, heads, h // heads)
  layer["attention"]["output"]["kernel"] = eye.reshape(heads, h // heads, h)
  for part in ("query", "key", "value", "output"):
    layer["attention"][part]["bias"][:] = 0
  layer["intermediate"]["kernel"][:] = 0
  layer["output"]["kernel"][:] = 0
  layer["output"]["bias"][:] = 0
  params["bert"]["pooler"] = {"kernel": eye * 1.0, "bias": np.zeros(h, np.float32)}
  head_params = params["classifier"]
  head_params["kernel"][:] = 0
  head_params["bias"][:] = 0
  if head == "sequence":
    head_params["kernel"][0, 1] = 400.0
    head_params["bias"][0] = 1.0
  elif head == "token":
    head_params["kernel"][0, NER_LABELS.index("B-LOC")] = 2.0
    head_params["bias"][NER_LABELS.index("B-LOC")] = -2.0
  else:
    head_params["kernel"][0, :] = 1.0
  return params
