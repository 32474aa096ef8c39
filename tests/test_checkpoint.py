"""Checkpointing: exact resume after SIGKILL, clean SIGTERM, mid-save kills, other meshes."""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from bert_jax.train import checkpoint as checkpoint_lib
from bert_jax.train import pretrain
from tests.helpers import subprocess_env, write_embedded_corpus
from tests.test_pretrain import small_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 24


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  return write_embedded_corpus(tmp_path_factory.mktemp("corpus") / "docs.txt", 80)


def command(corpus, workdir, steps=STEPS, extra=()):
  overrides = {
      "model.hidden_size": 32, "model.num_heads": 2, "model.intermediate_size": 64,
      "model.num_layers": 1, "data.corpus": corpus, "data.max_predictions_per_seq": 10,
      "data.dupe_factor": 1, "data.eval_fraction": 0.1,
      "data.tokenizer_input_sentence_size": 20000, "train.log_every_steps": 1,
      "train.eval_every_steps": 1000, "train.eval_batches": 2,
      "train.checkpoint_every_steps": 4, "model.hidden_dropout_prob": 0.1,
  }
  return ([sys.executable, "-m", "bert_jax.main",
           f"--config=configs/pretrain.py:tiny,vocab=600,seq=64,batch=8,steps={steps}",
           f"--workdir={workdir}"]
          + [f"--config.{k}={v}" for k, v in overrides.items()] + list(extra))


def env(devices=1):
  return subprocess_env(devices=devices)


def run(cmd, devices=1):
  proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600,
                        env=env(devices))
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc


def losses(workdir):
  """Train loss per step; after a restart the re-run steps overwrite the earlier ones."""
  out = {}
  with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
    for line in f:
      row = json.loads(line)
      if "train/loss" in row:
        out[row["step"]] = row["train/loss"]
  return out


def wait_for_step(workdir, step, proc, timeout=300):
  path = os.path.join(workdir, "metrics.jsonl")
  deadline = time.time() + timeout
  while time.time() < deadline:
    assert proc.poll() is None, "the run ended before it could be interrupted"
    if os.path.exists(path) and max(losses(workdir) or {0: 0}) >= step:
      return
    time.sleep(0.05)
  raise TimeoutError(f"step {step} not reached")


