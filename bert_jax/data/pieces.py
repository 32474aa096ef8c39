"""What BERT's two tokenizers share: the special token strings and the word-start lookup.

``tokenizers.SentencePieceTokenizer`` gives ``SPECIAL_TOKENS`` the first ids;
``wordpiece.WordPieceTokenizer`` finds them in its ``vocab.txt``. Both answer
``word_start_mask`` from a [vocab] bool table through ``lookup_word_starts``. This
module imports neither, so both (and ``tokenizers.load_tokenizer``, which picks one)
import it.
"""
from __future__ import annotations

import numpy as np

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def lookup_word_starts(table: np.ndarray, ids: np.ndarray) -> np.ndarray:
  """``table[ids]`` for a [vocab] bool table, with a range check naming the bounds."""
  ids = np.asarray(ids)
  if ids.size and (ids.min() < 0 or ids.max() >= len(table)):
    raise ValueError(
        f"word_start_mask: expected ids in [0, {len(table)}), "
        f"found [{ids.min()}, {ids.max()}]")
  return table[ids]
