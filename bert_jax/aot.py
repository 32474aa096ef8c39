r"""Compile a job for a TPU slice on any host, no TPU needed: does it fit, what will it cost.

    python -m bert_jax.aot --config=configs/pretrain.py:base,seq=128,batch=256,mesh=fsdp \
        --topology=v4-32 [--config.FIELD=VALUE ...] [--num_train_steps=N]

`--topology` is a Cloud TPU accelerator type (`v4-32`, `v5e-256`, `v5p-8`, `v6e-8`:
the number is TensorCores for v4/v5p, chips for v5e/v6e) or a libtpu topology name
(`v4:2x2x4`, `v5e:16x16`). libtpu (`pip install -e '.[tpu]'`) compiles for that
topology's devices without owning them (`jax.experimental.topologies`, as MaxText's
`train_compile.py`); nothing is allocated.

What is compiled is the job's own train step: `bert_jax/train/setup.py` builds it from
the same config the trainer reads (pretraining, or fine-tuning with the kind and label
count of `data.task`), with the same shardings, over a mesh of the topology's devices
shaped by `mesh.*`. The table it prints:

- compile time, and XLA's memory per chip (arguments, outputs, temporaries, code)
  against the chip's HBM (`perf.HBM_GIB`) and the project's own estimate
  (`observe.estimate_memory`);
- XLA's cost model: flops and `optimal_seconds` (a per-op roofline on the chip: each
  op's flops at peak or its bytes at HBM bandwidth, whichever is slower) per chip, and
  the step time, MFU (model FLOPs of `perf.train_flops` over that time at
  `perf.PEAK_TFLOPS`) and time to train it implies. That is an *estimate by XLA's
  cost model*, not a measurement.

Two corrections make the cost figures mean the whole step. XLA's cost analysis counts
a `while` body once, so a scanned encoder (`model.scan_layers`) or a gradient-
accumulation scan would be under-counted: for a step with such a loop the cost
figures come from two extra compiles of the unrolled step with 1 and 2 layers and one
microbatch (a step without a loop is its own figure), extrapolated linearly in depth (layers are identical) and multiplied by `train.grad_accum_steps`
(which counts the optimizer update once per microbatch: an over-estimate, small
when the microbatch is large). XLA's cost model gives a Pallas kernel (splash
attention's custom call) no cost at all, so with `model.attention_impl=splash` its
attention FLOPs are added at the chip's peak (`kernel_cost`: a lower bound). And
libtpu's cost model gives each of its `ConcatBitcast` and `X64Combine` / `X64SplitHigh`
/ `X64SplitLow` custom calls (the last three come with `rbg` dropout keys) -1 s (seen
with libtpu 0.0.42.1: the total is minus their count plus a few ms), which is added
back; a sum still below zero is reported as n/a. (With `rbg` dropout the cost model is
not linear in depth, 0.40 / 0.54 / 0.68 / 0.67 ms for 1-4 layers of a tiny BERT on a
v5e-4, against threefry's 0.41 / 0.55 / 0.69 / 0.84: there the extrapolation from 1
and 2 layers gives 0.81 ms for 4, 21% above the whole step's own figure.)

A config that does not fit stops with one line `error: ...` naming the figure and the
fields to change (`train.global_batch_size`, `mesh.shape`, `model.remat_policy`,
`train.grad_accum_steps`), exit code 2, as `bert_jax.main` does for bad config.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import time
from typing import Any, Mapping, MutableMapping, Sequence

# libtpu looks up the GCE metadata server for the TPU it runs on unless told what it
# is; compile-only use needs none of that (values as MaxText's train_compile.py). And
# it takes /tmp/libtpu_lockfile so that one process owns the chips: with no chips,
# several processes (pytest workers, a benchmark beside them) may compile at once.
COMPILE_ONLY_ENV = {
    "ALLOW_MULTIPLE_LIBTPU_LOAD": "1",
    "TPU_SKIP_MDS_QUERY": "1",
    "TPU_ACCELERATOR_TYPE": "v5litepod-1",
    "TPU_WORKER_HOSTNAMES": "localhost",
}

# TensorCores per chip in the accelerator-type names (v4-8 = 4 chips of 2 cores).
CORES_PER_CHIP = {"v4": 2, "v5p": 2, "v5e": 1, "v6e": 1}
DIMENSIONS = {"v4": 3, "v5p": 3, "v5e": 2, "v6e": 2}
ACCELERATOR = re.compile(r"^(v4|v5p|v5e|v6e)-(\d+)$")
TOPOLOGY = re.compile(r"^(v4|v5p|v5e|v6e):\d+(x\d+)+$")
OUT_OF_MEMORY = ("RESOURCE_EXHAUSTED", "Ran out of memory")
CHANGE_TO_FIT = ("lower train.global_batch_size, split more over mesh.shape "
                 "(fsdp / tensor), set model.remat_policy=full (or dots), or raise "
                 "train.grad_accum_steps")


def set_compile_only_env(environ: MutableMapping[str, str] | None = None) -> None:
  """COMPILE_ONLY_ENV into `environ` (default os.environ) where not set already; must
  run before libtpu loads. With the flags a TPU job runs with (parallel.LIBTPU_FLAGS),
  so that the compiled program is the job's."""
  from bert_jax import parallel
  environ = os.environ if environ is None else environ
  for key, value in COMPILE_ONLY_ENV.items():
    environ.setdefault(key, value)
  parallel.set_libtpu_flags(environ)


