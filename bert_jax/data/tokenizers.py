"""SentencePiece tokenizer with BERT's special tokens at fixed ids.

The model is trained lossless (identity normalisation, whitespace kept, byte
fallback for characters outside the vocabulary), so ``decode(encode(text)) == text``
for any text. The special tokens take the first ids::

    [PAD]=0  [UNK]=1  [CLS]=2  [SEP]=3  [MASK]=4   normal pieces from 5

``word_start_mask`` tells which pieces begin a word, for whole-word masking; it also
marks every CJK ideograph, kana and hangul piece as a word start, so languages
written without spaces still get word boundaries (google-research/bert #780).
"""
from __future__ import annotations

import hashlib
import io
import logging
import os
import unicodedata
from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import sentencepiece as spm

from bert_jax import storage

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
PAD_ID, UNK_ID, CLS_ID, SEP_ID, MASK_ID = range(len(SPECIAL_TOKENS))
FIRST_NORMAL_ID = len(SPECIAL_TOKENS)

MODEL_FILENAME = "spm.model"
OPTIONS_FILENAME = "spm.json"
_WORD_BOUNDARY = "\u2581"  # '▁', SentencePiece's whitespace marker
# UTF-8 lead bytes of 3-byte characters in U+3000..U+DFFF (CJK punctuation, kana,
# ideographs, hangul, ...): a byte-fallback piece with one of them starts a character
# that, like CJK characters in the vocabulary, counts as a word of its own.
_CJK_LEAD_BYTES = range(0xE3, 0xEE)
_WHITESPACE_BYTES = frozenset(b"\t\n\v\f\r")

logger = logging.getLogger(__name__)


def _is_cjk_char(char: str) -> bool:
  """Whether ``char`` is a CJK ideograph, kana or hangul (scripts without spaces)."""
  name = unicodedata.name(char, "")
  return name.startswith(("CJK ", "HIRAGANA", "KATAKANA", "HANGUL"))


def _byte_piece_starts_word(piece: str) -> bool:
  """Byte-fallback pieces ``<0xAB>``: CJK lead bytes and whitespace start words."""
  value = int(piece[1:-1], 16)
  return value in _CJK_LEAD_BYTES or value in _WHITESPACE_BYTES


