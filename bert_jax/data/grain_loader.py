"""The one pretraining input pipeline: grain over in-memory or ArrayRecord examples.

Two sources hold the examples, both random access by index and decoded to padded
[b, L] arrays: ``InMemoryExamples`` (the dict of [N, ...] arrays that
``pretraining.create_pretraining_examples`` returns, built at start-up) and
``PreparedSplit`` (one split of a directory written by ``prepare.py``: ``N`` records
over its ArrayRecord shards, read through ``ShardedRecords``; grain's
``ArrayRecordDataSource`` starts a thread pool per batched read, which cost more than
the reads here). ``GrainPretrainingLoader`` takes either one.

The example stream is infinite (or one epoch, ``repeat=False``): position ``g``
reads example ``permute(g)``; epoch ``g // N`` visits the examples in a pseudo-random
order of its own (a Feistel bijection keyed by seed and epoch, computed per batch,
nothing held in memory), or in order without shuffling.

Global batch ``k`` holds positions ``[k * B, (k + 1) * B)``; process ``p`` of ``P``
reads rows ``[p * B/P, (p + 1) * B/P)`` of it, so the processes read disjoint examples
and their rows put together are the 1-process batch. Batches are a
``grain.MapDataset`` over ``k`` (examples read in one call per batch, masked in NumPy)
iterated with background prefetch threads (``to_iter_dataset(ReadOptions)``), or
worker processes (``worker_count > 0``).

Masking is dynamic unless the directory was prepared with static masks: position
``g`` is masked by ``masking.apply_masking`` with randomness seeded by ``(seed, g)``,
so it differs between epochs and not between process counts.

With ``pack=True`` (config field ``data.packing``) each process then packs its own
masked rows of the batch into as many rows (``packing.pack_batch``: segment ids in
``attention_mask``, ``position_ids`` added, MLM positions shifted to the row, left-over
rows all padding), so the global batch is still built from process-local rows of
static shape. The packing window is that one batch (``packing.py`` says what it saves).

``state()`` is ``{'batch': k, 'seed', 'num_examples', 'global_batch_size'}``, the next
global batch and what it must be restored into, and ``restore(state)`` resumes
there: JSON, saved with each checkpoint. Iterating from batch ``k`` builds the dataset
from ``k``, so a resumed run yields exactly the batches the uninterrupted one would
have.
"""
from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

import grain
import numpy as np

from bert_jax import storage
from bert_jax.data import masking, packing, prepare, records

Batch = dict[str, np.ndarray]
BATCH_KEYS = ("input_ids", "token_type_ids", "attention_mask", "masked_lm_positions",
              "masked_lm_ids", "masked_lm_weights", "next_sentence_label")
EXAMPLE_KEYS = ("input_ids", "token_type_ids", "attention_mask", "next_sentence_label")
_MAX_BATCHES = 2**62  # "forever"
_FEISTEL_ROUNDS = 4
_READER_OPTIONS = "readahead_buffer_size:0,max_parallelism:1"  # random access; threads are ours