def _grid(chips: int, dims: int) -> str:
  """The most cube-like AxB(xC) grid of `chips`, axes ascending (as Cloud TPU's
  slices: 4 -> 2x2x1, 32 -> 2x4x4, 256 -> 16x16)."""
  if chips < 1 or chips & (chips - 1):
    raise ValueError(f"--topology: {chips} chips is not a power of two")
  sizes = [1] * dims
  for _ in range(int(math.log2(chips))):
    sizes[sizes.index(min(sizes))] *= 2
  if dims == 3 and sizes[-1] == 1 and chips > 1:
    sizes = sorted(sizes[:2]) + [1]   # v4-8 is 2x2x1, not 1x2x2
  else:
    sizes = sorted(sizes)
  return "x".join(map(str, sizes))


def topology_name(topology: str) -> str:
  """libtpu's name for `topology`: an accelerator type (`v5e-256`) or a name already
  (`v5e:16x16`).

  >>> [topology_name(t) for t in ("v4-8", "v4-128", "v5e-256", "v5p-8", "v5e:2x4")]
  ['v4:2x2x1', 'v4:4x4x4', 'v5e:16x16', 'v5p:2x2x1', 'v5e:2x4']
  """
  if TOPOLOGY.match(topology):
    return topology
  match = ACCELERATOR.match(topology)
  if not match:
    raise ValueError(f"--topology={topology!r}: expected an accelerator type such as "
                     "v4-32, v5e-256, v5p-8, v6e-8 or a topology name such as v5e:16x16")
  family, number = match.group(1), int(match.group(2))
  cores = CORES_PER_CHIP[family]
  if number % cores:
    raise ValueError(f"--topology={topology!r}: {family} counts {cores} TensorCores "
                     "per chip; expected a multiple of it")
  return f"{family}:{_grid(number // cores, DIMENSIONS[family])}"


def topology_devices(topology: str) -> list[Any]:
  """The compile-only devices of `topology` (libtpu required)."""
  import importlib.util
  if importlib.util.find_spec("libtpu") is None:
    raise ValueError("compiling for a TPU topology needs libtpu: pip install -e '.[tpu]'")
  set_compile_only_env()
  from jax.experimental import topologies
  name = topology_name(topology)
  family, grid = name.split(":")
  # v4 and v5p run one JAX device per chip (megacore: both TensorCores as one), as
  # jax.make_mesh requires; libtpu's default would be one per core.
  kwargs = {"chip_config_name": "megacore" if CORES_PER_CHIP[family] == 2 else "default"}
  if math.prod(int(x) for x in grid.split("x")) < 4:   # below one host's 2x2 chips
    kwargs["chips_per_host_bounds"] = grid if DIMENSIONS[family] == 3 else grid + "x1"
  return list(topologies.get_topology_desc(topology_name=name, platform="tpu",
                                           **kwargs).devices)


# ------------------------------------------------------------------ compiling the job


