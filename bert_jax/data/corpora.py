"""Text corpora for pretraining: documents made of sentences.

A corpus is a ``list[list[str]]``: documents, each a list of sentences. Document
boundaries matter because next-sentence prediction never pairs sentences across
documents, except on purpose for its random "not next" half.

Sources, named by a spec string (``iter_documents(spec)`` streams, ``load_corpus``
returns a list):
  * ``embedded``: real English prose shipped with every CPython install (the
    ``pydoc`` help topics and the docstrings of the standard library), so tests and
    smoke runs need no network and no data download;
  * comma-separated file globs: files in the original BERT format (one sentence per
    line, a blank line between documents), or JSON lines (``*.jsonl`` / ``*.json``:
    one document per line, its text under ``"text"``, split into sentences at line
    breaks and sentence ends);
  * ``tfds:NAME[:SPLIT]`` (e.g. ``tfds:wikipedia/20230601.en:train``): a prepared
    TensorFlow Datasets corpus read through ``tfds.data_source`` (ArrayRecord, no
    TensorFlow), text under its ``text`` feature. The data must already be prepared
    in the tfds data dir; nothing is downloaded here.

Lines that are not UTF-8 stop the read with an error naming file and line, or, with
``on_bad_utf8='skip'``, are skipped and counted in ``stats['skipped_lines']``; JSON
documents without text are skipped and counted in ``stats['empty_documents']``.
"""
from __future__ import annotations

import ast
import json
import os
import re
import sysconfig
import warnings
from collections.abc import Iterator, Sequence

import numpy as np
import tqdm

from bert_jax import storage

Corpus = list[list[str]]

EMBEDDED = "embedded"
TFDS_PREFIX = "tfds:"
JSON_SUFFIXES = (".jsonl", ".json")
BAD_UTF8_POLICIES = ("error", "skip")

_SKIPPED_DIRS = frozenset(
    {"site-packages", "dist-packages", "test", "tests", "idlelib", "lib2to3", "__pycache__"})
_MIN_DOCSTRING_CHARS = 80
_MIN_SENTENCE_WORDS = 3
_SENTENCE_BOUNDARY = re.compile(r'(?<=[.!?])\s+(?=[A-Z"(])')
_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")
_CODE_MARKERS = (">>>", "::=")
_RST_UNDERLINE = re.compile(r"^[ \t]*([=*\-~^\"'`#+])\1{2,}[ \t]*$", re.MULTILINE)


# ----------------------------------------------------------------------------------
# Text cleanup shared by the embedded sources.


def _looks_like_code(paragraph: str) -> bool:
  """Whether a paragraph is a code sample, grammar rule or table, not prose."""
  if any(marker in paragraph for marker in _CODE_MARKERS):
    return True
  lines = [line for line in paragraph.splitlines() if line.strip()]
  indented = sum(line[:1].isspace() for line in lines)
  return indented * 2 > len(lines)


def text_to_sentences(text: str) -> list[str]:
  """Splits free text into prose sentences; code-like paragraphs are dropped.

  Paragraphs are separated by blank lines; whitespace inside a paragraph is
  collapsed to single spaces; reStructuredText heading underlines are removed;
  sentences shorter than 3 words are dropped.
  """
  sentences = []
  text = _RST_UNDERLINE.sub("", text)  # heading underlines such as '*****'
  for paragraph in _PARAGRAPH_BREAK.split(text):
    if not paragraph.strip() or _looks_like_code(paragraph):
      continue
    flat = " ".join(paragraph.split())
    sentences.extend(
        s for s in _SENTENCE_BOUNDARY.split(flat)
        if len(s.split()) >= _MIN_SENTENCE_WORDS)
  return sentences


# ----------------------------------------------------------------------------------
# The embedded corpus.


def _pydoc_topic_texts() -> list[str]:
  """The ``help()`` topic pages of the running Python, sorted by topic name."""
  from pydoc_data.topics import topics  # pylint: disable=import-outside-toplevel
  return [topics[key] for key in sorted(topics)]


def _stdlib_python_files() -> list[str]:
  """Sorted ``.py`` files of the standard library, without tests and vendored code."""
  root = sysconfig.get_paths()["stdlib"]
  paths = []
  for directory, subdirs, files in os.walk(root):
    subdirs[:] = [d for d in subdirs if d not in _SKIPPED_DIRS]
    paths.extend(os.path.join(directory, f) for f in files if f.endswith(".py"))
  return sorted(paths)


def _module_docstrings(path: str) -> str | None:
  """The module, class and function docstrings (> 80 chars) of one file, or None.

  Returns None for files that cannot be read or parsed (e.g. syntax of another
  Python version); those are skipped on purpose.
  """
  try:
    with open(path, "rb") as f:
      source = f.read()
    with warnings.catch_warnings():
      warnings.simplefilter("ignore")  # invalid escape sequences and the like
      tree = ast.parse(source, filename=path)
  except (OSError, SyntaxError, ValueError):
    return None
  docstrings = []
  for node in ast.walk(tree):
    if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
      doc = ast.get_docstring(node, clean=True)
      if doc and len(doc) > _MIN_DOCSTRING_CHARS:
        docstrings.append(doc)
  return "\n\n".join(docstrings) or None


