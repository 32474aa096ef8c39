"""Parameter summary against HF's count; the memory estimate against XLA's own analysis.

The estimate (bert_jax/observe.py) is checked against `compiled.memory_analysis()` of
the real pretraining step, compiled from ShapeDtypeStructs (nothing allocated), for the
tiny, base and large configs (scanned layers) on 1 CPU device and on 8 with FSDP.
"""
import json
import os
import subprocess
import sys

import pytest

from bert_jax import observe, parallel
from configs import pretrain as pretrain_config
from tests.helpers import subprocess_env

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZES = ["tiny", "base,vocab=30522", "large,vocab=30522"]


def scanned_config(arg):
  c = pretrain_config.get_config(arg)
  c.model.scan_layers = True
  return c


def test_param_summary_counts_what_hf_counts():
  import transformers
  c = pretrain_config.get_config("tiny,vocab=1000")
  hf = transformers.BertForPreTraining(transformers.BertConfig(
      vocab_size=1000, hidden_size=128, num_hidden_layers=2, num_attention_heads=2,
      intermediate_size=512))
  rows = observe.param_summary(observe._abstract_params(c))
  total = rows[-1]
  assert total["module"] == "total" and total["params"] == hf.num_parameters()
  by_module = {r["module"]: r for r in rows}
  embeddings = sum(p.numel() for p in hf.bert.embeddings.parameters())
  assert by_module["bert/embeddings"]["params"] == embeddings
  assert sum(r["percent"] for r in rows[:-1]) == pytest.approx(100.0)
  text = observe.format_param_summary(rows)
  assert "bert/encoder" in text and f"{hf.num_parameters():,}" in text


@pytest.mark.parametrize("arg", SIZES)
def test_memory_estimate_within_15_percent_of_xla_on_one_device(arg):
  c = scanned_config(arg)
  mesh = parallel.create_mesh(c.mesh)
  xla = observe.compiled_memory(observe.lower_train_step(c, mesh).compile())
  estimate = observe.estimate_memory(c, mesh)
  assert abs(estimate.total - xla.total) <= 0.15 * xla.total, (estimate.describe(), xla.describe())
  # The state and batch are exact: XLA's arguments are params + Adam moments + batch + rng.
  assert estimate.params + estimate.optimizer + estimate.batch == pytest.approx(
      xla.argument, rel=0.01)


WORKER = """
import json, sys
import jax
from bert_jax import observe, parallel
from tests.test_observe import scanned_config
out = {}
for arg in sys.argv[1:]:
  c = scanned_config(arg + ",mesh=fsdp")
  mesh = parallel.create_mesh(c.mesh)
  xla = observe.compiled_memory(observe.lower_train_step(c, mesh).compile())
  e = observe.estimate_memory(c, mesh)
  out[arg] = {"estimate": e.total, "state": e.params + e.optimizer + e.batch,
              "xla": xla.total, "xla_argument": xla.argument, "describe": e.describe()}
print(json.dumps(out))
"""


def test_memory_estimate_within_15_percent_of_xla_on_8_devices_with_fsdp():
  env = subprocess_env(devices=8)
  proc = subprocess.run([sys.executable, "-c", WORKER, *SIZES], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  results = json.loads(proc.stdout.splitlines()[-1])
  for arg, r in results.items():
    assert abs(r["estimate"] - r["xla"]) <= 0.15 * r["xla"], (arg, r)
    assert r["state"] == pytest.approx(r["xla_argument"], rel=0.01), (arg, r)
    assert "(8 devices)" in r["describe"]


def test_describe_is_one_line_with_every_term():
  c = scanned_config("base,vocab=30522")
  c.model.remat_policy = "full"
  e = observe.estimate_memory(c, {"data": 1, "fsdp": 4, "tensor": 2})
  text = e.describe()
  assert "\n" not in text and "remat full" in text and "(8 devices)" in text
  for term in ("params", "optimizer", "gradients", "gathered", "activations", "batch"):
    assert term in text
