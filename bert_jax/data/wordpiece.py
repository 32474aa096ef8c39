"""WordPiece tokenizer over a Google/HF ``vocab.txt``, via the ``tokenizers`` library.

Same interface as ``tokenizers.SentencePieceTokenizer`` (``encode``, ``encode_batch``,
``decode``, ``id_to_piece``, ``word_start_mask``, the special ids), so example
creation, masking and the loader take either one. Basic tokenisation is BERT's:
text cleanup, CJK characters split off, punctuation split, lower-casing and accent
stripping for uncased vocabularies; then greedy longest-match WordPiece with
``##`` continuation pieces, and ``[UNK]`` for words over 100 characters.

The special ids come from the vocabulary (``[PAD] [UNK] [CLS] [SEP] [MASK]``, e.g.
0, 100, 101, 102, 103 in Google's English vocabularies). ``[MASK]`` and the other
special strings inside raw text are tokenised as plain text, never as the special
id, as with ``SentencePieceTokenizer`` (a corpus line cannot inject a separator);
HF's ``BertTokenizerFast`` maps them to the special ids instead.

A piece begins a word unless it starts with ``##``; CJK characters are words of
their own (the basic tokeniser splits them), so whole-word masking works for them.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tokenizers as hf_tokenizers
from tokenizers import decoders, models, normalizers, pre_tokenizers

from bert_jax import storage
from bert_jax.data.pieces import SPECIAL_TOKENS, lookup_word_starts

CONTINUATION_PREFIX = "##"
MAX_INPUT_CHARS_PER_WORD = 100  # as google-research/bert tokenization.py
VOCAB_FILENAME = "vocab.txt"


def read_vocab(path: str) -> dict[str, int]:
  """``{token: id}`` from a ``vocab.txt`` (one token per line, id = line number)."""
  if not storage.path(path).is_file():
    raise FileNotFoundError(f"WordPiece vocabulary {path} does not exist")
  vocab: dict[str, int] = {}
  with storage.open_text(path) as f:
    for line_number, line in enumerate(f):
      token = line.rstrip("\r\n")
      if not token:
        raise ValueError(f"{path}:{line_number + 1}: expected a token, found an empty line")
      if token in vocab:
        raise ValueError(f"{path}:{line_number + 1}: token {token!r} already at id "
                         f"{vocab[token]}")
      vocab[token] = line_number
  missing = [t for t in SPECIAL_TOKENS if t not in vocab]
  if missing:
    raise ValueError(f"WordPiece vocabulary {path}: expected special tokens "
                     f"{SPECIAL_TOKENS}, missing {missing}")
  return vocab


def _lowercase_from_files(vocab_path: str, vocab: dict[str, int]) -> bool:
  """``do_lower_case`` of a ``tokenizer_config.json`` beside the vocab, else inferred.

  Inferred: a vocabulary with no upper-case letter outside ``[...]`` tokens is uncased.
  """
  config = storage.path(vocab_path).parent / "tokenizer_config.json"
  if config.is_file():
    value = storage.read_json(config).get("do_lower_case")
    if isinstance(value, bool):
      return value
  return not any(any(c.isupper() for c in token) for token in vocab
                 if not (token.startswith("[") and token.endswith("]")))


class WordPieceTokenizer:
  """BERT's WordPiece tokenizer; ids are the line numbers of ``vocab.txt``."""

  def __init__(self, vocab: dict[str, int], lowercase: bool, source: str = "<memory>"):
    self._source = source
    self.lowercase = lowercase
    self._pieces = [""] * len(vocab)
    for token, i in vocab.items():
      self._pieces[i] = token
    tok = hf_tokenizers.Tokenizer(models.WordPiece(
        vocab, unk_token="[UNK]", max_input_chars_per_word=MAX_INPUT_CHARS_PER_WORD))
    tok.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=lowercase,
        lowercase=lowercase)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix=CONTINUATION_PREFIX)
    self._tok = tok
    self._special = {t: vocab[t] for t in SPECIAL_TOKENS}
    self._word_start_table = np.array(
        [not p.startswith(CONTINUATION_PREFIX) for p in self._pieces], dtype=bool)

  @classmethod
  def load(cls, vocab_path: str, lowercase: bool | None = None) -> WordPieceTokenizer:
    """Loads ``vocab.txt``; ``lowercase=None`` reads or infers it (module docstring).

    ``vocab_path`` may also be the directory holding ``vocab.txt``.
    """
    if storage.path(vocab_path).is_dir():
      vocab_path = storage.join(vocab_path, VOCAB_FILENAME)
    vocab = read_vocab(vocab_path)
    if lowercase is None:
      lowercase = _lowercase_from_files(vocab_path, vocab)
    return cls(vocab, lowercase=lowercase, source=vocab_path)

  # -- vocabulary ---------------------------------------------------------------

  @property
  def source(self) -> str:
    return self._source

  @property
  def vocab_size(self) -> int:
    return len(self._pieces)

  @property
  def pad_id(self) -> int:
    return self._special["[PAD]"]

  @property
  def unk_id(self) -> int:
    return self._special["[UNK]"]

  @property
  def cls_id(self) -> int:
    return self._special["[CLS]"]

  @property
  def sep_id(self) -> int:
    return self._special["[SEP]"]

  @property
  def mask_id(self) -> int:
    return self._special["[MASK]"]

  @property
  def first_normal_id(self) -> int:
    """Random replacements are drawn from here on: just after the last special id.

    Google's vocabularies keep ``[unusedN]`` pieces after ``[MASK]``; they stay in
    the draw range, as in the original script (which drew from the whole vocab).
    """
    return max(self._special.values()) + 1

  @property
  def special_ids(self) -> tuple[int, ...]:
    """Ids never masked nor predicted: ``[PAD] [UNK] [CLS] [SEP] [MASK]``."""
    return tuple(sorted(self._special.values()))

  @property
  def word_start_table(self) -> np.ndarray:
    """[vocab] bool: False exactly for ``##`` continuation pieces (read-only copy)."""
    table = self._word_start_table.copy()
    table.flags.writeable = False
    return table

  def id_to_piece(self, i: int) -> str:
    return self._pieces[int(i)]

  # -- text <-> ids -------------------------------------------------------------

  def encode(self, text: str) -> list[int]:
    return self._tok.encode(text, add_special_tokens=False).ids

  def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
    """``encode`` over many texts (the Rust library's parallel batch call)."""
    return [e.ids for e in self._tok.encode_batch(list(texts), add_special_tokens=False)]

  def decode(self, ids: Sequence[int] | np.ndarray) -> str:
    return self._tok.decode([int(i) for i in ids], skip_special_tokens=False)

  def word_start_mask(self, ids: np.ndarray) -> np.ndarray:
    """Same shape as ``ids``, True where a piece begins a word (not ``##``)."""
    return lookup_word_starts(self._word_start_table, ids)
