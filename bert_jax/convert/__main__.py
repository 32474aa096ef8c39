"""CLI: python -m bert_jax.convert --src=DIR --dst=NEW_DIR [--from=auto] [--to=...]

Examples:
  # Google's release -> bert_jax params dir (read without TensorFlow; the tf extra,
  # pip install -e '.[tf]', is only a fallback for partitioned or compressed files)
  python -m bert_jax.convert --src=uncased_L-4_H-256_A-4 --dst=ckpt/mini
  # HF dir -> bert_jax, and a training workdir -> HF (transformers loads it)
  python -m bert_jax.convert --src=hf_bert --dst=ckpt/hf_bert
  python -m bert_jax.convert --src=workdir/tiny --dst=export/tiny_hf --to=hf
  # A fine-tuned workdir's best epoch -> the transformers task class (task.json says
  # which: BertForSequenceClassification | BertForTokenClassification |
  # BertForQuestionAnswering, with id2label), its tokenizer beside it
  python -m bert_jax.convert --src=workdir/mrpc --dst=export/mrpc_hf --step=best
"""

from __future__ import annotations

import json
import sys

from absl import app, flags, logging

from bert_jax.convert import formats
from bert_jax.convert.common import ConversionError

_SRC = flags.DEFINE_string("src", None, "checkpoint dir (or TF checkpoint prefix)",
                           required=True)
_DST = flags.DEFINE_string("dst", None, "output dir; must not exist (or be empty)",
                           required=True)
_FROM = flags.DEFINE_enum("from", "auto", ("auto",) + formats.FORMATS,
                          "source format; auto detects it from the files")
_TO = flags.DEFINE_enum("to", None, ("hf", "bert_jax"),
                        "output format; default hf for bert_jax sources, else bert_jax")
_STEP = flags.DEFINE_string("step", None, "workdir checkpoint: a step number, 'best' "
                            "(the best-ranked by its eval metric) or unset (the newest)")
_SEED = flags.DEFINE_integer("seed", 0, "init seed for modules the source lacks")


def _describe(s: dict) -> str:
  lines = [f"read {s['format']}: {s['source']}",
           f"  mapped {s['arrays']} arrays, {s['parameters']:,} parameters",
           f"  freshly initialised (absent in the source): "
           f"{', '.join(s['initialised']) or 'none'}",
           f"  skipped source variables: {', '.join(s['skipped']) or 'none'}",
           f"wrote {s['to']} to {s['dst']}: {', '.join(s['written'])}"]
  return "\n".join(lines)


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # orbax and jax log every step at INFO
  try:
    step = _STEP.value
    if step is not None and step != "best":
      if not step.isdigit():
        raise ConversionError(f"--step={step!r}: expected a step number or 'best'")
      step = int(step)
    summary = formats.convert(_SRC.value, _DST.value, getattr(flags.FLAGS, "from"),
                              _TO.value, step=step, seed=_SEED.value)
  except ConversionError as e:
    print(f"conversion failed: {e}", file=sys.stderr)
    return 2
  print(_describe(summary))
  print(json.dumps(summary))


if __name__ == "__main__":
  app.run(main)
