r"""bert_jax's pretraining step side by side with HF PyTorch BERT, same device and shapes.

  # CPU (default): 2 and 12 layers, hidden 768, seq 128, batch 8, float32
  python benchmarks/side_by_side.py
  # GPU (BERT-base seq 128 batch 256 bf16; BERT-large seq 512 batch 64 bf16, cuDNN
  # attention, scanned; ~9 min of device time, compiles included; or the two halves,
  # --preset=gpu_base ~6 min and --preset=gpu_large ~3 min; docs/benchmarks.md "GPU plan"):
  python benchmarks/side_by_side.py --preset=gpu --profile=/tmp/sbs_profile

Implementations, each in its own process (PyTorch and JAX never share one):
  bert_jax     `bert_jax.train.setup.pretraining(...).p_train_step`: the real jitted step
               (donated state, sparse MLM over the masked positions, NSP, AdamW with
               clipping), dropout 0.1 (attention dropout 0 for xla/cudnn attention).
               `--jax=einsum,cudnn+model.scan_layers=true` lists variants: an
               attention_impl, then `+field=value` config overrides, `+xla=NAME` (a
               set of XLA flags from XLA_FLAG_SETS in the worker's environment) and
               `+code=DIR` (import bert_jax and configs from DIR: an earlier revision,
               `git archive REV bert_jax configs | tar -x -C DIR`, timed against this
               one in the same run).
  hf_eager     transformers `BertForPreTraining`, SDPA attention, AdamW (fused on
               CUDA) with the same decay mask and clipping, bf16 autocast when --dtype
               is bfloat16, MLM loss over dense [batch, seq] labels (HF's way).
  hf_compile   the same model under `torch.compile` (the optimizer step stays eager).
  hf_alone     hf_eager again, in a fresh process started after every other worker of
               the shape has exited, so nothing else of this benchmark is alive while it
               runs: the check that the interleaved peer row is what HF gives by itself
               (issue 23: an earlier table's peer ran ~3x slower than HF alone, because
               the machine was loaded, see docs/benchmarks.md).

All workers start before timing; then rounds run them in turn (the order reversed
every other round), so load from other processes on a shared machine hits every
implementation alike (`--no-interleave` runs one worker at a time: the GPU preset,
where each holds the device alone). A round times `--steps` steps after `--warmup`
ones; the table gives the median over rounds, `seq/s`, MFU (`bert_jax/perf.py`: the
same model FLOPs for everyone, n/a without a known peak) and the speed ratios to the
HF rows (>1 = faster than HF; a step at most 0.8x HF's time is a ratio >= 1.25), also
over each one's best round (the least disturbed on a shared machine); "CPU ms/step"
is the worker process's own CPU time (all its threads), which other jobs' load does
not inflate (spin-waiting threads do).
"first step s" is the first call: tracing + compilation + one step.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # this checkout's bert_jax and configs

import numpy as np  # noqa: E402

from synthetic import dense_mlm_labels, mlm_predictions, synthetic_batch  # noqa: E402

READY, TIMES, FAILED = "@@ready ", "@@times ", "@@failed "


@dataclasses.dataclass(frozen=True)
class Shape:
  layers: int
  hidden: int
  heads: int
  seq: int
  batch: int
  dtype: str
  vocab: int = 30522

  @property
  def name(self) -> str:
    return (f"L={self.layers} H={self.hidden} seq={self.seq} batch={self.batch} "
            f"{self.dtype}")


# `+xla=NAME` variants: XLA flags the JAX GPU performance guide
# (https://docs.jax.dev/en/latest/gpu_performance_tips.html) and MaxText's GPU runs set.
XLA_FLAG_SETS = {
    "cublas": "--xla_gpu_enable_triton_gemm=false",          # GEMMs by cuBLAS only
    "lhs": "--xla_gpu_enable_latency_hiding_scheduler=true",  # overlap-aware scheduling
    # XLA:CPU's matmul back ends (docs/benchmarks.md "CPU"): oneDNN as PyTorch uses it,
    # its custom calls, and XNNPACK off.
    "onednn": "--xla_cpu_use_onednn=true",
    "onednn_cc": "--xla_cpu_use_onednn=true --xla_cpu_experimental_onednn_custom_call=true",
    "noxnn": "--xla_cpu_use_xnnpack=false",
}

# The GPU rows, BERT-base phase 1: the default fast config (cuDNN attention, attention
# dropout 0); the code before the embedding/bias-gradient change (`.bench/before`,
# commit 7e0faa0, see docs/benchmarks.md "GPU plan"); fused QKV; cuBLAS-only GEMMs;
# the paper-faithful einsum path with attention dropout 0.1.
GPU_BASE = (Shape(12, 768, 12, 128, 256, "bfloat16"),
            "cudnn,cudnn+code=.bench/before,cudnn+model.fused_qkv=true,cudnn+xla=cublas,einsum")
# BERT-large phase 2 with cuDNN and a scanned encoder (the unscanned 24-layer step
# compiles for minutes).
GPU_LARGE = (Shape(24, 1024, 16, 512, 64, "bfloat16"),
             "cudnn+model.scan_layers=true,cudnn+model.scan_layers=true+model.fused_qkv=true")
GPU_TIMING = dict(interleave=False, rounds=3, steps=10, warmup=3)  # one worker at a time
PRESETS = {
    # shapes: (shape, bert_jax variants); then interleave, rounds, steps, warmup.
    "cpu": dict(shapes=[(Shape(2, 768, 12, 128, 8, "float32"), "einsum"),
                        (Shape(12, 768, 12, 128, 8, "float32"), "einsum")],
                interleave=True, rounds=5, steps=2, warmup=2,
                impls="bert_jax,hf_eager,hf_compile,hf_alone"),
    # The GPU rows in one command (~9 min of device time), or as two (~6 + ~3 min).
    "gpu": dict(shapes=[GPU_BASE, GPU_LARGE], **GPU_TIMING),
    "gpu_base": dict(shapes=[GPU_BASE], **GPU_TIMING),
    "gpu_large": dict(shapes=[GPU_LARGE], **GPU_TIMING),
}


def file_name(text: str) -> str:
  """`text` as one path component ('bert_jax cudnn+code=.bench/before' ->
  'bert_jax_cudnn_code=.bench_before')."""
  return text.replace(" ", "_").replace("+", "_").replace("/", "_")


def add_xla_flags(env: dict, flags: str) -> None:
  """Appends `flags` to env's XLA_FLAGS (a worker's environment)."""
  env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {flags}".strip()


def variant_parts(variant: str) -> tuple[str, list[str], dict[str, str]]:
  """'cudnn+model.x=1+xla=cublas+code=DIR' -> ('cudnn', ['model.x=1'], {'xla': 'cublas',
  'code': 'DIR'}): attention_impl, config overrides, worker settings."""
  attention, *tokens = variant.split("+")
  settings = dict(t.split("=", 1) for t in tokens if t.split("=", 1)[0] in ("xla", "code"))
  overrides = [t for t in tokens if t.split("=", 1)[0] not in settings]
  return attention, overrides, settings


# ---------------------------------------------------------------------------- workers


def _override(config, assignment: str) -> None:
  """'model.scan_layers=true' -> config.model.scan_layers = True (typed as the field)."""
  path, value = assignment.split("=", 1)
  *parents, leaf = path.split(".")
  node = config
  for part in parents:
    node = node[part]
  old = node[leaf]
  if isinstance(old, bool):
    node[leaf] = value.lower() in ("1", "true", "yes")
  else:
    node[leaf] = type(old)(value)


def jax_worker(spec: dict):
  """(step, sync, info) for bert_jax's real train step."""
  import flax.linen as nn
  import jax

  from bert_jax import parallel
  from bert_jax.train import pretrain
  from configs import pretrain as pretrain_config
  try:
    from bert_jax.train.setup import pretraining as job_setup
  except ImportError:   # a `+code=DIR` revision from before bert_jax/train/setup.py
    job_setup = pretrain.Setup

  if spec.get("code") and not pretrain.__file__.startswith(os.path.abspath(spec["code"])):
    raise ImportError(f"+code={spec['code']}: bert_jax came from {pretrain.__file__}")
  s = Shape(**spec["shape"])
  c = pretrain_config.get_config(
      f"base,seq={s.seq},batch={s.batch},vocab={s.vocab},dropout=0.1")
  c.model.num_layers, c.model.hidden_size, c.model.num_heads = s.layers, s.hidden, s.heads
  c.model.intermediate_size = 4 * s.hidden
  c.model.dtype = s.dtype
  attention, overrides, _ = variant_parts(spec["variant"])
  c.model.attention_impl = attention
  if attention != "einsum":
    c.model.attention_dropout_prob = 0.0  # jax.nn.dot_product_attention has no dropout
  for assignment in overrides:
    _override(c, assignment)
  mesh = parallel.create_mesh(c.mesh)
  rules = parallel.logical_axis_rules(c.mesh)
  setup = job_setup(c, mesh, rules)
  batch = synthetic_batch(np.random.default_rng(0), s.batch, s.seq,
                          mlm_predictions(s.seq), s.vocab)
  scope = contextlib.ExitStack()  # held for the worker's life: steps run under it
  scope.enter_context(jax.set_mesh(mesh))
  scope.enter_context(nn.logical_axis_rules(rules))
  batch = parallel.global_batch(batch, mesh)
  holder = {"state": setup.state}

  def step():
    holder["state"], metrics = setup.p_train_step(holder["state"], batch,
                                                  setup.dropout_rng)
    return metrics["loss"]

  return step, jax.block_until_ready, {"device": jax.devices()[0].device_kind,
                                       "version": f"jax {jax.__version__}"}


