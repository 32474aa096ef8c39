r"""Pretraining step time, throughput, MFU and peak memory on the local accelerator.

  python benchmarks/step_time.py --sizes=base,large --seq=128,512 --batch=64 \
      --dtypes=bfloat16,float32 --attention=einsum,cudnn

Prints one markdown table row per combination (results go to docs/benchmarks.md with
the machine, date and command). The step is the real one from
`bert_jax.train.setup.pretraining` (the trainer's jitted step) on synthetic batches (random ids, 15% of positions
predicted, random NSP labels), jitted with donated state as in training.

MFU: `bert_jax/perf.py` (formula in its docstring); the peak is the device's from
`perf.PEAK_TFLOPS` unless --peak_tflops is given.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402

from bert_jax import parallel, perf  # noqa: E402
from bert_jax.train import setup as setup_lib  # noqa: E402
from configs import pretrain as pretrain_config  # noqa: E402
from synthetic import mlm_predictions, synthetic_batch  # noqa: E402


def measure(size, seq, batch, dtype, attention, steps, vocab):
  c = pretrain_config.get_config(f"{size},seq={seq},batch={batch},vocab={vocab},dropout=0.1")
  c.model.dtype = dtype
  c.model.attention_impl = attention
  if attention != "einsum":
    c.model.attention_dropout_prob = 0.0  # jax.nn.dot_product_attention has no dropout
  predictions = mlm_predictions(seq)
  mesh = parallel.create_mesh(c.mesh)
  rules = parallel.logical_axis_rules(c.mesh)
  job = setup_lib.pretraining(c, mesh, rules)
  state, step = job.state, job.p_train_step
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    batch_arrays = parallel.global_batch(
        synthetic_batch(np.random.default_rng(0), batch, seq, predictions, vocab), mesh)
    rng = jax.random.PRNGKey(1)
    t0 = time.perf_counter()
    state, metrics = step(state, batch_arrays, rng)
    jax.block_until_ready(metrics)
    compile_s = time.perf_counter() - t0
    for _ in range(3):
      state, metrics = step(state, batch_arrays, rng)
    jax.block_until_ready(metrics)
    t0 = time.perf_counter()
    for _ in range(steps):
      state, metrics = step(state, batch_arrays, rng)
    jax.block_until_ready(metrics)
    step_s = (time.perf_counter() - t0) / steps
  stats = jax.devices()[0].memory_stats() or {}
  peak_gib = stats.get("peak_bytes_in_use", float("nan")) / 2**30
  flops = perf.train_flops(c.model, batch, seq, predictions)
  return dict(compile_s=compile_s, step_ms=step_s * 1e3, seq_per_s=batch / step_s,
              tflops=flops / step_s / 1e12, peak_gib=peak_gib,
              loss=float(metrics["loss"]))


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--sizes", default="base")
  p.add_argument("--seq", default="128")
  p.add_argument("--batch", type=int, default=64)
  p.add_argument("--dtypes", default="bfloat16")
  p.add_argument("--attention", default="einsum")
  p.add_argument("--steps", type=int, default=20)
  p.add_argument("--vocab", type=int, default=30522)
  p.add_argument("--peak_tflops", type=float, default=0.0,
                 help="0 = the device's entry in bert_jax.perf.PEAK_TFLOPS")
  a = p.parse_args()
  peak = a.peak_tflops or perf.peak_tflops()
  print(f"device: {jax.devices()[0].device_kind} x{jax.device_count()}, jax {jax.__version__}")
  print("| size | seq | batch | dtype | attention | compile s | step ms | seq/s | "
        "model TFLOP/s | MFU | peak GiB | loss |")
  print("|---|---|---|---|---|---|---|---|---|---|---|---|")
  for size in a.sizes.split(","):
    for seq in map(int, a.seq.split(",")):
      for dtype in a.dtypes.split(","):
        for attention in a.attention.split(","):
          try:
            r = measure(size, seq, a.batch, dtype, attention, a.steps, a.vocab)
          except Exception as e:  # report and go on: one failing kernel is a result too
            print(f"| {size} | {seq} | {a.batch} | {dtype} | {attention} | failed: "
                  f"{type(e).__name__}: {str(e).splitlines()[0][:120]} |", flush=True)
            continue
          print(f"| {size} | {seq} | {a.batch} | {dtype} | {attention} | "
                f"{r['compile_s']:.1f} | {r['step_ms']:.1f} | {r['seq_per_s']:.0f} | "
                f"{r['tflops']:.1f} | {perf.format_mfu(r['tflops'] / peak)} | "
                f"{r['peak_gib']:.1f} | {r['loss']:.3f} |", flush=True)


if __name__ == "__main__":
  main()
