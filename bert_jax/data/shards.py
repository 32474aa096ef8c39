"""Worker side of ``prepare.py``: one shard of documents -> an ArrayRecord file.

``process_shard`` tokenizes a group of documents in one batched call, builds the
examples (``pretraining.create_pairs``), optionally draws static masks, writes the
records (``records.py``) to a temporary file renamed when complete, and then a
sidecar ``SHARD.json`` with its counts and the options hash that marks it finished.

``Options`` (everything that decides the examples) is defined here, where the workers
read it; ``prepare.py`` builds it from the command line, hashes it into the manifest
and hands it to each worker.
"""
from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from bert_jax import storage
from bert_jax.data import masking, pretraining, records, tokenizers

SHARD_SUFFIX = ".arrayrecord"
SPLITS = ("train", "eval")
_TOP_TOKENS = 64  # per shard, for the most-frequent-token baseline
_WRITER_OPTIONS = "group_size:1,snappy"  # a record per chunk, cheap to decompress: random access


@dataclasses.dataclass(frozen=True)
class Options:
  """Everything that decides the examples; stored in the manifest and hashed."""
  corpus: str
  max_seq_length: int = 128
  objective: str = "nsp"              # nsp | sop | none
  short_seq_prob: float = 0.1
  dupe_factor: int = 5
  masking: str = "dynamic"            # dynamic | static
  masked_lm_prob: float = 0.15
  max_predictions_per_seq: int = 20
  whole_word_masking: bool = False
  masking_budget: str = "maskable"    # static masks: maskable | all_tokens (masking.py)
  mask_unk: bool = False              # static masks: [UNK] maskable, as the original
  random_replacement: str = "normal_ids"  # static masks: normal_ids | any_id
  whole_word_segmenter: str = "none"  # static masks: none | jieba (segment.py)
  docs_per_shard: int = 1000
  eval_fraction: float = 0.0
  seed: int = 0
  on_bad_utf8: str = "error"

  def check(self) -> None:
    if self.objective not in pretraining.OBJECTIVES:
      raise ValueError(f"--objective: expected one of {pretraining.OBJECTIVES}, "
                       f"found {self.objective!r}")
    if self.masking not in ("dynamic", "static"):
      raise ValueError(f"--masking: expected 'dynamic' or 'static', found {self.masking!r}")
    masking.MaskingConfig.from_config(self, where="--")   # the masking flags
    if self.docs_per_shard < 2:
      raise ValueError(f"--docs_per_shard: expected >= 2, found {self.docs_per_shard}")
    if not 0.0 <= self.eval_fraction < 1.0:
      raise ValueError(f"--eval_fraction: expected a value in [0, 1), found "
                       f"{self.eval_fraction}")
    if not 1 <= self.max_predictions_per_seq <= self.max_seq_length:
      raise ValueError(f"--max_predictions_per_seq: expected 1..max_seq_length="
                       f"{self.max_seq_length}, found {self.max_predictions_per_seq}")


def shard_name(split: str, index: int) -> str:
  return f"{split}-{index:05d}{SHARD_SUFFIX}"


_WORKER: dict[str, Any] = {}


def init_worker(tokenizer_path: str, lowercase: bool | None, options: Options) -> None:
  tok = tokenizers.load_tokenizer(tokenizer_path, lowercase=lowercase)
  _WORKER.update(tokenizer=tok, options=options,
                 masker=masking.MaskingConfig.from_config(options, where="--").bind(tok))


def _tokenize(documents: Sequence[Sequence[str]], tok) -> pretraining.TokenizedCorpus:
  """One batched tokenizer call for the whole shard, split back into documents."""
  flat = tok.encode_batch([s for doc in documents for s in doc])
  tokenized, start = [], 0
  for doc in documents:
    sentences = [ids for ids in flat[start:start + len(doc)] if ids]
    start += len(doc)
    if sentences:
      tokenized.append(sentences)
  return tokenized


