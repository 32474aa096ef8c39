"""Checkpoints in and out (issue 7): HF and Google TF imports, HF export, bad input.

References are independent: `transformers` run on the source (or exported) files, and
for the TF import an HF model filled from the same random weights through its own
module attributes. Errors must name what did not match and leave no output dir.
"""
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
import torch
import transformers

from bert_jax import convert
from bert_jax.convert import formats, tf as tf_lib, tf_bundle
from bert_jax.models import BertForPreTraining
from tests.test_parity_hf import minilm_dir, padded_batch, rel_err

torch.manual_seed(0)
DATA = os.path.join(os.path.dirname(__file__), "data")

SMALL = dict(vocab_size=113, hidden_size=48, num_hidden_layers=2, num_attention_heads=4,
             intermediate_size=80, max_position_embeddings=32, type_vocab_size=2,
             hidden_act="gelu_new", hidden_dropout_prob=0.0,
             attention_probs_dropout_prob=0.0)


def random_hf(cls=transformers.BertForPreTraining, **overrides):
  cfg = transformers.BertConfig(**{**SMALL, **overrides})
  model = cls(cfg).eval()
  with torch.no_grad():  # non-zero biases and LayerNorms: a mapping slip cannot hide
    for p in model.parameters():
      p.add_(0.05 * torch.randn_like(p))
  return model


def hf_outputs(model, ids, types, mask):
  with torch.no_grad():
    return model(input_ids=torch.tensor(ids), token_type_ids=torch.tensor(types),
                 attention_mask=torch.tensor(mask))


def our_outputs(loaded_or_params, cfg, ids, types, mask):
  params = getattr(loaded_or_params, "params", loaded_or_params)
  return BertForPreTraining(cfg).apply({"params": params}, ids, types, mask)


def assert_pretraining_match(params, cfg, hf_model, vocab, length=20):
  ids, types, mask = padded_batch(vocab, length=length)
  ref = hf_outputs(hf_model, ids, types, mask)
  out = our_outputs(params, cfg, ids, types, mask)
  assert rel_err(out["mlm_logits"], ref.prediction_logits.numpy()) <= 1e-5
  assert rel_err(out["nsp_logits"], ref.seq_relationship_logits.numpy()) <= 1e-5


def assert_no_output(dst):
  assert not os.path.exists(dst)
  parent = os.path.dirname(dst)
  assert not [f for f in os.listdir(parent) if ".tmp-" in f], os.listdir(parent)


def assert_trees_equal(a, b):
  fa, fb = dict(convert.common.flatten(a)), dict(convert.common.flatten(b))
  assert sorted(fa) == sorted(fb)
  for k in fa:
    np.testing.assert_array_equal(np.asarray(fa[k]), np.asarray(fb[k]), err_msg=k)


# ------------------------------------------------------------------- HF import


def test_minilm_dir_import_matches_transformers(tmp_path):
  path = minilm_dir()
  loaded = convert.load(str(path))
  assert loaded.format == "hf" and loaded.source.endswith("model.safetensors")
  assert loaded.initialised == ["mlm", "nsp"]  # a BertModel: heads fresh, and said so
  mlm = loaded.params["mlm"]  # drawn as models/bert.py initialises (2-sigma truncated)
  assert abs(mlm["transform"]["kernel"].std() / (0.02 * 0.8796) - 1) < 0.02
  assert not mlm["output_bias"].any() and (mlm["transform_layer_norm"]["scale"] == 1).all()
  assert "vocab.txt" in loaded.summary()["tokenizer_files"]
  cfg = loaded.model_config
  assert (cfg.num_layers, cfg.hidden_size, cfg.num_heads) == (6, 384, 12)
  ref_model = transformers.BertModel.from_pretrained(
      str(path), local_files_only=True, attn_implementation="eager").eval()
  ids, types, mask = padded_batch(cfg.vocab_size, length=24)
  ref = hf_outputs(ref_model, ids, types, mask)
  out = our_outputs(loaded, cfg, ids, types, mask)
  assert rel_err(out["sequence_output"], ref.last_hidden_state.numpy()) <= 1e-5
  assert rel_err(out["pooled_output"], ref.pooler_output.numpy()) <= 1e-5


