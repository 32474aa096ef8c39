"""Chinese: whole-word masking over jieba words, in a short pretraining run (in-memory
path) and in `data.prepare`'s static masks; the segmenter's errors."""
import numpy as np
import pytest

from bert_jax.data import grain_loader, masking, prepare, wordpiece
from bert_jax.train import pretrain
from configs import pretrain as pretrain_config

WORDS = ("北京 上海 中国 首都 经济 发展 非常 迅速 学生 图书馆 认真 学习 春天 公园 散步 "
         "我们 今天 天气 不错 自然 语言 处理 模型 研究 大学 老师 朋友 喜欢 音乐 电影").split()


def chinese_corpus(path, docs=40, seed=0):
  """Documents of Chinese sentences (one per line, a blank line between documents)."""
  rng = np.random.default_rng(seed)
  lines = []
  for _ in range(docs):
    for _ in range(int(rng.integers(3, 7))):
      lines.append("".join(rng.choice(WORDS, int(rng.integers(4, 12)))) + "。")
    lines.append("")
  path.write_text("\n".join(lines) + "\n", encoding="utf-8")
  return str(path)


def char_vocab(path):
  chars = sorted({c for w in WORDS for c in w})
  path.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "。"] + chars)
                  + "\n", encoding="utf-8")
  return str(path), 6 + len(chars)


def jieba_words(tokens):
  """Position groups of the jieba words over each run of CJK single-character pieces."""
  import jieba
  groups, run = [], []
  for pos, t in enumerate(tokens + [""]):
    if len(t) == 1 and "\u4e00" <= t <= "\u9fff":
      run.append(pos)
      continue
    if run:
      start = 0
      for word in jieba.lcut("".join(tokens[p] for p in run)):
        groups.append(run[start:start + len(word)])
        start += len(word)
      run = []
  return groups


def test_pretraining_with_jieba_whole_word_masking_masks_whole_words(tmp_path):
  vocab, size = char_vocab(tmp_path / "vocab.txt")
  c = pretrain_config.get_config(f"tiny,vocab={size},seq=32,batch=8,steps=3")
  m = c.model
  m.hidden_size, m.num_heads, m.intermediate_size, m.num_layers = 32, 2, 64, 1
  c.data.corpus = chinese_corpus(tmp_path / "zh.txt")
  c.data.tokenizer_path = vocab
  c.data.whole_word_masking, c.data.whole_word_segmenter = True, "jieba"
  c.data.max_predictions_per_seq, c.data.dupe_factor = 8, 1
  c.train.eval_every_steps, c.train.eval_batches, c.train.checkpoint_every_steps = 3, 1, 3
  c.fill_mask_text = "我们今天[MASK]学习。"
  result = pretrain.train_and_evaluate(c, str(tmp_path / "run"))
  assert len(result["fill_mask"]) == 5

  data = pretrain.prepare_data(c, str(tmp_path / "run"))
  tok = wordpiece.WordPieceTokenizer.load(vocab)
  loader = pretrain.make_loader(data.train_examples, data, c, seed=0, shuffle=True,
                                repeat=False)
  assert sum(masked_whole_words(batch, tok) for batch, _ in zip(loader, range(4))) > 10


def masked_whole_words(batch, tok) -> int:
  """Asserts every jieba word is masked whole or not at all; counts multi-character
  words masked."""
  count = 0
  for row in range(len(batch["input_ids"])):
    ids = batch["input_ids"][row].copy()
    weights = batch["masked_lm_weights"][row] > 0
    positions = batch["masked_lm_positions"][row][weights]
    ids[positions] = batch["masked_lm_ids"][row][weights]   # the original text
    masked = set(positions.tolist())
    for word in jieba_words([tok.id_to_piece(i) for i in ids]):
      hit = masked & set(word)
      assert not hit or hit == set(word), (word, sorted(masked))
      count += bool(hit) and len(word) > 1
  return count


def test_prepare_with_static_jieba_masks_masks_whole_words(tmp_path):
  vocab, _ = char_vocab(tmp_path / "vocab.txt")
  out = str(tmp_path / "prepared")
  prepare.prepare(prepare.parse_args([
      f"--corpus={chinese_corpus(tmp_path / 'zh.txt')}", f"--output_dir={out}",
      f"--tokenizer={vocab}", "--max_seq_length=32", "--max_predictions_per_seq=8",
      "--masking=static", "--whole_word_masking=true", "--whole_word_segmenter=jieba",
      "--num_workers=1", "--dupe_factor=1"]))
  tok = wordpiece.WordPieceTokenizer.load(vocab)
  split = grain_loader.PreparedSplit(out)
  masker = masking.MaskingConfig(max_predictions_per_seq=8, whole_word_masking=True,
                                 whole_word_segmenter="jieba").bind(tok)
  batch = next(iter(grain_loader.GrainPretrainingLoader(split, 32, 0, masker)))
  assert masked_whole_words(batch, tok) > 10


def test_segmenter_needs_whole_word_masking_and_a_known_name():
  with pytest.raises(ValueError, match=r"config field data.whole_word_segmenter='jieba' "
                     r"needs data.whole_word_masking=True"):
    masking.MaskingConfig(whole_word_masking=False, whole_word_segmenter="jieba")
  with pytest.raises(ValueError, match=r"whole_word_segmenter='ltp' is not one of"):
    masking.MaskingConfig(whole_word_masking=True, whole_word_segmenter="ltp")
