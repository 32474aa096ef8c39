"""Every paper recipe builds and compiles one train step at its full size, abstractly
(ShapeDtypeStructs: nothing allocated): the pretraining recipes for the pod slice each
declares (TOPOLOGY) with libtpu's compile-only devices, checked to fit its HBM by
libtpu's own compiler (without libtpu, on this CPU: shapes only): the length-512 phase
of BERT-base/large, of LAMB and of the largest of the 24 small BERTs (the phase with the
most memory in every recipe: docs/benchmarks.md has both phases' figures), their
length-128 phase lowered for the same slice; the GLUE/SQuAD fine-tuning steps on CPU. And LAMB's update against its definition (You et
al. 2019, Algorithm 2) in NumPy.
"""
import importlib.util
import os

import jax
import numpy as np
import pytest

from bert_jax import aot, observe, parallel
from bert_jax.train import optim, setup as setup_lib
from experiments import sweep as sweep_lib
from experiments.recipes import bert_pretrain, lamb_pretrain, small_berts

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# The four TPU compiles take ~100 s on 2 cores (20-30 s each with `rbg` dropout bits on
# TPU; threefry's took 55-90 s for BERT-base, train/pretrain_steps.py). Compiling the
# length-128 phases as well would add ~90 s to the suite for no new fit verdict.
ON_TPU = importlib.util.find_spec("libtpu") is not None


def lower_pretraining(config):
  return observe.lower_train_step(config, parallel.create_mesh(config.mesh))


def compile_where_it_runs(config, topology):
  """The recipe's step compiled for its declared pod slice and checked to fit (libtpu's
  compile-only devices, bert_jax/aot.py); without libtpu, on this CPU (shapes only)."""
  if not ON_TPU:
    return observe.compiled_memory(lower_pretraining(config).compile())
  report = aot.check(config, topology, cost=False)   # raises if it does not fit
  assert report.fits
  return report.memory


def lower_where_it_runs(config, topology):
  """The recipe's step traced and lowered for its pod slice's mesh (no compile)."""
  devices = aot.topology_devices(topology) if ON_TPU else None
  with jax.default_matmul_precision("default"):
    return aot.job_setup(config, parallel.create_mesh(config.mesh, devices), 1000).lower()


def phase2(config):
  """The 512-length shapes of a two-phase run (data.phases' second directory)."""
  c = config.copy_and_resolve_references()
  c.data.max_seq_length, c.data.max_predictions_per_seq = 512, 80
  return c


@pytest.mark.parametrize("arg", ["size=base", "size=large"])
def test_devlin_pretraining_recipe_at_full_size(arg):
  c = bert_pretrain.get_config(arg)
  assert (c.train.global_batch_size, c.train.num_train_steps, c.train.learning_rate,
          c.train.warmup_steps, c.train.weight_decay, c.model.hidden_dropout_prob) == (
              256, 1_000_000, 1e-4, 10_000, 0.01, 0.1)
  assert c.data.phases.startswith("0:") and ",900000:" in c.data.phases
  topology = bert_pretrain.TOPOLOGY[arg.split("=")[1]]
  lower_where_it_runs(c, topology)
  memory = compile_where_it_runs(phase2(c), topology)
  # params + 2 moments of >= 110M float32 parameters, replicated (data parallelism)
  assert memory.argument > 3 * 4 * 100e6


@pytest.mark.parametrize("phase", [1, 2])
def test_lamb_recipe_at_full_size(phase):
  c = lamb_pretrain.get_config(f"phase={phase}")
  assert c.train.optimizer == "lamb" and c.model.num_layers == 24
  assert c.train.global_batch_size == {1: 65_536, 2: 32_768}[phase]
  lowered = lower_where_it_runs(c, lamb_pretrain.TOPOLOGY)
  assert "while" in lowered.as_text()  # accumulation's scan over microbatches
  if phase == 2:
    compile_where_it_runs(c, lamb_pretrain.TOPOLOGY)


