"""The real fine-tuning job end to end on tfds mock data (no network), the learning
check from the real MiniLM weights, windows for long inputs, and bad-input errors."""
import json
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds

from bert_jax.data import tasks
from bert_jax.data.tasks import classification, common, ner
from bert_jax.models import params as params_lib
from bert_jax.train import finetune, finetune_source, losses, optim
from configs import finetune_common, finetune_glue, finetune_ner, finetune_squad

VOCAB = os.path.join(finetune_common.minilm_dir(), "vocab.txt")


def tiny(config, steps_epochs=2.0, batch=4, seq=48):
  """A 1-layer, 32-wide model from random init with the MiniLM WordPiece vocab."""
  config.init.checkpoint = ""
  config.data.vocab_path = VOCAB
  m = config.model
  m.vocab_size, m.hidden_size, m.num_heads, m.intermediate_size, m.num_layers = (
      30522, 32, 2, 64, 1)
  config.data.max_seq_length = seq
  config.data.doc_stride = 16
  config.train.global_batch_size = batch
  config.train.num_epochs = steps_epochs
  config.train.learning_rate = 1e-3
  config.train.log_every_steps = 1
  return config


@pytest.mark.parametrize("task", ["mrpc", "stsb"])
def test_glue_end_to_end_on_mock_data(task, tmp_path):
  epochs = 2 if task == "mrpc" else 1
  config = tiny(finetune_glue.get_config(f"task={task},init=none,size=tiny"),
                steps_epochs=float(epochs))
  with tfds.testing.mock_data(num_examples=6):
    result = finetune.train_and_evaluate(config, str(tmp_path))
  assert [r["epoch"] for r in result["epochs"]] == list(range(1, epochs + 1))
  metrics = result["best"]["eval"]["validation"]
  expected = {"mrpc": {"accuracy", "f1", "score"},
              "stsb": {"pearson", "spearman", "score"}}[task]
  assert set(metrics) == expected
  sub = tmp_path / "predictions" / "test" / {"mrpc": "MRPC.tsv", "stsb": "STS-B.tsv"}[task]
  lines = sub.read_text().splitlines()
  assert lines[0] == "index\tprediction" and len(lines) == 7
  value = lines[1].split("\t")[1]
  assert value in ("0", "1") if task == "mrpc" else float(value) == float(value)
  saved = json.loads((tmp_path / "results.json").read_text())
  assert saved["best"]["epoch"] == result["best"]["epoch"]
  best_step = saved["best_step"]
  assert (tmp_path / "checkpoints" / str(best_step) / "state").is_dir()
  task_json = json.loads((tmp_path / "task.json").read_text())
  assert task_json["label_names"] == (["not_equivalent", "equivalent"] if task == "mrpc"
                                      else [])
  assert (tmp_path / task_json["tokenizer"]).is_file()


def fixed_conll(self, split, **kwargs):
  """Mock conll2003 records with one tag per token (the default mock's lengths differ)."""
  rng = np.random.default_rng(len(split))
  words = "Peter Blackburn EU rejects German call to boycott British lamb".split()
  out = []
  for i in range(5):
    n = int(rng.integers(3, 30))
    out.append({"tokens": np.array(rng.choice(words, n)),
                "ner": rng.integers(0, len(ner.LABELS), n),
                "pos": np.zeros(n, np.int64), "chunks": np.zeros(n, np.int64)})
  return out