@pytest.mark.parametrize("weights", ["safetensors", "pytorch_model.bin", "bfloat16"])
def test_hf_pretraining_dir_import_and_export_round_trip(tmp_path, weights):
  model = random_hf()
  src = tmp_path / "hf_src"
  if weights == "bfloat16":  # numpy has no bfloat16: read through torch
    model = model.to(torch.bfloat16).float()  # the reference holds the rounded weights
    model.to(torch.bfloat16).save_pretrained(str(src))
    model = model.float()
  elif weights == "safetensors":
    model.save_pretrained(str(src))  # drops the tied decoder weight
  else:  # the older torch pickle format
    src.mkdir()
    model.config.to_json_file(str(src / "config.json"))
    torch.save(model.state_dict(), str(src / "pytorch_model.bin"))
  (src / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
                                          + [f"t{i}" for i in range(5, 113)]) + "\n")

  # HF -> bert_jax params dir (orbax) -> reload: logits equal transformers'.
  summary = convert.convert(str(src), str(tmp_path / "ours"))
  assert summary["to"] == "bert_jax" and summary["initialised"] == []
  assert "vocab.txt" in summary["written"]
  loaded = convert.load(str(tmp_path / "ours"))
  assert loaded.format == "bert_jax"
  cfg = loaded.model_config
  assert cfg.hidden_act == "gelu_new" and cfg.num_heads == 4
  assert_pretraining_match(loaded.params, cfg, model, 113)

  # bert_jax -> HF: transformers loads every weight and reproduces our logits.
  convert.convert(str(tmp_path / "ours"), str(tmp_path / "exported"))
  exported = str(tmp_path / "exported")
  assert sorted(os.listdir(exported)) == [  # the tokenizer as transformers loads it
      "config.json", "model.safetensors", "special_tokens_map.json", "tokenizer.json",
      "tokenizer_config.json", "vocab.txt"]
  back, info = transformers.BertForPreTraining.from_pretrained(
      exported, local_files_only=True, attn_implementation="eager",
      output_loading_info=True)
  assert not info["missing_keys"] and not info["unexpected_keys"], info
  assert_pretraining_match(loaded.params, cfg, back.eval(), 113)
  base, info = transformers.BertModel.from_pretrained(
      exported, local_files_only=True, attn_implementation="eager",
      output_loading_info=True)
  assert not info["missing_keys"], info
  ids, types, mask = padded_batch(113, length=20)
  out = our_outputs(loaded, cfg, ids, types, mask)
  assert rel_err(out["sequence_output"],
                 hf_outputs(base.eval(), ids, types, mask).last_hidden_state) <= 1e-5
  # ... and reading the export back is exact.
  assert_trees_equal(convert.load(exported).params, loaded.params)


def test_workdir_export_to_hf(tmp_path):
  """A training workdir (orbax TrainState + config.json) exports to HF exactly."""
  from configs import pretrain as pretrain_config
  from bert_jax.config import ModelConfig
  from bert_jax.train import checkpoint, optim, state as state_lib, trainer

  config = pretrain_config.get_config("tiny,vocab=101,seq=16,steps=10")
  config.model.num_layers = 1
  config.model.hidden_size, config.model.intermediate_size = 32, 48
  config.model.hidden_act = "gelu_tanh"
  config.model.num_heads, config.model.max_position_embeddings = 4, 32
  workdir = str(tmp_path / "workdir")
  os.makedirs(os.path.join(workdir, "tokenizer"))
  with open(os.path.join(workdir, "tokenizer", "spm.model"), "wb") as f:
    f.write(b"sentencepiece model bytes")
  trainer.check_and_write_config(workdir, config, resuming=False)
  tx, _ = optim.create_optimizer(config.train)
  hf_model = random_hf(vocab_size=101, num_hidden_layers=1, hidden_size=32,
                       intermediate_size=48)
  model_cfg = ModelConfig.from_config(config.model)
  params = jax.tree_util.tree_map(jax.numpy.asarray, convert.params_from_hf(
      hf_model.state_dict(), model_cfg))
  state = state_lib.TrainState.create(apply_fn=None, params=params, tx=tx)
  ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"))
  ckpt.save(7, state, {"position": 0})
  ckpt.close()
  # a tokenizer that cannot be read: no export, nothing written
  with pytest.raises(convert.ConversionError, match=r"cannot read the tokenizer .*spm.model"):
    convert.convert(workdir, str(tmp_path / "refused"))
  assert not os.path.exists(tmp_path / "refused")
  vocab = os.path.join(workdir, "tokenizer", "vocab.txt")
  with open(vocab, "w") as f:
    f.write("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
                      + [f"w{i}" for i in range(96)]) + "\n")
  config.data.tokenizer_path = vocab
  trainer.check_and_write_config(workdir, config, resuming=False)

  dst = str(tmp_path / "hf")
  summary = convert.convert(workdir, dst)
  assert summary["format"] == "workdir" and summary["to"] == "hf"
  assert summary["source"].endswith(os.path.join("checkpoints", "7"))
  assert {"vocab.txt", "tokenizer.json", "tokenizer_config.json"} <= set(os.listdir(dst))
  params = jax.device_get(state.params)
  back = transformers.BertForPreTraining.from_pretrained(
      dst, local_files_only=True, attn_implementation="eager").eval()
  assert back.config.hidden_act == "gelu_pytorch_tanh"
  assert_pretraining_match(params, model_cfg, back, 101, length=16)
  assert_trees_equal(convert.load(dst).params, params)