def _static_masks(pairs, tok, options: Options, seed_key: int) -> list[dict[str, np.ndarray]]:
  """Masks drawn once per example (static masking), keyed by (seed, shard, row)."""
  packed = pretraining._pack(  # pylint: disable=protected-access
      pairs, options.max_seq_length, tok.cls_id, tok.sep_id, tok.pad_id)
  seeds = masking.example_seeds(options.seed, seed_key, np.arange(len(pairs)))
  return masking.apply_masking(packed["input_ids"], packed["attention_mask"], seeds,
                              _WORKER["masker"])


def _write_shard(path: str, pairs, tok, options: Options, seed_key: int) -> int:
  """Writes the examples to ``path`` atomically; returns the tokens written."""
  from array_record.python.array_record_module import ArrayRecordWriter  # pylint: disable=g-import-not-at-top
  static = _static_masks(pairs, tok, options, seed_key) if options.masking == "static" else None
  tmp = f"{path}.tmp-{os.getpid()}"
  writer = ArrayRecordWriter(tmp, _WRITER_OPTIONS)
  num_tokens = 0
  try:
    for row, (tokens_a, tokens_b, label, *_) in enumerate(pairs):
      tokens = pretraining.pair_tokens(tokens_a, tokens_b, tok.cls_id, tok.sep_id)
      b_start = len(tokens_a) + 2 if tokens_b else len(tokens)
      positions = ids = ()
      if static is not None:
        used = static["masked_lm_weights"][row] > 0
        tokens = static["input_ids"][row, :len(tokens)].tolist()
        positions = static["masked_lm_positions"][row, used].tolist()
        ids = static["masked_lm_ids"][row, used].tolist()
      writer.write(records.encode(tokens, b_start, label, positions, ids))
      num_tokens += len(tokens)
    writer.close()
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise
  return num_tokens


def _top_tokens(pairs, first_normal_id: int) -> dict[str, int]:
  counts: dict[int, int] = {}
  ids = np.fromiter((t for a, b, *_ in pairs for t in (*a, *b)), dtype=np.int64)
  values, freq = np.unique(ids[ids >= first_normal_id], return_counts=True)
  for i in np.argsort(-freq, kind="stable")[:_TOP_TOKENS]:
    counts[int(values[i])] = int(freq[i])
  return {str(k): v for k, v in counts.items()}


def process_shard(task: tuple[str, str, int, list[list[str]], str]) -> dict[str, Any]:
  """Worker: documents -> examples -> ``SPLIT-NNNNN.arrayrecord`` plus its sidecar."""
  directory, split, index, documents, options_hash = task
  tok, options = _WORKER["tokenizer"], _WORKER["options"]
  started = time.perf_counter()
  tokenized = _tokenize(documents, tok)
  seed_key = SPLITS.index(split) * 1_000_003 + index
  rng = np.random.default_rng([options.seed, seed_key])
  dupe = options.dupe_factor if split == "train" else 1
  input_tokens = sum(len(s) for doc in tokenized for s in doc)
  try:
    pairs = pretraining.create_pairs(
        tokenized, options.max_seq_length, options.short_seq_prob, dupe, rng,
        tok.sep_id, options.objective, progress=False)
  except ValueError as e:
    raise ValueError(f"Shard {shard_name(split, index)} ({len(documents)} documents): "
                     f"{e}") from None
  path = os.path.join(directory, shard_name(split, index))
  num_tokens = _write_shard(path, pairs, tok, options, seed_key)
  info = {
      "path": shard_name(split, index),
      "examples": len(pairs),
      "tokens": num_tokens,
      "input_tokens": input_tokens,
      "documents": len(documents),
      "options_sha256": options_hash,
      "top_tokens": _top_tokens(pairs, tok.first_normal_id),
      "seconds": time.perf_counter() - started,
  }
  storage.write_json_atomic(path + ".json", info)
  return info
