"""HF exports carry a tokenizer that transformers loads and that gives our ids:
WordPiece and SentencePiece workdirs, 500 texts with Chinese; refusals are clear."""
import json
import os
import types

import jax
import numpy as np
import pytest

from bert_jax import convert
from bert_jax.config import ModelConfig
from bert_jax.convert import hf_tokenizer
from bert_jax.data import corpora, tokenizers, wordpiece
from bert_jax.models import BertForPreTraining
from bert_jax.train import checkpoint
from configs import finetune_common

CHINESE = ("北京是中国的首都人口超过两千万我爱自然语言处理模型很好用今天天气不错我们去公园散步吧"
           "上海的经济发展非常迅速学生们在图书馆里认真学习春天来了花都开了")


def texts_500(seed=0):
  """English sentences of the embedded corpus, Chinese, mixed and odd-whitespace text."""
  rng = np.random.default_rng(seed)
  english = [s for doc in corpora.embedded_corpus()[:60] for s in doc][:200]
  out = list(english)
  for _ in range(200):
    n = int(rng.integers(2, 40))
    out.append("".join(rng.choice(list(CHINESE), n)) + str(rng.choice(["。", "，", "！", ""])))
  for i in range(100):
    out.append(f"{english[i][:30]} {''.join(rng.choice(list(CHINESE), 5))}  \t{i} 🙂 é")
  return out


def write_workdir(path, tokenizer_path, vocab_size):
  """A pretraining workdir: config.json naming the tokenizer, one orbax checkpoint."""
  cfg = ModelConfig(vocab_size=vocab_size, hidden_size=16, num_heads=2,
                    intermediate_size=32, num_layers=1)
  ids = np.zeros((1, 4), np.int32)
  import flax.linen as nn
  params = nn.meta.unbox(BertForPreTraining(cfg).init(jax.random.PRNGKey(0), ids, ids,
                                                      ids)["params"])
  os.makedirs(path, exist_ok=True)
  with open(os.path.join(path, "config.json"), "w") as f:
    json.dump({"model": cfg.to_dict(), "data": {"tokenizer_path": tokenizer_path}}, f)
  ck = checkpoint.Checkpointer(os.path.join(path, "checkpoints"))
  ck.save(1, types.SimpleNamespace(step=np.int32(1), params=params, opt_state={}), {})
  ck.close()
  return str(path)


def hf_ids(directory, texts):
  from transformers import AutoTokenizer
  tok = AutoTokenizer.from_pretrained(directory)
  return tok, [tok(t, add_special_tokens=False)["input_ids"] for t in texts]


@pytest.mark.parametrize("model_type", ["unigram", "bpe"])
def test_sentencepiece_workdir_exports_a_tokenizer_with_our_ids(tmp_path, model_type):
  texts = texts_500()
  docs = [[t] for t in texts_500(seed=1)]
  spm = tokenizers.SentencePieceTokenizer.train(docs, str(tmp_path / "spm.model"), 700,
                                                model_type=model_type)
  workdir = write_workdir(tmp_path / "run", str(tmp_path / "spm.model"), spm.vocab_size)
  convert.convert(workdir, str(tmp_path / "hf"), dst_format="hf")
  tok, got = hf_ids(str(tmp_path / "hf"), texts)
  assert got == [spm.encode(t) for t in texts]
  assert type(tok).__name__ != "BertTokenizer"
  assert tok("你好 world")["input_ids"][0] == tokenizers.CLS_ID
  unk = sum(i == tokenizers.UNK_ID for ids in got for i in ids)
  assert unk == 0   # byte fallback: no [UNK], unlike a WordPiece reading of the vocab


def test_wordpiece_workdir_exports_a_bert_tokenizer_with_our_ids(tmp_path):
  texts = texts_500()
  vocab_file = tmp_path / "vocab.txt"   # MiniLM's English vocab + the Chinese characters
  english = open(os.path.join(finetune_common.minilm_dir(), "vocab.txt"),
                 encoding="utf-8").read().split("\n")
  english = [t for t in english if t]
  vocab_file.write_text("\n".join(english + sorted(set(CHINESE) - set(english))) + "\n",
                        encoding="utf-8")
  ours = wordpiece.WordPieceTokenizer.load(str(vocab_file))
  workdir = write_workdir(tmp_path / "run", str(vocab_file), ours.vocab_size)
  convert.convert(workdir, str(tmp_path / "hf"), dst_format="hf")
  tok, got = hf_ids(str(tmp_path / "hf"), texts)
  assert got == [ours.encode(t) for t in texts]
  assert "Bert" in type(tok).__name__
  flat = [i for ids in got for i in ids]
  assert sum(i == ours.unk_id for i in flat) < len(flat) / 10   # not all [UNK]
  chinese_ids = got[250]
  assert len(chinese_ids) == len([c for c in texts[250] if c in CHINESE]) + (
      texts[250][-1] in "。，！")   # each CJK character is a piece of its own


def test_a_tokenizer_that_cannot_be_reproduced_is_refused(tmp_path):
  docs = [[t] for t in texts_500(seed=1)]
  tokenizers.SentencePieceTokenizer.train(docs, str(tmp_path / "spm.model"), 700,
                                          model_type="char")
  with pytest.raises(convert.ConversionError, match=r"is a char model; only unigram and "
                     r"bpe models export"):
    hf_tokenizer.sentencepiece_files(str(tmp_path), str(tmp_path / "spm.model"), 512)
  with pytest.raises(convert.ConversionError, match=r"gives other ids than it on 'x'"):
    hf_tokenizer.check_same_ids(types.SimpleNamespace(
        encode=lambda t, add_special_tokens: types.SimpleNamespace(ids=[1])),
        lambda t: [2], ["x"], "m.model")