def permute(positions: np.ndarray, n: int, seed: int, shuffle: bool = True) -> np.ndarray:
  """Record index of each stream position: ``position // n`` is the epoch and
  ``position % n`` goes through that epoch's pseudo-random bijection of ``[0, n)``.

  A 4-round Feistel network on the smallest even number of bits covering ``n``
  with cycle walking, keyed by SplitMix64 of (seed, epoch), vectorised over
  positions (grain's ``index_shuffle`` does one index per Python call, ~10 us).
  """
  positions = np.asarray(positions, dtype=np.uint64)
  epoch, index = np.divmod(positions, np.uint64(n))
  if not shuffle or n == 1:
    return index.astype(np.int64)
  half = max(1, (int(n - 1).bit_length() + 1) // 2)
  low = np.uint64((1 << half) - 1)
  keys = [masking.example_seeds(seed, r, epoch) for r in range(_FEISTEL_ROUNDS)]
  todo = np.ones(index.shape, dtype=bool)
  while todo.any():  # cycle walking: re-apply until inside [0, n)
    x = index[todo]
    left, right = x >> np.uint64(half), x & low
    for key in keys:
      left, right = right, left ^ (masking._mix64(right ^ key[todo]) & low)  # pylint: disable=protected-access
    index[todo] = (left << np.uint64(half)) | right
    todo = index >= np.uint64(n)
  return index.astype(np.int64)


class ShardedRecords:
  """Random access to the records of several ArrayRecord files as one index space.

  One reader per file per thread, opened lazily (readers are not shared between
  prefetch threads nor pickled into worker processes).
  """

  def __init__(self, paths: Sequence[str], counts: Sequence[int]):
    self._paths = list(paths)
    self._ends = np.cumsum(counts).astype(np.int64)
    self._starts = self._ends - np.asarray(counts, dtype=np.int64)
    self._local = threading.local()

  def __len__(self) -> int:
    return int(self._ends[-1]) if len(self._ends) else 0

  def __getstate__(self):
    return {"_paths": self._paths, "_ends": self._ends, "_starts": self._starts}

  def __setstate__(self, state):
    self.__dict__.update(state)
    self._local = threading.local()

  def _reader(self, shard: int):
    from array_record.python.array_record_module import ArrayRecordReader  # pylint: disable=g-import-not-at-top
    readers = self._local.__dict__.setdefault("readers", {})
    if shard not in readers:
      readers[shard] = ArrayRecordReader(self._paths[shard], _READER_OPTIONS)
    return readers[shard]

  def read(self, ids: np.ndarray) -> list[bytes]:
    """The records at global indices ``ids``, in that order."""
    ids = np.asarray(ids, dtype=np.int64)
    shards = np.searchsorted(self._ends, ids, side="right")
    out: list[bytes] = [b""] * len(ids)
    for shard in np.unique(shards):
      rows = np.flatnonzero(shards == shard)
      found = self._reader(int(shard)).read((ids[rows] - self._starts[shard]).tolist())
      for row, record in zip(rows.tolist(), found):
        out[row] = record
    return out


class PreparedSplit:
  """One split of a prepared directory: its shard files and what the manifest says.

  A remote directory (`gs://...`) is read through `bert_jax.storage`: the manifest in
  place, the split's shards staged into a local temporary directory first (the
  ArrayRecord reader takes local files only; every host stages the whole split).
  """

  def __init__(self, directory: str, split: str = "train"):
    self.directory = str(storage.absolute(directory))
    self.manifest = prepare.read_manifest(self.directory)
    if split not in self.manifest["splits"]:
      raise ValueError(f"Prepared data {self.directory}: expected a {split!r} split, found "
                       f"{sorted(self.manifest['splits'])} (eval needs --eval_fraction > 0)")
    self.split = split
    info = self.manifest["splits"][split]
    self.paths = [storage.join(self.directory, s["path"]) for s in info["shards"]]
    missing = [p for p in self.paths if not storage.path(p).is_file()]
    if missing:
      raise FileNotFoundError(f"Prepared data {self.directory}: shards listed in the "
                              f"manifest are missing: {missing[:3]}")
    if storage.is_remote(self.directory):
      self.paths = [storage.staged(p) for p in self.paths]
    self.shard_counts = [int(s["examples"]) for s in info["shards"]]
    self._records = ShardedRecords(self.paths, self.shard_counts)
    self.num_examples = int(info["examples"])
    self.most_frequent_token = int(info["most_frequent_token"])
    self.pad_id = int(self.manifest["tokenizer"]["pad_id"])
    options = self.manifest["options"]
    self.max_seq_length = int(options["max_seq_length"])
    self.static_predictions = (int(options["max_predictions_per_seq"])
                               if options["masking"] == "static" else 0)

  @property
  def tokenizer_path(self) -> str:
    return storage.join(self.directory, self.manifest["tokenizer"]["file"])

  def __len__(self) -> int:
    return self.num_examples

  @property
  def description(self) -> str:
    return f"{self.directory} ({self.split})"

  def read(self, ids: np.ndarray) -> Batch:
    """The examples at ``ids`` as padded arrays (``records.decode_batch``)."""
    return records.decode_batch(self._records.read(ids), self.max_seq_length,
                                self.pad_id, self.static_predictions)


class InMemoryExamples:
  """Examples held in memory: ``create_pretraining_examples`` output (extra keys
  ignored), read as a ``PreparedSplit`` is."""

  static_predictions = 0  # masks are always drawn by the loader
  description = "the in-memory examples"

  def __init__(self, examples: dict[str, np.ndarray]):
    missing = [k for k in EXAMPLE_KEYS if k not in examples]
    if missing:
      raise ValueError(f"examples: expected keys {EXAMPLE_KEYS}, missing {missing}")
    num = len(examples["input_ids"])
    shape = np.shape(examples["input_ids"])
    for key in EXAMPLE_KEYS:
      expected = shape if key != "next_sentence_label" else (num,)
      if np.shape(examples[key]) != expected:
        raise ValueError(f"examples[{key!r}]: expected shape {expected}, "
                         f"found {np.shape(examples[key])}")
    self._examples = {k: np.asarray(examples[k], dtype=np.int32) for k in EXAMPLE_KEYS}
    self.num_examples = num

  def __len__(self) -> int:
    return self.num_examples

  def read(self, ids: np.ndarray) -> Batch:
    return {key: values[ids] for key, values in self._examples.items()}


Source = PreparedSplit | InMemoryExamples


class GrainPretrainingLoader:
  """Per-process batches of pretraining examples (module docstring)."""

  def __init__(
      self,
      prepared: Source | dict[str, np.ndarray],
      global_batch_size: int,
      seed: int,
      masker: masking.Masker,
      shuffle: bool = True,
      process_index: int = 0,
      process_count: int = 1,
      repeat: bool = True,
      prefetch_threads: int = 2,
      prefetch_buffer_size: int = 8,
      worker_count: int = 0,
      pack: bool = False,
  ):
    """Args:
      prepared: the examples: a ``PreparedSplit``, an ``InMemoryExamples`` or the
        dict of arrays of ``pretraining.create_pretraining_examples``.
      global_batch_size: examples per step over all processes.
      seed: drives the order (seed < 2**32) and the dynamic masking.
      masker: ``masking.MaskingConfig.bind(tokenizer)``; under static masks only its
        ``max_predictions_per_seq`` is used, and checked against the directory.
      shuffle: a new permutation every epoch, else record order.
      process_index, process_count: this process's rows of every batch.
      repeat: forever, or stop after the batches of one epoch (the rest dropped).
      prefetch_threads, prefetch_buffer_size: background threads and batches ready.
      worker_count: > 0 prefetches in that many grain worker processes instead
        (``mp_prefetch``; needs absl flags parsed, as in ``main.py``; same batches
        as threads, checked by hand, not in the tests).
      pack: pack this process's masked rows of each batch (module docstring).
    """
    if isinstance(prepared, dict):
      prepared = InMemoryExamples(prepared)
    if not 0 <= process_index < process_count:
      raise ValueError(f"process_index: expected a value in [0, process_count="
                       f"{process_count}), found {process_index}")
    if global_batch_size < 1 or global_batch_size % process_count:
      raise ValueError(f"global_batch_size: expected a positive multiple of "
                       f"process_count={process_count}, found {global_batch_size}")
    if prepared.num_examples < global_batch_size:
      raise ValueError(
          f"global_batch_size: corpus too small for one batch of {global_batch_size}, "
          f"found {prepared.num_examples} examples in {prepared.description}; "
          f"use more text or lower train.global_batch_size")
    if not 0 <= seed < 2**32:
      raise ValueError(f"seed: expected a value in [0, 2**32), found {seed}")
    self._max_predictions = masker.max_predictions_per_seq
    static = prepared.static_predictions
    if static and static != self._max_predictions:
      raise ValueError(
          f"max_predictions_per_seq={self._max_predictions}, but {prepared.description} "
          f"was prepared with static masks of {static} predictions; they must match")
    self._prepared = prepared
    self._n = prepared.num_examples
    self._global_batch_size = global_batch_size
    self._per_host = global_batch_size // process_count
    self._row_offset = process_index * self._per_host
    self._seed, self._shuffle, self._repeat = seed, shuffle, repeat
    self._masker = masker
    self._read_options = grain.ReadOptions(num_threads=prefetch_threads,
                                           prefetch_buffer_size=prefetch_buffer_size)
    self._worker_count = worker_count
    self._pack = pack
    self._batch = 0

  # -- position -----------------------------------------------------------------

  @property
  def batches_per_epoch(self) -> int:
    return self._n // self._global_batch_size

  @property
  def per_host_batch_size(self) -> int:
    return self._per_host

  def state(self) -> dict[str, int]:
    """The next global batch, plus what it must be restored into (checked)."""
    return {"batch": self._batch, "seed": self._seed, "num_examples": self._n,
            "global_batch_size": self._global_batch_size}

  def restore(self, state: dict[str, int]) -> None:
    """Resumes at ``state`` (from ``state()``), the next batch to yield."""
    expected = {"seed": self._seed, "num_examples": self._n,
                "global_batch_size": self._global_batch_size}
    found = {k: state.get(k) for k in expected}
    if found != expected:
      raise ValueError(f"Loader state {state} was saved by a loader over other data or "
                       f"settings: expected {expected}, found {found}")
    batch = int(state["batch"])
    if batch < 0 or (not self._repeat and batch > self.batches_per_epoch):
      raise ValueError(f"Loader state: expected batch in [0, {self.batches_per_epoch}], "
                       f"found {batch}")
    self._batch = batch

  # -- batches ------------------------------------------------------------------

  def positions(self, batch: int) -> np.ndarray:
    """[per_host] stream positions of this process's rows of global batch ``batch``."""
    start = batch * self._global_batch_size + self._row_offset
    return np.arange(start, start + self._per_host, dtype=np.int64)

  def get_batch(self, batch: int) -> Batch:
    """This process's rows of global batch ``batch``, decoded, masked (and packed)."""
    positions = self.positions(batch)
    out = dict(self._prepared.read(permute(positions, self._n, self._seed, self._shuffle)))
    if not self._prepared.static_predictions:
      out.update(masking.apply_masking(
          out["input_ids"], out["attention_mask"],
          masking.example_seeds(self._seed, 0, positions), self._masker))
    out = {key: out[key] for key in BATCH_KEYS}
    return packing.pack_batch(out, self._max_predictions) if self._pack else out

  def _dataset(self, start: int):
    stop = _MAX_BATCHES if self._repeat else self.batches_per_epoch
    ds = grain.MapDataset.range(start, stop).map(self.get_batch).to_iter_dataset(
        self._read_options)
    if self._worker_count:
      ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=self._worker_count))
    return ds

  def __iter__(self) -> Iterator[Batch]:
    """Batches from ``state()`` on; ``state()`` always names the next one."""
    for batch in self._dataset(self._batch):
      self._batch += 1
      yield batch