def _job(config) -> tuple[str, str, int]:
  """(job, kind, num_labels) of `config`: pretraining, or the fine-tuning task's."""
  from bert_jax import cli
  if cli.check_job(config) == "pretrain":
    return "pretrain", "pretraining", 0
  from bert_jax.data import tasks
  task = tasks.get_task(config.data, None)
  return "finetune", task.kind, task.num_labels


def with_source_model(config):
  """A fine-tuning config with its source model's shape, as the job takes it when it
  starts (`finetune_source.with_source_model`: `init=hf:DIR` reads its config.json);
  a pretraining config as it is."""
  if _job(config)[0] == "pretrain":
    return config
  from bert_jax.train import finetune_source
  return finetune_source.with_source_model(config)


def job_setup(config, mesh, num_train_steps: int = 1000):
  """The job's `setup.JobSetup` on `mesh`, shapes only. A fine-tuning config comes with
  its source model's shape already taken (`with_source_model`, done once by `check`)."""
  from bert_jax import parallel
  from bert_jax.train import setup as setup_lib
  rules = parallel.logical_axis_rules(config.mesh)
  job, kind, num_labels = _job(config)
  if job == "pretrain":
    return setup_lib.pretraining(config, mesh, rules, allocate=False)
  return setup_lib.finetuning(config, mesh, rules, kind=kind, num_labels=num_labels,
                              num_train_steps=num_train_steps, allocate=False)


def compile_step(config, mesh, num_train_steps: int = 1000):
  """The job's train step compiled for `mesh`; an out-of-memory compile becomes the
  one-line ValueError of `check_fits`.

  Traced at the default matmul precision, as a TPU job runs: a process-wide `highest`
  (the CPU tests set it) would ask Mosaic kernels (splash) for float32 products of
  bfloat16 operands, which they refuse, and would multiply XLA's cost of every matmul.
  """
  import jax
  with jax.default_matmul_precision("default"):
    lowered = job_setup(config, mesh, num_train_steps).lower()
  try:
    return lowered.compile()
  except jax.errors.JaxRuntimeError as e:
    if any(s in str(e) for s in OUT_OF_MEMORY):
      first = str(e).strip().splitlines()[0]
      raise ValueError(f"does not fit {mesh.devices.flat[0].device_kind}: {first} "
                       f"({CHANGE_TO_FIT})") from None
    raise


# libtpu's custom calls its cost model gives -1 s each (module docstring).
UNCOSTED_CUSTOM_CALLS = frozenset({"ConcatBitcast", "X64Combine", "X64SplitHigh",
                                   "X64SplitLow"})


@dataclasses.dataclass(frozen=True)
class XlaCost:
  """XLA's cost analysis of one executable, per chip."""
  flops: float
  bytes_accessed: float
  optimal_seconds: float   # NaN where the cost model gave no usable figure

  def __add__(self, other):
    return XlaCost(*(a + b for a, b in zip(dataclasses.astuple(self), dataclasses.astuple(other))))

  def __mul__(self, k: float):
    return XlaCost(*(k * a for a in dataclasses.astuple(self)))


def xla_cost(compiled) -> XlaCost:
  """flops, bytes accessed and optimal_seconds, with libtpu's -1 s per custom call of
  `UNCOSTED_CUSTOM_CALLS` added back (module docstring)."""
  analysis = compiled.cost_analysis()
  analysis = analysis[0] if isinstance(analysis, (list, tuple)) else analysis
  seconds = float(analysis.get("optimal_seconds", math.nan))
  seconds += sum(target in UNCOSTED_CUSTOM_CALLS for target in
                 re.findall(r'custom_call_target="([^"]+)"', compiled.as_text()))
  return XlaCost(float(analysis.get("flops", math.nan)),
                 float(analysis.get("bytes accessed", math.nan)),
                 seconds if seconds >= 0 else math.nan)


def has_loops(compiled) -> bool:
  """Whether the program has a `while` (a scanned encoder, gradient accumulation), whose
  body XLA's cost analysis counts once; without one its cost is the whole step's."""
  return re.search(r"\swhile\(", compiled.as_text()) is not None


