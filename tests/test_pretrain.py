"""The real pretraining job, end to end on a small local corpus, and its bad-input errors."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from bert_jax import config_checks
from bert_jax.data import corpora, tokenizers
from bert_jax.train import pretrain, pretrain_steps, trainer
from configs import pretrain as pretrain_config
from tests.helpers import write_embedded_corpus

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory):
  """120 real documents from the embedded corpus, written in the BERT text format."""
  return write_embedded_corpus(tmp_path_factory.mktemp("corpus") / "docs.txt", 120)


def small_config(corpus, steps=30):
  c = pretrain_config.get_config("tiny,vocab=600,seq=64,batch=8,steps=%d" % steps)
  c.model.hidden_size = 32
  c.model.num_heads = 2
  c.model.intermediate_size = 64
  c.model.num_layers = 1
  c.data.corpus = corpus
  c.data.max_predictions_per_seq = 10
  c.data.dupe_factor = 1
  c.data.eval_fraction = 0.1
  c.data.tokenizer_input_sentence_size = 20000
  c.train.learning_rate = 3e-3
  c.train.log_every_steps = 5
  c.train.eval_every_steps = 15
  c.train.eval_batches = 4
  c.train.checkpoint_every_steps = 15
  return c


def read_metrics(workdir):
  with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
    return [json.loads(line) for line in f]


def test_pretraining_runs_logs_checkpoints_and_resumes(corpus_file, tmp_path):
  workdir = str(tmp_path / "run")
  config = small_config(corpus_file, steps=30)
  result = pretrain.train_and_evaluate(config, workdir)

  rows = read_metrics(workdir)
  train = [r for r in rows if "train/loss" in r]
  assert [r["step"] for r in train] == [5, 10, 15, 20, 25, 30]
  assert train[-1]["train/loss"] < train[0]["train/loss"]  # it learns
  evals = [r for r in rows if "eval/mlm_accuracy" in r]
  assert [r["step"] for r in evals] == [15, 30]
  assert 0.0 <= result["eval"]["mlm_accuracy"] <= 1.0
  assert len(result["fill_mask"]) == 5
  with open(os.path.join(workdir, "config.json"), encoding="utf-8") as f:
    assert json.load(f)["model"]["hidden_size"] == 32
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["15", "30"]
  assert os.path.exists(os.path.join(workdir, "tokenizer", "spm.model"))

  # Same command with more steps: resumes at step 30 (no retraining from scratch).
  config = small_config(corpus_file, steps=40)
  pretrain.train_and_evaluate(config, workdir)
  steps = [r["step"] for r in read_metrics(workdir) if "train/loss" in r]
  assert steps == [5, 10, 15, 20, 25, 30, 35, 40]


def test_loss_matches_huggingface_loss():
  """Our MLM+NSP loss equals HF BertForPreTraining's loss on the same logits/labels."""
  import torch
  import transformers
  from bert_jax.convert import params_from_hf
  from bert_jax.models import BertForPreTraining
  from bert_jax.train import losses
  from tests.test_parity_hf import our_config

  hf_cfg = transformers.BertConfig(vocab_size=97, hidden_size=32, num_hidden_layers=1,
                                   num_attention_heads=2, intermediate_size=48,
                                   hidden_dropout_prob=0.0,
                                   attention_probs_dropout_prob=0.0)
  hf = transformers.BertForPreTraining(hf_cfg).eval()
  cfg = our_config(hf_cfg)
  params = params_from_hf(hf.state_dict(), cfg)
  rng = np.random.default_rng(1)
  ids = rng.integers(5, 97, (4, 16))
  positions = np.array([[1, 4, 0], [2, 3, 9], [5, 0, 0], [7, 8, 11]])
  weights = np.array([[1, 1, 0], [1, 1, 1], [1, 0, 0], [1, 1, 1]], np.float32)
  labels = rng.integers(5, 97, (4, 3))
  nsp = np.array([0, 1, 1, 0])
  hf_labels = np.full_like(ids, -100)
  for b in range(4):
    for p, w, l in zip(positions[b], weights[b], labels[b]):
      if w:
        hf_labels[b, p] = l
  with torch.no_grad():
    ref = hf(input_ids=torch.tensor(ids), labels=torch.tensor(hf_labels),
             next_sentence_label=torch.tensor(nsp)).loss.item()
  out = BertForPreTraining(cfg).apply({"params": params}, ids,
                                      masked_lm_positions=positions)
  batch = {"masked_lm_ids": labels, "masked_lm_weights": weights,
           "next_sentence_label": nsp}
  ours = float(losses.metrics_from_sums(losses.pretraining_sums(out, batch))["loss"])
  assert abs(ours - ref) / abs(ref) <= 1e-5