class Phase(NamedTuple):
  """A sequence-length phase: from ``start_step`` on, batches of ``split``."""
  start_step: int
  split: PreparedSplit
  max_predictions: int


class PhasedSplits:
  """Training splits by phase; ``len()`` is the first phase's size."""

  def __init__(self, phases: Sequence[Phase]):
    self.phases = list(phases)

  def __len__(self) -> int:
    return len(self.phases[0].split)


class PhasedLoader:
  """Loaders switched at given global batches (steps), e.g. length 128 then 512.

  ``phases``: ``[(first_batch, loader), ...]`` with first batches ascending from 0;
  loader ``i`` yields its batch ``k - first_batch_i`` at global batch ``k``, so each
  phase starts at the beginning of its own stream. ``state()`` is ``{'batch': k}``
  plus the active phase's state fields (checked on restore).
  """

  def __init__(self, phases: Sequence[tuple[int, GrainPretrainingLoader]]):
    starts = [start for start, _ in phases]
    if not phases or starts[0] != 0 or starts != sorted(set(starts)):
      raise ValueError(f"phases: expected first steps ascending from 0, found {starts}")
    self._phases = list(phases)
    self._batch = 0

  def _phase(self, batch: int) -> int:
    return max(i for i, (start, _) in enumerate(self._phases) if start <= batch)

  @property
  def per_host_batch_size(self) -> int:
    return self._phases[0][1].per_host_batch_size

  def state(self) -> dict[str, Any]:
    start, active = self._phases[self._phase(self._batch)]
    return {**active.state(), "batch": self._batch, "phase_batch": self._batch - start}

  def restore(self, state: dict[str, Any]) -> None:
    batch = int(state["batch"])
    start, active = self._phases[self._phase(batch)]
    active.restore({**state, "batch": batch - start})
    self._batch = batch

  def __iter__(self) -> Iterator[Batch]:
    while True:
      index = self._phase(self._batch)
      start, active = self._phases[index]
      stop = self._phases[index + 1][0] if index + 1 < len(self._phases) else None
      active.restore({**active.state(), "batch": self._batch - start})
      for batch in active:
        self._batch += 1
        yield batch
        if stop is not None and self._batch >= stop:
          break
      else:
        return  # a non-repeating last phase ran out