@pytest.mark.parametrize("size,phase", [("L=2,H=128", 1), ("L=12,H=768", 2)])
def test_the_24_small_berts_build_and_the_extremes_compile(size, phase):
  """All 24 sizes build; the smallest lowers (phase 1) and the largest at length 512
  (phase 2: the most memory, which needs the recipe's `dots` remat on a v5e's 16 GiB)
  compiles for the recipe's v5e-8 and fits (the scanned step is the same program for
  every depth, so compiling all 24 would test nothing more)."""
  assert len(small_berts.SIZES) == 24
  for (layers, hidden) in small_berts.SIZES:
    c = small_berts.get_config(f"L={layers},H={hidden}")
    m = c.model
    assert (m.num_layers, m.hidden_size, m.num_heads, m.intermediate_size) == (
        layers, hidden, hidden // 64, 4 * hidden)
  c = small_berts.get_config(size)
  if phase == 1:
    lower_where_it_runs(c, small_berts.TOPOLOGY)
  else:
    compile_where_it_runs(phase2(c), small_berts.TOPOLOGY)


def lower_finetuning(config, kind, num_labels):
  """The fine-tuning job's own jitted step (`bert_jax/train/setup.py`), lowered."""
  mesh = parallel.create_mesh(config.mesh)
  return setup_lib.finetuning(config, mesh, parallel.logical_axis_rules(config.mesh),
                              kind=kind, num_labels=num_labels, num_train_steps=1000,
                              allocate=False).lower()


def load_config(spec):
  path, _, arg = spec.partition(":")
  module_spec = importlib.util.spec_from_file_location("_recipe_config", os.path.join(REPO, path))
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg)


@pytest.mark.parametrize("spec,kind,num_labels", [
    ("experiments/sweeps/glue.py:task=mnli,size=base,init=none", "classification", 3),
    ("experiments/sweeps/glue.py:task=stsb,size=large,init=none", "regression", 1),
    ("experiments/sweeps/squad.py:task=squad_v1.1,size=base,init=none", "span", 2),
    ("experiments/sweeps/squad.py:task=squad_v2.0,size=large,init=none", "span", 2),
])
def test_finetuning_recipes_compile_at_full_size(spec, kind, num_labels):
  sweep = sweep_lib.load_sweep(os.path.join(REPO, spec))
  c = load_config(sweep.base)
  point = sweep_lib.points(sweep)[0]
  c.update_from_flattened_dict({**sweep.overrides, **point.values})
  c.model.scan_layers = True
  assert c.train.global_batch_size == (48 if "v2.0" in spec else 32)
  lower_finetuning(c, kind, num_labels).compile()


def test_lamb_step_follows_its_definition():
  """One LAMB step (You et al. 2019, Algorithm 2) in NumPy: Adam's bias-corrected ratio
  plus weight decay (not on biases), scaled per tensor by ||w|| / ||update||."""
  import ml_collections
  t = ml_collections.ConfigDict(dict(
      optimizer="lamb", learning_rate=0.01, warmup_steps=0, num_train_steps=10,
      adam_b1=0.9, adam_b2=0.999, adam_eps=1e-6, weight_decay=0.1, max_grad_norm=1e9))
  rng = np.random.default_rng(0)
  params = {"dense": {"kernel": rng.normal(size=(4, 3)).astype(np.float32),
                      "bias": rng.normal(size=(3,)).astype(np.float32)}}
  grads = jax.tree_util.tree_map(lambda p: rng.normal(size=p.shape).astype(np.float32), params)
  tx, schedule = optim.create_optimizer(t)
  updates, _ = tx.update(grads, tx.init(params), params)

  def reference(w, g, decay):
    m, v = (1 - 0.9) * g / (1 - 0.9), (1 - 0.999) * g * g / (1 - 0.999)
    r = m / (np.sqrt(v) + 1e-6) + (0.1 * w if decay else 0.0)
    trust = np.linalg.norm(w) / np.linalg.norm(r)
    return -float(schedule(0)) * trust * r

  for name, decay in (("kernel", True), ("bias", False)):
    np.testing.assert_allclose(updates["dense"][name],
                               reference(params["dense"][name], grads["dense"][name], decay),
                               rtol=1e-5)
