"""Pretraining examples: sentence pairs (NSP or SOP) or packed full sentences.

Three objectives (``objective=``):
  * ``'nsp'`` (BERT): ``create_instances_from_document`` and ``truncate_seq_pair`` of
    google-research/bert ``create_pretraining_data.py``; label 1 = B is a random
    segment of another document;
  * ``'sop'`` (ALBERT sentence-order prediction): A and B are consecutive segments of
    the same document, swapped with probability 1/2 (label 1 = swapped). A chunk of a
    single sentence is cut inside that sentence (ALBERT fell back to a random next
    segment there, which mixes NSP into SOP);
  * ``'none'`` (RoBERTa FULL-SENTENCES, no sentence-pair task): consecutive sentences
    packed up to the length, crossing document boundaries with an extra [SEP]
    between documents: ``[CLS] doc1... [SEP] doc2... [SEP]``; one segment (token
    type 0) and label 0. A sentence longer than the length is cut into pieces.

Differences from the original script:
  * masking is not done here: it is dynamic (drawn by the loader every epoch) or
    static (drawn once by ``prepare.py`` and stored), see ``masking.py``;
  * a random "not next" segment always comes from another document (the original
    gave up after 10 draws and could then take the same document);
  * the randomness comes from a ``np.random.Generator``, so the exact examples
    differ from the original script for the same seed.

Examples are arrays of a fixed length ``L = max_seq_length``::

    input_ids       [N, L] int32   [CLS] A [SEP] B [SEP] [PAD]... ('none': no B)
    token_type_ids  [N, L] int32   0 over [CLS] A [SEP], 1 over B [SEP], 0 on pads
    attention_mask  [N, L] int32   1 on tokens, 0 on pads
    next_sentence_label [N] int32  nsp: 0 B follows A, 1 B from another document;
                                   sop: 0 in order, 1 swapped; none: always 0
    doc_index       [N] int32      document of A
    random_doc_index [N] int32     document of B when random, else -1
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import tqdm

TokenizedCorpus = list[list[list[int]]]
Pair = tuple[list[int], list[int], int, int, int]  # (A, B, label, doc, random doc)

MIN_SEQ_LENGTH = 8
IS_NEXT, IS_RANDOM = 0, 1
IN_ORDER, SWAPPED = 0, 1
OBJECTIVES = ("nsp", "sop", "none")


class _Encoder(Protocol):
  def encode_batch(self, texts: Sequence[str]) -> list[list[int]]: ...


def tokenize_corpus(documents: Sequence[Sequence[str]], tokenizer: _Encoder) -> TokenizedCorpus:
  """Tokenizes every sentence; empty sentences and documents are dropped."""
  tokenized = []
  for doc in tqdm.tqdm(documents, desc="Tokenizing", unit="doc", disable=None):
    sentences = [ids for ids in tokenizer.encode_batch(list(doc)) if ids]
    if sentences:
      tokenized.append(sentences)
  return tokenized


def truncate_seq_pair(tokens_a: list[int], tokens_b: list[int], max_num_tokens: int,
                      rng: np.random.Generator) -> None:
  """Shortens the longer of A and B, from the front or back at random, until they fit."""
  while len(tokens_a) + len(tokens_b) > max_num_tokens:
    longer = tokens_a if len(tokens_a) >= len(tokens_b) else tokens_b
    if rng.random() < 0.5:
      del longer[0]
    else:
      longer.pop()


def _random_segment(documents: TokenizedCorpus, document_index: int, target_length: int,
                    rng: np.random.Generator) -> tuple[list[int], int]:
  """Tokens from a random start in another document, up to ``target_length``."""
  other = int(rng.integers(0, len(documents) - 1))
  other += other >= document_index  # uniform over the documents other than this one
  document = documents[other]
  tokens: list[int] = []
  for sentence in document[int(rng.integers(0, len(document))):]:
    tokens.extend(sentence)
    if len(tokens) >= target_length:
      break
  return tokens, other


def _split_chunk(chunk: list[list[int]], rng: np.random.Generator) -> tuple[list[int], list[int]]:
  """A random split into two consecutive non-empty segments (SOP).

  Between sentences when the chunk has several, else inside its one sentence.
  """
  if len(chunk) >= 2:
    a_end = int(rng.integers(1, len(chunk)))
    return ([t for s in chunk[:a_end] for t in s], [t for s in chunk[a_end:] for t in s])
  tokens = chunk[0]
  if len(tokens) < 2:
    return list(tokens), []
  cut = int(rng.integers(1, len(tokens)))
  return list(tokens[:cut]), list(tokens[cut:])


def _pairs_from_document(documents: TokenizedCorpus, document_index: int, max_num_tokens: int,
                         short_seq_prob: float, rng: np.random.Generator,
                         objective: str = "nsp") -> list[Pair]:
  """The (A, B) pairs of one document: ``create_instances_from_document`` semantics."""
  document = documents[document_index]
  target_length = max_num_tokens
  if rng.random() < short_seq_prob:
    target_length = int(rng.integers(2, max_num_tokens + 1))
  pairs: list[Pair] = []
  chunk: list[list[int]] = []
  chunk_length = 0
  i = 0
  while i < len(document):
    chunk.append(document[i])
    chunk_length += len(document[i])
    if i == len(document) - 1 or chunk_length >= target_length:
      random_doc = -1
      if objective == "sop":
        tokens_a, tokens_b = _split_chunk(chunk, rng)
        label = SWAPPED if rng.random() < 0.5 else IN_ORDER
        if label == SWAPPED:
          tokens_a, tokens_b = tokens_b, tokens_a
      else:
        a_end = int(rng.integers(1, len(chunk))) if len(chunk) >= 2 else 1
        tokens_a = [t for sentence in chunk[:a_end] for t in sentence]
        if len(chunk) == 1 or rng.random() < 0.5:
          label = IS_RANDOM
          tokens_b, random_doc = _random_segment(
              documents, document_index, target_length - len(tokens_a), rng)
          i -= len(chunk) - a_end  # put the unused segments back
        else:
          label = IS_NEXT
          tokens_b = [t for sentence in chunk[a_end:] for t in sentence]
      truncate_seq_pair(tokens_a, tokens_b, max_num_tokens, rng)
      if tokens_a and tokens_b:
        pairs.append((tokens_a, tokens_b, label, document_index, random_doc))
      chunk, chunk_length = [], 0
    i += 1
  return pairs


def _packed_sequences(documents: TokenizedCorpus, order: Sequence[int], max_num_tokens: int,
                      sep_id: int) -> list[Pair]:
  """RoBERTa FULL-SENTENCES: sentences of ``order``'s documents packed in sequence.

  Each sequence holds up to ``max_num_tokens`` tokens (``[SEP]`` between documents
  included); returned as pairs with an empty B, label 0, the first document as A's.
  """
  sequences: list[Pair] = []
  current: list[int] = []
  first_doc = -1

  def emit():
    nonlocal current
    while current and current[-1] == sep_id:
      current.pop()
    if current:
      sequences.append((current, [], 0, first_doc, -1))
    current = []

  for document_index in order:
    if current and len(current) < max_num_tokens:
      current.append(sep_id)  # a document boundary
    for sentence in documents[document_index]:
      if len(current) + len(sentence) > max_num_tokens:
        emit()
      if not current:
        first_doc = int(document_index)
      for start in range(0, len(sentence), max_num_tokens):
        piece = sentence[start:start + max_num_tokens]
        if len(current) + len(piece) > max_num_tokens:
          emit()
          first_doc = int(document_index)
        current.extend(piece)
  emit()
  return sequences


def pair_tokens(tokens_a: Sequence[int], tokens_b: Sequence[int], cls_id: int,
                sep_id: int) -> list[int]:
  """``[CLS] A [SEP] B [SEP]``, or ``[CLS] A [SEP]`` when B is empty (packing)."""
  if tokens_b:
    return [cls_id, *tokens_a, sep_id, *tokens_b, sep_id]
  return [cls_id, *tokens_a, sep_id]


def _pack(pairs: Sequence[Pair], max_seq_length: int, cls_id: int, sep_id: int,
          pad_id: int) -> dict[str, np.ndarray]:
  """Lays the pairs out as ``[CLS] A [SEP] B [SEP]`` rows padded to ``max_seq_length``."""
  n = len(pairs)
  input_ids = np.full((n, max_seq_length), pad_id, dtype=np.int32)
  token_type_ids = np.zeros((n, max_seq_length), dtype=np.int32)
  attention_mask = np.zeros((n, max_seq_length), dtype=np.int32)
  for row, (tokens_a, tokens_b, *_) in enumerate(pairs):
    tokens = pair_tokens(tokens_a, tokens_b, cls_id, sep_id)
    input_ids[row, :len(tokens)] = tokens
    if tokens_b:
      token_type_ids[row, len(tokens_a) + 2:len(tokens)] = 1
    attention_mask[row, :len(tokens)] = 1
  labels = np.array([[p[2], p[3], p[4]] for p in pairs], dtype=np.int32).reshape(n, 3)
  return {
      "input_ids": input_ids,
      "token_type_ids": token_type_ids,
      "attention_mask": attention_mask,
      "next_sentence_label": labels[:, 0],
      "doc_index": labels[:, 1],
      "random_doc_index": labels[:, 2],
  }


def _check_options(max_seq_length: int, short_seq_prob: float, dupe_factor: int,
                   objective: str) -> None:
  if max_seq_length < MIN_SEQ_LENGTH:
    raise ValueError(f"max_seq_length: expected >= {MIN_SEQ_LENGTH}, found {max_seq_length}")
  if dupe_factor < 1:
    raise ValueError(f"dupe_factor: expected >= 1, found {dupe_factor}")
  if not 0.0 <= short_seq_prob <= 1.0:
    raise ValueError(f"short_seq_prob: expected a value in [0, 1], found {short_seq_prob}")
  if objective not in OBJECTIVES:
    raise ValueError(f"objective: expected one of {OBJECTIVES}, found {objective!r}")


def create_pairs(
    documents: TokenizedCorpus,
    max_seq_length: int,
    short_seq_prob: float,
    dupe_factor: int,
    rng: np.random.Generator,
    sep_id: int,
    objective: str = "nsp",
    progress: bool = True,
) -> list[Pair]:
  """The examples as ``(A, B, label, doc, random doc)`` tuples, in random order.

  Arguments as ``create_pretraining_examples``; B is empty under ``objective='none'``.
  """
  _check_options(max_seq_length, short_seq_prob, dupe_factor, objective)
  minimum = 2 if objective == "nsp" else 1
  if len(documents) < minimum:
    raise ValueError(
        f"Corpus too small: expected >= {minimum} documents for objective={objective!r}, "
        f"found {len(documents)}")
  pairs: list[Pair] = []
  bar = tqdm.tqdm(total=dupe_factor * len(documents), desc="Creating examples",
                  unit="doc", disable=None if progress else True)
  with bar:
    for _ in range(dupe_factor):
      if objective == "none":
        pairs.extend(_packed_sequences(documents, rng.permutation(len(documents)),
                                       max_seq_length - 2, sep_id))
        bar.update(len(documents))
        continue
      for document_index in range(len(documents)):
        pairs.extend(_pairs_from_document(
            documents, document_index, max_seq_length - 3, short_seq_prob, rng,
            objective))
        bar.update()
  if not pairs:
    raise ValueError("Corpus too small: no pretraining example could be created")
  order = rng.permutation(len(pairs))
  return [pairs[i] for i in order]


def create_pretraining_examples(
    documents: TokenizedCorpus,
    max_seq_length: int,
    short_seq_prob: float,
    dupe_factor: int,
    rng: np.random.Generator,
    cls_id: int,
    sep_id: int,
    pad_id: int,
    objective: str = "nsp",
) -> dict[str, np.ndarray]:
  """Pretraining examples from a tokenized corpus, shuffled, as padded arrays.

  Args:
    documents: doc -> sentence -> token ids, no empty sentence or document
      (``tokenize_corpus`` output); at least 2 documents for NSP.
    max_seq_length: L, the padded length, special tokens included (>= 8).
    short_seq_prob: probability that a document pass aims at a random shorter
      length in [2, L - 3] instead of L - 3 tokens (not used by ``'none'``).
    dupe_factor: passes over the corpus, each with other chunks and pairs.
    rng: the only source of randomness; same state, same examples.
    cls_id, sep_id, pad_id: special token ids.
    objective: ``'nsp'``, ``'sop'`` or ``'none'`` (module docstring).

  Returns:
    The arrays listed in the module docstring, rows in random order.
  """
  pairs = create_pairs(documents, max_seq_length, short_seq_prob, dupe_factor, rng, sep_id,
                       objective)
  return _pack(pairs, max_seq_length, cls_id, sep_id, pad_id)