def test_squad_v2_and_conll_end_to_end_on_mock_data(tmp_path):
  config = tiny(finetune_squad.get_config("task=squad_v2.0,init=none,size=tiny"),
                steps_epochs=1.0, seq=40)
  config.data.max_query_length = 8
  with tfds.testing.mock_data(num_examples=5):
    result = finetune.train_and_evaluate(config, str(tmp_path / "squad"))
  m = result["best"]["eval"]["validation"]
  assert {"exact", "f1", "total", "best_f1", "best_f1_thresh"} <= set(m)
  assert m["total"] == 5
  preds = json.loads((tmp_path / "squad/predictions/epoch_1/validation/predictions.json")
                     .read_text())
  assert len(preds) == 5 and all(isinstance(v, str) for v in preds.values())

  config = tiny(finetune_ner.get_config("init=none,size=tiny"), steps_epochs=1.0, seq=16)
  config.data.doc_stride = 6   # sentences up to 29 words -> several windows
  with tfds.testing.mock_data(num_examples=5, as_data_source_fn=fixed_conll):
    result = finetune.train_and_evaluate(config, str(tmp_path / "ner"))
  assert {"precision", "recall", "f1"} <= set(result["best"]["eval"]["validation"])
  text = (tmp_path / "ner/predictions/test/test.conll").read_text()
  sentences = [s for s in text.split("\n\n") if s.strip()]
  assert len(sentences) == 5
  assert all(len(line.split()) == 3 for s in sentences for line in s.splitlines())


# -------------------------------------------------------------------- windows, errors


def test_long_inputs_become_windows_and_combine():
  tok = common.WordPiece(VOCAB)
  long_text = " ".join(["word"] * 50)
  exs = [{"text_a": long_text, "text_b": "short one", "label": 1, "idx": 0},
         {"text_a": "tiny", "text_b": None, "label": 0, "idx": 1}]
  f = classification.featurize(exs, tok, 16, 8, "classification", 2)
  assert (f["example_index"] == 0).sum() > 3 and (f["example_index"] == 1).sum() == 1
  # every window of the pair keeps the short segment whole after its [SEP]
  short_ids = tok.encode("short one")[0]
  for row in f["input_ids"][f["example_index"] == 0]:
    seq = [int(x) for x in row if x != tok.pad_id]
    assert seq[-len(short_ids) - 1:-1] == short_ids
  logits = np.arange(len(f["input_ids"]) * 2, dtype=float).reshape(-1, 2)
  combined = classification.combine(logits, f["example_index"], 2)
  np.testing.assert_allclose(combined[0], logits[f["example_index"] == 0].mean(0))


def test_bad_inputs_are_clear(tmp_path):
  tok = common.WordPiece(VOCAB)
  config = finetune_glue.get_config("task=mrpc,init=none")
  config.data.task = "mrcp"
  with pytest.raises(ValueError, match=r"data.task='mrcp' is not one of .*did you mean 'mrpc'"):
    tasks.get_task(config.data, tok)
  with pytest.raises(ValueError, match=r"label 2; the head has num_labels=2"):
    classification.featurize([{"text_a": "a", "text_b": None, "label": 2, "idx": 7}],
                             tok, 16, 8, "classification", 2)
  with pytest.raises(ValueError, match="empty split"):
    classification.featurize([], tok, 16, 8, "classification", 2)
  with pytest.raises(ValueError, match=r"has tags \[12\]; the head has num_labels=9"):
    ner.featurize([{"tokens": ["a"], "tags": [12], "idx": 0}], tok, 16, 8)
  empty = tmp_path / "empty.jsonl"
  empty.write_text("")
  c = tiny(finetune_glue.get_config("task=mrpc,init=none,size=tiny"))
  c.data.task, c.data.source, c.data.train_file = "jsonl", "local", str(empty)
  c.data.eval_file = str(empty)
  with pytest.raises(ValueError, match=r"task jsonl split 'train' has no examples"):
    finetune.train_and_evaluate(c, str(tmp_path / "w"))


# ------------------------------------------------------ losses, LLRD, init, the sweep