def _embedded_texts() -> Iterator[str]:
  """One raw text per embedded document, in a fixed order."""
  yield from _pydoc_topic_texts()
  for path in _stdlib_python_files():
    text = _module_docstrings(path)
    if text is not None:
      yield text


def embedded_corpus() -> Corpus:
  """English prose found on any Python install; no network, deterministic order.

  Documents: every ``pydoc_data.topics`` page (sorted by key), then one document
  per standard-library ``.py`` file holding its docstrings (sorted by path; tests,
  ``site-packages``, ``idlelib`` and ``lib2to3`` skipped). Code-like paragraphs and
  sentences under 3 words are dropped, and so are documents with < 2 sentences.
  Content depends on the Python version (about 500 documents, 1.5 MB on 3.11).
  """
  documents = (text_to_sentences(text) for text in _embedded_texts())
  return [doc for doc in documents if len(doc) >= 2]


# ----------------------------------------------------------------------------------
# Text files in the BERT format.


def _expand_patterns(pattern: str | Sequence[str]) -> list[str]:
  """Files matched by each glob pattern, sorted within a pattern, in pattern order."""
  patterns = [pattern] if isinstance(pattern, str) else list(pattern)
  if not patterns:
    raise FileNotFoundError("read_text_corpus: expected at least one file pattern, got none")
  files = []
  for p in patterns:
    matched = [m for m in storage.glob(p) if storage.path(m).is_file()]
    if not matched:
      raise FileNotFoundError(f"Corpus pattern {p!r} matches no file")
    files.extend(matched)
  return files


def _decode_line(raw: bytes, path: str, line_number: int, on_bad_utf8: str,
                 stats: dict[str, int]) -> str | None:
  """The line as text; None when it is not UTF-8 and ``on_bad_utf8='skip'``."""
  try:
    return raw.decode("utf-8")
  except UnicodeDecodeError as e:
    if on_bad_utf8 == "skip":
      stats["skipped_lines"] = stats.get("skipped_lines", 0) + 1
      return None
    raise ValueError(
        f"{path}:{line_number}: expected UTF-8 text, found byte "
        f"0x{raw[e.start]:02x} at column {e.start + 1} (on_bad_utf8='skip' skips "
        "such lines and counts them)") from None


def _lines(path: str, on_bad_utf8: str, stats: dict[str, int]) -> Iterator[tuple[int, str]]:
  """(line number, stripped text) of a file; a leading byte-order mark removed."""
  with storage.path(path).open("rb") as f:
    for line_number, raw in enumerate(f, start=1):
      line = _decode_line(raw, path, line_number, on_bad_utf8, stats)
      if line is None:
        continue
      line = line.strip()
      if line_number == 1:
        line = line.lstrip("\ufeff").strip()  # a UTF-8 byte-order mark
      yield line_number, line


def _text_file_documents(path: str, on_bad_utf8: str,
                         stats: dict[str, int]) -> Iterator[list[str]]:
  """Documents of one file: one sentence per line, blank lines between documents.

  A file boundary is also a document boundary (the original BERT script let a
  document run on into the next file when the first one had no trailing blank).
  """
  document: list[str] = []
  found = False
  for _, line in _lines(path, on_bad_utf8, stats):
    if line:
      document.append(line)
    elif document:
      found = True
      yield document
      document = []
  if document:
    found = True
    yield document
  if not found:
    raise ValueError(f"Corpus file {path} is empty: expected sentences, found only blank lines")


def plain_text_to_sentences(text: str) -> list[str]:
  """Sentences of a document's raw text: split at line breaks and sentence ends."""
  sentences = []
  for line in text.splitlines():
    line = " ".join(line.split())
    if line:
      sentences.extend(s for s in _SENTENCE_BOUNDARY.split(line) if s)
  return sentences


def _text_document(text, where: str, stats: dict[str, int]) -> list[str] | None:
  """A JSON / tfds record's text as sentences; None (counted) when it has none."""
  if isinstance(text, bytes):
    text = text.decode("utf-8")
  if not isinstance(text, str):
    raise ValueError(f"{where}: expected the document text as a string, found "
                     f"{type(text).__name__}")
  sentences = plain_text_to_sentences(text)
  if not sentences:
    stats["empty_documents"] = stats.get("empty_documents", 0) + 1
    return None
  return sentences


def _json_lines_documents(path: str, on_bad_utf8: str,
                          stats: dict[str, int]) -> Iterator[list[str]]:
  """One document per JSON line, text under ``"text"``; blank lines ignored."""
  for line_number, line in _lines(path, on_bad_utf8, stats):
    if not line:
      continue
    where = f"{path}:{line_number}"
    try:
      record = json.loads(line)
    except json.JSONDecodeError as e:
      raise ValueError(f"{where}: expected a JSON object, found invalid JSON ({e.msg})") \
          from None
    if not isinstance(record, dict) or "text" not in record:
      raise ValueError(f"{where}: expected a JSON object with a 'text' field")
    document = _text_document(record["text"], where, stats)
    if document is not None:
      yield document


