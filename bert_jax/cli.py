"""What every config-driven command line shares (`bert_jax.main`, `bert_jax.aot`): absl
parsing with unknown config fields reported by name, and one-line errors.

Errors in the config or the input (a bad field value, a missing or unreadable file, a
checkpoint of another model) print one line `error: ...` on stderr and exit with code
2; `--verbose` adds the traceback. Defines no flags: each command defines its own.
"""

from __future__ import annotations

from absl import flags

# The jobs a config's `job` field may name (bert_jax/train/pretrain.py, finetune.py).
JOBS = ("pretrain", "finetune")

# What config and input validation raises (ConversionError is a ValueError): these
# exit with code 2 and one line; anything else is a bug and keeps its traceback.
INPUT_ERRORS = (ValueError, FileNotFoundError, UnicodeError)


def check_job(config) -> str:
  """`config.job`, or the error naming the field."""
  if config.job not in JOBS:
    raise ValueError(f"config field job={config.job!r} is not one of {JOBS}")
  return config.job


def unknown_override(argv) -> str | None:
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


def fail(message: str, verbose: bool) -> None:
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
    return flags.FLAGS(argv)
  except Exception as e:  # config_flags raises AttributeError/KeyError/flag errors
    try:
      message = unknown_override(argv) or str(e)
    except INPUT_ERRORS as config_error:  # the config file's own check (e.g. size)
      message = str(config_error)
    fail(message, "--verbose" in argv)
