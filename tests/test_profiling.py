"""train.profile_steps writes a jax.profiler trace; profile_summary.py reads it."""
import glob
import os
import subprocess
import sys

import pytest

from bert_jax.train import pretrain, profiling
from configs import pretrain as pretrain_config
from tests.helpers import subprocess_env, write_embedded_corpus

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_profiled_steps_leave_a_trace_that_the_summary_reads(tmp_path):
  c = pretrain_config.get_config("tiny,vocab=600,seq=32,batch=4,steps=4")
  c.model.hidden_size, c.model.num_heads, c.model.intermediate_size = 32, 2, 64
  c.model.num_layers = 1
  c.data.corpus = write_embedded_corpus(tmp_path / "docs.txt", 30)
  c.data.dupe_factor = 1
  c.data.eval_fraction = 0.1
  c.train.eval_batches = 1
  c.train.profile_steps = "2,3"
  # The same short run also covers the rbg dropout keys in the real loop.
  c.model.hidden_dropout_prob = c.model.attention_dropout_prob = 0.1
  c.train.dropout_prng_impl = "unsafe_rbg"
  workdir = str(tmp_path / "w")
  pretrain.train_and_evaluate(c, workdir)
  traces = glob.glob(os.path.join(workdir, "profile", "**", "*.xplane.pb"), recursive=True)
  assert traces, os.listdir(os.path.join(workdir, "profile"))
  out = subprocess.run(
      [sys.executable, os.path.join(REPO, "benchmarks", "profile_summary.py"),
       os.path.join(workdir, "profile"), "--top=5"],
      capture_output=True, text=True, check=True, cwd=REPO).stdout
  rows = [line for line in out.splitlines() if line.startswith("| ") and "---" not in line]
  assert len(rows) == 6, out  # header + 5 operations
  shares = [float(r.rstrip(" |").rsplit("|", 1)[1].strip(" %")) for r in rows[1:]]
  assert shares == sorted(shares, reverse=True) and 0 < sum(shares) <= 100.0, out


@pytest.mark.parametrize("spec", ["3,2", "0,1", "a,b", "1,2,3"])
def test_bad_profile_steps_name_the_field(spec):
  with pytest.raises(ValueError, match="train.profile_steps"):
    profiling.parse_steps(spec)


TRACED_STEP = """
import sys
import flax.linen as nn, jax, jax.numpy as jnp
from bert_jax.train import profiling
class Mlp(nn.Module):
  @nn.compact
  def __call__(self, x):
    return nn.Dense(256, name="down")(nn.relu(nn.Dense(256, name="up")(x)))
model = Mlp()
x = jnp.ones((512, 256))
params = model.init(jax.random.PRNGKey(0), x)

@jax.jit
def train_step(p):
  g = jax.grad(lambda p: (model.apply(p, x) ** 2).mean())(p)
  return jax.tree_util.tree_map(lambda a, b: a - 0.1 * b, p, g)

params = train_step(params)   # compiled before the traced steps
profiler = profiling.StepProfiler(sys.argv[1], "1,2")
for step in (1, 2):
  profiler.step_start(step)
  params = train_step(params)
  profiler.step_end(step, params)
"""


def test_summary_ties_traced_ops_to_the_model_code(tmp_path):
  """With XLA's HLO dump, --group=source names forward/backward and the Flax module."""
  hlo = str(tmp_path / "hlo")
  env = subprocess_env(xla_flags=f"--xla_dump_to={hlo} --xla_dump_hlo_as_text")
  subprocess.run([sys.executable, "-c", TRACED_STEP, str(tmp_path / "w")], env=env,
                 cwd=REPO, check=True, capture_output=True, timeout=300)
  out = subprocess.run(
      [sys.executable, os.path.join(REPO, "benchmarks", "profile_summary.py"),
       str(tmp_path / "w"), "--group=source", f"--hlo={hlo}", "--top=50"],
      capture_output=True, text=True, check=True, cwd=REPO).stdout
  keys = {line.split("|")[1].strip() for line in out.splitlines() if line.startswith("| ")}
  for key in ("fwd up/dot_general", "fwd down/dot_general", "bwd down/dot_general"):
    assert key in keys, out
  # up's weight gradient: a dot whose fused output XLA names by its transpose.
  assert any(k.startswith("bwd up/") for k in keys), out
  assert any(k.startswith("opt ") for k in keys), out   # the update, outside jax.grad