# ------------------------------------------------------------------- TF import


def tf_variables(rng, c, heads=True):
  """Random weights under google-research/bert's variable names, [in, out] kernels."""
  h, i = c["hidden_size"], c["intermediate_size"]
  r = lambda *shape: rng.normal(0, 0.1, shape).astype(np.float32)
  v = {"bert/embeddings/word_embeddings": r(c["vocab_size"], h),
       "bert/embeddings/position_embeddings": r(c["max_position_embeddings"], h),
       "bert/embeddings/token_type_embeddings": r(c["type_vocab_size"], h),
       "bert/embeddings/LayerNorm/gamma": 1 + r(h),
       "bert/embeddings/LayerNorm/beta": r(h),
       "bert/pooler/dense/kernel": r(h, h), "bert/pooler/dense/bias": r(h)}
  for n in range(c["num_hidden_layers"]):
    p = f"bert/encoder/layer_{n}/"
    for name in ("query", "key", "value"):
      v[p + f"attention/self/{name}/kernel"] = r(h, h)
      v[p + f"attention/self/{name}/bias"] = r(h)
    for sub, (din, dout) in {"attention/output": (h, h), "intermediate": (h, i),
                             "output": (i, h)}.items():
      v[p + f"{sub}/dense/kernel"], v[p + f"{sub}/dense/bias"] = r(din, dout), r(dout)
    for sub in ("attention/output", "output"):
      v[p + f"{sub}/LayerNorm/gamma"], v[p + f"{sub}/LayerNorm/beta"] = 1 + r(h), r(h)
  if heads:
    v.update({"cls/predictions/transform/dense/kernel": r(h, h),
              "cls/predictions/transform/dense/bias": r(h),
              "cls/predictions/transform/LayerNorm/gamma": 1 + r(h),
              "cls/predictions/transform/LayerNorm/beta": r(h),
              "cls/predictions/output_bias": r(c["vocab_size"]),
              "cls/seq_relationship/output_weights": r(2, h),
              "cls/seq_relationship/output_bias": r(2)})
  return v


