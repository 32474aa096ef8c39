"""CLI: run a trained model over a JSON-lines file (`bert_jax.inference` pipelines).

    python -m bert_jax.predict --model=PATH --task=TASK --input=FILE.jsonl|- \
        --output=FILE.jsonl|- [--batch_size=32 --max_length=N --stride=N ...]

`--model`: a bert_jax fine-tuning or pretraining workdir, an HF directory (a
sentence-transformers one included) or a Google checkpoint directory. One JSON object
per input line, one per output line, in the same order (an input's "id" or "idx" is
copied over):

  embed      {"text"}                        -> {"embedding": [...]}
  fill_mask  {"text"} with [MASK]s           -> {"masks": [[{"token", "token_id",
                                                            "probability"}, ...], ...]}
  classify   {"text", "text_pair"?}          -> {"label", "score", "scores"} |
                                                {"labels", "scores"} | {"value"}
  tag        {"text"} or {"tokens": [...]}   -> {"entities": [{"type", "text", "start",
                                                 "end", ...}], "words", "tags"}
  answer     {"question", "context"}         -> {"answer", "start", "end",
                                                 "probability", "nbest", ...}

Examples:
  echo '{"text": "The [MASK] statement leaves the function."}' | \
      python -m bert_jax.predict --model=workdir/tiny --task=fill_mask --input=-
  python -m bert_jax.predict --model=workdir/sst2 --task=classify \
      --input=reviews.jsonl --output=labels.jsonl
"""

from __future__ import annotations

import json
import sys
from typing import Iterator

from absl import app, flags, logging

from bert_jax import inference, storage

_MODEL = flags.DEFINE_string("model", None, "model directory (see the module docstring)",
                             required=True)
_TASK = flags.DEFINE_enum("task", None, list(inference.PIPELINES), "the pipeline",
                          required=True)
_INPUT = flags.DEFINE_string("input", "-", "JSON-lines file (local or gs://), or - for "
                             "stdin")
_OUTPUT = flags.DEFINE_string("output", "-", "JSON-lines file (local or gs://; it appears "
                              "whole at the end: a temporary file, or one object "
                              "upload), or - for stdout")
_BATCH = flags.DEFINE_integer("batch_size", 32, "rows (windows) per model call")
_CHUNK = flags.DEFINE_integer("chunk", 512, "input lines read, sorted by length and "
                              "run together")
_MAX_LENGTH = flags.DEFINE_integer("max_length", None, "window length in tokens "
                                   "(default: the model's task or its maximum)")
_STRIDE = flags.DEFINE_integer("stride", None, "windows start this many pieces apart "
                               "(default: the task's doc_stride, else half a window)")
_TOP_K = flags.DEFINE_integer("top_k", 5, "fill_mask: tokens per [MASK]")
_POOLING = flags.DEFINE_enum("pooling", None, list(inference.pipelines.POOLINGS),
                             "embed: default the sentence-transformers setting, else mean")
_NORMALIZE = flags.DEFINE_bool("normalize", None, "embed: L2-normalise (default: the "
                               "sentence-transformers setting, else no)")
_AGGREGATE = flags.DEFINE_enum("aggregate", "mean", list(inference.pipelines.AGGREGATIONS),
                               "classify: how window logits combine")
_THRESHOLDS = flags.DEFINE_list("thresholds", ["0.5"], "classify, multi-label: one "
                                "sigmoid threshold, or one per label")
_N_BEST = flags.DEFINE_integer("n_best", 20, "answer: candidate spans kept")
_MAX_ANSWER = flags.DEFINE_integer("max_answer_length", 30, "answer: longest span in pieces")
_NULL = flags.DEFINE_float("null_threshold", 0.0, "answer, SQuAD 2.0 models: answer '' "
                           "when null score - best span score > this")

FIELDS = {"embed": ("text",), "fill_mask": ("text",), "classify": ("text",),
          "tag": ("text|tokens",), "answer": ("question", "context")}


class InputError(ValueError):
  """A bad input line: names the file and line."""


