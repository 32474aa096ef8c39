"""Pretraining examples: sentence pairs for next-sentence prediction (NSP).

Follows ``create_instances_from_document`` and ``truncate_seq_pair`` of
google-research/bert ``create_pretraining_data.py``, with three differences:
  * masking is not baked into the examples: it is dynamic, drawn by the loader
    every epoch (see ``masking.py``);
  * a random "not next" segment always comes from another document (the original
    gave up after 10 draws and could then take the same document);
  * the randomness comes from a ``np.random.Generator``, so the exact examples
    differ from the original script for the same seed.

Examples are arrays of a fixed length ``L = max_seq_length``::

    input_ids       [N, L] int32   [CLS] A [SEP] B [SEP] [PAD]...
    token_type_ids  [N, L] int32   0 over [CLS] A [SEP], 1 over B [SEP], 0 on pads
    attention_mask  [N, L] int32   1 on tokens, 0 on pads
    next_sentence_label [N] int32  0: B follows A, 1: B is from another document
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


def _pairs_from_document(documents: TokenizedCorpus, document_index: int, max_num_tokens: int,
                         short_seq_prob: float, rng: np.random.Generator) -> list[Pair]:
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
            a_end = int(rng.integers(1, len(chunk))) if len(chunk) >= 2 else 1
            tokens_a = [t for sentence in chunk[:a_end] for t in sentence]
            if len(chunk) == 1 or rng.random() < 0.5:
                label = IS_RANDOM
                tokens_b, random_doc = _random_segment(
                    documents, document_index, target_length - len(tokens_a), rng)
                i -= len(chunk) - a_end  # put the unused segments back
            else:
                label, random_doc = IS_NEXT, -1
                tokens_b = [t for sentence in chunk[a_end:] for t in sentence]
            truncate_seq_pair(tokens_a, tokens_b, max_num_tokens, rng)
            if tokens_a and tokens_b:
                pairs.append((tokens_a, tokens_b, label, document_index, random_doc))
            chunk, chunk_length = [], 0
        i += 1
    return pairs


def _pack(pairs: Sequence[Pair], max_seq_length: int, cls_id: int, sep_id: int,
          pad_id: int) -> dict[str, np.ndarray]:
    """Lays the pairs out as ``[CLS] A [SEP] B [SEP]`` rows padded to ``max_seq_length``."""
    n = len(pairs)
    input_ids = np.full((n, max_seq_length), pad_id, dtype=np.int32)
    token_type_ids = np.zeros((n, max_seq_length), dtype=np.int32)
    attention_mask = np.zeros((n, max_seq_length), dtype=np.int32)
    for row, (tokens_a, tokens_b, *_) in enumerate(pairs):
        tokens = [cls_id, *tokens_a, sep_id, *tokens_b, sep_id]
        input_ids[row, :len(tokens)] = tokens
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


def create_pretraining_examples(
    documents: TokenizedCorpus,
    max_seq_length: int,
    short_seq_prob: float,
    dupe_factor: int,
    rng: np.random.Generator,
    cls_id: int,
    sep_id: int,
    pad_id: int,
) -> dict[str, np.ndarray]:
    """NSP sentence pairs from a tokenized corpus, shuffled, as padded arrays.

    Args:
      documents: doc -> sentence -> token ids, no empty sentence or document
        (``tokenize_corpus`` output); at least 2 documents.
      max_seq_length: L, the padded length, special tokens included (>= 8).
      short_seq_prob: probability that a document pass aims at a random shorter
        length in [2, L - 3] instead of L - 3 tokens.
      dupe_factor: passes over the corpus, each with other chunks and pairs.
      rng: the only source of randomness; same state, same examples.
      cls_id, sep_id, pad_id: special token ids.

    Returns:
      The arrays listed in the module docstring, rows in random order.
    """
    if max_seq_length < MIN_SEQ_LENGTH:
        raise ValueError(f"max_seq_length: expected >= {MIN_SEQ_LENGTH}, found {max_seq_length}")
    if dupe_factor < 1:
        raise ValueError(f"dupe_factor: expected >= 1, found {dupe_factor}")
    if not 0.0 <= short_seq_prob <= 1.0:
        raise ValueError(f"short_seq_prob: expected a value in [0, 1], found {short_seq_prob}")
    if len(documents) < 2:
        raise ValueError(
            f"Corpus too small: expected >= 2 documents for next-sentence prediction, "
            f"found {len(documents)}")
    pairs: list[Pair] = []
    progress = tqdm.tqdm(total=dupe_factor * len(documents), desc="Creating examples",
                         unit="doc", disable=None)
    with progress:
        for _ in range(dupe_factor):
            for document_index in range(len(documents)):
                pairs.extend(_pairs_from_document(
                    documents, document_index, max_seq_length - 3, short_seq_prob, rng))
                progress.update()
    if not pairs:
        raise ValueError("Corpus too small: no pretraining example could be created")
    order = rng.permutation(len(pairs))
    return _pack([pairs[i] for i in order], max_seq_length, cls_id, sep_id, pad_id)
