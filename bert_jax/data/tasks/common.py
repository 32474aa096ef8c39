"""Pieces every fine-tuning task shares: text decoding, tfds splits, WordPiece.

Tokenization for Google/HF checkpoints is WordPiece through the `tokenizers` library
(`BertWordPieceTokenizer`), whose fast tokenizer returns character offsets into the
original text (SQuAD answers and NER words are mapped through them).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from bert_jax import storage


def as_text(value: Any) -> str:
  """tfds mock data yields `str`, prepared ArrayRecord data `bytes`; both -> str."""
  if isinstance(value, np.ndarray) and value.shape == ():
    value = value.item()
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def tfds_split(name: str, split: str, data_dir: str | None = None,
               download: bool = False) -> Sequence[dict]:
  """`tfds.data_source(name, split=split)`; importing the builder modules first.

  Without `download` (config field `data.tfds_download`) nothing is fetched: a
  dataset not prepared in `data_dir` fails at once with a message naming the
  options (tfds would otherwise try to download it, minutes offline).
  """
  import tensorflow_datasets as tfds
  import tensorflow_datasets.question_answering.squad  # noqa: F401  (registers builders)
  import tensorflow_datasets.text.conll2003  # noqa: F401
  import tensorflow_datasets.text.glue  # noqa: F401
  try:
    return tfds.data_source(name, split=split, data_dir=data_dir or None,
                            download=download)
  except Exception as e:  # tfds raises several types for "not prepared"
    builder = tfds.builder(name, data_dir=data_dir or None)
    if download or builder.is_prepared():
      raise
    raise ValueError(
        f"tfds dataset {name!r} is not prepared in {builder.data_dir} (config field "
        f"data.data_dir={data_dir or ''!r}); use local files with "
        f"--config.data.source=local --config.data.data_dir=DIR (README, fine-tuning), "
        f"or let tfds download it with --config.data.tfds_download=True") from e


def check_nonempty(examples: Sequence, where: str) -> None:
  if len(examples) == 0:
    raise ValueError(f"{where} has no examples (empty split); expected at least one")


class WordPiece:
  """BERT WordPiece (`tokenizers.BertWordPieceTokenizer`) with ids and char offsets."""

  def __init__(self, vocab_path: str, lowercase: bool = True, tokenizer=None):
    """`tokenizer`: instead of the vocab, any `tokenizers` pipeline with BERT's special
    tokens (e.g. `tokenizers.Tokenizer.from_file('tokenizer.json')`); `vocab_path`
    then only names it in errors."""
    from tokenizers import BertWordPieceTokenizer
    if tokenizer is None and not storage.path(vocab_path).is_file():
      raise FileNotFoundError(
          f"config field data.vocab_path={vocab_path!r}: no such vocab.txt")
    if tokenizer is None:
      with storage.local_copy(vocab_path) as local:   # the reader takes a local file
        tokenizer = BertWordPieceTokenizer(local, lowercase=lowercase)
    self._tok = tokenizer
    ids = {t: self._tok.token_to_id(t)
           for t in ("[CLS]", "[SEP]", "[PAD]", "[UNK]", "[MASK]")}
    missing = [t for t, i in ids.items() if i is None]
    if missing:
      raise ValueError(f"{vocab_path} lacks the special tokens {missing}")
    self.cls_id, self.sep_id = ids["[CLS]"], ids["[SEP]"]
    self.pad_id, self.unk_id = ids["[PAD]"], ids["[UNK]"]
    self.mask_id = ids["[MASK]"]
    self.vocab_size = self._tok.get_vocab_size()

  def id_to_piece(self, i: int) -> str:
    return self._tok.id_to_token(int(i))

  def encode(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    """Pieces of `text` (no special tokens) and their [start, end) char offsets."""
    enc = self._tok.encode(text, add_special_tokens=False)
    return enc.ids, enc.offsets

  def encode_words(self, words: Sequence[str]) -> tuple[list[int], list[int]]:
    """Pre-split words -> pieces and, per piece, the index of its word."""
    if not words:
      return [], []
    enc = self._tok.encode(list(words), is_pretokenized=True, add_special_tokens=False)
    return enc.ids, [int(w) for w in enc.word_ids]


def wordpiece_file(path: str, lowercase: bool = True) -> WordPiece:
  """A `WordPiece` from a `vocab.txt` or an HF `tokenizer.json` (whose own normalizer
  decides lowercasing; what transformers 5 saves beside a model, without vocab.txt)."""
  if not path.endswith(".json"):
    return WordPiece(path, lowercase)
  import tokenizers
  if not storage.path(path).is_file():
    raise FileNotFoundError(f"no such tokenizer file {path}")
  tok = tokenizers.Tokenizer.from_str(storage.path(path).read_text(encoding="utf-8"))
  tok.no_padding()      # the saved settings of the HF side; featurizers window instead
  tok.no_truncation()
  return WordPiece(path, tokenizer=tok)


def pack(first: Sequence[int], second: Sequence[int] | None, tok, max_seq_length: int
         ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
  """[CLS] first [SEP] (second [SEP]) padded: ids, types, mask, offset of `second`."""
  ids = [tok.cls_id, *first, tok.sep_id]
  types = [0] * len(ids)
  offset = len(ids)
  if second is not None:
    ids += [*second, tok.sep_id]
    types += [1] * (len(second) + 1)
  if len(ids) > max_seq_length:
    raise AssertionError(f"packed {len(ids)} tokens into {max_seq_length}")
  pad = max_seq_length - len(ids)
  mask = np.array([1] * len(ids) + [0] * pad, np.int32)
  return (np.array(ids + [tok.pad_id] * pad, np.int32),
          np.array(types + [0] * pad, np.int32), mask, offset)


class SentencePieceOffsets:
  """A bert_jax SentencePiece tokenizer (pretraining workdir) with the WordPiece API."""

  def __init__(self, spm_tokenizer):
    self._spm = spm_tokenizer
    self._sp = spm_tokenizer._sp  # the processor: its protos carry byte offsets
    self.cls_id, self.sep_id = spm_tokenizer.cls_id, spm_tokenizer.sep_id
    self.pad_id, self.unk_id = spm_tokenizer.pad_id, spm_tokenizer.unk_id
    self.mask_id = spm_tokenizer.mask_id
    self.vocab_size = spm_tokenizer.vocab_size
    self.id_to_piece = spm_tokenizer.id_to_piece

  def encode(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    try:  # sentencepiece >= 0.2.1 names it 'proto', older ones 'immutable_proto'
      proto = self._sp.encode(text, out_type="proto")
    except (ValueError, TypeError, RuntimeError):
      proto = self._sp.encode(text, out_type="immutable_proto")
    raw = text.encode("utf-8")
    # byte offset -> char offset
    char_at = np.cumsum([0] + [len(c.encode("utf-8")) for c in text])
    to_char = {int(b): i for i, b in enumerate(char_at)}
    ids, offsets = [], []
    for p in proto.pieces:
      ids.append(p.id)
      begin = to_char.get(p.begin, 0)
      end = to_char.get(p.end, len(text)) if p.end <= len(raw) else len(text)
      offsets.append((begin, end))
    return ids, offsets

  def encode_words(self, words: Sequence[str]) -> tuple[list[int], list[int]]:
    ids, word_ids = [], []
    for w, word in enumerate(words):
      piece_ids = self._spm.encode(word)
      ids += piece_ids
      word_ids += [w] * len(piece_ids)
    return ids, word_ids