def hf_from_tf_variables(v, c):
  """The HF model holding the same weights, set through its own module attributes."""
  model = transformers.BertForPreTraining(transformers.BertConfig(**c)).eval()
  t = lambda name, transpose=False: torch.tensor(v[name].T if transpose else v[name])
  with torch.no_grad():
    e = model.bert.embeddings
    e.word_embeddings.weight.copy_(t("bert/embeddings/word_embeddings"))
    e.position_embeddings.weight.copy_(t("bert/embeddings/position_embeddings"))
    e.token_type_embeddings.weight.copy_(t("bert/embeddings/token_type_embeddings"))
    e.LayerNorm.weight.copy_(t("bert/embeddings/LayerNorm/gamma"))
    e.LayerNorm.bias.copy_(t("bert/embeddings/LayerNorm/beta"))

    def dense(module, prefix):
      module.weight.copy_(t(prefix + "/kernel", transpose=True))
      module.bias.copy_(t(prefix + "/bias"))

    def norm(module, prefix):
      module.weight.copy_(t(prefix + "/gamma"))
      module.bias.copy_(t(prefix + "/beta"))

    for n, layer in enumerate(model.bert.encoder.layer):
      p = f"bert/encoder/layer_{n}/"
      dense(layer.attention.self.query, p + "attention/self/query")
      dense(layer.attention.self.key, p + "attention/self/key")
      dense(layer.attention.self.value, p + "attention/self/value")
      dense(layer.attention.output.dense, p + "attention/output/dense")
      norm(layer.attention.output.LayerNorm, p + "attention/output/LayerNorm")
      dense(layer.intermediate.dense, p + "intermediate/dense")
      dense(layer.output.dense, p + "output/dense")
      norm(layer.output.LayerNorm, p + "output/LayerNorm")
    dense(model.bert.pooler.dense, "bert/pooler/dense")
    dense(model.cls.predictions.transform.dense, "cls/predictions/transform/dense")
    norm(model.cls.predictions.transform.LayerNorm, "cls/predictions/transform/LayerNorm")
    model.cls.predictions.bias.copy_(t("cls/predictions/output_bias"))
    model.cls.seq_relationship.weight.copy_(t("cls/seq_relationship/output_weights"))
    model.cls.seq_relationship.bias.copy_(t("cls/seq_relationship/output_bias"))
  return model


def write_tf_release(directory, variables, c):
  tf = pytest.importorskip("tensorflow", reason="the tf extra is not installed")
  os.makedirs(directory)
  names = sorted(variables)
  tf.raw_ops.SaveV2(prefix=os.path.join(directory, "bert_model.ckpt"),
                    tensor_names=names, shape_and_slices=[""] * len(names),
                    tensors=[tf.constant(variables[n]) for n in names])
  google = {k: c[k] for k in ("vocab_size", "hidden_size", "num_hidden_layers",
                              "num_attention_heads", "intermediate_size", "hidden_act",
                              "max_position_embeddings", "type_vocab_size")}
  with open(os.path.join(directory, "bert_config.json"), "w") as f:
    json.dump({**google, "hidden_dropout_prob": 0.1, "initializer_range": 0.02,
               "attention_probs_dropout_prob": 0.1}, f)
  with open(os.path.join(directory, "vocab.txt"), "w") as f:
    f.write("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
                      + [f"w{i}" for i in range(c["vocab_size"] - 5)]) + "\n")


def test_google_tf_checkpoint_matches_hf_model_of_same_weights(tmp_path):
  c = {**SMALL, "hidden_act": "gelu"}
  v = tf_variables(np.random.default_rng(0), c)
  # What the original run_pretraining.py also saves: skipped, and reported.
  v["global_step"] = np.array(1000, np.int64)
  v["bert/pooler/dense/kernel/adam_m"] = np.zeros((48, 48), np.float32)
  release = str(tmp_path / "uncased_L-2_H-48_A-4")
  write_tf_release(release, v, c)
  assert convert.detect(release) == "tf"
  dst = str(tmp_path / "ours")
  tf = pytest.importorskip("tensorflow")
  prefix = os.path.join(release, "bert_model.ckpt")
  reader = tf.train.load_checkpoint(prefix)
  ours = tf_bundle.read_checkpoint(prefix)  # the reader convert uses, without TF
  assert sorted(ours) == sorted(reader.get_variable_to_shape_map())
  for name, value in ours.items():
    np.testing.assert_array_equal(value, reader.get_tensor(name), err_msg=name)
  summary = convert.convert(release, dst)
  assert summary["skipped"] == ["bert/pooler/dense/kernel/adam_m", "global_step"]
  assert summary["initialised"] == [] and "vocab.txt" in os.listdir(dst)
  loaded = convert.load(dst)
  # modeling.py's gelu is the tanh approximation, HF's gelu_new.
  assert loaded.model_config.hidden_act == "gelu_new"
  c["hidden_act"] = "gelu_new"
  assert_pretraining_match(loaded.params, loaded.model_config,
                           hf_from_tf_variables(v, c), c["vocab_size"])
  # Exported to HF, the Google weights load into transformers unchanged.
  convert.convert(dst, str(tmp_path / "hf"))
  back = transformers.BertForPreTraining.from_pretrained(
      str(tmp_path / "hf"), local_files_only=True, attn_implementation="eager").eval()
  assert_pretraining_match(loaded.params, loaded.model_config, back, c["vocab_size"])


