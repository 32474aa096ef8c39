"""`Tokenizer.from_pretrained(path)`: the tokenizer that travels with a model.

Found by the same rules for every kind of model directory (`source.py`): a fine-tuning
workdir's `task.json` names it; a pretraining workdir has it at `data.tokenizer_path`
or `tokenizer/spm.model`; HF, Google and params dirs hold `vocab.txt` (WordPiece,
`do_lower_case` from `tokenizer_config.json` or inferred from the vocabulary) or
`spm.model` (bert_jax SentencePiece).

Calling it is `transformers`-like:

    tok = Tokenizer.from_pretrained("workdir/sst2")
    batch = tok(["a sentence", "another"], text_pairs=None)   # numpy, padded
    batch["input_ids"], batch["token_type_ids"], batch["attention_mask"]

Texts longer than `max_length` are cut (longest segment first) here; the pipelines
(`pipelines.py`) window them instead. `[MASK]` in raw text stays plain text, except
in `masked_ids`, which `fill_mask` uses.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from bert_jax import storage
from bert_jax.data.tasks import common

MASK_TOKEN = "[MASK]"


class Tokenizer:
  """Ids with character offsets (`encode`), words (`encode_words`), batches (`__call__`).

  `core` is `data.tasks.common.WordPiece` or `SentencePieceOffsets`: the tokenizers
  fine-tuning uses, so features here equal the fine-tuning run's.
  """

  def __init__(self, core, path: str, lowercase: bool | None = None):
    self.core = core
    self.path = path
    self.lowercase = lowercase
    self.cls_id, self.sep_id = core.cls_id, core.sep_id
    self.pad_id, self.unk_id, self.mask_id = core.pad_id, core.unk_id, core.mask_id
    self.vocab_size = core.vocab_size

  @classmethod
  def from_file(cls, path: str, lowercase: bool | None = None) -> Tokenizer:
    """A WordPiece `vocab.txt` (or its dir), a SentencePiece `.model` or an HF
    `tokenizer.json`."""
    from bert_jax.data import tokenizers, wordpiece
    if path.endswith(".json"):
      import json
      import tokenizers as hf_tokenizers
      text = storage.path(path).read_text(encoding="utf-8")
      tok = hf_tokenizers.Tokenizer.from_str(text)
      tok.no_padding()      # saved settings of the HF side; pipelines window instead
      tok.no_truncation()
      norm = json.loads(text).get("normalizer") or {}
      if lowercase is None and norm.get("type") == "BertNormalizer":
        lowercase = bool(norm.get("lowercase"))
      return cls(common.WordPiece(path, tokenizer=tok), path, lowercase)
    if path.endswith(".model"):
      return cls(common.SentencePieceOffsets(tokenizers.SentencePieceTokenizer.load(path)),
                 path)
    if storage.path(path).is_dir():
      path = storage.join(path, wordpiece.VOCAB_FILENAME)
    if lowercase is None:  # tokenizer_config.json beside it, else inferred from the vocab
      lowercase = wordpiece.WordPieceTokenizer.load(path).lowercase
    return cls(common.WordPiece(path, lowercase), path, lowercase)

  @classmethod
  def from_pretrained(cls, path: str) -> Tokenizer:
    """The tokenizer of a model directory of any kind (see the module docstring)."""
    from bert_jax.inference import source
    found = source.locate(path)
    return cls.from_file(found.tokenizer_path, found.lowercase)

  # ------------------------------------------------------------------ text -> ids

  def encode(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    """Pieces of `text` (no special tokens) and their [start, end) char offsets."""
    return self.core.encode(text)

  def encode_words(self, words: Sequence[str]) -> tuple[list[int], list[int]]:
    """Pre-split words -> pieces and, per piece, the index of its word."""
    return self.core.encode_words(words)

  def id_to_token(self, i: int) -> str:
    return self.core.id_to_piece(int(i))

  def masked_ids(self, text: str) -> list[int]:
    """`text` with each `[MASK]` as the mask id (no [CLS]/[SEP]); see `masked_ids`."""
    return masked_ids(lambda s: self.encode(s)[0], text, self.mask_id)

  def __call__(self, texts: str | Sequence[str],
               text_pairs: str | Sequence[str] | None = None,
               max_length: int | None = None) -> dict[str, np.ndarray]:
    """[CLS] a [SEP] (b [SEP]) per text, padded to the longest: int32 [batch, length]."""
    if isinstance(texts, str):
      texts = [texts]
    if isinstance(text_pairs, str):
      text_pairs = [text_pairs]
    if text_pairs is not None and len(text_pairs) != len(texts):
      raise ValueError(f"{len(texts)} texts but {len(text_pairs)} text_pairs; expected "
                       "one pair per text")
    rows = []
    for i, text in enumerate(texts):
      a = self.encode(text)[0]
      b = self.encode(text_pairs[i])[0] if text_pairs is not None else None
      if max_length is not None:
        a, b = truncate(a, b, max_length - (2 if b is None else 3))
      rows.append((a, b))
    length = max(len(a) + (len(b) + 1 if b is not None else 0) + 2 for a, b in rows)
    packed = [common.pack(a, b, self, length)[:3] for a, b in rows]
    return {k: np.stack([p[j] for p in packed]) for j, k in
            enumerate(("input_ids", "token_type_ids", "attention_mask"))}


def truncate(a: list[int], b: list[int] | None, budget: int):
  """Cuts the longer segment, one piece at a time, until both fit in `budget`."""
  if b is None:
    return a[:budget], None
  a, b = list(a), list(b)
  while len(a) + len(b) > budget:
    (a if len(a) >= len(b) else b).pop()
  return a, b


def masked_ids(encode, text: str, mask_id: int) -> list[int]:
  """Ids of `text` with every `[MASK]` as `mask_id`.

  The text around each mask is encoded on its own, stripped of the spaces next to the
  mask ("The [MASK] fox" -> encode("The"), mask, encode("fox")), so SentencePiece
  pieces carry their word-start marker as inside a sentence.
  """
  parts = text.split(MASK_TOKEN)
  if len(parts) < 2:
    raise ValueError(f"fill_mask: expected at least one {MASK_TOKEN} in {text!r}")
  ids: list[int] = []
  for i, part in enumerate(parts):
    if part.strip():
      ids += encode(part.strip())
    if i < len(parts) - 1:
      ids.append(mask_id)
  return ids