def torch_worker(spec: dict):
  """(step, sync, info) for HF BertForPreTraining, eager or under torch.compile."""
  import torch
  import transformers

  s = Shape(**spec["shape"])
  cuda = torch.cuda.is_available()
  device = "cuda" if cuda else "cpu"
  torch.manual_seed(0)
  cfg = transformers.BertConfig(
      vocab_size=s.vocab, hidden_size=s.hidden, num_hidden_layers=s.layers,
      num_attention_heads=s.heads, intermediate_size=4 * s.hidden,
      hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1,
      max_position_embeddings=512, attn_implementation="sdpa")
  model = transformers.BertForPreTraining(cfg).to(device).train()
  named = list(model.named_parameters())
  no_decay = [p for n, p in named if n.endswith("bias") or "LayerNorm" in n]
  decay = [p for n, p in named if not (n.endswith("bias") or "LayerNorm" in n)]
  optimizer = torch.optim.AdamW(
      [{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
      lr=1e-4, betas=(0.9, 0.999), eps=1e-6, fused=cuda)
  forward = torch.compile(model) if spec["impl"] == "hf_compile" else model
  b = synthetic_batch(np.random.default_rng(0), s.batch, s.seq, mlm_predictions(s.seq),
                      s.vocab)
  inputs = {
      "input_ids": torch.from_numpy(b["input_ids"].astype(np.int64)).to(device),
      "token_type_ids": torch.from_numpy(b["token_type_ids"].astype(np.int64)).to(device),
      "attention_mask": torch.from_numpy(b["attention_mask"].astype(np.int64)).to(device),
      "labels": torch.from_numpy(dense_mlm_labels(b)).to(device),
      "next_sentence_label": torch.from_numpy(
          b["next_sentence_label"].astype(np.int64)).to(device),
  }
  autocast = s.dtype == "bfloat16"

  def step():
    with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=autocast):
      loss = forward(**inputs).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.detach()

  def sync(loss):
    if cuda:
      torch.cuda.synchronize()
    return loss

  name = torch.cuda.get_device_name() if cuda else platform.processor() or "cpu"
  return step, sync, {"device": name, "version": f"torch {torch.__version__}, "
                      f"transformers {transformers.__version__}, threads "
                      f"{torch.get_num_threads()}"}


def worker_main(spec: dict) -> None:
  """Build, run the first step and the warmup, then serve 'run' requests on stdin."""
  try:
    if spec.get("code"):  # an earlier revision's bert_jax and configs, before this one's
      if not os.path.isdir(os.path.join(spec["code"], "bert_jax")):
        raise FileNotFoundError(f"+code={spec['code']}: no bert_jax package there")
      sys.path.insert(0, os.path.abspath(spec["code"]))
    build = jax_worker if spec["impl"] == "bert_jax" else torch_worker
    step, sync, info = build(spec)
    t0 = time.perf_counter()
    loss = sync(step())   # the loss printed when --warmup=0
    info["first_step_s"] = time.perf_counter() - t0
    for _ in range(spec["warmup"]):
      loss = step()
    info["loss"] = float(sync(loss))
  except Exception as e:  # the parent reports it as this row's result and goes on
    print(FAILED + json.dumps(f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"),
          flush=True)
    raise
  print(READY + json.dumps(info), flush=True)
  for line in sys.stdin:
    command = line.strip()
    if command == "run":
      t0, cpu0 = time.perf_counter(), time.process_time()
      for _ in range(spec["steps"]):
        loss = step()
      sync(loss)
      print(TIMES + json.dumps([(time.perf_counter() - t0) / spec["steps"],
                                (time.process_time() - cpu0) / spec["steps"]]), flush=True)
    elif command == "profile":  # one more round under jax.profiler (bert_jax only)
      from bert_jax.train import profiling
      profiler = profiling.StepProfiler(spec["profile_dir"], f"1,{min(3, spec['steps'])}")
      for i in range(1, min(3, spec["steps"]) + 1):
        profiler.step_start(i)
        loss = step()
        profiler.step_end(i, loss)
      print(TIMES + json.dumps(profiler.directory), flush=True)
    else:
      break


# ----------------------------------------------------------------------------- parent


class Worker:
  """One implementation in its own process."""

  def __init__(self, impl: str, variant: str, shape: Shape, args, log_dir: str,
               traced: bool = False):
    self.label = f"bert_jax {variant}" if impl == "bert_jax" else impl
    self.seconds: list[float] = []      # wall time per step, one per round
    self.cpu_seconds: list[float] = []  # this process's CPU time per step
    self.info: dict = {}
    self.error = ""
    self.profile_lines: list[str] = []
    spec = dict(impl=impl, variant=variant, shape=dataclasses.asdict(shape),
                steps=args.steps, warmup=args.warmup)
    self.traced = bool(args.profile) and impl == "bert_jax" and traced
    env = dict(os.environ)
    if self.traced:
      spec["profile_dir"] = os.path.join(
          args.profile, f"{file_name(variant)}_L{shape.layers}_s{shape.seq}")
      # XLA's optimized HLO of the step: its op_name metadata ties each traced op to
      # the model code (profile_summary --group=source). Dumping changes no program.
      self.hlo_dir = os.path.join(spec["profile_dir"], "hlo")
      add_xla_flags(env, f"--xla_dump_to={self.hlo_dir} --xla_dump_hlo_as_text "
                         "--xla_dump_hlo_module_re=.*train_step.*")
    settings = variant_parts(variant)[2] if impl == "bert_jax" else {}
    if "xla" in settings:
      add_xla_flags(env, XLA_FLAG_SETS[settings["xla"]])
    if "code" in settings:
      spec["code"] = settings["code"]
    if args.interleave:  # several processes on one accelerator: allocate on demand
      env["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"
    self.log_path = os.path.join(log_dir, f"{file_name(self.label)}_{shape.layers}.log")
    self.log = open(self.log_path, "w")
    self.proc = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(spec)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True,
        env=env)

  def _reply(self, prefix: str):
    for line in self.proc.stdout:
      if line.startswith(FAILED):
        self.error = json.loads(line[len(FAILED):])
        return None
      if line.startswith(prefix):
        return json.loads(line[len(prefix):])
    self.error = self.error or (f"worker exited with code {self.proc.wait()} "
                                f"(log: {self.log_path})")
    return None

  def wait_ready(self) -> None:
    self.info = self._reply(READY) or {}

  def run_round(self) -> None:
    if self.error:
      return
    try:
      self.proc.stdin.write("run\n")
      self.proc.stdin.flush()
    except BrokenPipeError:
      pass  # the worker died: _reply reports how
    times = self._reply(TIMES)
    if times is not None:
      self.seconds.append(times[0])
      self.cpu_seconds.append(times[1])

  def profile(self) -> list[str]:
    """One traced round (after the timed ones); the summary of its top operations."""
    if self.error or not self.traced:
      return []
    self.proc.stdin.write("profile\n")
    self.proc.stdin.flush()
    directory = self._reply(TIMES)
    if directory is None:
      return [f"{self.label}: profiling failed: {self.error}"]
    import profile_summary
    return [f"**profile of {self.label}** ({self.info['device']})", "",
            *profile_summary.summarize(directory, top=15, group="category"), "",
            *profile_summary.summarize(directory, 20, "module", self.hlo_dir)[3:], "",
            *profile_summary.summarize(directory, 25, "source", self.hlo_dir)[3:], "",
            *profile_summary.summarize(directory, top=15)[3:], ""]

  def close(self) -> None:
    if self.proc.poll() is None:
      try:
        self.proc.stdin.close()
      except BrokenPipeError:
        pass
      self.proc.wait(timeout=120)
    self.log.close()


def run_shape(shape: Shape, variants: str, args, log_dir: str) -> list[Worker]:
  specs = [("bert_jax", v) for v in variants.split(",") if "bert_jax" in args.impls]
  specs += [(i, "") for i in args.impls.split(",") if i not in ("bert_jax", "hf_alone")]
  alone = [("hf_alone", "")] if "hf_alone" in args.impls.split(",") else []

  def finish(w: Worker) -> None:
    if w.traced:
      w.profile_lines = w.profile()
    w.close()

  workers = []
  if args.interleave:
    for impl, variant in specs:  # one at a time: compile times are not perturbed
      workers.append(Worker(impl, variant, shape, args, log_dir,
                            traced=args.profile_all or not workers))
      workers[-1].wait_ready()
    for r in range(args.rounds):
      for w in (workers if r % 2 == 0 else workers[::-1]):
        w.run_round()
    for w in workers:
      finish(w)
  one_at_a_time = alone if args.interleave else specs + alone
  for impl, variant in one_at_a_time:
    workers.append(Worker(impl, variant, shape, args, log_dir,
                          traced=args.profile_all or not workers))
    workers[-1].wait_ready()
    for _ in range(args.rounds):
      workers[-1].run_round()
    finish(workers[-1])
  return workers


def table(shape: Shape, workers: list[Worker]) -> list[str]:
  from bert_jax import perf

  flops = perf.train_flops(
      argparse.Namespace(hidden_size=shape.hidden, num_layers=shape.layers,
                         intermediate_size=4 * shape.hidden, vocab_size=shape.vocab),
      shape.batch, shape.seq, mlm_predictions(shape.seq))
  median = {w.label: statistics.median(w.seconds) for w in workers if w.seconds}
  best = {w.label: min(w.seconds) for w in workers if w.seconds}
  rows = [f"**{shape.name}** (P={mlm_predictions(shape.seq)} predictions/row)", "",
          "| implementation | first step s | step ms (median) | min-max ms | CPU ms/step "
          "| seq/s | MFU | x HF eager | x HF compile | x HF alone | x HF eager, best rounds "
          "| loss after warmup |",
          "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
  for w in workers:
    if w.label not in median:
      rows.append(f"| {w.label} | failed: {w.error} ||||||||||")
      continue
    s = median[w.label]
    ratios = [f"{times[ref] / times[w.label]:.2f}" if ref in times else "-"
              for times, ref in ((median, "hf_eager"), (median, "hf_compile"),
                                 (median, "hf_alone"), (best, "hf_eager"))]
    rows.append(
        f"| {w.label} | {w.info['first_step_s']:.1f} | {1e3 * s:.1f} | "
        f"{1e3 * min(w.seconds):.0f}-{1e3 * max(w.seconds):.0f} | "
        f"{1e3 * statistics.median(w.cpu_seconds):.0f} | {shape.batch / s:.1f} | "
        f"{perf.format_mfu(perf.mfu(flops, s, perf.peak_tflops(w.info['device'])))} | "
        f"{' | '.join(ratios)} | {w.info['loss']:.3f} |")
  devices = sorted({f"{w.info['device']} ({w.info['version']})" for w in workers if w.info})
  return rows + ["", "devices: " + "; ".join(devices), ""]


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--worker", help=argparse.SUPPRESS)
  p.add_argument("--preset", default="cpu", choices=sorted(PRESETS))
  p.add_argument("--impls", help="comma list of bert_jax, hf_eager, hf_compile, hf_alone "
                 "(default: the preset's)")
  p.add_argument("--jax", help="bert_jax variants, ATTENTION[+field=value...],... "
                 "(default: the preset's per shape)")
  p.add_argument("--layers", help="comma list; replaces the preset's shapes' depths")
  p.add_argument("--seq", type=int)
  p.add_argument("--batch", type=int)
  p.add_argument("--dtype")
  p.add_argument("--rounds", type=int)
  p.add_argument("--steps", type=int, help="steps per round")
  p.add_argument("--warmup", type=int)
  p.add_argument("--interleave", action=argparse.BooleanOptionalAction, default=None)
  p.add_argument("--log_dir", default="", help="worker logs ('' = a temp dir)")
  p.add_argument("--profile", default="",
                 help="DIR: after timing, trace 3 more steps of the first bert_jax row "
                      "of each shape into DIR/<variant>_L<layers>_s<seq>/profile and print "
                      "its top ops")
  p.add_argument("--profile_all", action="store_true",
                 help="with --profile: trace every bert_jax row, not only the first")
  args = p.parse_args()
  if args.worker:
    worker_main(json.loads(args.worker))
    return
  preset = PRESETS[args.preset]
  args.impls = args.impls or preset.get("impls", "bert_jax,hf_eager,hf_compile")
  for key in ("interleave", "rounds", "steps", "warmup"):
    if getattr(args, key) is None:
      setattr(args, key, preset[key])
  shapes = preset["shapes"]
  if args.layers:
    shapes = [(dataclasses.replace(shapes[0][0], layers=int(n)), shapes[0][1])
              for n in args.layers.split(",")]
  given = {k: getattr(args, k) for k in ("seq", "batch", "dtype") if getattr(args, k)}
  shapes = [(dataclasses.replace(s, **given), args.jax or v) for s, v in shapes]
  log_dir = args.log_dir or tempfile.mkdtemp(prefix="side_by_side_")
  os.makedirs(log_dir, exist_ok=True)
  print(f"# side_by_side {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, "
        f"{platform.node()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}; "
        f"{args.rounds} rounds x {args.steps} steps after {args.warmup} warmup, "
        f"{'interleaved' if args.interleave else 'one worker at a time'}; logs {log_dir}",
        flush=True)
  for shape, variants in shapes:
    t0 = time.perf_counter()
    workers = run_shape(shape, variants, args, log_dir)
    print("\n".join(table(shape, workers)), flush=True)
    for w in workers:
      if w.profile_lines:
        print("\n".join(w.profile_lines), flush=True)
    print(f"({time.perf_counter() - t0:.0f} s wall for this shape; load "
          f"{os.getloadavg()[0]:.2f})\n", flush=True)


if __name__ == "__main__":
  main()