def test_tf_bundle_reader_on_a_file_tensorflow_wrote():
  """The built-in reader (no TensorFlow) against tests/data/make_tf_bundle.py's tensors."""
  from tests.data.make_tf_bundle import expected_tensors
  got = tf_bundle.read_checkpoint(os.path.join(DATA, "tf_bundle", "model.ckpt"))
  want = expected_tensors()
  assert sorted(got) == sorted(want)  # 305 tensors: the index spans several blocks
  for name, value in want.items():
    assert got[name].dtype == value.dtype and got[name].shape == value.shape, name
    np.testing.assert_array_equal(got[name], value, err_msg=name)


def test_tf_names_without_tensorflow():
  """The renaming alone (no TensorFlow): unknown names listed, optimizer slots skipped."""
  c = dict(SMALL, num_hidden_layers=1)
  v = tf_variables(np.random.default_rng(1), c, heads=False)
  v["bert/encoder/layer_0/attention/self/query/adam_v"] = np.zeros(1, np.float32)
  sd, skipped = tf_lib.hf_state_dict_from_tf(v)
  assert skipped == ["bert/encoder/layer_0/attention/self/query/adam_v"]
  np.testing.assert_array_equal(sd["bert.encoder.layer.0.intermediate.dense.weight"],
                                v["bert/encoder/layer_0/intermediate/dense/kernel"].T)
  v["bert/encoder/layer_0/attention/self/rotary/kernel"] = np.zeros(1, np.float32)
  v["cls/squad/output_weights"] = np.zeros(1, np.float32)
  with pytest.raises(convert.ConversionError) as e:
    tf_lib.hf_state_dict_from_tf(v)
  assert ("2 variables" in str(e.value) and "cls/squad/output_weights" in str(e.value)
          and "attention/self/rotary/kernel" in str(e.value))


# ------------------------------------------------------------------- bad input


@pytest.fixture
def hf_dir(tmp_path):
  model = random_hf(transformers.BertModel, num_hidden_layers=1)
  path = tmp_path / "hf_src"
  model.save_pretrained(str(path))
  (path / "vocab.txt").write_text("\n".join(f"t{i}" for i in range(113)) + "\n")
  return path


def test_config_weights_size_mismatch_lists_arrays(hf_dir, tmp_path):
  cfg = json.loads((hf_dir / "config.json").read_text())
  cfg["intermediate_size"] = 96  # the weights have 80
  (hf_dir / "config.json").write_text(json.dumps(cfg))
  dst = str(tmp_path / "out")
  with pytest.raises(convert.ConversionError) as e:
    convert.convert(str(hf_dir), dst)
  msg = str(e.value)
  assert "model.safetensors" in msg and "config.json" in msg and "3 arrays" in msg, msg
  assert ("bert/encoder/layer_0/intermediate/kernel: HF state dict shape (48, 80), "
          "config implies (48, 96)") in msg
  assert "bert/encoder/layer_0/output/kernel" in msg
  assert_no_output(dst)


def test_unknown_and_missing_weight_names(hf_dir, tmp_path):
  from safetensors.numpy import load_file, save_file
  sd = load_file(str(hf_dir / "model.safetensors"))
  extra = dict(sd, **{"encoder.layer.0.attention.self.rotary.weight": np.zeros(3, np.float32)})
  save_file(extra, str(hf_dir / "model.safetensors"))
  dst = str(tmp_path / "out")
  with pytest.raises(convert.ConversionError, match="encoder.layer.0.attention.self.rotary.weight"):
    convert.convert(str(hf_dir), dst)
  sd.pop("encoder.layer.0.output.dense.bias")
  save_file(sd, str(hf_dir / "model.safetensors"))
  with pytest.raises(convert.ConversionError, match="lacks 'encoder.layer.0.output.dense.bias'"):
    convert.convert(str(hf_dir), dst)
  assert_no_output(dst)


