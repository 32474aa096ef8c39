"""bert_jax/aot.py: the job's real train step compiled for TPU slices on this CPU host
(libtpu compile-only devices). XLA's memory and cost figures are checked against
independent ones: the model-FLOPs formula (itself checked against the model's dot
products in test_perf.py), a directly compiled unrolled step, and the fit verdict of
libtpu's own compiler (which refuses a program larger than the chip's HBM)."""
import importlib.util
import os
import subprocess
import sys

import pytest

from bert_jax import aot, observe, parallel, perf
from configs import finetune_glue, pretrain

pytestmark = pytest.mark.skipif(importlib.util.find_spec("libtpu") is None,
                                reason="needs libtpu: pip install -e '.[tpu]'")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
V5E_4 = "v5e:2x2"


def test_accelerator_types_become_topology_names():
  assert [aot.topology_name(t) for t in ("v4-8", "v4-32", "v4-128", "v5p-8", "v5e-8",
                                         "v5e-256", "v6e-4", "v5e:4x8")] == [
      "v4:2x2x1", "v4:2x2x4", "v4:4x4x4", "v5p:2x2x1", "v5e:2x4", "v5e:16x16",
      "v6e:2x2", "v5e:4x8"]
  for bad, word in (("v4-7", "multiple"), ("v5e-12", "power of two"), ("tpu", "expected")):
    with pytest.raises(ValueError, match=word):
      aot.topology_name(bad)
  devices = aot.topology_devices("v4-16")
  assert len(devices) == 8 and devices[0].device_kind == "TPU v4"


def test_every_mesh_preset_maps_onto_a_3d_slice():
  """v4-128's 4x4x4 chips: fsdp_tp's 2-way tensor axis splits a physical axis."""
  devices = aot.topology_devices("v4-128")
  for preset in ("dp", "fsdp", "fsdp_tp"):
    c = pretrain.get_config(f"tiny,mesh={preset}")
    mesh = parallel.create_mesh(c.mesh, devices)
    assert mesh.devices.size == 64 and len({d.id for d in mesh.devices.flat}) == 64
  assert dict(mesh.shape)["tensor"] == 2


# A small step, as libtpu's compile time grows with the tensors (vocab 4096 compiles in
# 1.3x the time). Not smaller: at batch 16 the 1-and-2-layer extrapolation of the cost
# model's time is 4% off the whole step's (0.15% here); splash needs a 128-multiple length.
TINY_BATCH, TINY_SEQ = 32, 128


def tiny(**fields):
  c = pretrain.get_config(f"mini,vocab=2048,seq={TINY_SEQ},batch={TINY_BATCH},steps=5000,"
                          "mesh=fsdp")
  c.model.dtype = "bfloat16"
  c.model.scan_layers = True
  for key, value in fields.items():
    c.update_from_flattened_dict({key: value})
  return c


@pytest.fixture(scope="module")
def unrolled():
  """The tiny step unrolled and unaccumulated, compiled once for the module."""
  whole = tiny(**{"model.scan_layers": False})
  mesh = parallel.create_mesh(whole.mesh, aot.topology_devices(V5E_4))
  compiled = aot.compile_step(whole, mesh)
  return whole, mesh, compiled, aot.xla_cost(compiled)


def test_tpu_dropout_bits_come_from_the_partitioned_rng_bit_generator():
  """train.dropout_prng_impl=auto is rbg on TPU: the step draws its dropout bits with
  XLA's RngBitGenerator under the flag MaxText sets (each chip its own shard), and the
  cost model's -1 s per X64/ConcatBitcast custom call is added back to a figure in
  milliseconds."""
  c = tiny(**{"model.hidden_dropout_prob": 0.1})
  assert c.train.dropout_prng_impl == "auto"
  compiled = aot.compile_step(c, parallel.create_mesh(c.mesh, aot.topology_devices(V5E_4)))
  assert " rng-bit-generator(" in compiled.as_text()  # (threefry only folds in the step)
  assert "--xla_tpu_spmd_rng_bit_generator_unsafe=true" in os.environ["LIBTPU_INIT_ARGS"]
  raw = compiled.cost_analysis()
  raw = raw[0] if isinstance(raw, (list, tuple)) else raw
  assert raw["optimal_seconds"] < -5             # the uncorrected figure is meaningless
  assert 1e-5 < aot.xla_cost(compiled).optimal_seconds < 0.1


