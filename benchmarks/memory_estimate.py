r"""The memory estimate (bert_jax/observe.py) against XLA's memory analysis, CPU.

For each config: `observe.estimate_memory` before compiling, then the real pretraining
step lowered from ShapeDtypeStructs and compiled (nothing allocated) and its
`memory_analysis()`; prints a markdown table (MiB per device). Results and the fit
behind the estimate's constants: docs/benchmarks.md, docs/design_notes.md.

  python benchmarks/memory_estimate.py                      # 1 device
  XLA_FLAGS=--xla_force_host_platform_device_count=8 \
      python benchmarks/memory_estimate.py --mesh=fsdp      # 8 devices, FSDP
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("JAX_PLATFORMS", "cpu")

from bert_jax import observe, parallel  # noqa: E402
from configs import pretrain as pretrain_config  # noqa: E402

CONFIGS = ["tiny", "tiny,batch=64", "tiny,seq=256", "mini", "base,vocab=30522",
           "base,vocab=30522,seq=512,batch=8", "large,vocab=30522",
           "tiny/full", "tiny/dots", "base,vocab=30522/full", "base,vocab=30522/dots"]
MIB = 2 ** 20


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--configs", default=";".join(CONFIGS),
                 help="';'-separated configs/pretrain.py args, '/remat' appended")
  p.add_argument("--mesh", default="dp", help="mesh preset (dp | fsdp | fsdp_tp)")
  args = p.parse_args()
  print("| config | remat | devices | estimate MiB | XLA MiB (arg + out - alias + temp) "
        "| error | compile s |")
  print("|---|---|---|---|---|---|---|")
  for spec in args.configs.split(";"):
    arg, _, remat = spec.partition("/")
    c = pretrain_config.get_config(f"{arg},mesh={args.mesh}")
    c.model.scan_layers = True
    c.model.remat_policy = remat or "none"
    mesh = parallel.create_mesh(c.mesh)
    estimate = observe.estimate_memory(c, mesh)
    start = time.perf_counter()
    xla = observe.compiled_memory(observe.lower_train_step(c, mesh).compile())
    seconds = time.perf_counter() - start
    print(f"| {arg} | {c.model.remat_policy} | {mesh.size} | {estimate.total / MIB:,.1f} | "
          f"{xla.total / MIB:,.1f} | {100 * (estimate.total - xla.total) / xla.total:+.1f}% | "
          f"{seconds:.0f} |", flush=True)


if __name__ == "__main__":
  main()