def test_missing_files_are_named(hf_dir, tmp_path):
  dst = str(tmp_path / "out")
  os.remove(hf_dir / "model.safetensors")
  with pytest.raises(convert.ConversionError, match="cannot tell the format .*found: config.json"):
    convert.convert(str(hf_dir), dst)
  with pytest.raises(convert.ConversionError,
                     match="neither model.safetensors nor pytorch_model.bin"):
    convert.convert(str(hf_dir), dst, src_format="hf")
  with pytest.raises(convert.ConversionError, match="does not exist"):
    convert.convert(str(tmp_path / "nowhere"), dst)
  release = tmp_path / "release"
  release.mkdir()
  (release / "bert_model.ckpt.index").write_bytes(b"")
  with pytest.raises(convert.ConversionError, match="no bert_config.json"):
    convert.convert(str(release), dst)
  (release / "bert_config.json").write_text(json.dumps(dict(SMALL, num_hidden_layers=1)))
  with pytest.raises(convert.ConversionError, match="not a TensorFlow checkpoint index"):
    convert.convert(str(release), dst)
  import shutil
  shutil.copy(os.path.join(DATA, "tf_bundle", "model.ckpt.index"),
              release / "bert_model.ckpt.index")
  with pytest.raises(convert.ConversionError,
                     match="missing file .*bert_model.ckpt.data-00000-of-00001"):
    convert.convert(str(release), dst)
  assert_no_output(dst)


def test_failed_write_leaves_no_partial_dir(hf_dir, tmp_path, monkeypatch):
  dst = str(tmp_path / "out")

  def fail(*args):
    raise OSError("disk full")

  monkeypatch.setattr(formats.storage, "copy_file", fail)  # after the weights are written
  with pytest.raises(OSError, match="disk full"):
    convert.convert(str(hf_dir), dst, dst_format="hf")
  assert_no_output(dst)
  os.makedirs(dst)
  (tmp_path / "out" / "keep.txt").write_text("x")
  with pytest.raises(convert.ConversionError, match="already exists and is not empty"):
    convert.convert(str(hf_dir), dst)


def test_cli(hf_dir, tmp_path):
  dst = str(tmp_path / "out")
  run = lambda *a: subprocess.run([sys.executable, "-m", "bert_jax.convert", *a],
                                  capture_output=True, text=True, timeout=300)
  r = run(f"--src={hf_dir}", f"--dst={dst}")
  assert r.returncode == 0, r.stderr
  assert "read hf:" in r.stdout and "freshly initialised (absent in the source): mlm, nsp" in r.stdout
  assert json.loads(r.stdout.strip().splitlines()[-1])["to"] == "bert_jax"
  r = run(f"--src={tmp_path / 'nowhere'}", f"--dst={tmp_path / 'out2'}")
  assert r.returncode == 2 and "does not exist" in r.stderr
  assert_no_output(str(tmp_path / "out2"))


def test_help_and_readme_agree_google_checkpoints_need_no_tensorflow():
  """The built-in reader (tf_bundle.py) reads Google's checkpoints; TF is a fallback."""
  r = subprocess.run([sys.executable, "-m", "bert_jax.convert", "--help"],
                     capture_output=True, text=True, timeout=300)
  google = [line for line in r.stdout.splitlines() if "Google" in line]
  assert google and "needs the tf extra" not in r.stdout
  assert "without TensorFlow" in r.stdout and "fallback" in r.stdout
  readme = open(os.path.join(os.path.dirname(__file__), "..", "README.md"),
                encoding="utf-8").read()
  assert "without TensorFlow" in readme and "falls back to TensorFlow" in readme


# ------------------------------------------------------- architecture switches


def switched_config(**switches):
  from bert_jax.config import ModelConfig
  return ModelConfig(vocab_size=113, hidden_size=48, num_layers=2, num_heads=4,
                     intermediate_size=64, max_position_embeddings=32, **switches)


