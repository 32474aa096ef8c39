"""Word boundaries exactly as BERT's basic tokenizer draws them.

google-research/bert `tokenization.py` `BasicTokenizer` (and transformers'
`BasicTokenizer`, and the `tokenizers` library's `BertNormalizer` + `BertPreTokenizer`
that fast BERT tokenizers run) cut text into words by these rules, in this order:

  1. cleaning: U+0000, U+FFFD and control characters (Unicode category C*, except
     tab, newline and carriage return) are dropped; they neither start nor end a word;
  2. whitespace (space, tab, newline, carriage return, category Zs) separates words;
  3. every CJK ideograph (`_is_chinese_char`'s blocks) is a word of its own;
  4. with lowercasing (the uncased models; accents are then stripped too), a character
     is lowercased and NFD-decomposed and its combining marks (Mn) dropped, which can
     turn it into punctuation (U+2260 '≠' becomes '=') or into nothing;
  5. every punctuation character is a word of its own: all ASCII characters that are
     neither letters nor digits (`$`, `+`, `=`, `^`, `|`, `~`, ... though Unicode does
     not class them P*) and everything of Unicode category P*.

`tag` (`bert_jax/inference/pipelines.py`) groups pieces into these words whatever the
tokenizer: a WordPiece vocabulary's pre-tokenizer draws the same boundaries, so each
word is its pieces; a SentencePiece model encodes each of these words on its own (so
`$1,200` is the four words `$ 1 , 200`, each with its word-start marker), which keeps
the words, and the tags per word, the same for both kinds of model.
"""

from __future__ import annotations

import unicodedata

# `_is_chinese_char` of google-research/bert tokenization.py: the CJK Unified
# Ideographs blocks and their extensions, and the compatibility ideographs.
CJK_RANGES = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
              (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF), (0xF900, 0xFAFF),
              (0x2F800, 0x2FA1F))


def is_cjk(ch: str) -> bool:
  cp = ord(ch)
  return any(lo <= cp <= hi for lo, hi in CJK_RANGES)


def is_whitespace(ch: str) -> bool:
  return ch in " \t\n\r" or unicodedata.category(ch) == "Zs"


def is_control(ch: str) -> bool:
  return ch not in "\t\n\r" and unicodedata.category(ch).startswith("C")


def is_punctuation(ch: str) -> bool:
  """BERT's `_is_punctuation`: non-alphanumeric ASCII, or Unicode category P*."""
  cp = ord(ch)
  if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
    return True
  return unicodedata.category(ch).startswith("P")


def _normalized(ch: str, lowercase: bool) -> str:
  """What the basic tokenizer makes of one character before splitting on punctuation."""
  if not lowercase:
    return ch
  return "".join(c for c in unicodedata.normalize("NFD", ch.lower())
                 if unicodedata.category(c) != "Mn")


def word_spans(text: str, lowercase: bool = False) -> list[tuple[int, int]]:
  """[start, end) character spans of the basic tokenizer's words of `text`.

  `lowercase`: the tokenizer lowercases and strips accents (uncased models), which
  decides rule 4 of the module docstring. A span never starts or ends on a dropped
  character (nor on a stripped accent) but may hold one inside ("ab\\x01cd" is one
  word), as the offsets of the `tokenizers` library's BERT pre-tokenizer.
  """
  spans: list[tuple[int, int]] = []
  start = end = None

  def close():
    nonlocal start, end
    if start is not None:
      spans.append((start, end))
    start = end = None

  for i, ch in enumerate(text):
    if ord(ch) in (0, 0xFFFD) or is_control(ch):
      continue
    if is_whitespace(ch):
      close()
      continue
    norm = _normalized(ch, lowercase)
    if not norm:                 # a combining mark: stripped with the accents
      continue
    if is_cjk(ch) or any(is_punctuation(c) for c in norm):
      close()
      spans.append((i, i + 1))
      continue
    if start is None:
      start = i
    end = i + 1
  close()
  return spans
