"""Masked-LM masking, vectorised in NumPy over a batch.

Semantics of google-research/bert ``create_masked_lm_predictions``, applied
dynamically (each time a batch is drawn) rather than baked into the examples:
  * ``num_to_predict = min(P, max(1, round(n * masked_lm_prob)))`` per row, ``n`` the
    maskable tokens (``masking_budget='maskable'``) or, as the original's
    ``len(tokens)``, every token with [CLS] and [SEP] (``'all_tokens'``);
  * units (words under whole-word masking, else single tokens) are visited in a
    random order; a unit is taken when all its tokens still fit in the budget, a
    unit that would overflow it is skipped and later smaller units may still fit;
  * each taken unit: 80% all its tokens -> [MASK], 10% kept, 10% each token -> a
    random id in ``[first_normal_id, vocab_size)`` (``random_replacement=
    'normal_ids'``) or, as the original, in the whole vocabulary (``'any_id'``).
    Under whole-word masking the 80/10/10 choice is drawn ONCE PER WORD, not per
    piece (google-research/bert #910);
  * special tokens are never masked; ``[UNK]`` is special unless ``mask_unk=True``
    (the original skips only [CLS] and [SEP]; [PAD] and [MASK] never occur in its
    unpadded, unmasked tokens).

``MaskingConfig`` (the config fields, validated once), bound to a tokenizer's ids
(``Masker``), and ``apply_masking`` (a batch of examples and per-example seeds) are the
entry point that the loader and static masking in ``prepare.py`` share.

A word is a maskable word-start token and the maskable non-start tokens after it;
a maskable continuation token right after a non-maskable one (e.g. a segment that
was truncated mid-word) starts a word of its own.

Randomness is passed in as arrays (``MaskingRandomness``), drawn per example from a
per-example seed by a counter-based generator (SplitMix64, vectorised): the masking
of an example depends only on its seed, not on the batch it lands in nor on how
many hosts split that batch. (A ``np.random.default_rng(seed)`` per row would give
the same property at ~25 us per row of Python overhead; the hash needs no loop.)
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping, NamedTuple

import numpy as np

from bert_jax.data import segment

_GOLDEN_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_MIX_1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX_2 = np.uint64(0x94D049BB133111EB)
_NUM_STREAMS = 3  # priority, action, random_ids
_MASK_PROB, _KEEP_PROB = 0.8, 0.1  # the rest (0.1) is a random token


class MaskingRandomness(NamedTuple):
  """Per-token random draws, all [batch, length].

  priority: float in [0, 1); the order in which units are visited (value at the
    unit's first token).
  action: float in [0, 1); < 0.8 mask, < 0.9 keep, else random (value at the
    unit's first token, so one choice per word).
  random_ids: int, the replacement id of each token if its unit draws "random".
  """
  priority: np.ndarray
  action: np.ndarray
  random_ids: np.ndarray


# ----------------------------------------------------------------------------------
# Counter-based randomness.


def _mix64(x: np.ndarray) -> np.ndarray:
  """SplitMix64 finaliser: a bijective 64-bit hash, elementwise on uint64."""
  with np.errstate(over="ignore"):
    x = (x ^ (x >> np.uint64(30))) * _MIX_1
    x = (x ^ (x >> np.uint64(27))) * _MIX_2
    return x ^ (x >> np.uint64(31))


def _as_uint64(values) -> np.ndarray:
  array = np.asarray(values)
  if array.dtype.kind == "i" and (array < 0).any():
    raise ValueError(f"Masking seeds: expected non-negative integers, found {array.min()}")
  if array.dtype.kind not in "iu":
    raise ValueError(f"Masking seeds: expected integers, found dtype {array.dtype}")
  return array.astype(np.uint64)


def example_seeds(seed: int, epoch: int, example_indices: np.ndarray) -> np.ndarray:
  """[B] uint64 seeds, one per example, from (seed, epoch, example index)."""
  key = _mix64(_as_uint64([seed]) + _GOLDEN_GAMMA)
  key = _mix64(key ^ _as_uint64([epoch]))
  return _mix64(key ^ _as_uint64(np.atleast_1d(example_indices)).ravel())


def _uniform_bits(seeds: np.ndarray, length: int) -> np.ndarray:
  """[B, streams, length] uint64: SplitMix64 output of each row's seed."""
  state = _mix64(seeds)[:, None, None]
  counter = np.arange(1, _NUM_STREAMS * length + 1, dtype=np.uint64)
  with np.errstate(over="ignore"):
    return _mix64(state + counter.reshape(_NUM_STREAMS, length) * _GOLDEN_GAMMA)


def draw_masking_randomness(seeds: np.ndarray, length: int, vocab_size: int,
                            first_normal_id: int) -> MaskingRandomness:
  """Random draws for ``mask_tokens``, row b a function of ``seeds[b]`` alone.

  Args:
    seeds: [B] non-negative integer seeds (e.g. ``example_seeds``).
    length: L, the sequence length.
    vocab_size, first_normal_id: random replacement ids are uniform in
      ``[first_normal_id, vocab_size)``.
  """
  if not 0 <= first_normal_id < vocab_size:
    raise ValueError(
        f"first_normal_id: expected a value in [0, vocab_size={vocab_size}), "
        f"found {first_normal_id}")
  bits = _uniform_bits(_as_uint64(seeds).ravel(), length)
  to_unit = (bits[:, :2] >> np.uint64(11)).astype(np.float64) * 2.0**-53
  num_normal = np.uint64(vocab_size - first_normal_id)
  random_ids = (bits[:, 2] % num_normal).astype(np.int64) + first_normal_id
  return MaskingRandomness(to_unit[:, 0], to_unit[:, 1], random_ids.astype(np.int32))


# ----------------------------------------------------------------------------------
# Masking.


def _check_args(input_ids: np.ndarray, maskable: np.ndarray, word_start: np.ndarray | None,
                rand: MaskingRandomness, masked_lm_prob: float,
                max_predictions_per_seq: int) -> None:
  if input_ids.ndim != 2:
    raise ValueError(f"input_ids: expected [batch, length], found shape {input_ids.shape}")
  named = {"maskable": maskable, "word_start": word_start, **rand._asdict()}
  for name, array in named.items():
    if array is not None and np.shape(array) != input_ids.shape:
      raise ValueError(
          f"{name}: expected shape {input_ids.shape} like input_ids, "
          f"found {np.shape(array)}")
  length = input_ids.shape[1]
  if not 1 <= max_predictions_per_seq <= length:
    raise ValueError(
        f"max_predictions_per_seq: expected a value in [1, sequence length {length}], "
        f"found {max_predictions_per_seq}")
  if not 0.0 < masked_lm_prob < 1.0:
    raise ValueError(f"masked_lm_prob: expected a value in (0, 1), found {masked_lm_prob}")


def _word_ids(maskable: np.ndarray, word_start: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
  """[B, L] unit id of each token (-1 where not maskable) and [B, L] unit starts."""
  if word_start is None:
    starts = maskable.copy()
  else:
    after_unmaskable = np.ones_like(maskable)
    after_unmaskable[:, 1:] = ~maskable[:, :-1]
    starts = maskable & (word_start.astype(bool) | after_unmaskable)
  unit_ids = np.cumsum(starts, axis=1) - 1
  return np.where(maskable, unit_ids, -1), starts


def _select_units(unit_len: np.ndarray, unit_priority: np.ndarray,
                  budget: np.ndarray) -> np.ndarray:
  """[B, U] bool: greedy pick of units in priority order that fit the budget.

  Sequential over the visiting rank, vectorised over rows; stops as soon as no
  row can take any further unit.
  """
  order = np.argsort(unit_priority, axis=1, kind="stable")
  lengths = np.take_along_axis(unit_len, order, axis=1)  # 0 for absent units
  if lengths.max(initial=0) <= 1:  # single tokens: the greedy pick is a prefix
    taken = (lengths > 0) & (np.cumsum(lengths, axis=1) <= budget[:, None])
    selected = np.zeros_like(taken)
    np.put_along_axis(selected, order, taken, axis=1)
    return selected
  # Smallest length still ahead (absent units count as too long to fit).
  ahead = np.where(lengths > 0, lengths, np.iinfo(lengths.dtype).max)
  smallest_ahead = np.minimum.accumulate(ahead[:, ::-1], axis=1)[:, ::-1]
  remaining = budget.astype(lengths.dtype).copy()
  taken = np.zeros(lengths.shape, dtype=bool)
  for rank in range(lengths.shape[1]):
    if not (remaining >= smallest_ahead[:, rank]).any():
      break
    fits = (lengths[:, rank] > 0) & (lengths[:, rank] <= remaining)
    taken[:, rank] = fits
    remaining -= np.where(fits, lengths[:, rank], 0)
  selected = np.zeros_like(taken)
  np.put_along_axis(selected, order, taken, axis=1)
  return selected


def _gather_predictions(original: np.ndarray, selected: np.ndarray,
                        max_predictions: int) -> dict[str, np.ndarray]:
  """[B, P] positions (ascending), original ids and weights of selected tokens."""
  batch = original.shape[0]
  rows, cols = np.nonzero(selected)  # row-major: positions ascend within a row
  slots = (np.cumsum(selected, axis=1) - 1)[rows, cols]
  positions = np.zeros((batch, max_predictions), dtype=np.int32)
  ids = np.zeros((batch, max_predictions), dtype=np.int32)
  weights = np.zeros((batch, max_predictions), dtype=np.float32)
  positions[rows, slots] = cols
  ids[rows, slots] = original[rows, cols]
  weights[rows, slots] = 1.0
  return {"masked_lm_positions": positions, "masked_lm_ids": ids, "masked_lm_weights": weights}


def mask_tokens(
    input_ids: np.ndarray,
    maskable: np.ndarray,
    word_start: np.ndarray | None,
    rand: MaskingRandomness,
    mask_id: int,
    vocab_size: int,
    first_normal_id: int,
    masked_lm_prob: float = 0.15,
    max_predictions_per_seq: int = 20,
    num_tokens: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
  """Masks a batch for the masked-LM objective (see the module docstring).

  Args:
    input_ids: [B, L] token ids.
    maskable: [B, L] bool, False at [CLS], [SEP], [PAD] and other special tokens.
    word_start: [B, L] bool, True where a token begins a word (whole-word masking),
      or None to mask single tokens.
    rand: the per-token random draws (``draw_masking_randomness``).
    mask_id: the [MASK] id.
    vocab_size, first_normal_id: random replacements are drawn by the caller in
      ``[first_normal_id, vocab_size)``; checked here against ``rand.random_ids``
      only through the declared range (not scanned, this is the hot path).
    masked_lm_prob: share of maskable tokens to predict, in (0, 1).
    max_predictions_per_seq: P, the cap and the padded width of the outputs.
    num_tokens: [B] the count the budget is a share of; None = the maskable tokens.

  Returns:
    ``input_ids`` [B, L] (masked copy, same dtype), ``masked_lm_positions`` [B, P]
    int32, ``masked_lm_ids`` [B, P] int32 (original ids), ``masked_lm_weights``
    [B, P] float32 (1.0 on predictions, 0.0 on padding slots).
  """
  input_ids = np.asarray(input_ids)
  maskable = np.asarray(maskable, dtype=bool)
  _check_args(input_ids, maskable, word_start, rand, masked_lm_prob, max_predictions_per_seq)
  if not 0 <= first_normal_id < vocab_size:
    raise ValueError(
        f"first_normal_id: expected a value in [0, vocab_size={vocab_size}), "
        f"found {first_normal_id}")
  batch, length = input_ids.shape
  rows = np.arange(batch)[:, None]

  unit_ids, starts = _word_ids(maskable, None if word_start is None else np.asarray(word_start))
  flat_units = (rows * length + np.maximum(unit_ids, 0))[maskable]
  unit_len = np.bincount(flat_units, minlength=batch * length).reshape(batch, length)
  unit_priority = np.full((batch, length), np.inf)
  start_rows, start_cols = np.nonzero(starts)
  start_units = unit_ids[start_rows, start_cols]
  unit_priority[start_rows, start_units] = rand.priority[start_rows, start_cols]
  unit_action = np.zeros((batch, length))
  unit_action[start_rows, start_units] = rand.action[start_rows, start_cols]

  num_maskable = maskable.sum(axis=1)
  counted = num_maskable if num_tokens is None else np.asarray(num_tokens)
  budget = np.minimum(max_predictions_per_seq,
                      np.maximum(1, np.rint(counted * masked_lm_prob).astype(np.int64)))
  budget = np.where(num_maskable > 0, budget, 0)
  unit_selected = _select_units(unit_len, unit_priority, budget)

  safe_units = np.maximum(unit_ids, 0)
  selected = maskable & np.take_along_axis(unit_selected, safe_units, axis=1)
  action = np.take_along_axis(unit_action, safe_units, axis=1)
  masked = input_ids.copy()
  to_mask = selected & (action < _MASK_PROB)
  to_random = selected & (action >= _MASK_PROB + _KEEP_PROB)
  masked[to_mask] = mask_id
  masked[to_random] = np.asarray(rand.random_ids)[to_random]
  predictions = _gather_predictions(input_ids, selected, max_predictions_per_seq)
  return {"input_ids": masked, **predictions}


# ----------------------------------------------------------------------------------
# The entry point: options from a tokenizer and the config, then a batch.

MASKING_BUDGETS = ("maskable", "all_tokens")
RANDOM_REPLACEMENTS = ("normal_ids", "any_id")


@dataclasses.dataclass(frozen=True)
class MaskingConfig:
  """The masking fields of a config (``data.*``; ``prepare.py``'s flags of the same
  names), typed and validated once when built; ``bind`` adds a tokenizer's ids.

  ``masking_budget``, ``mask_unk`` and ``random_replacement`` choose between this
  package's defaults and the original script's behaviour (module docstring).
  """
  masked_lm_prob: float = 0.15
  max_predictions_per_seq: int = 20
  whole_word_masking: bool = False
  masking_budget: str = "maskable"        # MASKING_BUDGETS
  mask_unk: bool = False                  # [UNK] maskable, as the original
  random_replacement: str = "normal_ids"  # RANDOM_REPLACEMENTS
  whole_word_segmenter: str = "none"      # none | jieba: CJK words (segment.py)
  # How an error names a field: 'config field data.' (a config) or '--' (prepare.py).
  where: dataclasses.InitVar[str] = "config field data."

  def __post_init__(self, where: str):
    def require(ok, name, expected):
      if not ok:
        sep = " " if expected.startswith(("is ", "needs ")) else ": expected "
        raise ValueError(f"{where}{name}={getattr(self, name)!r}{sep}{expected}")
    for name, kind in (("masked_lm_prob", float), ("max_predictions_per_seq", int),
                       ("whole_word_masking", bool), ("mask_unk", bool)):
      value = getattr(self, name)
      if kind is float and isinstance(value, int) and not isinstance(value, bool):
        object.__setattr__(self, name, float(value))
      else:
        require(isinstance(value, kind) and (kind is bool or not isinstance(value, bool)),
                name, f"a {kind.__name__}")
    require(0.0 < self.masked_lm_prob < 1.0, "masked_lm_prob", "a probability in (0, 1)")
    require(self.max_predictions_per_seq >= 1, "max_predictions_per_seq", ">= 1")
    require(self.masking_budget in MASKING_BUDGETS, "masking_budget",
            f"one of {MASKING_BUDGETS}")
    require(self.random_replacement in RANDOM_REPLACEMENTS, "random_replacement",
            f"one of {RANDOM_REPLACEMENTS}")
    require(self.whole_word_segmenter in segment.SEGMENTERS, "whole_word_segmenter",
            f"is not one of {segment.SEGMENTERS}")
    require(self.whole_word_segmenter == "none" or self.whole_word_masking,
            "whole_word_segmenter", f"needs {where.split()[-1]}whole_word_masking=True")

  @classmethod
  def from_config(cls, data, where: str = "config field data.") -> "MaskingConfig":
    """The fields of this class from ``data`` (a config's ``data`` section, or any
    object or mapping holding them)."""
    get = data.get if isinstance(data, Mapping) else lambda k: getattr(data, k)
    return cls(**{f.name: get(f.name) for f in dataclasses.fields(cls)}, where=where)

  def replace(self, **changes) -> "MaskingConfig":
    return dataclasses.replace(self, **changes)

  def bind(self, tokenizer: Any) -> "Masker":
    """These options with ``tokenizer``'s ids (its [MASK], specials, word starts)."""
    return Masker(
        self, mask_id=tokenizer.mask_id, vocab_size=tokenizer.vocab_size,
        first_normal_id=tokenizer.first_normal_id,
        special_ids=tuple(tokenizer.special_ids), unk_id=tokenizer.unk_id,
        word_start_table=(tokenizer.word_start_table if self.whole_word_masking
                          else None),
        word_segmenter=segment.segmenter(self.whole_word_segmenter, tokenizer))


@dataclasses.dataclass(frozen=True, eq=False)
class Masker:
  """A ``MaskingConfig`` bound to a vocabulary: what ``apply_masking`` draws with. The
  loader and static masking in ``prepare.py`` share it; it pickles into grain workers."""
  options: MaskingConfig
  mask_id: int
  vocab_size: int
  first_normal_id: int             # random replacements start here ('normal_ids')
  special_ids: tuple[int, ...]     # never masked ([UNK] too unless options.mask_unk)
  unk_id: int | None = None
  word_start_table: np.ndarray | None = None   # [vocab] bool (whole-word masking)
  word_segmenter: Any = None       # segment.py's JiebaWords, or None
  special: np.ndarray = dataclasses.field(init=False, repr=False)  # [vocab] bool, derived

  def __post_init__(self):
    object.__setattr__(self, "special_ids", tuple(int(i) for i in self.special_ids))
    for name in ("mask_id", "first_normal_id") + (("unk_id",) if self.unk_id is not None
                                                  else ()):
      if not 0 <= getattr(self, name) < self.vocab_size:
        raise ValueError(f"the tokenizer's {name}={getattr(self, name)}: expected an id in "
                         f"[0, vocab_size={self.vocab_size})")
    if self.options.mask_unk and self.unk_id is None:
      raise ValueError("data.mask_unk=True: the tokenizer has no [UNK] id")
    table = self.word_start_table
    if table is not None and np.shape(table) != (self.vocab_size,):
      raise ValueError(f"word_start_table: expected shape ({self.vocab_size},) like the "
                       f"vocab, found {np.shape(table)}")
    special = np.zeros(self.vocab_size, dtype=bool)
    special[list(self.special_ids)] = True
    if self.options.mask_unk:
      special[self.unk_id] = False
    object.__setattr__(self, "special", special)

  @property
  def max_predictions_per_seq(self) -> int:
    return self.options.max_predictions_per_seq


def apply_masking(input_ids: np.ndarray, attention_mask: np.ndarray, seeds: np.ndarray,
                  masker: Masker) -> dict[str, np.ndarray]:
  """Masks [B, L] rows, row b with randomness from ``seeds[b]`` alone.

  Args:
    input_ids, attention_mask: [B, L] examples.
    seeds: [B] per-example seeds (``example_seeds``).
    masker: the options and the vocabulary's ids (``MaskingConfig.bind``).

  Returns:
    ``mask_tokens`` output: ``input_ids`` and ``masked_lm_*`` arrays.
  """
  options, table = masker.options, masker.word_start_table
  word_start = None if table is None else np.asarray(table)[input_ids]
  if masker.word_segmenter is not None:
    word_start = masker.word_segmenter.word_starts(input_ids, word_start)
  first_id = masker.first_normal_id if options.random_replacement == "normal_ids" else 0
  in_sequence = np.asarray(attention_mask) != 0
  rand = draw_masking_randomness(seeds, input_ids.shape[1], masker.vocab_size, first_id)
  return mask_tokens(
      input_ids,
      maskable=~masker.special[input_ids] & in_sequence,
      word_start=word_start,
      rand=rand,
      mask_id=masker.mask_id,
      vocab_size=masker.vocab_size,
      first_normal_id=first_id,
      masked_lm_prob=options.masked_lm_prob,
      max_predictions_per_seq=options.max_predictions_per_seq,
      num_tokens=(in_sequence.sum(axis=1)
                  if options.masking_budget == "all_tokens" else None))