def test_untied_decoder_exports_to_hf_and_back(tmp_path):
  import flax.linen as nn
  cfg = switched_config(tie_word_embeddings=False, hidden_act="relu")
  ids = np.zeros((1, 4), np.int32)
  params = nn.meta.unbox(BertForPreTraining(cfg).init(jax.random.PRNGKey(0), ids)["params"])
  rng = np.random.default_rng(0)  # non-zero biases and norms: no slip hides behind zeros
  params = jax.tree_util.tree_map(lambda x: np.asarray(x) + 0.05 * rng.normal(
      size=x.shape).astype(np.float32), params)
  dst = str(tmp_path / "hf")
  formats.save(formats.Loaded(params, cfg, "test", "bert_jax"), dst, "hf")
  back, info = transformers.BertForPreTraining.from_pretrained(
      dst, local_files_only=True, attn_implementation="eager", output_loading_info=True)
  assert not info["missing_keys"] and not info["unexpected_keys"], info
  assert back.config.tie_word_embeddings is False
  assert_pretraining_match(params, cfg, back.eval(), 113)
  loaded = convert.load(dst)
  assert loaded.model_config == cfg
  assert_trees_equal(loaded.params, params)


@pytest.mark.parametrize("field,value", [
    ("norm_placement", "pre"), ("norm_type", "rmsnorm"), ("position_embedding", "rotary"),
    ("position_embedding", "none"), ("hidden_act", "geglu"), ("hidden_act", "swiglu"),
    ("use_bias", False), ("embedding_size", 16), ("share_layers", "all"),
    ("share_layers", "attention"), ("share_layers", "ffn"), ("qk_norm", True)])
def test_export_of_what_hf_bert_cannot_express_names_the_field(tmp_path, field, value):
  cfg = switched_config(**{field: value})
  dst = str(tmp_path / "hf")
  with pytest.raises(convert.ConversionError,
                     match=rf"^model\.{field}={value!r} cannot be exported to HF BertModel"):
    formats.save(formats.Loaded({}, cfg, "test", "bert_jax"), dst, "hf")
  assert_no_output(dst)


def test_a_new_switch_exports_only_at_its_bert_default(tmp_path):
  """A field no table names (a switch added later) exports at its default and is
  refused by name elsewhere; every existing field is in at most one table."""
  import dataclasses

  import flax.linen as nn

  from bert_jax import config as config_lib
  tables = (set(config_lib.HF_CONFIG_FIELDS), set(config_lib.HOW_COMPUTED_FIELDS))
  fields = {f.name: f for f in dataclasses.fields(config_lib.ModelConfig)}
  assert set(config_lib.HF_VALUES) <= tables[0]
  for name, f in fields.items():
    classified = sum(name in t for t in tables)
    assert classified == 1 or (classified == 0 and f.default is not dataclasses.MISSING), name
  assert set().union(*tables) <= set(fields)

  base = switched_config()
  Switched = dataclasses.make_dataclass(  # noqa: N806
      "Switched", [("new_switch", bool, False)], bases=(config_lib.ModelConfig,),
      frozen=True)
  cfg = Switched(**base.to_dict())
  assert config_lib.not_in_hf_bert(cfg) == []
  params = nn.meta.unbox(BertForPreTraining(cfg).init(
      jax.random.PRNGKey(0), np.zeros((1, 4), np.int32))["params"])
  dst = str(tmp_path / "default")
  formats.save(formats.Loaded(params, cfg, "test", "bert_jax"), dst, "hf")
  assert convert.load(dst).model_config == base

  on = Switched(**base.to_dict(), new_switch=True)
  assert config_lib.not_in_hf_bert(on) == ["model.new_switch=True"]
  dst = str(tmp_path / "on")
  with pytest.raises(convert.ConversionError,
                     match=r"^model\.new_switch=True cannot be exported to HF BertModel"):
    formats.save(formats.Loaded(params, on, "test", "bert_jax"), dst, "hf")
  assert_no_output(dst)
  # How-computed fields export at any value; embedding_size at the hidden size too.
  assert config_lib.not_in_hf_bert(base.replace(
      scan_layers=True, remat_policy="full", dtype="bfloat16", fused_qkv=True,
      attention_impl="xla", init_scheme="depth_scaled", embedding_size=48)) == []
