"""Two processes on 127.0.0.1 with 4 CPU devices each train like one with 8.

The real entry point (`python -m bert_jax.main`) runs the tiny pretraining job two
ways on a (2, 2, 2) mesh: one process with 8 devices, and two processes started by
the local launcher (`python -m launch.local`) and joined by
`jax.distributed.initialize` (config fields `distributed.*`, gloo CPU collectives),
each feeding its half of every global batch. The per-step losses must agree, and only
process 0 may write logs and metrics.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from bert_jax.data import corpora, tokenizers
from tests.helpers import subprocess_env

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 5


@pytest.fixture(scope="module")
def data(tmp_path_factory):
  """A small real corpus and a tokenizer trained on it (shared by both runs)."""
  root = tmp_path_factory.mktemp("multihost")
  docs = corpora.embedded_corpus()[:120]
  corpus = root / "docs.txt"
  corpus.write_text("\n\n".join("\n".join(d) for d in docs) + "\n", encoding="utf-8")
  tok = str(root / "spm.model")
  tokenizers.SentencePieceTokenizer.train(docs, tok, vocab_size=600,
                                          input_sentence_size=20000)
  return str(corpus), tok


def command(corpus, tok, workdir, extra=()):
  return [
      sys.executable, "-m", "bert_jax.main",
      f"--config=configs/pretrain.py:tiny,vocab=600,seq=64,batch=16,steps={STEPS}",
      f"--workdir={workdir}", f"--config.data.corpus={corpus}",
      f"--config.data.tokenizer_path={tok}", "--config.data.dupe_factor=1",
      "--config.data.eval_fraction=0.1", "--config.data.max_predictions_per_seq=10",
      "--config.model.hidden_size=32", "--config.model.num_heads=2",
      "--config.model.intermediate_size=64", "--config.model.num_layers=1",
      "--config.mesh.shape=(2,2,2)", "--config.train.log_every_steps=1",
      "--config.train.eval_every_steps=100", "--config.train.eval_batches=1",
      "--config.train.learning_rate=3e-3", *extra]


def env(devices):
  return subprocess_env(devices=devices, JAX_DEFAULT_MATMUL_PRECISION="highest")


def train_losses(workdir):
  with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
    rows = [json.loads(line) for line in f]
  train = [r for r in rows if "train/loss" in r]
  assert [r["step"] for r in train] == list(range(1, STEPS + 1))  # each step once
  return np.asarray([r["train/loss"] for r in train])


def test_two_processes_match_one_process(data, tmp_path):
  corpus, tok = data
  single = tmp_path / "single"
  proc = subprocess.run(command(corpus, tok, single), cwd=REPO, env=env(8),
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]

  # The local launcher: 2 processes joined on 127.0.0.1, 4 CPU devices each.
  multi, logs = tmp_path / "multi", tmp_path / "logs"
  launched = subprocess.run(
      [sys.executable, "-m", "launch.local", "--processes=2", "--cpu_devices_per_process=4",
       f"--log_dir={logs}", "--", *command(corpus, tok, multi)[3:]],
      cwd=REPO, env=env(1), capture_output=True, text=True, timeout=600)
  assert launched.returncode == 0, launched.stdout[-3000:] + launched.stderr[-2000:]
  log0, log1 = ((logs / f"process-{i}.log").read_text() for i in range(2))

  np.testing.assert_allclose(train_losses(multi), train_losses(single), rtol=1e-5)
  # Only process 0 logs: progress lines, the final report and the metric files.
  assert "final eval" in log0 and "final eval" in launched.stdout  # streamed and kept
  assert "[bert_jax]" not in log1 and "final eval" not in log1
  assert "2 processes" in log0 and "1 processes" in proc.stderr
  assert sorted(os.listdir(multi)) == sorted(os.listdir(single))
