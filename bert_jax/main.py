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

from bert_jax import cli

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    "config", None, "Config file, e.g. configs/pretrain.py:tiny", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and the tokenizer.")
flags.DEFINE_boolean("verbose", False, "Print the traceback of config/input errors.")
flags.mark_flags_as_required(["config", "workdir"])

def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  import jax
  from bert_jax import parallel
  jax.config.update("jax_threefry_partitionable", True)
  parallel.set_libtpu_flags()
  # Before anything touches devices: joins the other processes of a multi-host run.
  parallel.initialize_distributed(FLAGS.config.get("distributed"))
  # Libraries (orbax above all) log every file operation at INFO; keep warnings only.
  # Our own progress lines go through bert_jax.train.logging.info on process 0.
  logging.set_verbosity(logging.WARNING)
  try:
    run(FLAGS.config, FLAGS.workdir)
  except cli.INPUT_ERRORS as e:
    cli.fail(str(e), FLAGS.verbose)


def run(config, workdir: str) -> None:
  cli.check_job(config)
  if config.job == "pretrain":
    from bert_jax.train import pretrain
    pretrain.train_and_evaluate(config, workdir)
  elif config.job == "finetune":
    from bert_jax.train import finetune
    finetune.train_and_evaluate(config, workdir)


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
