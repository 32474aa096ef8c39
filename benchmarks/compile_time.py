r"""Compile time of the full pretraining train step, unscanned vs scanned layers.

Traces, lowers and compiles `jit(train_step)` (forward, backward, AdamW update) for
one model size without allocating it (abstract inputs), once with
`model.scan_layers=False` (one copy of the layer per depth in the program) and once
with `True` (one `nn.scan` body), and prints a table. Results: docs/benchmarks.md.

  python benchmarks/compile_time.py                       # BERT-large, seq 128, batch 8
  python benchmarks/compile_time.py --size=base --remat=full
"""
import argparse
import os
import sys
import time

# This checkout's bert_jax and configs, not an installed copy.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402

from bert_jax import parallel  # noqa: E402
from bert_jax.train import setup as setup_lib  # noqa: E402
from configs import pretrain as pretrain_config  # noqa: E402


def compile_seconds(size: str, seq: int, batch: int, scan: bool, remat: str):
  config = pretrain_config.get_config(f"{size},vocab=30522,seq={seq},batch={batch}")
  config.model.scan_layers = scan
  config.model.remat_policy = remat
  mesh = parallel.create_mesh(config.mesh)
  rules = parallel.logical_axis_rules(config.mesh)
  t0 = time.perf_counter()
  lowered = setup_lib.pretraining(config, mesh, rules, allocate=False).lower()
  t1 = time.perf_counter()
  lowered.compile()
  t2 = time.perf_counter()
  return config.model.num_layers, t1 - t0, t2 - t1


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--size", default="large")
  p.add_argument("--seq", type=int, default=128)
  p.add_argument("--batch", type=int, default=8)
  p.add_argument("--remat", default="none", help="model.remat_policy: none | full | dots")
  a = p.parse_args()
  print(f"jax {jax.__version__}, {jax.device_count()} x {jax.devices()[0].device_kind}, "
        f"BERT-{a.size}, seq {a.seq}, batch {a.batch}, remat {a.remat}")
  print(f"{'encoder':>12} | {'layers':>6} | {'trace+lower s':>13} | {'compile s':>9} | "
        f"{'total s':>7}")
  totals = {}
  for scan in (False, True):
    n, lower, comp = compile_seconds(a.size, a.seq, a.batch, scan, a.remat)
    totals[scan] = lower + comp
    name = "scanned" if scan else "unscanned"
    print(f"{name:>12} | {n:>6} | {lower:>13.1f} | {comp:>9.1f} | {lower + comp:>7.1f}",
          flush=True)
  print(f"scanned is {totals[False] / totals[True]:.1f}x faster to compile")


if __name__ == "__main__":
  main()
