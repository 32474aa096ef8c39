"""Word segmentation for whole-word masking of Chinese (`data.whole_word_segmenter`).

WordPiece splits every CJK character into a piece of its own and both tokenizers
mark each as a word start, so plain whole-word masking masks Chinese one character at
a time. With `whole_word_segmenter='jieba'` the characters are grouped into the words
`jieba` finds (as Chinese-BERT-wwm, Cui et al. 2019, grouped them with LTP): a piece
that begins inside a jieba word is no word start, so 北京 is masked whole, 80/10/10
drawn once for the word.

Segmentation runs over the token ids of each packed row (`word_starts`), on every run
of consecutive pieces made of CJK characters; a run ends at any other piece (Latin
text, punctuation, [SEP]) and, for SentencePiece, at a piece that begins with '▁'. It
is called where word starts are looked up for masking (`masking.apply_masking`), so the
in-memory loader, the grain loader and `data.prepare`'s static masks all use it.
Cost: a Python pass over the CJK pieces of each batch plus jieba itself (~1 MB/s).
"""

from __future__ import annotations

import unicodedata

import numpy as np

SEGMENTERS = ("none", "jieba")
_WORD_BOUNDARY = "\u2581"
_CONTINUATION = "##"


def _is_cjk(ch: str) -> bool:
  return unicodedata.name(ch, "").startswith("CJK ")


class JiebaWords:
  """Word starts of a tokenizer's rows from jieba's segmentation of the CJK runs."""

  def __init__(self, tokenizer):
    import jieba  # noqa: F401  (fail early, naming the package, if it is missing)
    self._text = []       # CJK characters of each piece ('' if it has others)
    self._opens = []      # the piece begins with '▁' (SentencePiece: a space before)
    for i in range(tokenizer.vocab_size):
      piece = tokenizer.id_to_piece(i)
      opens = piece.startswith(_WORD_BOUNDARY)
      text = piece.lstrip(_WORD_BOUNDARY)
      if text.startswith(_CONTINUATION) and len(text) > len(_CONTINUATION):
        text = text[len(_CONTINUATION):]
      cjk = bool(text) and all(_is_cjk(c) for c in text)
      self._text.append(text if cjk else "")
      self._opens.append(opens)
    self._is_cjk = np.array([bool(t) for t in self._text])

  def __getstate__(self):  # picklable for loader worker processes
    return self.__dict__

  def word_starts(self, input_ids: np.ndarray, word_start: np.ndarray) -> np.ndarray:
    """`word_start` [B, L] with pieces that begin inside a jieba word set False."""
    import jieba
    out = np.array(word_start, dtype=bool, copy=True)
    cjk = self._is_cjk[input_ids]
    for b in np.flatnonzero(cjk.any(1)):
      row = input_ids[b]
      run: list[int] = []
      for pos in list(np.flatnonzero(cjk[b])) + [-1]:
        if run and (pos != run[-1] + 1 or pos < 0 or self._opens[row[pos]]):
          self._mark(out[b], row, run, jieba)
          run = []
        if pos >= 0:
          run.append(pos)

    return out

  def _mark(self, out_row, row, run, jieba) -> None:
    texts = [self._text[row[p]] for p in run]
    starts, offset = set(), 0
    for word in jieba.cut("".join(texts), HMM=True):
      starts.add(offset)
      offset += len(word)
    offset = 0
    for p, text in zip(run, texts):
      if offset not in starts:
        out_row[p] = False
      offset += len(text)


def segmenter(name: str, tokenizer, field: str = "data.whole_word_segmenter"):
  """The segmenter called `name` for `tokenizer`, or None for 'none'."""
  if name == "none":
    return None
  if name == "jieba":
    try:
      return JiebaWords(tokenizer)
    except ImportError:
      raise ValueError(f"config field {field}='jieba' needs the jieba package "
                       "(pip install jieba)") from None
  raise ValueError(f"config field {field}={name!r} is not one of {SEGMENTERS}")
