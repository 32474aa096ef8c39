"""Reads TensorFlow V2 checkpoints (`*.index` + `*.data-*-of-*`) without TensorFlow.

The format, from tensorflow/core/util/tensor_bundle: the `.index` file is a LevelDB
table (uncompressed blocks of prefix-compressed key/value entries, an index block of
block handles, a 48-byte footer) mapping each tensor name to a `BundleEntryProto`
(dtype, shape, shard, offset, size); the empty key holds the `BundleHeaderProto`
(number of shards, endianness). Tensor bytes lie raw in
`<prefix>.data-<shard>-of-<num_shards>`. Only what BERT checkpoints use is read:
numeric dtypes, whole (unpartitioned) tensors, little-endian; anything else raises
`Unsupported`, and `tf.read_variables` then falls back to TensorFlow if installed.
"""

from __future__ import annotations

import struct

import numpy as np

_MAGIC = 0xDB4775248B80FB57
_FOOTER = 48
# tensorflow/core/framework/types.proto DataType -> numpy
_DTYPES = {1: np.float32, 2: np.float64, 3: np.int32, 4: np.uint8, 5: np.int16,
           6: np.int8, 9: np.int64, 10: np.bool_, 17: np.uint16, 19: np.float16,
           22: np.uint32, 23: np.uint64}


class Unsupported(ValueError):
  """A checkpoint feature this reader does not handle (TensorFlow does)."""


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
  result = shift = 0
  while True:
    b = buf[pos]
    pos += 1
    result |= (b & 0x7F) << shift
    if not b & 0x80:
      return result, pos
    shift += 7


def _proto_fields(buf: bytes) -> list[tuple[int, int | bytes]]:
  """(field number, value) pairs of a serialized protobuf message."""
  out, pos = [], 0
  while pos < len(buf):
    tag, pos = _varint(buf, pos)
    field, wire = tag >> 3, tag & 7
    if wire == 0:
      value, pos = _varint(buf, pos)
    elif wire == 1:
      value, pos = buf[pos:pos + 8], pos + 8
    elif wire == 2:
      n, pos = _varint(buf, pos)
      value, pos = buf[pos:pos + n], pos + n
    elif wire == 5:
      value, pos = buf[pos:pos + 4], pos + 4
    else:
      raise Unsupported(f"protobuf wire type {wire}")
    out.append((field, value))
  return out


def _block(data: bytes, offset: int, size: int) -> list[tuple[bytes, bytes]]:
  """Key/value entries of one table block (checks it is uncompressed)."""
  if data[offset + size] != 0:
    raise Unsupported(f"compressed table block (type {data[offset + size]})")
  block = data[offset:offset + size]
  num_restarts = struct.unpack("<I", block[-4:])[0]
  end = len(block) - 4 - 4 * num_restarts
  entries, pos, key = [], 0, b""
  while pos < end:
    shared, pos = _varint(block, pos)
    unshared, pos = _varint(block, pos)
    value_len, pos = _varint(block, pos)
    key = key[:shared] + block[pos:pos + unshared]
    pos += unshared
    entries.append((key, block[pos:pos + value_len]))
    pos += value_len
  return entries


def _index_entries(path: str) -> list[tuple[bytes, bytes]]:
  with open(path, "rb") as f:
    data = f.read()
  if len(data) < _FOOTER or struct.unpack("<Q", data[-8:])[0] != _MAGIC:
    raise ValueError(f"{path} is not a TensorFlow checkpoint index (bad table footer)")
  footer = data[-_FOOTER:]
  _, pos = _varint(footer, 0)  # metaindex handle: offset, size (unused)
  _, pos = _varint(footer, pos)
  index_offset, pos = _varint(footer, pos)
  index_size, _ = _varint(footer, pos)
  entries = []
  for _, handle in _block(data, index_offset, index_size):
    offset, p = _varint(handle, 0)
    size, _ = _varint(handle, p)
    entries.extend(_block(data, offset, size))
  return entries


def _shape(buf: bytes) -> tuple[int, ...]:
  dims = []
  for field, value in _proto_fields(buf):
    if field == 2:  # Dim {int64 size = 1; string name = 2}
      dims.append(dict(_proto_fields(value)).get(1, 0))
    elif field == 3 and value:
      raise Unsupported("tensor of unknown rank")
  return tuple(dims)


def read_checkpoint(prefix: str) -> dict[str, np.ndarray]:
  """{name: array} of every tensor in the checkpoint at `prefix`."""
  entries = _index_entries(prefix + ".index")
  header = dict(_proto_fields(dict(entries).get(b"", b"")))
  num_shards = header.get(1, 1)
  if header.get(2, 0) != 0:
    raise Unsupported("big-endian checkpoint")
  shards: dict[int, np.ndarray] = {}
  out = {}
  for key, value in entries:
    if not key:
      continue
    name = key.decode("utf-8")
    fields = _proto_fields(value)
    entry = dict(fields)
    if any(f == 7 for f, _ in fields):
      raise Unsupported(f"{name} is saved in slices (a partitioned variable)")
    dtype = _DTYPES.get(entry.get(1, 0))
    if dtype is None:
      raise Unsupported(f"{name} has TensorFlow dtype {entry.get(1, 0)}")
    shape = _shape(entry.get(2, b""))
    shard = entry.get(3, 0)
    if shard not in shards:
      shards[shard] = np.memmap(f"{prefix}.data-{shard:05d}-of-{num_shards:05d}",
                                dtype=np.uint8, mode="r")
    offset, size = entry.get(4, 0), entry.get(5, 0)
    count = int(np.prod(shape, dtype=np.int64))
    if size != count * np.dtype(dtype).itemsize:
      raise ValueError(f"{prefix}: {name} holds {size} bytes, its shape {shape} "
                       f"and dtype {np.dtype(dtype)} need {count * np.dtype(dtype).itemsize}")
    raw = np.asarray(shards[shard][offset:offset + size])
    out[name] = raw.view(dtype).reshape(shape).copy()
  return out
