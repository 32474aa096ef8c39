r"""Compile-only TPU table: `bert_jax.aot` for BERT-base and BERT-large on pod slices.

For each topology x mesh preset x model, compiles the real pretraining step for that
TPU slice on this host (libtpu, no TPU) and prints one markdown row: XLA's memory per
chip against the chip's HBM, the project's estimate, XLA's cost-model step time, MFU
and time to train (estimates, not measurements; see bert_jax/aot.py). Results:
docs/benchmarks.md.

  python benchmarks/tpu_compile.py                                   # the full table
  python benchmarks/tpu_compile.py --topologies=v5e-8 --models=base128 --presets=fsdp
  python benchmarks/tpu_compile.py --models=large512 --attention=einsum,splash
"""
import argparse
import os
import sys

# This checkout's bert_jax and configs, not an installed copy.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bert_jax import aot  # noqa: E402

aot.set_compile_only_env()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

from bert_jax import perf  # noqa: E402
from configs import pretrain  # noqa: E402

# name -> (size, seq, predictions, steps): the two phases of Devlin et al. 2019
# (phase 1 length 128 for 900k steps; phase 2 length 512 for 100k), global batch 256.
MODELS = {
    "base128": ("base", 128, 20, 900_000),
    "large512": ("large", 512, 80, 100_000),
}


def config_for(model: str, preset: str, batch: int, remat: str, attention: str):
  size, seq, predictions, steps = MODELS[model]
  c = pretrain.get_config(f"{size},vocab=30522,seq={seq},batch={batch},steps={steps},"
                          f"mesh={preset}")
  c.data.max_predictions_per_seq = predictions
  c.model.dtype = "bfloat16"
  c.model.scan_layers = True
  c.model.remat_policy = remat
  c.model.attention_impl = attention
  return c


def row(model, preset, topology, remat, attention, batch) -> str:
  config = config_for(model, preset, batch, remat, attention)
  head = f"| {model} | {topology} | {preset} | {remat} | {attention} |"
  try:
    r = aot.check(config, topology)
  except ValueError as e:
    return f"{head} {str(e).split(' (lower')[0]} | | | | | |"
  finally:
    jax.clear_caches()
  fmt = aot.format_gib
  return (f"{head} {fmt(r.memory.total + r.code_bytes)} / {fmt(r.hbm_bytes)} | "
          f"{fmt(r.estimate.total)} | {r.compile_seconds:.0f} s | "
          f"{1e3 * r.step_seconds:.1f} ms | {perf.format_mfu(r.mfu)} | "
          f"{aot.format_duration(r.step_seconds * r.num_train_steps)} |")


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--topologies", default="v4-8,v4-128,v5e-256,v5p-8")
  p.add_argument("--presets", default="dp,fsdp,fsdp_tp")
  p.add_argument("--models", default="base128,large512")
  p.add_argument("--remat", default="none", help="comma list: none,full,dots")
  p.add_argument("--attention", default="einsum", help="comma list: einsum,xla,splash")
  p.add_argument("--batch", type=int, default=256)
  a = p.parse_args()
  import libtpu  # noqa: F401  (the version goes with the table)
  from importlib import metadata
  print(f"jax {jax.__version__}, libtpu {metadata.version('libtpu')}, global batch "
        f"{a.batch}, bf16 compute, float32 params, scanned layers, AdamW")
  print("| model | topology | mesh | remat | attention | XLA memory / HBM per chip | "
        "bert_jax estimate | compile | step (XLA cost model) | MFU | time to train |")
  print("|---|---|---|---|---|---|---|---|---|---|---|")
  for model in a.models.split(","):
    for topology in a.topologies.split(","):
      for preset in a.presets.split(","):
        for remat in a.remat.split(","):
          for attention in a.attention.split(","):
            print(row(model, preset, topology, remat, attention, a.batch), flush=True)


if __name__ == "__main__":
  main()