def kill_at_step(cmd, workdir, step):
  """Starts `cmd`, SIGKILLs it once `workdir` logged `step`; returns the exit code."""
  proc = subprocess.Popen(cmd, cwd=REPO, env=env(), stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
  wait_for_step(workdir, step, proc)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  return proc.returncode


def sigterm_at_step(cmd, workdir, step):
  """Starts `cmd`, SIGTERMs it once `workdir` logged `step`; checks that it exits 0
  having saved the step it names. Returns (that step, every step in checkpoints/)."""
  proc = subprocess.Popen(cmd, cwd=REPO, env=env(), stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
  wait_for_step(workdir, step, proc)
  proc.send_signal(signal.SIGTERM)
  _, err = proc.communicate(timeout=300)
  assert proc.returncode == 0, err[-2000:]
  stopped = re.search(r"preemption signal: saved step (\d+)", err)
  assert stopped, err[-2000:]
  saved = {int(n) for n in os.listdir(os.path.join(workdir, "checkpoints")) if n.isdigit()}
  assert int(stopped.group(1)) in saved, (stopped.group(0), saved)
  return int(stopped.group(1)), saved


@pytest.fixture(scope="module")
def reference(corpus, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("reference"))
  run(command(corpus, workdir))
  return workdir, losses(workdir)


def test_sigkill_at_a_random_step_then_resume_is_bitwise_identical(corpus, reference,
                                                                   tmp_path):
  _, want = reference
  assert sorted(want) == list(range(1, STEPS + 1))
  kill_at = int(np.random.default_rng().integers(6, 18))
  workdir = str(tmp_path / "run")
  assert kill_at_step(command(corpus, workdir), workdir, kill_at) == -signal.SIGKILL
  killed_at = max(losses(workdir))
  run(command(corpus, workdir))
  got = losses(workdir)
  assert sorted(got) == sorted(want)
  assert got == want, f"killed after step {killed_at}"  # bitwise, data order included


def test_sigterm_saves_at_a_step_boundary_and_exits_zero(corpus, reference, tmp_path):
  _, want = reference
  workdir = str(tmp_path / "run")
  cmd = command(corpus, workdir, extra=["--config.train.checkpoint_every_steps=1000"])
  stopped, saved = sigterm_at_step(cmd, workdir, 5)
  assert saved == {stopped} and 5 <= stopped < STEPS, saved
  run(cmd)
  assert losses(workdir) == want


def test_killed_mid_save_and_corrupt_checkpoints_are_never_restored(corpus, reference,
                                                                    tmp_path):
  ref_dir, want = reference
  workdir = str(tmp_path / "run")
  shutil.copytree(ref_dir, workdir)
  ckpts = os.path.join(workdir, "checkpoints")
  # What a kill during an async save leaves behind: a tmp directory, never finalized.
  shutil.copytree(os.path.join(ckpts, "24"), os.path.join(ckpts, "28.orbax-checkpoint-tmp-99"))
  # And a finalized step whose array files were lost.
  shutil.rmtree(os.path.join(ckpts, "24", "state"))
  os.makedirs(os.path.join(ckpts, "24", "state"))
  os.remove(os.path.join(workdir, "metrics.jsonl"))
  proc = run(command(corpus, workdir, steps=STEPS))
  assert "28.orbax-checkpoint-tmp-99: a save that never finished" in proc.stderr
  assert "/24 cannot be restored" in proc.stderr
  assert "resumed from" in proc.stderr and "/20 " in proc.stderr
  got = losses(workdir)
  assert sorted(got) == [21, 22, 23, 24]
  assert all(got[s] == want[s] for s in got)


def test_restore_onto_other_meshes_and_one_device(corpus, tmp_path):
  ref = str(tmp_path / "ref")
  run(command(corpus, ref, steps=12, extra=["--config.mesh.shape=(8,1,1)"]), devices=8)
  want = losses(ref)
  for name, shape, devices in (("mesh222", "(2,2,2)", 8), ("single", "(1,1,1)", 1)):
    workdir = str(tmp_path / name)
    shutil.copytree(ref, workdir)
    ckpts = os.path.join(workdir, "checkpoints")
    for step in ("12", "8"):  # keep step 4 only: continue from there on the new mesh
      shutil.rmtree(os.path.join(ckpts, step))
    os.remove(os.path.join(workdir, "metrics.jsonl"))
    run(command(corpus, workdir, steps=12, extra=[f"--config.mesh.shape={shape}"]),
        devices=devices)
    got = losses(workdir)
    assert sorted(got) == list(range(5, 13))
    for s in got:
      assert abs(got[s] - want[s]) <= 1e-5 * abs(want[s]), (name, s, got[s], want[s])


def test_params_only_restore_and_size_mismatch(corpus, tmp_path):
  workdir = str(tmp_path / "run")
  config = small_config(corpus, steps=4)
  config.train.checkpoint_every_steps = 4
  pretrain.train_and_evaluate(config, workdir)
  params = checkpoint_lib.restore_params(os.path.join(workdir, "checkpoints"))
  assert params["bert"]["embeddings"]["word_embeddings"]["embedding"].shape == (600, 32)
  assert isinstance(params["mlm"]["output_bias"], np.ndarray)

  bigger = small_config(corpus, steps=8)
  bigger.model.intermediate_size = 96
  with pytest.raises(ValueError, match=r"intermediate/kernel: checkpoint \(32, 64\), "
                                       r"model \(32, 96\)"):
    pretrain.train_and_evaluate(bigger, workdir)


def test_workdir_is_created_or_rejected_before_training(corpus, tmp_path):
  blocker = tmp_path / "a_file"
  blocker.write_text("not a directory")
  with pytest.raises(ValueError, match="cannot create workdir .*a_file/run"):
    pretrain.train_and_evaluate(small_config(corpus), str(blocker / "run"))


def test_checkpoint_restores_across_scanned_and_per_layer_layouts(corpus, tmp_path):
  """Saved per-layer, resumed with model.scan_layers=True (and back): same losses."""
  def config(scan):
    c = small_config(corpus, steps=8)
    c.model.num_layers = 2
    c.train.log_every_steps = 1
    c.train.checkpoint_every_steps = 4
    c.train.eval_every_steps = 100
    c.model.scan_layers = scan
    return c

  for saved_scan in (False, True):
    ref = str(tmp_path / f"ref{saved_scan}")
    pretrain.train_and_evaluate(config(saved_scan), ref)
    want = losses(ref)
    workdir = str(tmp_path / f"resumed{saved_scan}")
    shutil.copytree(ref, workdir)
    shutil.rmtree(os.path.join(workdir, "checkpoints", "8"))
    os.remove(os.path.join(workdir, "metrics.jsonl"))
    pretrain.train_and_evaluate(config(not saved_scan), workdir)
    got = losses(workdir)
    assert sorted(got) == [5, 6, 7, 8]
    for s in got:
      assert abs(got[s] - want[s]) <= 1e-5 * abs(want[s]), (saved_scan, s, got[s], want[s])


def test_retention_keeps_the_newest_and_the_best(corpus, tmp_path):
  workdir = str(tmp_path / "run")
  config = small_config(corpus, steps=8)
  config.train.checkpoint_every_steps = 1
  config.train.eval_every_steps = 2
  config.train.checkpoint_keep = 2
  config.train.checkpoint_best_metric = "mlm_loss"
  config.train.checkpoint_best_mode = "min"
  pretrain.train_and_evaluate(config, workdir)
  with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
    evals = {r["step"]: r["eval/mlm_loss"] for r in map(json.loads, f) if "eval/mlm_loss" in r}
  assert sorted(evals) == [2, 4, 6, 8]
  best = min(evals, key=evals.get)
  kept = {int(n) for n in os.listdir(os.path.join(workdir, "checkpoints")) if n.isdigit()}
  assert kept == {7, 8, best}
  saved = json.load(open(os.path.join(workdir, "checkpoints", "8", "config",
                                      "metadata"), encoding="utf-8"))
  assert saved["model"]["hidden_size"] == 32  # the resolved config travels with it