def read_rows(path: str) -> Iterator[tuple[str, dict]]:
  """(where, row) per non-empty line of a JSON-lines file (or stdin)."""
  f = sys.stdin if path == "-" else storage.open_text(path)
  name = "stdin" if path == "-" else path
  try:
    for n, line in enumerate(f):
      if not line.strip():
        continue
      where = f"{name}:{n + 1}"
      try:
        row = json.loads(line)
      except ValueError as e:
        raise InputError(f"{where}: not a JSON object ({e})") from None
      if not isinstance(row, dict):
        raise InputError(f"{where}: expected a JSON object, found {type(row).__name__}")
      yield where, row
  finally:
    if f is not sys.stdin:
      f.close()


def _field(row: dict, where: str, names: str):
  for name in names.split("|"):
    if name in row:
      return row[name]
  alias = {"text": "text_a"}.get(names)
  if alias in row:
    return row[alias]
  raise InputError(f"{where}: expected the field {names.replace('|', ' or ')!r}, found "
                   f"{sorted(row)}")


def run_chunk(task: str, tok, model, rows: list[tuple[str, dict]]) -> list[dict]:
  """The pipeline over one chunk of input rows -> one output dict per row."""
  common = dict(max_length=_MAX_LENGTH.value, stride=_STRIDE.value,
                batch_size=_BATCH.value)
  fields = [[_field(row, where, f) for f in FIELDS[task]] for where, row in rows]
  if task == "embed":
    vectors = inference.embed(model, tok, [f[0] for f in fields], pooling=_POOLING.value,
                              normalize=_NORMALIZE.value, **common)
    return [{"embedding": [float(x) for x in v]} for v in vectors]
  if task == "fill_mask":
    masks = inference.fill_mask(model, tok, [f[0] for f in fields], top_k=_TOP_K.value,
                                **common)
    return [{"masks": m} for m in masks]
  if task == "classify":
    pairs = [row.get("text_pair", row.get("text_b")) for _, row in rows]
    if any(p is None for p in pairs) and any(p is not None for p in pairs):
      raise InputError("classify: either every line has a 'text_pair' or none has")
    thresholds = [float(t) for t in _THRESHOLDS.value]
    return inference.classify(model, tok, [f[0] for f in fields],
                              None if pairs[0] is None else pairs,
                              aggregate=_AGGREGATE.value,
                              thresholds=thresholds[0] if len(thresholds) == 1
                              else thresholds, **common)
  if task == "tag":
    return inference.tag(model, tok, [f[0] for f in fields], **common)
  return inference.answer(model, tok, [f[0] for f in fields], [f[1] for f in fields],
                          n_best=_N_BEST.value, max_answer_length=_MAX_ANSWER.value,
                          null_threshold=_NULL.value, **common)


def _chunks(rows, size):
  chunk = []
  for row in rows:
    chunk.append(row)
    if len(chunk) == size:
      yield chunk
      chunk = []
  if chunk:
    yield chunk


def _count_lines(path: str) -> int | None:
  if path == "-":
    return None
  with storage.open_text(path) as f:
    return sum(1 for line in f if line.strip())


def predict(model_path: str, task: str, input_path: str, output_path: str) -> int:
  """Runs the pipeline over every line; returns the number of lines written."""
  if input_path != "-" and not storage.path(input_path).is_file():
    raise InputError(f"--input {input_path} does not exist")
  tok, model = inference.load(model_path)
  if output_path == "-":
    return _write_results(sys.stdout, task, tok, model, input_path)
  with storage.open_atomic(output_path, text=True) as out:
    return _write_results(out, task, tok, model, input_path)


def _write_results(out, task: str, tok, model, input_path: str) -> int:
  import tqdm
  written = 0
  with tqdm.tqdm(total=_count_lines(input_path), unit="line", file=sys.stderr,
                 disable=None) as bar:
    for chunk in _chunks(read_rows(input_path), _CHUNK.value):
      for (_, row), result in zip(chunk, run_chunk(task, tok, model, chunk)):
        ids = {k: row[k] for k in ("id", "idx") if k in row}
        out.write(json.dumps({**ids, **result}, ensure_ascii=False) + "\n")
        written += 1
      bar.update(len(chunk))
  return written


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  try:
    predict(_MODEL.value, _TASK.value, _INPUT.value, _OUTPUT.value)
  except (inference.ModelError, InputError, ValueError, FileNotFoundError) as e:
    print(f"predict failed: {e}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  app.run(main)
