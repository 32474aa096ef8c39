r"""Entry point: `python -m bert_jax.main --config=configs/pretrain.py:tiny --workdir=DIR`.

The config file picks the job (`config.job`); any field can be overridden with
`--config.<field>=value`, and an unknown field stops the run naming it (the config is
locked). The resolved config is written to `DIR/config.json`.

Errors in the config or the input (a bad field value, a missing or unreadable file, a
checkpoint of another model) print one line `error: ...` on stderr and exit with code
2; `--verbose` adds the traceback.

Multi-host: every process runs the same command; `jax.distributed.initialize` is
called first as the `distributed` config asks (TPU pods: `--config.distributed.mode=on`;
SLURM / Open MPI / JAX_COORDINATOR_ADDRESS are detected; or give
`--config.distributed.coordinator_address=host:port`, `num_processes`, `process_id`).
"""

from absl import app, flags, logging
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    "config", None, "Config file, e.g. configs/pretrain.py:tiny", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and the tokenizer.")
flags.DEFINE_boolean("verbose", False, "Print the traceback of config/input errors.")
flags.mark_flags_as_required(["config", "workdir"])

# What config and input validation raises (ConversionError is a ValueError): these
# exit with code 2 and one line; anything else is a bug and keeps its traceback.
INPUT_ERRORS = (ValueError, FileNotFoundError, UnicodeError)

JOBS = ("pretrain", "finetune")


def _unknown_override(argv) -> str | None:
  """The first `--config.a.b=v` whose path does not exist in the config file's output."""
  import difflib
  import importlib.util
  spec = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None)
  if spec is None:
    return None
  path, _, arg = spec.partition(":")
  module_spec = importlib.util.spec_from_file_location("_bert_jax_config", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  config = module.get_config(arg) if arg else module.get_config()
  for a in argv:
    if not a.startswith("--config."):
      continue
    field = a[len("--config."):].split("=", 1)[0]
    node = config
    for part in field.split("."):
      if not hasattr(node, "keys") or part not in node:
        close = difflib.get_close_matches(part, list(node.keys()) if hasattr(node, "keys") else [])
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return f"config field {field!r} does not exist: no {part!r} in it{hint}"
      node = node[part]
  return None


def _fail(message: str, verbose: bool) -> None:
  """One line on stderr (the traceback first with --verbose), exit code 2."""
  import sys
  import traceback
  if verbose:
    traceback.print_exc()
  print(f"error: {message}", file=sys.stderr, flush=True)
  raise SystemExit(2)


def parse_flags(argv):
  """absl parsing, with unknown config fields and config errors reported by name."""
  try:
    return FLAGS(argv)
  except Exception as e:  # config_flags raises AttributeError/KeyError/flag errors
    try:
      message = _unknown_override(argv) or str(e)
    except INPUT_ERRORS as config_error:  # the config file's own check (e.g. size)
      message = str(config_error)
    _fail(message, "--verbose" in argv)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  import jax
  from bert_jax import parallel
  jax.config.update("jax_threefry_partitionable", True)
  # Before anything touches devices: joins the other processes of a multi-host run.
  parallel.initialize_distributed(FLAGS.config.get("distributed"))
  # Libraries (orbax above all) log every file operation at INFO; keep warnings only.
  # Our own progress lines go through bert_jax.train.logging.info on process 0.
  logging.set_verbosity(logging.WARNING)
  try:
    run(FLAGS.config, FLAGS.workdir)
  except INPUT_ERRORS as e:
    _fail(str(e), FLAGS.verbose)


def run(config, workdir: str) -> None:
  if config.job not in JOBS:
    raise ValueError(f"config field job={config.job!r} is not one of {JOBS}")
  if config.job == "pretrain":
    from bert_jax.train import pretrain
    pretrain.train_and_evaluate(config, workdir)
  elif config.job == "finetune":
    from bert_jax.train import finetune
    finetune.train_and_evaluate(config, workdir)


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