class SentencePieceTokenizer:
  """A SentencePiece model whose first ids are ``SPECIAL_TOKENS``."""

  def __init__(self, processor: spm.SentencePieceProcessor, source: str = "<memory>"):
    self._sp = processor
    self._source = source
    self._check_special_ids()
    self._word_start_table = self._build_word_start_table()

  # -- construction -------------------------------------------------------------

  @classmethod
  def train(
      cls,
      documents: Iterable[Sequence[str]],
      model_path: str,
      vocab_size: int,
      model_type: str = "unigram",
      input_sentence_size: int = 1_000_000,
      seed: int = 0,
  ) -> SentencePieceTokenizer:
    """Trains a lossless model on the sentences of ``documents``.

    Args:
      documents: the corpus (documents of sentences).
      model_path: where the ``.model`` file is written (atomically).
      vocab_size: pieces in the vocabulary, special tokens and the 256
        byte-fallback pieces included.
      model_type: ``'unigram'`` or ``'bpe'`` (also ``'char'``, ``'word'``).
      input_sentence_size: at most this many sentences, sampled at random, are
        used for training.
      seed: seeds SentencePiece's sampling and shuffling.
    """
    spm.set_random_generator_seed(seed)
    model = io.BytesIO()
    try:
      spm.SentencePieceTrainer.train(
          sentence_iterator=_sentences(documents),
          model_writer=model,
          vocab_size=vocab_size,
          model_type=model_type,
          input_sentence_size=input_sentence_size,
          shuffle_input_sentence=True,
          normalization_rule_name="identity",
          remove_extra_whitespaces=False,
          byte_fallback=True,
          pad_id=PAD_ID,
          unk_id=UNK_ID,
          bos_id=-1,
          eos_id=-1,
          pad_piece=SPECIAL_TOKENS[PAD_ID],
          unk_piece=SPECIAL_TOKENS[UNK_ID],
          control_symbols=list(SPECIAL_TOKENS[CLS_ID:]),
          num_threads=os.cpu_count() or 1,
          minloglevel=2,
      )
    except RuntimeError as e:
      raise ValueError(
          f"Training SentencePiece (vocab_size={vocab_size}, model_type={model_type!r}) "
          f"for {model_path} failed: {e}") from e
    storage.write_bytes_atomic(model_path, model.getvalue())
    return cls.load(model_path)

  @classmethod
  def load(cls, path: storage.PathLike) -> SentencePieceTokenizer:
    """Loads a ``.model`` file written by ``train`` (local or remote: read as bytes)."""
    model = storage.path(path)
    if not model.is_file():
      raise FileNotFoundError(f"SentencePiece model {path} does not exist")
    processor = spm.SentencePieceProcessor()
    processor.LoadFromSerializedProto(model.read_bytes())
    return cls(processor, source=os.fspath(path))

  def _check_special_ids(self) -> None:
    for expected_id, token in enumerate(SPECIAL_TOKENS):
      found = self._sp.id_to_piece(expected_id) if expected_id < self.vocab_size else None
      if found != token:
        raise ValueError(
            f"SentencePiece model {self._source}: expected {token} at id "
            f"{expected_id}, found {found!r}")

  def _build_word_start_table(self) -> np.ndarray:
    """[vocab] bool: whether each piece begins a word."""
    table = np.zeros(self.vocab_size, dtype=bool)
    for i in range(self.vocab_size):
      piece = self._sp.id_to_piece(i)
      if self._sp.is_control(i) or self._sp.is_unknown(i):
        table[i] = True
      elif self._sp.is_byte(i):
        table[i] = _byte_piece_starts_word(piece)
      else:
        table[i] = piece.startswith(_WORD_BOUNDARY) or _is_cjk_char(piece[0])
    return table

  # -- vocabulary ---------------------------------------------------------------

  @property
  def vocab_size(self) -> int:
    return self._sp.get_piece_size()

  @property
  def pad_id(self) -> int:
    return PAD_ID

  @property
  def unk_id(self) -> int:
    return UNK_ID

  @property
  def cls_id(self) -> int:
    return CLS_ID

  @property
  def sep_id(self) -> int:
    return SEP_ID

  @property
  def mask_id(self) -> int:
    return MASK_ID

  @property
  def first_normal_id(self) -> int:
    """Ids from here on are ordinary pieces (byte-fallback pieces included)."""
    return FIRST_NORMAL_ID

  @property
  def special_ids(self) -> tuple[int, ...]:
    """Ids never masked nor predicted: ``[PAD] [UNK] [CLS] [SEP] [MASK]``."""
    return tuple(range(len(SPECIAL_TOKENS)))

  @property
  def word_start_table(self) -> np.ndarray:
    """[vocab] bool lookup table behind ``word_start_mask`` (read-only copy)."""
    table = self._word_start_table.copy()
    table.flags.writeable = False
    return table

  def id_to_piece(self, i: int) -> str:
    return self._sp.id_to_piece(int(i))

  # -- text <-> ids -------------------------------------------------------------

  def encode(self, text: str) -> list[int]:
    return self._sp.encode(text)

  def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
    """``encode`` over many texts in one call (SentencePiece's native batching)."""
    return self._sp.encode(list(texts))

  def decode(self, ids: Sequence[int] | np.ndarray) -> str:
    return self._sp.decode([int(i) for i in ids])

  def word_start_mask(self, ids: np.ndarray) -> np.ndarray:
    """Same shape as ``ids``, True where a piece begins a word.

    A piece begins a word when it starts with '▁', is a special token, or starts
    with a CJK ideograph, kana or hangul; continuation pieces are False.
    """
    return lookup_word_starts(self._word_start_table, ids)


