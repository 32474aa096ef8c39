r"""Prepares pretraining examples as sharded ArrayRecord files, one worker per core.

  python -m bert_jax.data.prepare --corpus='/data/wiki/*.txt' --tokenizer=vocab.txt \
      --output_dir=/data/prep128 --max_seq_length=128 --dupe_factor=5
  python -m bert_jax.data.prepare --corpus=embedded --vocab_size=8192 \
      --output_dir=/tmp/prep --objective=sop --masking=static --eval_fraction=0.05

The corpus is streamed (``corpora.iter_documents``): every ``--docs_per_shard``
documents make one shard task, tokenized and turned into examples by a pool of
worker processes (``shards.py``) and written as ``SPLIT-NNNNN.arrayrecord`` (records in
``records.py``) while reading goes on. Held-out documents (``--eval_fraction``, a
hash of the document index) go to ``eval-*`` shards. Random "not next" segments
come from the same shard, as the original script drew them from the same input file.

Safety: a shard is written to a temporary name and renamed when complete; its
sidecar ``.json`` (counts and the options hash) is written after that, and the
manifest (``manifest.json``: counts, tokenizer, options, shard list) last. A killed
run never leaves a shard a loader would read (loaders read only shards listed in
the manifest); re-running the same command skips shards whose sidecar matches and
redoes the rest. A directory prepared with other options is an error unless
``--overwrite``. The tokenizer is copied into ``OUTPUT_DIR/tokenizer/`` so the
directory is self-contained.
"""
from __future__ import annotations

import argparse
import concurrent.futures as futures
import dataclasses
import glob
import hashlib
import json
import multiprocessing
import os
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import tqdm

from bert_jax.data import corpora, masking, tokenizers
from bert_jax.data import shards
from bert_jax import storage
from bert_jax.data.shards import SHARD_SUFFIX, SPLITS, Options, shard_name

MANIFEST = "manifest.json"
FORMAT = "bert_jax.pretraining/1"
TOKENIZER_DIR = "tokenizer"


# ----------------------------------------------------------------------------------
# Files.