def test_task_losses_match_numpy():
  import jax.numpy as jnp
  rng = np.random.default_rng(0)
  w = np.array([1, 1, 0], np.float32)  # the last row is padding
  logits = rng.normal(size=(3, 4)).astype(np.float32)
  hot = (rng.random((3, 4)) > 0.5).astype(np.float32)
  sig = 1 / (1 + np.exp(-logits))
  bce = -(hot * np.log(sig) + (1 - hot) * np.log(1 - sig)).mean(-1)
  got = losses.task_loss("multilabel", {"logits": jnp.asarray(logits)},
                           {"label": hot, "weight": w})
  np.testing.assert_allclose(got, bce[:2].mean(), rtol=1e-5)
  y = rng.normal(size=3).astype(np.float32)
  got = losses.task_loss("regression", {"logits": jnp.asarray(logits[:, :1])},
                           {"label": y, "weight": w})
  np.testing.assert_allclose(got, ((logits[:2, 0] - y[:2]) ** 2).mean(), rtol=1e-5)
  s, e = rng.normal(size=(3, 5)), rng.normal(size=(3, 5))
  sp, ep = np.array([1, 0, 4]), np.array([2, 0, 4])
  logp = lambda x: x - np.log(np.exp(x).sum(-1, keepdims=True))  # noqa: E731
  want = -(logp(s)[np.arange(3), sp] + logp(e)[np.arange(3), ep])[:2].mean() / 2
  got = losses.task_loss("span", {"start_logits": jnp.asarray(s), "end_logits":
                                    jnp.asarray(e)},
                           {"start_positions": sp, "end_positions": ep, "weight": w})
  np.testing.assert_allclose(got, want, rtol=1e-5)


def test_layerwise_lr_decay_scales_updates_by_depth():
  import jax
  import jax.numpy as jnp
  params = {"bert": {"embeddings": {"w": jnp.ones(2)},
                     "encoder": {"layer_0": {"w": jnp.ones(2)},
                                 "layer_1": {"w": jnp.ones(2)}},
                     "pooler": {"kernel": jnp.ones(2)}},
            "classifier": {"kernel": jnp.ones(2)}}
  scales = params_lib.lr_depth_scales(params, num_layers=2, decay=0.5)
  assert float(scales["classifier"]["kernel"]) == 1.0
  assert float(scales["bert"]["pooler"]["kernel"]) == 1.0
  assert float(scales["bert"]["encoder"]["layer_1"]["w"]) == 0.5
  assert float(scales["bert"]["encoder"]["layer_0"]["w"]) == 0.25
  assert float(scales["bert"]["embeddings"]["w"]) == 0.125
  c = finetune_glue.get_config("task=mrpc,init=none")
  c.train.warmup_proportion = 0.0
  c.train.weight_decay = 0.0
  grads = jax.tree_util.tree_map(jnp.ones_like, params)
  plain, _ = optim.create_finetune_optimizer(c.train, 10, 2)
  c.train.layerwise_lr_decay = 0.5
  decayed, _ = optim.create_finetune_optimizer(c.train, 10, 2)
  u0, _ = plain.update(grads, plain.init(params), params)
  u1, _ = decayed.update(grads, decayed.init(params), params)
  ratio = jax.tree_util.tree_map(lambda a, b: b / a, u0, u1)
  np.testing.assert_allclose(ratio["bert"]["embeddings"]["w"], 0.125, rtol=1e-6)
  np.testing.assert_allclose(ratio["classifier"]["kernel"], 1.0, rtol=1e-6)


def test_init_from_a_bert_jax_pretraining_checkpoint(tmp_path):
  """The encoder of a pretraining checkpoint (orbax, item 'state') becomes 'bert'."""
  import jax
  import optax
  from bert_jax import parallel
  from bert_jax.config import ModelConfig
  from bert_jax.models import BertForPreTraining
  from bert_jax.train import checkpoint, state as state_lib
  c = tiny(finetune_glue.get_config("task=mrpc,init=none,size=tiny"))
  mesh = parallel.create_mesh(c.mesh)
  dummy = np.zeros((1, 8), np.int32)
  st, _ = state_lib.create_sharded_state(BertForPreTraining(ModelConfig.from_config(c.model)), optax.sgd(0.1),
                                         (dummy, dummy, dummy), jax.random.PRNGKey(3),
                                         mesh, parallel.logical_axis_rules(c.mesh))
  ck = checkpoint.Checkpointer(str(tmp_path / "checkpoints"))
  ck.save(7, st, {"epoch": 0, "batch": 0})
  ck.close()
  loaded = finetune_source.load_bert_jax_workdir(str(tmp_path))
  assert set(loaded) == {"bert"}
  np.testing.assert_array_equal(
      loaded["bert"]["embeddings"]["word_embeddings"]["embedding"],
      np.asarray(st.params["bert"]["embeddings"]["word_embeddings"]["embedding"]))