def lookup_word_starts(table: np.ndarray, ids: np.ndarray) -> np.ndarray:
  """``table[ids]`` for a [vocab] bool table, with a range check naming the bounds."""
  ids = np.asarray(ids)
  if ids.size and (ids.min() < 0 or ids.max() >= len(table)):
    raise ValueError(
        f"word_start_mask: expected ids in [0, {len(table)}), "
        f"found [{ids.min()}, {ids.max()}]")
  return table[ids]


def _sentences(documents: Iterable[Sequence[str]]) -> Iterator[str]:
  for doc in documents:
    yield from (s for s in doc if s)


def _corpus_fingerprint(documents: Iterable[Sequence[str]]) -> str:
  """SHA-256 of the sentences and document boundaries."""
  digest = hashlib.sha256()
  for doc in documents:
    for sentence in doc:
      digest.update(sentence.encode("utf-8"))
      digest.update(b"\n")
    digest.update(b"\n")
  return digest.hexdigest()


def get_or_train_tokenizer(
    documents: Sequence[Sequence[str]],
    directory: storage.PathLike,
    vocab_size: int,
    model_type: str,
    seed: int,
    input_sentence_size: int,
) -> SentencePieceTokenizer:
  """Loads ``directory/spm.model`` if it was trained with the same options, else trains.

  The options (and a fingerprint of the corpus) are kept in ``directory/spm.json``;
  when they differ, the model is retrained and both files are replaced atomically.
  Call it on one process per shared directory (or give each host its own).
  """
  model_path = storage.path(directory) / MODEL_FILENAME
  options_path = storage.path(directory) / OPTIONS_FILENAME
  options = {
      "vocab_size": vocab_size,
      "model_type": model_type,
      "seed": seed,
      "input_sentence_size": input_sentence_size,
      "special_tokens": list(SPECIAL_TOKENS),
      "byte_fallback": True,
      "corpus_sha256": _corpus_fingerprint(documents),
  }
  if _read_options(options_path) == options and model_path.is_file():
    logger.info("Reusing SentencePiece model %s", model_path)
    return SentencePieceTokenizer.load(model_path)
  logger.info("Training SentencePiece model %s (%s)", model_path, options)
  if options_path.exists():
    options_path.unlink()  # a crash below must not leave old options beside a new model
  tokenizer = SentencePieceTokenizer.train(
      documents, model_path, vocab_size=vocab_size, model_type=model_type,
      input_sentence_size=input_sentence_size, seed=seed)
  storage.write_json_atomic(options_path, options)
  return tokenizer


def _read_options(path: str) -> dict | None:
  """The options stored beside a cached model, or None if missing or unreadable."""
  try:
    return storage.read_json(path)
  except (OSError, ValueError):
    return None


def load_tokenizer(path: str, lowercase: bool | None = None):
  """A ``SentencePieceTokenizer`` (``.model``) or ``WordPieceTokenizer`` (``vocab.txt``).

  Args:
    path: a SentencePiece ``.model`` file, or a WordPiece ``vocab.txt`` (or the
      directory holding one).
    lowercase: WordPiece only: uncased basic tokenisation; None reads
      ``tokenizer_config.json`` beside the vocab or infers it from the vocab.
  """
  from bert_jax.data import wordpiece  # pylint: disable=import-outside-toplevel
  if path.endswith(".txt") or storage.path(path).is_dir():
    return wordpiece.WordPieceTokenizer.load(path, lowercase=lowercase)
  if path.endswith(".model"):
    return SentencePieceTokenizer.load(path)
  raise ValueError(f"Tokenizer {path}: expected a SentencePiece '.model' file or a WordPiece "
                   "'vocab.txt' (or its directory)")