def _tfds_documents(spec: str, stats: dict[str, int]) -> Iterator[list[str]]:
  """Documents of a prepared tfds corpus, ``tfds:NAME[:SPLIT]``, in record order."""
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  name, _, split = spec[len(TFDS_PREFIX):].partition(":")
  split = split or "train"
  try:
    source = tfds.data_source(name, split=split, download=False)
  except Exception as e:  # tfds raises assorted types for a missing or unprepared set
    raise FileNotFoundError(
        f"Corpus spec {spec!r}: tfds dataset {name!r} split {split!r} could not be "
        f"opened ({type(e).__name__}: {str(e).splitlines()[0]}); prepare it first with `tfds build {name}` "
        "(needs network) or point TFDS_DATA_DIR at a prepared copy") from None
  for index in range(len(source)):
    record = source[index]
    where = f"{spec} record {index}"
    if "text" not in record:
      raise ValueError(f"{where}: expected a 'text' feature, found {sorted(record)}")
    document = _text_document(record["text"], where, stats)
    if document is not None:
      yield document


def _check_policy(on_bad_utf8: str) -> None:
  if on_bad_utf8 not in BAD_UTF8_POLICIES:
    raise ValueError(f"on_bad_utf8: expected one of {BAD_UTF8_POLICIES}, found {on_bad_utf8!r}")


def iter_files(files: Sequence[str], on_bad_utf8: str = "error",
               stats: dict[str, int] | None = None) -> Iterator[list[str]]:
  """Documents of files in order, each read as JSON lines or BERT text by its suffix."""
  _check_policy(on_bad_utf8)
  stats = {} if stats is None else stats
  for path in files:
    if path.endswith(JSON_SUFFIXES):
      yield from _json_lines_documents(path, on_bad_utf8, stats)
    else:
      yield from _text_file_documents(path, on_bad_utf8, stats)


def read_text_corpus(pattern: str | Sequence[str], on_bad_utf8: str = "error",
                     stats: dict[str, int] | None = None) -> Corpus:
  """Reads local text files in the original BERT format (or JSON lines, by suffix).

  Args:
    pattern: a glob pattern or a sequence of them; files are read in pattern
      order, sorted by name within a pattern.
    on_bad_utf8: ``'error'`` or ``'skip'`` (skipped lines counted in ``stats``).
    stats: counters updated in place (``skipped_lines``, ``empty_documents``).

  Returns:
    The documents of all files, in file order.

  Raises:
    FileNotFoundError: a pattern matches no file.
    ValueError: a file is empty, or not valid UTF-8 (the message names the line).
  """
  files = _expand_patterns(pattern)
  documents: Corpus = []
  for path in tqdm.tqdm(files, desc="Reading corpus", unit="file", disable=None):
    documents.extend(iter_files([path], on_bad_utf8, stats))
  return documents


def iter_documents(spec: str, on_bad_utf8: str = "error",
                   stats: dict[str, int] | None = None) -> Iterator[list[str]]:
  """Streams the documents of a corpus spec (module docstring), in a fixed order."""
  _check_policy(on_bad_utf8)
  stats = {} if stats is None else stats
  if spec == EMBEDDED:
    yield from embedded_corpus()
  elif spec.startswith(TFDS_PREFIX):
    yield from _tfds_documents(spec, stats)
  else:
    patterns = [p.strip() for p in spec.split(",") if p.strip()]
    if not patterns:
      raise ValueError(f"Corpus spec {spec!r}: expected 'embedded', 'tfds:NAME' or "
                       "file patterns")
    yield from iter_files(_expand_patterns(patterns), on_bad_utf8, stats)


def load_corpus(spec: str, on_bad_utf8: str = "error",
                stats: dict[str, int] | None = None) -> Corpus:
  """A corpus from a config string (``iter_documents``), as a list."""
  documents = list(iter_documents(spec, on_bad_utf8, stats))
  if not documents:
    raise ValueError(f"Corpus spec {spec!r}: expected documents, found 0")
  return documents


def split_documents(documents: Corpus, eval_fraction: float, seed: int) -> tuple[Corpus, Corpus]:
  """Deterministic held-out split by whole documents.

  Args:
    documents: the corpus.
    eval_fraction: share of documents held out, in [0, 1); when > 0 at least one
      document is held out and at least one is kept for training.
    seed: picks which documents are held out.

  Returns:
    ``(train_docs, eval_docs)``, each in the corpus order.
  """
  if not 0.0 <= eval_fraction < 1.0:
    raise ValueError(f"eval_fraction: expected a value in [0, 1), found {eval_fraction}")
  n = len(documents)
  if n < 2:
    raise ValueError(f"split_documents: expected at least 2 documents, found {n}")
  num_eval = 0
  if eval_fraction > 0:
    num_eval = min(n - 1, max(1, round(n * eval_fraction)))
  held_out = np.zeros(n, dtype=bool)
  held_out[np.random.default_rng(seed).permutation(n)[:num_eval]] = True
  train = [doc for doc, h in zip(documents, held_out) if not h]
  evaluation = [doc for doc, h in zip(documents, held_out) if h]
  return train, evaluation