@pytest.mark.parametrize("accum", [1, 2])
def test_cost_of_the_scanned_step_is_the_unrolled_steps(accum, unrolled):
  """XLA counts a while body once: the 1-and-2-layer extrapolation must give what
  compiling the whole unrolled, unaccumulated step gives (flops for any accumulation;
  time exactly without it, and over-estimated with it: the optimizer update is counted
  per microbatch), and its flops must be the model FLOPs formula's (plus softmax, norm
  and optimizer arithmetic)."""
  whole, mesh, whole_compiled, direct = unrolled
  c = tiny(**{"train.grad_accum_steps": accum})
  estimated = aot.unrolled_cost(c, mesh)
  assert estimated.flops == pytest.approx(direct.flops, rel=0.01)
  if accum == 1:
    assert estimated.optimal_seconds == pytest.approx(direct.optimal_seconds, rel=0.02)
    model = perf.train_flops(c.model, TINY_BATCH, TINY_SEQ, c.data.max_predictions_per_seq) / 4
    assert model <= direct.flops <= 1.15 * model
    scanned_compiled = aot.compile_step(c, mesh)
    scanned = aot.xla_cost(scanned_compiled)
    assert scanned.flops < 0.7 * direct.flops   # the under-count being corrected
    # check() takes an unrolled step's own cost, extrapolates a looping one's.
    assert aot.has_loops(scanned_compiled) and not aot.has_loops(whole_compiled)
  else:
    assert estimated.optimal_seconds > direct.optimal_seconds


def test_the_splash_kernel_missing_from_the_cost_model_is_added_back(unrolled):
  """XLA gives splash's Mosaic custom call no flops: the einsum step's flops minus the
  splash step's are the attention products, which `kernel_cost` adds back."""
  whole, mesh, _, direct = unrolled
  splash_config = whole.copy_and_resolve_references()
  splash_config.model.attention_impl = "splash"
  splash = aot.xla_cost(aot.compile_step(splash_config, mesh))
  kernel = aot.kernel_cost(splash_config, mesh)
  assert direct.flops - splash.flops == pytest.approx(kernel.flops, rel=0.05)
  assert kernel.optimal_seconds == pytest.approx(kernel.flops / 197e12)   # v5e peak
  assert aot.kernel_cost(whole, mesh).flops == 0   # einsum: XLA sees it all


def run_aot(*args):
  env = dict(os.environ, PYTHONPATH=REPO)
  return subprocess.run([sys.executable, "-m", "bert_jax.aot", *args], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=600)


def test_cli_prints_the_table():
  """Unscanned layers, so the step is compiled once (a loop-free step is its own cost)."""
  out = run_aot("--config=configs/pretrain.py:mini,vocab=2048,seq=128,batch=32,mesh=fsdp",
                "--config.model.dtype=bfloat16", "--config.model.scan_layers=False",
                "--topology=v5e-4")
  assert out.returncode == 0, out.stderr[-2000:]
  lines = dict(line.split("  ", 1) for line in out.stdout.splitlines() if "  " in line)
  assert "4 x TPU v5 lite" in lines["topology"] and "'fsdp': 4" in lines["topology"]
  assert "of 16.00 GiB HBM: fits" in lines["XLA memory per chip"]
  assert "estimate, not a measurement" in lines["step time (XLA cost model)"]
  assert "for 1,200 steps" in lines["time to train"]


BERT_LARGE_512 = ("--config=configs/pretrain.py:large,vocab=30522,seq=512,batch=256,mesh=fsdp",
                  "--config.data.max_predictions_per_seq=80", "--config.model.dtype=bfloat16",
                  "--config.model.scan_layers=True")


def test_a_step_too_big_for_the_chip_stops_with_one_line_and_exit_2():
  """BERT-large, length 512, 64 sequences per v5e chip, no remat: libtpu refuses it."""
  out = run_aot(*BERT_LARGE_512, f"--topology={V5E_4}", "--nocost")
  assert out.returncode == 2, out.stderr[-2000:]
  errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
  assert len(errors) == 1 and not out.stdout.strip()
  for word in ("does not fit TPU v5 lite", "exceeds available HBM", "train.global_batch_size",
               "mesh.shape", "model.remat_policy", "train.grad_accum_steps"):
    assert word in errors[0]


@pytest.mark.parametrize("field,value", [("model.remat_policy", "full"),
                                         ("train.grad_accum_steps", 8)])
def test_remat_or_accumulation_makes_it_fit(field, value):
  c = pretrain.get_config("large,vocab=30522,seq=512,batch=256,mesh=fsdp")
  c.data.max_predictions_per_seq = 80
  c.model.dtype, c.model.scan_layers = "bfloat16", True
  c.update_from_flattened_dict({field: value})
  report = aot.check(c, V5E_4, cost=False)
  assert report.fits and report.memory.total < 15.75 * observe.GIB
  # The project's estimate against libtpu's compiled figure (issue: within 15%).
  assert report.estimate.total == pytest.approx(report.memory.total, rel=0.15)


def test_a_finetuning_job_compiles_its_own_step():
  c = finetune_glue.get_config("task=mnli,batch=32,seq=128")
  c.model.dtype = "bfloat16"
  c.model.scan_layers = True   # the same step; libtpu compiles it in 40% of the time
  report = aot.check(c, V5E_4, cost=False)
  assert report.job == "classification" and report.fits and report.estimate is None

