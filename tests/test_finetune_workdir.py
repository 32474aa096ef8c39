"""Fine-tuning through the one loop, from the command line: exact resume after SIGKILL,
SIGTERM, another mesh; the self-contained workdir (task.json, tokenizer, best checkpoint
exported to transformers); finished reruns; init from a bert_jax workdir; logs."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from bert_jax.models import make_task_model
from bert_jax.train import checkpoint as checkpoint_lib
from bert_jax.train import finetune
from configs import finetune_glue
from tests.test_checkpoint import REPO, env, kill_at_step, losses, run, sigterm_at_step
from tests.test_finetune_learning import NEGATIVE, POSITIVE, TEMPLATES, write_split

STEPS = 15   # 40 train rows, batch 8: 5 steps per epoch, 3 epochs


@pytest.fixture(scope="module")
def task_files(tmp_path_factory):
  """Sentiment sentences (JSON lines) and a WordPiece vocab of their words."""
  d = tmp_path_factory.mktemp("task")
  write_split(d / "train.jsonl", POSITIVE[:4], NEGATIVE[:4])
  write_split(d / "dev.jsonl", POSITIVE[10:12], NEGATIVE[10:12])
  words = sorted({w for t in TEMPLATES for w in t.replace("{}", "").split()}
                 | set(POSITIVE) | set(NEGATIVE))
  vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words
  vocab += [f"[unused{i}]" for i in range(-len(vocab) % 8)]   # splits over any mesh
  (d / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
  return {"train": str(d / "train.jsonl"), "dev": str(d / "dev.jsonl"),
          "vocab": str(d / "vocab.txt"), "vocab_size": len(vocab)}


def command(files, workdir, extra=()):
  overrides = {
      "data.task": "jsonl", "data.source": "local", "data.train_file": files["train"],
      "data.eval_file": files["dev"], "data.vocab_path": files["vocab"],
      "data.max_seq_length": 16, "data.predict_test": False,
      "model.vocab_size": files["vocab_size"], "model.hidden_size": 32,
      "model.num_heads": 2, "model.intermediate_size": 64, "model.num_layers": 1,
      "train.global_batch_size": 8, "train.num_epochs": 3.0, "train.log_every_steps": 1,
      "train.checkpoint_every_steps": 2, "train.checkpoint_keep": 3,
      "train.peak_tflops": 0.001,   # a stated peak: CPUs have none in bert_jax/perf.py
  }
  return ([sys.executable, "-m", "bert_jax.main",
           "--config=configs/finetune_glue.py:task=mrpc,init=none,size=tiny,lr=1e-3",
           f"--workdir={workdir}"]
          + [f"--config.{k}={v}" for k, v in overrides.items()] + list(extra))


@pytest.fixture(scope="module")
def reference(task_files, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("ft_reference"))
  proc = run(command(task_files, workdir))
  return workdir, losses(workdir), proc


def test_sigkill_then_the_same_command_continues_bit_for_bit(task_files, reference,
                                                             tmp_path):
  ref_dir, want, _ = reference
  assert sorted(want) == list(range(1, STEPS + 1))
  kill_at = int(np.random.default_rng().integers(4, 12))
  workdir = str(tmp_path / "run")
  kill_at_step(command(task_files, workdir), workdir, kill_at)
  killed_at = max(losses(workdir))
  run(command(task_files, workdir))
  assert losses(workdir) == want, f"killed after step {killed_at}"   # bitwise
  got = json.load(open(os.path.join(workdir, "results.json")))
  ref = json.load(open(os.path.join(ref_dir, "results.json")))
  assert got["epochs"] == ref["epochs"] and got["best_step"] == ref["best_step"]


def test_sigterm_saves_at_a_step_boundary_and_exits_zero(task_files, reference, tmp_path):
  _, want, _ = reference
  workdir = str(tmp_path / "run")
  cmd = command(task_files, workdir, extra=["--config.train.checkpoint_every_steps=1000"])
  stopped, _ = sigterm_at_step(cmd, workdir, 4)
  assert 4 <= stopped < STEPS
  assert not os.path.exists(os.path.join(workdir, "results.json"))
  run(cmd)
  assert losses(workdir) == want


def test_checkpoint_continues_on_another_mesh(task_files, reference, tmp_path):
  ref_dir, want, _ = reference
  workdir = str(tmp_path / "mesh222")
  shutil.copytree(ref_dir, workdir)
  ckpts = os.path.join(workdir, "checkpoints")
  for name in os.listdir(ckpts):
    if name.isdigit() and int(name) > 12:   # continue from step 12 on the new mesh
      shutil.rmtree(os.path.join(ckpts, name))
  os.remove(os.path.join(workdir, "metrics.jsonl"))
  os.remove(os.path.join(workdir, "results.json"))
  run(command(task_files, workdir, extra=["--config.mesh.shape=(2,2,2)"]), devices=8)
  got = losses(workdir)
  assert sorted(got) == list(range(13, STEPS + 1))
  for s in got:
    assert abs(got[s] - want[s]) <= 1e-5 * abs(want[s]), (s, got[s], want[s])
  results = json.load(open(os.path.join(workdir, "results.json")))
  # the best epoch may predate the lost metrics.jsonl: its scores come from its checkpoint
  assert results["best"]["step"] == results["best_step"]
  assert "score" in results["best"]["eval"]["validation"]


def test_workdir_is_self_contained_and_its_best_checkpoint_exports_to_transformers(
    reference, tmp_path):
  import torch
  import transformers
  from bert_jax.models import BertForSequenceClassification
  ref_dir, _, _ = reference
  results = json.load(open(os.path.join(ref_dir, "results.json")))
  task = json.load(open(os.path.join(ref_dir, "task.json")))
  assert task == {"task": "jsonl", "kind": "classification", "label_names": ["0", "1"],
                  "max_seq_length": 16, "doc_stride": 128, "max_query_length": 64,
                  "lowercase": True, "tokenizer": "tokenizer/vocab.txt",
                  "best_metric": "validation/score"}
  best = results["best_step"]
  scores = {r["step"]: r["eval"]["validation"]["score"] for r in results["epochs"]}
  assert best == max(sorted(scores), key=lambda s: (scores[s], s))
  kept = {int(n) for n in os.listdir(os.path.join(ref_dir, "checkpoints")) if n.isdigit()}
  assert kept == {12, 14, STEPS, best}   # newest 3 (saved every 2 steps) + the best

  dst = str(tmp_path / "hf")
  proc = subprocess.run([sys.executable, "-m", "bert_jax.convert", f"--src={ref_dir}",
                         f"--dst={dst}", "--step=best"], cwd=REPO, env=env(),
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert {"config.json", "model.safetensors", "vocab.txt"} <= set(os.listdir(dst))

  params = checkpoint_lib.restore_params(os.path.join(ref_dir, "checkpoints"), best)
  assert set(params) == {"bert", "classifier"}
  model_cfg = checkpoint_lib.read_model_config(os.path.join(ref_dir, "checkpoints"), best)
  hf = transformers.BertForSequenceClassification.from_pretrained(dst).eval()
  assert hf.config.id2label == {0: "0", 1: "1"}
  tok = transformers.BertTokenizerFast(vocab=os.path.join(dst, "vocab.txt"))
  enc = tok(["the film was lovely .", "what a dull experience ."],
            ["i found the food great .", "honestly , the book is weak ."],
            padding="max_length", max_length=16, return_tensors="np")
  assert (enc["input_ids"] != tok.unk_token_id).sum() > 8   # a real tokenization
  ours = BertForSequenceClassification(model_cfg, 2).apply(
      {"params": params}, enc["input_ids"], enc["token_type_ids"],
      enc["attention_mask"])["logits"]
  with torch.no_grad():
    theirs = hf(**{k: torch.tensor(v) for k, v in enc.items()}).logits.numpy()
  np.testing.assert_allclose(np.asarray(ours), theirs, atol=1e-5, rtol=0)


def test_rerunning_the_finished_command_prints_the_stored_results(task_files, reference):
  ref_dir, _, first = reference
  path = os.path.join(ref_dir, "results.json")
  before = open(path, "rb").read()
  proc = run(command(task_files, ref_dir))
  assert open(path, "rb").read() == before
  best = json.loads(before)["best"]
  assert f"best epoch {best['epoch']} (step {best['step']})" in proc.stdout
  assert proc.stdout.strip().splitlines()[-1] == first.stdout.strip().splitlines()[-1]


def test_no_library_chatter_and_tensorboard_holds_the_scalars(reference):
  from tensorboard.backend.event_processing import event_accumulator
  ref_dir, _, proc = reference
  assert "orbax" not in proc.stderr.lower() and "checkpoint_manager" not in proc.stderr
  acc = event_accumulator.EventAccumulator(os.path.join(ref_dir, "tensorboard"))
  acc.Reload()
  tags = set(acc.Tags()["scalars"])
  assert {"train/loss", "train/seq_per_s", "train/tokens_per_s", "train/learning_rate",
          "eval/validation/accuracy"} <= tags
  assert [e.step for e in acc.Scalars("train/loss")] == list(range(1, STEPS + 1))
  assert [e.step for e in acc.Scalars("eval/validation/accuracy")] == [5, 10, 15]
  assert all(e.value > 0 for e in acc.Scalars("train/seq_per_s"))
  rates = {e.step: e.value for e in acc.Scalars("train/seq_per_s")}
  tokens = {e.step: e.value for e in acc.Scalars("train/tokens_per_s")}
  assert all(abs(tokens[s] - 16 * rates[s]) <= 1e-3 * tokens[s] for s in rates)
  # MFU = model FLOPs per step / seconds per step / peak (bert_jax/perf.py's formula).
  from bert_jax import perf
  from bert_jax.config import ModelConfig
  saved = json.load(open(os.path.join(ref_dir, "config.json")))
  flops = perf.train_flops(ModelConfig.from_dict(saved["model"]), 8, 16, 0)
  mfu = {e.step: e.value for e in acc.Scalars("train/mfu")}
  assert sorted(mfu) == sorted(rates)
  assert all(abs(mfu[s] - flops * rates[s] / 8 / 1e9) <= 1e-3 * mfu[s] for s in rates)


def test_init_from_a_bert_jax_workdir_reads_its_shape_and_layout(task_files, reference,
                                                                 tmp_path, capfd):
  """Size and vocab come from the source's config.json (the command names neither);
  the source's per-layer encoder loads into a scanned model; no orbax lines printed
  even when the caller (a sweep, say) left absl at INFO."""
  from absl import logging as absl_logging
  from bert_jax.models import params as params_lib
  ref_dir, _, _ = reference
  c = finetune_glue.get_config(f"task=mrpc,init=bert_jax:{ref_dir}")   # size=base
  c.data.task, c.data.source = "jsonl", "local"
  c.data.train_file, c.data.eval_file = task_files["train"], task_files["dev"]
  c.data.max_seq_length, c.data.predict_test = 16, False
  c.train.global_batch_size, c.train.num_epochs = 8, 1.0
  c.train.learning_rate = 1e-12   # the encoder stays where the source left it
  c.model.scan_layers = True
  absl_logging.set_verbosity(absl_logging.INFO)
  workdir = str(tmp_path / "from_workdir")
  result = finetune.train_and_evaluate(c, workdir)
  assert "accuracy" in result["best"]["eval"]["validation"]
  saved = json.load(open(os.path.join(workdir, "config.json")))["model"]
  assert (saved["hidden_size"], saved["vocab_size"], saved["num_layers"]) == (
      32, task_files["vocab_size"], 1)
  source = checkpoint_lib.restore_params(os.path.join(ref_dir, "checkpoints"))
  tuned = checkpoint_lib.restore_params(os.path.join(workdir, "checkpoints"))
  assert params_lib.is_scanned(tuned)
  np.testing.assert_allclose(
      params_lib.to_per_layer(tuned)["bert"]["encoder"]["layer_0"]["output"]["kernel"],
      source["bert"]["encoder"]["layer_0"]["output"]["kernel"], atol=1e-6)
  err = capfd.readouterr().err
  assert "orbax" not in err.lower(), [x for x in err.splitlines() if "orbax" in x.lower()]


@pytest.mark.parametrize("kind,num_labels", [("token", 3), ("span", 2), ("regression", 1)])
def test_every_task_head_exports_to_its_transformers_class(kind, num_labels, tmp_path):
  import flax.linen as nn
  import jax
  import torch
  import transformers
  from bert_jax.config import ModelConfig
  from bert_jax.convert import hf as hf_lib
  cfg = ModelConfig(vocab_size=40, hidden_size=16, num_layers=2, num_heads=2,
                    intermediate_size=32, max_position_embeddings=32)
  model = make_task_model(kind, cfg, num_labels)
  ids = np.random.default_rng(0).integers(5, 40, (2, 12)).astype(np.int32)
  types, mask = (ids > 20).astype(np.int32), np.ones_like(ids)
  mask[1, 9:] = 0
  params = nn.meta.unbox(model.init(jax.random.PRNGKey(1), ids, types, mask)["params"])
  names = ["O", "B-X", "I-X"] if kind == "token" else []
  hf_lib.write_hf_dir(str(tmp_path), params, cfg, {"kind": kind, "label_names": names})
  ours = model.apply({"params": params}, ids, types, mask)
  cls = getattr(transformers, hf_lib.TASK_CLASSES[kind][0])
  hf = cls.from_pretrained(str(tmp_path)).eval()
  with torch.no_grad():
    out = hf(input_ids=torch.tensor(ids, dtype=torch.long),
             token_type_ids=torch.tensor(types, dtype=torch.long),
             attention_mask=torch.tensor(mask, dtype=torch.long))
  keys = ("start_logits", "end_logits") if kind == "span" else ("logits",)
  for k in keys:
    np.testing.assert_allclose(np.asarray(ours[k]), getattr(out, k).numpy(), atol=1e-5)
  if kind == "token":
    assert hf.config.id2label == {0: "O", 1: "B-X", 2: "I-X"}
  if kind == "regression":
    assert hf.config.problem_type == "regression" and hf.config.num_labels == 1