def unrolled_cost(config, mesh) -> XlaCost:
  """XLA's cost of the whole step: unrolled 1- and 2-layer compiles of one microbatch,
  extrapolated to `model.num_layers` and times `train.grad_accum_steps`."""
  accum = config.train.get("grad_accum_steps", 1)
  layers = config.model.num_layers
  costs = []
  for depth in sorted({1, min(2, layers)}):
    c = config.copy_and_resolve_references()
    with c.unlocked():
      c.model.scan_layers = False
      c.model.num_layers = depth
      c.train.grad_accum_steps = 1
      c.train.global_batch_size = config.train.global_batch_size // accum
    costs.append(xla_cost(compile_step(c, mesh)))
  per_layer = costs[-1] + costs[0] * -1.0 if len(costs) == 2 else costs[0] * 0.0
  return (costs[0] + per_layer * (layers - 1)) * accum + kernel_cost(config, mesh)


def kernel_cost(config, mesh) -> XlaCost:
  """What XLA's cost model leaves out: a Pallas/Mosaic kernel is a custom call it gives
  no flops and no time (with `model.attention_impl=splash` a step's flops drop by
  exactly the attention products, `tests/test_aot.py`). Splash's share is added as
  the attention FLOPs of forward + backward (`perf.attention_flops`, times 3 as
  `perf.train_flops`) at the chip's peak: the roofline of a kernel that never writes
  the s x s scores to HBM, so a lower bound of its time."""
  from bert_jax import perf
  if config.model.get("attention_impl") != "splash":
    return XlaCost(0.0, 0.0, 0.0)
  chips = mesh.devices.size
  flops = 3.0 * perf.attention_flops(config.model, config.train.global_batch_size,
                                     config.data.max_seq_length) / chips
  peak = perf.peak_tflops(mesh.devices.flat[0].device_kind) * 1e12
  return XlaCost(flops, 0.0, flops / peak)


@dataclasses.dataclass(frozen=True)
class Report:
  """What `check` found for one config on one topology (bytes and seconds per chip)."""
  topology: str
  device_kind: str
  chips: int
  mesh: Mapping[str, int]
  job: str
  compile_seconds: float
  memory: Any              # observe.CompiledMemory
  code_bytes: int
  hbm_bytes: float
  estimate: Any            # observe.MemoryEstimate, or None (fine-tuning)
  cost: XlaCost | None
  model_flops: float       # per chip per step (perf.train_flops / chips)
  peak_tflops: float
  num_train_steps: int

  @property
  def fits(self) -> bool:
    return not (self.memory.total + self.code_bytes > self.hbm_bytes)

  @property
  def step_seconds(self) -> float:
    return self.cost.optimal_seconds if self.cost else math.nan

  @property
  def mfu(self) -> float:
    from bert_jax import perf
    return perf.mfu(self.model_flops, self.step_seconds, self.peak_tflops)


def _predictions(config) -> int:
  return config.data.get("max_predictions_per_seq", 0) if config.job == "pretrain" else 0


def check(config, topology: str, *, num_train_steps: int | None = None,
          cost: bool = True, devices: Sequence[Any] | None = None) -> Report:
  """Compiles `config`'s train step for `topology` and gathers the report; raises the
  one-line ValueError when it does not fit."""
  import jax
  from bert_jax import observe, parallel, perf
  jax.config.update("jax_threefry_partitionable", True)   # as bert_jax.main
  config = with_source_model(config)
  devices = list(devices) if devices is not None else topology_devices(topology)
  mesh = parallel.create_mesh(config.mesh, devices)
  steps = num_train_steps or (config.train.num_train_steps if config.job == "pretrain" else 0)
  start = time.perf_counter()
  compiled = compile_step(config, mesh, steps or 1000)
  seconds = time.perf_counter() - start
  memory = observe.compiled_memory(compiled)
  analysis = compiled.memory_analysis()
  kind = devices[0].device_kind
  report = Report(
      topology=topology, device_kind=kind, chips=len(devices), mesh=dict(mesh.shape),
      job=_job(config)[1], compile_seconds=seconds, memory=memory,
      code_bytes=int(getattr(analysis, "generated_code_size_in_bytes", 0)),
      hbm_bytes=perf.hbm_gib(kind) * observe.GIB,
      estimate=observe.estimate_memory(config, mesh) if config.job == "pretrain" else None,
      cost=(None if not cost else unrolled_cost(config, mesh) if has_loops(compiled)
            else xla_cost(compiled) + kernel_cost(config, mesh)),
      model_flops=perf.train_flops(config.model, config.train.global_batch_size,
                                   config.data.max_seq_length, _predictions(config))
      / len(devices),
      peak_tflops=perf.peak_tflops(kind), num_train_steps=steps)
  check_fits(report)
  return report