def _sha256(path: str) -> str:
  digest = hashlib.sha256()
  with storage.path(path).open("rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()


def _read_json(path: str) -> Any | None:
  try:
    return storage.read_json(path)
  except FileNotFoundError:
    return None


def read_manifest(directory: str) -> dict[str, Any]:
  """The manifest of a prepared directory; errors name what is missing."""
  path = storage.join(directory, MANIFEST)
  manifest = _read_json(path)
  if manifest is None:
    raise FileNotFoundError(
        f"Prepared data {directory}: expected {MANIFEST}, found none (not prepared, or "
        "the preparation did not finish; rerun `python -m bert_jax.data.prepare`)")
  if manifest.get("format") != FORMAT:
    raise ValueError(f"{path}: expected format {FORMAT!r}, found {manifest.get('format')!r}")
  return manifest


# ----------------------------------------------------------------------------------
# Driver.


def _held_out(index: int, seed: int, fraction: float) -> bool:
  if fraction <= 0:
    return False
  key = masking.example_seeds(seed, 7_777_777, np.asarray([index]))[0]
  return float(key >> np.uint64(11)) * 2.0**-53 < fraction


def _shard_tasks(documents: Iterator[list[str]], options: Options, bar: tqdm.tqdm,
                 stats: dict[str, int]) -> Iterator[tuple[str, int, list[list[str]]]]:
  """(split, shard index, documents); a last group too small for NSP joins the one before."""
  groups: dict[str, list[list[str]]] = {s: [] for s in SPLITS}
  held: dict[str, list[list[str]] | None] = {s: None for s in SPLITS}  # one group of lookahead
  counts = {s: 0 for s in SPLITS}
  for i, doc in enumerate(documents):
    bar.update()
    stats["documents"] = i + 1
    split = "eval" if _held_out(i, options.seed, options.eval_fraction) else "train"
    groups[split].append(doc)
    if len(groups[split]) == options.docs_per_shard:
      if held[split] is not None:
        yield split, counts[split], held[split]
        counts[split] += 1
      held[split], groups[split] = groups[split], []
  for split in SPLITS:
    last, rest = held[split], groups[split]
    if last is not None and len(rest) < 2:
      last, rest = last + rest, []
    for group in (last, rest):
      if group:
        yield split, counts[split], group
        counts[split] += 1


def _shard_done(directory: str, split: str, index: int, options_hash: str) -> dict | None:
  path = os.path.join(directory, shard_name(split, index))
  info = _read_json(path + ".json")
  if info and info.get("options_sha256") == options_hash and os.path.isfile(path):
    return info
  return None


def _prepare_directory(directory: str, manifest_core: dict[str, Any], overwrite: bool) -> None:
  """Checks an existing directory's options; removes stale files under --overwrite."""
  os.makedirs(directory, exist_ok=True)
  for tmp in glob.glob(os.path.join(directory, f"*{SHARD_SUFFIX}.tmp-*")):
    os.remove(tmp)  # left by a killed run; never listed in a manifest
  old = _read_json(os.path.join(directory, MANIFEST)) or _read_json(
      os.path.join(directory, "options.json"))
  if old is None:
    return
  old_core = {k: old.get(k) for k in ("options", "tokenizer")}
  if old_core == manifest_core:
    return
  changed = sorted(k for k in manifest_core["options"]
                   if (old.get("options") or {}).get(k) != manifest_core["options"][k])
  if old_core["tokenizer"] != manifest_core["tokenizer"]:
    changed.append("tokenizer")
  if not overwrite:
    raise ValueError(
        f"{directory} holds examples prepared with other options (differing: "
        f"{', '.join(changed)}); expected the same options to resume. Use another "
        "--output_dir, or --overwrite to replace them")
  stale = glob.glob(os.path.join(directory, f"*{SHARD_SUFFIX}*"))
  for path in [os.path.join(directory, MANIFEST), *stale]:  # the manifest first
    if os.path.exists(path):
      os.remove(path)


def _install_tokenizer(args, options: Options, directory: str) -> tuple[str, dict[str, Any]]:
  """Copies (or trains) the tokenizer into ``directory/tokenizer``; returns its path and info."""
  target_dir = os.path.join(directory, TOKENIZER_DIR)
  if args.tokenizer:
    source = args.tokenizer   # local or remote (`bert_jax.storage`)
    if storage.path(source).is_dir():
      source = storage.join(source, "vocab.txt")
    if not storage.path(source).is_file():
      raise FileNotFoundError(f"--tokenizer={args.tokenizer}: no such file")
    tok = tokenizers.load_tokenizer(source, lowercase=args.lowercase)
    target = os.path.join(target_dir, os.path.basename(source))
    if not os.path.isfile(target) or _sha256(target) != _sha256(source):
      storage.copy_file(source, target)
  else:
    if not args.vocab_size:
      raise ValueError("Expected --tokenizer (a SentencePiece .model or WordPiece "
                       "vocab.txt) or --vocab_size to train a SentencePiece model")
    documents = corpora.iter_documents(options.corpus, options.on_bad_utf8)
    sampled = (doc for i, doc in enumerate(documents)
               if i < args.tokenizer_max_documents)
    tok = tokenizers.get_or_train_tokenizer(
        list(tqdm.tqdm(sampled, desc="Reading for the tokenizer", unit="doc", disable=None)),
        target_dir, vocab_size=args.vocab_size, model_type=args.tokenizer_model_type,
        seed=options.seed, input_sentence_size=args.tokenizer_input_sentence_size)
    target = os.path.join(target_dir, tokenizers.MODEL_FILENAME)
  info = {
      "file": os.path.relpath(target, directory),
      "sha256": _sha256(target),
      "vocab_size": tok.vocab_size,
      "pad_id": tok.pad_id,
      "kind": type(tok).__name__,
      "lowercase": getattr(tok, "lowercase", None),
  }
  return target, info


_LATER_OPTIONS = ("masking_budget", "mask_unk", "random_replacement",
                  "whole_word_segmenter")


def _hashed_options(options: Options) -> dict[str, Any]:
  """The options as stored and hashed; options added later are left out at their
  defaults, so directories prepared before they existed keep their hash."""
  defaults = Options(corpus="")
  return {k: v for k, v in dataclasses.asdict(options).items()
          if k not in _LATER_OPTIONS or v != getattr(defaults, k)}


def prepare(args: argparse.Namespace) -> dict[str, Any]:
  """Runs the preparation described by parsed CLI ``args``; returns the manifest."""
  options = Options(**{f.name: getattr(args, f.name) for f in dataclasses.fields(Options)})
  options.check()
  if storage.is_remote(args.output_dir):   # ArrayRecord writes local files only
    raise ValueError(f"--output_dir={args.output_dir}: prepare writes a local directory; "
                     "copy it to the bucket afterwards (the training reader takes gs://)")
  directory = os.path.abspath(args.output_dir)
  os.makedirs(directory, exist_ok=True)
  tokenizer_path, tokenizer_info = _install_tokenizer(args, options, directory)
  core = {"options": _hashed_options(options), "tokenizer": tokenizer_info}
  options_hash = hashlib.sha256(json.dumps(core, sort_keys=True).encode()).hexdigest()
  _prepare_directory(directory, core, args.overwrite)
  storage.write_json_atomic(storage.join(directory, "options.json"), core)

  stats: dict[str, int] = {}
  documents = corpora.iter_documents(options.corpus, options.on_bad_utf8, stats)
  shards: dict[str, list[dict]] = {s: [] for s in SPLITS}
  workers = args.num_workers or os.cpu_count() or 1
  bar = tqdm.tqdm(desc="Preparing", unit="doc", disable=None)
  init = (tokenizer_path, tokenizer_info["lowercase"], options)
  started = time.perf_counter()
  with bar:
    for split, info in _run_tasks(_shard_tasks(documents, options, bar, stats), directory,
                                  options_hash, workers, init, bar):
      shards[split].append(info)
  if not shards["train"]:
    raise ValueError(f"Corpus {options.corpus!r}: expected documents, found none")
  manifest = {
      "format": FORMAT,
      **core,
      "corpus_stats": stats,
      "splits": {s: _split_summary(v) for s, v in shards.items() if v},
      "seconds": time.perf_counter() - started,
      "num_workers": workers,
  }
  storage.write_json_atomic(storage.join(directory, MANIFEST), manifest)
  return manifest


def _split_summary(shards: list[dict]) -> dict[str, Any]:
  shards = sorted(shards, key=lambda s: s["path"])
  top: dict[str, int] = {}
  for s in shards:
    for k, v in s["top_tokens"].items():
      top[k] = top.get(k, 0) + v
  return {
      "examples": sum(s["examples"] for s in shards),
      "tokens": sum(s["tokens"] for s in shards),
      "input_tokens": sum(s["input_tokens"] for s in shards),
      "most_frequent_token": int(max(top, key=top.get)) if top else -1,
      "shards": [{k: s[k] for k in ("path", "examples", "tokens", "input_tokens", "documents",
                                    "seconds")} for s in shards],
  }


def _run_tasks(tasks, directory: str, options_hash: str, workers: int, init: tuple,
               bar: tqdm.tqdm) -> Iterator[tuple[str, dict]]:
  """Runs shard tasks with at most ``2 * workers`` in flight; finished shards are skipped."""
  done_count = skipped = 0

  def note(split_info):
    nonlocal done_count
    done_count += 1
    bar.set_postfix(shards=done_count, skipped=skipped)
    return split_info

  if workers == 1:
    shards.init_worker(*init)
    for split, index, docs in tasks:
      info = _shard_done(directory, split, index, options_hash)
      if info is not None:
        skipped += 1
      else:
        info = shards.process_shard((directory, split, index, docs, options_hash))
      yield note((split, info))
    return
  context = multiprocessing.get_context("spawn")
  with futures.ProcessPoolExecutor(workers, mp_context=context, initializer=shards.init_worker,
                                   initargs=init) as pool:
    pending: dict[futures.Future, str] = {}
    for split, index, docs in tasks:
      info = _shard_done(directory, split, index, options_hash)
      if info is not None:
        skipped += 1
        yield note((split, info))
        continue
      pending[pool.submit(shards.process_shard, (directory, split, index, docs,
                                          options_hash))] = split
      while len(pending) >= 2 * workers:
        yield from (note(r) for r in _collect(pending, futures.FIRST_COMPLETED))
    while pending:
      yield from (note(r) for r in _collect(pending, futures.ALL_COMPLETED))


def _collect(pending: dict, when) -> list[tuple[str, dict]]:
  done, _ = futures.wait(list(pending), return_when=when)
  return [(pending.pop(f), f.result()) for f in done]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
  p = argparse.ArgumentParser(prog="python -m bert_jax.data.prepare",
                              description=__doc__.split("\n\n")[0],
                              formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  p.add_argument("--corpus", required=True,
                 help="'embedded', comma-separated file globs (BERT text or .jsonl), or "
                      "tfds:NAME[:SPLIT]")
  p.add_argument("--output_dir", required=True)
  p.add_argument("--tokenizer", default="",
                 help="a SentencePiece .model or a WordPiece vocab.txt; empty = train a "
                      "SentencePiece model of --vocab_size")
  p.add_argument("--lowercase", default=None, type=lambda v: v.lower() in ("1", "true"),
                 help="WordPiece: uncased basic tokenisation (default: from the vocab)")
  p.add_argument("--vocab_size", type=int, default=0)
  p.add_argument("--tokenizer_model_type", default="unigram", choices=("unigram", "bpe"))
  p.add_argument("--tokenizer_input_sentence_size", type=int, default=1_000_000,
                 help="sentences sampled at random to train the tokenizer")
  p.add_argument("--tokenizer_max_documents", type=int, default=200_000,
                 help="documents read (from the start) to train the tokenizer")
  defaults = Options(corpus="")
  for field in dataclasses.fields(Options):
    if field.name == "corpus":
      continue
    default = getattr(defaults, field.name)
    kind = (lambda v: v.lower() in ("1", "true")) if isinstance(default, bool) else type(default)
    p.add_argument(f"--{field.name}", type=kind, default=default)
  p.add_argument("--num_workers", type=int, default=0, help="0 = one per CPU core")
  p.add_argument("--overwrite", action="store_true",
                 help="replace a directory prepared with other options")
  return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
  try:
    manifest = prepare(parse_args(argv))
  except (ValueError, FileNotFoundError) as e:  # bad input: the message, no traceback
    sys.exit(f"prepare: {e}")
  summary = {s: {k: v[k] for k in ("examples", "tokens")} for s, v in manifest["splits"].items()}
  print(json.dumps({"splits": summary, "corpus_stats": manifest["corpus_stats"],
                    "seconds": round(manifest["seconds"], 2)}, indent=2))


if __name__ == "__main__":
  main(sys.argv[1:])