@pytest.mark.parametrize("override,message", [
    ("--config.train.learnin_rate=1e-4", "'train.learnin_rate' does not exist"),
    ("--config.train.learning_rate=abc", "--config.train.learning_rate=abc"),
])
def test_bad_command_line_override_names_the_field(tmp_path, override, message):
  proc = subprocess.run(
      [sys.executable, "-m", "bert_jax.main", "--config=configs/pretrain.py:tiny",
       override, f"--workdir={tmp_path}"],
      cwd=REPO, capture_output=True, text=True, timeout=120,
      env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert proc.returncode != 0
  assert message in proc.stderr
  assert not os.listdir(tmp_path)  # nothing started


def test_unknown_size_names_the_argument():
  with pytest.raises(ValueError, match="size='huge'"):
    pretrain_config.get_config("huge")


@pytest.mark.parametrize("field,value,match", [
    ("data.max_predictions_per_seq", 200, r"data\.max_predictions_per_seq=200"),
    ("data.masked_lm_prob", 1.5, r"data\.masked_lm_prob=1\.5"),
    ("model.num_heads", 3, r"model\.num_heads=3"),
    ("model.hidden_act", "swish", r"model\.hidden_act='swish'"),
    ("data.max_seq_length", 1024, r"data\.max_seq_length=1024"),
    ("data.masking_budget", "tokens", r"data\.masking_budget='tokens'"),
    ("data.random_replacement", "all", r"data\.random_replacement='all'"),
])
def test_bad_values_name_the_field(field, value, match):
  config = pretrain_config.get_config("tiny")
  section, name = field.split(".")
  config[section][name] = value
  with pytest.raises(ValueError, match=match):
    config_checks.check_pretrain_config(config)


def test_the_loader_masks_as_the_data_fields_say():
  """data.masking_budget / mask_unk reach the loader: rows of [UNK] between [CLS] and
  [SEP] are masked only with mask_unk, and then for the budget of all tokens."""
  from configs import finetune_common  # pylint: disable=g-import-not-at-top
  tok = tokenizers.load_tokenizer(os.path.join(finetune_common.minilm_dir(), "vocab.txt"))
  config = pretrain_config.get_config("tiny")
  config.train.global_batch_size = 4
  rows, length = 4, 50  # budgets 7 (48 maskable) and 8 (50 tokens)
  ids = np.full((rows, length), tok.unk_id, np.int32)
  ids[:, 0], ids[:, -1] = tok.cls_id, tok.sep_id
  examples = {"input_ids": ids, "token_type_ids": np.zeros_like(ids),
              "attention_mask": np.ones_like(ids),
              "next_sentence_label": np.zeros(rows, np.int32)}
  data = pretrain.PretrainingData(tok, examples, examples, 0)

  def predictions(**fields):
    config.data.update(fields)
    loader = pretrain.make_loader(examples, data, config, seed=0, shuffle=False,
                                  repeat=False)
    return next(iter(loader))["masked_lm_weights"].sum(1)

  assert (predictions(mask_unk=False) == 0).all()
  np.testing.assert_array_equal(predictions(mask_unk=True), 7)
  np.testing.assert_array_equal(predictions(masking_budget="all_tokens"), 8)


def test_empty_and_non_utf8_corpus_stop_before_training(tmp_path):
  empty = tmp_path / "empty.txt"
  empty.write_text("\n\n", encoding="utf-8")
  with pytest.raises(ValueError, match="empty.txt"):
    pretrain.train_and_evaluate(small_config(str(empty)), str(tmp_path / "w1"))
  latin1 = tmp_path / "latin1.txt"
  latin1.write_bytes("First line.\nCaf\xe9 au lait.\n".encode("latin-1"))
  with pytest.raises(ValueError, match="latin1.txt"):
    pretrain.train_and_evaluate(small_config(str(latin1)), str(tmp_path / "w2"))
  assert not os.path.exists(tmp_path / "w2" / "checkpoints")


def test_tokenizer_vocab_mismatch_names_both(corpus_file, tmp_path):
  docs = corpora.read_text_corpus(corpus_file)
  tok_path = str(tmp_path / "spm.model")
  tokenizers.SentencePieceTokenizer.train(docs, tok_path, vocab_size=500,
                                          input_sentence_size=20000)
  config = small_config(corpus_file)  # model.vocab_size = 600
  config.data.tokenizer_path = tok_path
  with pytest.raises(ValueError, match=r"500 pieces.*model\.vocab_size=600"):
    pretrain.train_and_evaluate(config, str(tmp_path / "w"))


def test_nan_loss_is_a_clear_error():
  class Bar:
    def update(self, step, loss):
      return 0.0
  metrics = {"loss": np.float32("nan"), "mlm_loss": np.float32("nan"),
             "nsp_loss": np.float32(0.7)}
  with pytest.raises(FloatingPointError, match="step 12"):
    trainer.log_train(None, Bar(), 12, metrics)


def test_objective_none_drops_the_nsp_loss_from_the_gradient():
  """RoBERTa-style packing (data.objective='none'): NSP gets no gradient, MLM does."""
  import flax.linen as nn
  import jax
  from bert_jax.config import ModelConfig
  from bert_jax.models import BertForPreTraining
  c = pretrain_config.get_config("tiny,vocab=100,seq=16")
  c.model.hidden_size, c.model.num_heads, c.model.intermediate_size = 16, 2, 32
  model = BertForPreTraining(ModelConfig.from_config(c.model))
  rng = np.random.default_rng(0)
  ids = rng.integers(5, 100, (4, 16)).astype(np.int32)
  batch = {"input_ids": ids, "token_type_ids": np.zeros_like(ids),
           "attention_mask": np.ones_like(ids),
           "masked_lm_positions": rng.integers(1, 16, (4, 3)).astype(np.int32),
           "masked_lm_ids": rng.integers(5, 100, (4, 3)).astype(np.int32),
           "masked_lm_weights": np.ones((4, 3), np.float32),
           "next_sentence_label": np.array([0, 1, 0, 1], np.int32)}
  params = nn.meta.unbox(model.init(jax.random.PRNGKey(0), ids, batch["token_type_ids"],
                                    batch["attention_mask"])["params"])
  key = jax.random.PRNGKey(1)
  grads = jax.jit(pretrain_steps.grads_and_sums, static_argnames=("apply_fn", "use_nsp"))
  with_nsp, _ = grads(model.apply, params, batch, key, use_nsp=True)
  without, _ = grads(model.apply, params, batch, key, use_nsp=False)
  assert float(np.abs(with_nsp["nsp"]["kernel"]).max()) > 0
  assert float(np.abs(without["nsp"]["kernel"]).max()) == 0.0
  assert float(np.abs(without["mlm"]["output_bias"]).max()) > 0


@pytest.mark.parametrize("impl", ["rbg", "unsafe_rbg"])
def test_dropout_prng_impl_drops_the_configured_share(impl):
  """train.dropout_prng_impl: the rbg keys drive flax dropout at the configured rate,
  fold_in(step) gives fresh masks, and the deterministic path never sees the key."""
  import flax.linen as nn
  import jax
  key = pretrain_steps.dropout_key(0, impl)
  ones = np.ones((200_000,), np.float32)

  def kept(step):
    out = nn.Dropout(0.3).apply({}, ones, deterministic=False,
                                rngs={"dropout": jax.random.fold_in(key, step)})
    return np.asarray(out) != 0

  first, second = kept(1), kept(2)
  assert abs(1 - first.mean() - 0.3) < 0.005 and abs(1 - second.mean() - 0.3) < 0.005
  assert 0.4 < (first == second).mean() < 0.7  # independent masks agree on ~0.58
  with pytest.raises(ValueError, match="train.dropout_prng_impl"):
    pretrain_steps.dropout_key(0, "philox")


def test_auto_dropout_prng_is_rbg_on_tpu_only():
  """`auto` (the default) keeps CPU and GPU runs on threefry, bitwise the key they had."""
  import jax
  assert pretrain_config.get_config("tiny").train.dropout_prng_impl == "auto"
  assert [pretrain_steps.resolve_prng_impl("auto", p) for p in ("cpu", "gpu", "tpu")] == [
      "threefry2x32", "threefry2x32", "rbg"]
  assert pretrain_steps.resolve_prng_impl("unsafe_rbg", "cpu") == "unsafe_rbg"
  np.testing.assert_array_equal(pretrain_steps.dropout_key(3, "auto", "cpu"),
                                jax.random.split(jax.random.PRNGKey(3))[1])


def test_finished_run_keeps_its_figures_and_config(corpus_file, tmp_path, capsys):
  """Rerunning a finished command prints the stored figures and writes nothing; a
  rerun that fails validation or changes a setting leaves config.json as it was."""
  workdir = str(tmp_path / "run")
  first = pretrain.train_and_evaluate(small_config(corpus_file, steps=4), workdir)
  files = {name: open(os.path.join(workdir, name), "rb").read()
           for name in ("final_eval.json", "config.json", "metrics.jsonl")}
  capsys.readouterr()
  again = pretrain.train_and_evaluate(small_config(corpus_file, steps=4), workdir)
  assert again["eval"] == first["eval"] and np.isfinite(again["eval"]["mlm_accuracy"])
  out = capsys.readouterr().out
  assert f"MLM accuracy {first['eval']['mlm_accuracy']:.4f}" in out and "nan" not in out
  for name, content in files.items():
    assert open(os.path.join(workdir, name), "rb").read() == content, name

  missing = small_config(str(tmp_path / "no_such_corpus.txt"), steps=8)
  with pytest.raises((FileNotFoundError, ValueError), match="no_such_corpus"):
    pretrain.train_and_evaluate(missing, workdir)
  changed = small_config(corpus_file, steps=8)
  changed.train.learning_rate = 1e-3
  with pytest.raises(ValueError, match=r"train\.learning_rate: 0\.003 -> 0\.001"):
    pretrain.train_and_evaluate(changed, workdir)
  assert open(os.path.join(workdir, "config.json"), "rb").read() == files["config.json"]


def test_config_error_is_one_line_with_exit_code_2(tmp_path):
  proc = subprocess.run(
      [sys.executable, "-m", "bert_jax.main", "--config=configs/pretrain.py:huge",
       f"--workdir={tmp_path}"], cwd=REPO, capture_output=True, text=True, timeout=120,
      env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines() == [
      "error: config argument size='huge' is not one of "
      "['tiny', 'mini', 'small', 'medium', 'base', 'large']"]
  verbose = subprocess.run(
      [sys.executable, "-m", "bert_jax.main", "--config=configs/pretrain.py:huge",
       f"--workdir={tmp_path}", "--verbose"], cwd=REPO, capture_output=True, text=True,
      timeout=120, env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert verbose.returncode == 2 and "Traceback" in verbose.stderr


def test_init_from_starts_a_fresh_run_from_another_runs_params(corpus_file, tmp_path):
  from bert_jax.train import checkpoint as checkpoint_lib
  first = str(tmp_path / "phase1")
  pretrain.train_and_evaluate(small_config(corpus_file, steps=4), first)
  second = small_config(corpus_file, steps=1)
  second.train.init_from = first
  second.train.learning_rate = 1e-12   # one step that leaves the params where they were
  pretrain.train_and_evaluate(second, str(tmp_path / "phase2"))
  want = checkpoint_lib.restore_params(os.path.join(first, "checkpoints"))
  got, step = checkpoint_lib.restore_params(os.path.join(tmp_path, "phase2", "checkpoints"),
                                            with_step=True)
  assert step == 1
  np.testing.assert_allclose(got["bert"]["encoder"]["layer_0"]["output"]["kernel"],
                             want["bert"]["encoder"]["layer_0"]["output"]["kernel"],
                             atol=1e-6)
