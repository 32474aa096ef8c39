"""The one job setup (`bert_jax/train/setup.py`): fine-tuning's gradient accumulation
equals the full batch's gradient, a fine-tuning resume never reads its source weights
again, and the trainer holds no job-specific branch."""
import inspect
import os

import flax.linen as nn
import jax
import numpy as np
import optax
import pytest

from bert_jax import parallel
from bert_jax.train import finetune, finetune_source, finetune_steps
from bert_jax.train import setup as setup_lib, trainer
from configs import finetune_glue
from tests.test_finetune_workdir import reference, task_files  # noqa: F401 (fixtures)


def tiny_finetune_config(batch=8, seq=16):
  c = finetune_glue.get_config("task=mrpc,init=none,size=tiny")
  m = c.model
  m.vocab_size, m.hidden_size, m.num_heads, m.intermediate_size, m.num_layers = (
      64, 32, 2, 64, 2)
  m.hidden_dropout_prob = m.attention_dropout_prob = 0.0
  c.data.max_seq_length, c.train.global_batch_size = seq, batch
  c.mesh.shape = (1, 1, 1)
  return c


def random_batch(shapes, num_labels, seed=0):
  rng = np.random.default_rng(seed)
  out = {}
  for name, (shape, dtype) in shapes.items():
    if name == "input_ids":
      out[name] = rng.integers(5, 64, shape).astype(np.int32)
    elif name == "attention_mask":
      lengths = rng.integers(4, shape[1] + 1, shape[0])
      out[name] = (np.arange(shape[1])[None] < lengths[:, None]).astype(np.int32)
    elif name in ("token_type_ids",):
      out[name] = np.zeros(shape, np.int32)
    elif name == "weight":
      out[name] = np.asarray([1.0] * (shape[0] - 1) + [0.0], np.float32)   # a pad row
    elif name == "label_weights":
      out[name] = (rng.random(shape) < 0.6).astype(np.float32)
    elif np.dtype(dtype) == np.float32:
      out[name] = (rng.random(shape) < 0.5).astype(np.float32) if len(shape) > 1 else (
          rng.normal(size=shape).astype(np.float32))
    else:
      high = shapes["input_ids"][0][1] if "positions" in name else num_labels
      out[name] = rng.integers(0, high, shape).astype(np.int32)
  return out


@pytest.mark.parametrize("kind,num_labels", [("classification", 3), ("multilabel", 4),
                                             ("regression", 1), ("span", 2), ("token", 5)])
def test_finetuning_gradient_accumulation_equals_the_full_batch(kind, num_labels):
  c = tiny_finetune_config()
  mesh = parallel.create_mesh(c.mesh, jax.devices()[:1])
  rules = parallel.logical_axis_rules(c.mesh)
  job = setup_lib.finetuning(c, mesh, rules, kind=kind, num_labels=num_labels,
                             num_train_steps=10)
  batch = random_batch(job.batch_shapes, num_labels)
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    fn = jax.jit(lambda p, b, k: finetune_steps.loss_and_grads(
        job.model.apply, p, b, job.dropout_rng, kind=kind, grad_accum_steps=k),
                 static_argnums=2)
    full_loss, full = fn(job.state.params, batch, 1)
    for k in (2, 4):
      loss, grads = fn(job.state.params, batch, k)
      np.testing.assert_allclose(loss, full_loss, rtol=1e-6)
      # Within 1e-6 of the full batch's gradient: as a whole (float32 sums in another
      # order), and every entry within 1e-6 of the gradient's largest entry (leaves
      # that are zero in exact arithmetic, e.g. span heads' last-norm bias, keep
      # roundoff only).
      diff = optax.global_norm(jax.tree_util.tree_map(lambda a, b: a - b, grads, full))
      assert diff <= 1e-6 * optax.global_norm(full), (k, diff, optax.global_norm(full))
      scale = max(float(np.abs(b).max()) for b in jax.tree_util.tree_leaves(full))
      for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(grads),
                              jax.tree_util.tree_leaves(full)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6 * scale,
                                   err_msg=f"k={k} {jax.tree_util.keystr(path)}")


def test_finetuning_batch_must_divide_by_its_microbatches():
  c = tiny_finetune_config(batch=6)
  c.train.grad_accum_steps = 4
  mesh = parallel.create_mesh(c.mesh, jax.devices()[:1])
  with pytest.raises(ValueError, match="grad_accum_steps"):
    setup_lib.finetuning(c, mesh, parallel.logical_axis_rules(c.mesh), kind="classification",
                         num_labels=2, num_train_steps=1)


def test_abstract_setup_lowers_the_same_step_it_would_run():
  """allocate=False builds the same jitted step over ShapeDtypeStructs."""
  c = tiny_finetune_config()
  mesh = parallel.create_mesh(c.mesh, jax.devices()[:1])
  rules = parallel.logical_axis_rules(c.mesh)
  abstract = setup_lib.finetuning(c, mesh, rules, kind="token", num_labels=3,
                                  num_train_steps=5, allocate=False)
  with pytest.raises(ValueError, match="allocate=False"):
    abstract.state  # noqa: B018
  real = setup_lib.finetuning(c, mesh, rules, kind="token", num_labels=3, num_train_steps=5)
  shapes = lambda tree: [(x.shape, x.dtype) for x in jax.tree_util.tree_leaves(tree)]
  assert shapes(abstract.abstract_state()) == shapes(real.state)
  assert "while" not in abstract.lower().as_text()   # no accumulation scan at k = 1
  c.train.grad_accum_steps = 2
  accumulated = setup_lib.finetuning(c, mesh, rules, kind="token", num_labels=3,
                                     num_train_steps=5, allocate=False)
  assert "while" in accumulated.lower().as_text()


def test_finetuning_resume_does_not_read_the_source_weights(task_files, reference,  # noqa: F811
                                                            tmp_path, monkeypatch):
  """A fresh run reads the source model's weights; extending the finished run (more
  epochs: resume) must not, so a source gone since cannot stop it."""
  ref_dir, _, _ = reference
  c = finetune_glue.get_config(f"task=mrpc,init=bert_jax:{ref_dir}")
  c.data.task, c.data.source = "jsonl", "local"
  c.data.train_file, c.data.eval_file = task_files["train"], task_files["dev"]
  c.data.max_seq_length, c.data.predict_test = 16, False
  c.train.global_batch_size, c.train.num_epochs = 8, 1.0
  workdir = str(tmp_path / "resumed")
  calls = []
  real_load = finetune_source.load_bert_jax_workdir
  monkeypatch.setattr(finetune_source, "load_bert_jax_workdir",
                      lambda where: calls.append(where) or real_load(where))
  finetune.train_and_evaluate(c, workdir)
  assert calls == [ref_dir]

  def gone(where):
    raise FileNotFoundError(f"{where}: source weights read again")
  monkeypatch.setattr(finetune_source, "load_bert_jax_workdir", gone)
  c.train.num_epochs = 2.0
  result = finetune.train_and_evaluate(c, workdir)
  assert [r["epoch"] for r in result["epochs"]] == [1, 2]
  with pytest.raises(FileNotFoundError, match="read again"):   # the patch does bite
    finetune.train_and_evaluate(c, str(tmp_path / "fresh"))
  assert not os.path.exists(os.path.join(tmp_path, "fresh", "config.json"))


def test_the_trainer_asks_no_job_which_it_is():
  source = inspect.getsource(trainer)
  assert '"job"' not in source and "'job'" not in source