def check_fits(report: Report) -> None:
  """The one-line error for a step whose XLA memory exceeds the chip's HBM."""
  if not report.fits:
    m = report.memory
    raise ValueError(
        f"does not fit {report.device_kind}: {format_gib(m.total + report.code_bytes)} per "
        f"chip (XLA: arguments {format_gib(m.argument)}, temporaries {format_gib(m.temp)})"
        f" > HBM {format_gib(report.hbm_bytes)} ({CHANGE_TO_FIT})")


# ------------------------------------------------------------------ the table


def format_gib(x: float) -> str:
  return "n/a" if x is None or math.isnan(x) else f"{x / 2 ** 30:.2f} GiB"


def format_duration(seconds: float) -> str:
  if math.isnan(seconds):
    return "n/a"
  for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
    if seconds >= size:
      return f"{seconds / size:.1f} {unit}"
  return f"{seconds:.1f} s"


def format_report(r: Report) -> str:
  """The table `main` prints (figures per chip)."""
  from bert_jax import perf
  m, c = r.memory, r.cost
  rows = [
      ("topology", f"{r.topology} ({r.chips} x {r.device_kind}), mesh {dict(r.mesh)}"),
      ("job", r.job),
      ("compile time", f"{r.compile_seconds:.1f} s (this host, compile only)"),
      ("XLA memory per chip", f"{format_gib(m.total + r.code_bytes)} of "
                              f"{format_gib(r.hbm_bytes)} HBM: fits"),
      ("  arguments / outputs", f"{format_gib(m.argument)} / {format_gib(m.output)} "
                                f"(donated {format_gib(m.alias)})"),
      ("  temporaries / code", f"{format_gib(m.temp)} / {format_gib(r.code_bytes)}"),
      ("bert_jax estimate", format_gib(r.estimate.total) if r.estimate else
       "n/a (pretraining only)"),
  ]
  if c is not None:
    rows += [
        ("XLA flops per chip", f"{c.flops / 1e12:.2f} TFLOP (model FLOPs "
                               f"{r.model_flops / 1e12:.2f})"),
        ("step time (XLA cost model)", "n/a" if math.isnan(c.optimal_seconds) else
         f"{1e3 * c.optimal_seconds:.1f} ms (estimate, not a measurement)"),
        ("MFU at that step time", perf.format_mfu(r.mfu)),
        ("time to train", f"{format_duration(r.step_seconds * r.num_train_steps)} for "
                          f"{r.num_train_steps:,} steps" if r.num_train_steps else
         "n/a (give --num_train_steps)"),
    ]
  width = max(len(k) for k, _ in rows)
  return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def main(argv) -> None:
  from absl import flags
  from bert_jax import cli
  if len(argv) > 1:
    raise SystemExit(f"unexpected arguments: {argv[1:]}")
  f = flags.FLAGS
  try:
    report = check(f.config, f.topology, num_train_steps=f.num_train_steps or None,
                   cost=f.cost)
  except cli.INPUT_ERRORS as e:
    cli.fail(str(e), f.verbose)   # one line, exit 2
  print(format_report(report), flush=True)


def _define_flags() -> None:
  from absl import flags
  from ml_collections import config_flags
  config_flags.DEFINE_config_file(
      "config", None, "Config file, e.g. configs/pretrain.py:base", lock_config=True)
  flags.DEFINE_string("topology", None, "v4-32, v5e-256, v5p-8, v6e-8, or v5e:16x16")
  flags.DEFINE_integer("num_train_steps", 0, "steps for time to train; 0 = the config's "
                       "(pretraining) or none (fine-tuning)")
  flags.DEFINE_boolean("cost", True, "XLA's cost estimate (two more small compiles)")
  flags.DEFINE_boolean("verbose", False, "Print the traceback of config errors.")
  flags.mark_flags_as_required(["config", "topology"])


if __name__ == "__main__":
  set_compile_only_env()
  os.environ.setdefault("JAX_PLATFORMS", "cpu")   # the host compiles; TPUs are abstract
  from absl import app
  from bert_jax import cli
  _define_flags()
  app.run(main, flags_parser=cli.parse_flags)
