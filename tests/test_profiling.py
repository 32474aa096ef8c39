"""train.profile_steps writes a jax.profiler trace; profile_summary.py reads it."""
import glob
import os
import subprocess
import sys

import pytest

from bert_jax.train import pretrain, profiling
from configs import pretrain as pretrain_config
from tests.helpers import write_embedded_corpus

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
