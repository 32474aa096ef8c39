"""The files of a run's workdir: the one module that names them.

A workdir (`bert_jax.main --workdir=DIR`, local or `gs://bucket/run`) holds:

    config.json          the resolved config (train/trainer.py)
    checkpoints/<step>/  orbax: state, data position, config (+ eval metrics)
    metrics.jsonl        one JSON row per logged step (train/logging.py)
    tensorboard/         TensorBoard event files
    profile/             jax.profiler traces (config field train.profile_steps)
    tokenizer/           pretraining: the SentencePiece model it trained (spm.model,
                         spm.json); fine-tuning: a copy of the tokenizer it used
    final_eval.json      pretraining's final figures
    task.json            fine-tuning: task, kind, labels, lengths, tokenizer file
    results.json         fine-tuning: every epoch's scores and the best one
    predictions/epoch_N/, predictions/test/   fine-tuning's predictions

Every function returns an `epath.Path` (`bert_jax.storage`), absolute for a local
workdir and as written for a remote one, so `os.path.abspath` never turns
`gs://bucket/run` into a local `./gs:/bucket/run`.
"""

from __future__ import annotations

from etils import epath

from bert_jax import storage

CONFIG_FILE = "config.json"
CHECKPOINTS_DIR = "checkpoints"
METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"
PROFILE_DIR = "profile"
TOKENIZER_DIR = "tokenizer"
FINAL_EVAL_FILE = "final_eval.json"
TASK_FILE = "task.json"
RESULTS_FILE = "results.json"
PREDICTIONS_DIR = "predictions"
# What a finished run leaves (pretraining, fine-tuning): experiments/ waits for it.
FINAL_FILES = (FINAL_EVAL_FILE, RESULTS_FILE)


def root(workdir: storage.PathLike) -> epath.Path:
  """The workdir itself (absolute when local)."""
  return storage.absolute(workdir)


def config_file(workdir: storage.PathLike) -> epath.Path:
  return root(workdir) / CONFIG_FILE


def checkpoints(workdir: storage.PathLike) -> epath.Path:
  return root(workdir) / CHECKPOINTS_DIR


def checkpoint(workdir: storage.PathLike, step: int) -> epath.Path:
  """`checkpoints/<step>/` (orbax's directory of one saved step)."""
  return checkpoints(workdir) / str(step)


def metrics_file(workdir: storage.PathLike) -> epath.Path:
  return root(workdir) / METRICS_FILE


def tensorboard_dir(workdir: storage.PathLike) -> epath.Path:
  return root(workdir) / TENSORBOARD_DIR


def profile_dir(workdir: storage.PathLike) -> epath.Path:
  return root(workdir) / PROFILE_DIR


def tokenizer_dir(workdir: storage.PathLike) -> epath.Path:
  return root(workdir) / TOKENIZER_DIR


def trained_tokenizer(workdir: storage.PathLike) -> epath.Path:
  """`tokenizer/spm.model`: the SentencePiece model a pretraining run trained."""
  from bert_jax.data import tokenizers  # pylint: disable=import-outside-toplevel
  return tokenizer_dir(workdir) / tokenizers.MODEL_FILENAME


def tokenizer_entry(tokenizer_file: storage.PathLike) -> str:
  """task.json's `tokenizer` value for a copy of `tokenizer_file` in `tokenizer/`."""
  return f"{TOKENIZER_DIR}/{storage.path(tokenizer_file).name}"


def file(workdir: storage.PathLike, relative: str) -> epath.Path:
  """A file named relative to the workdir (task.json's `tokenizer`, e.g.)."""
  return root(workdir) / relative


def final_eval_file(workdir: storage.PathLike) -> epath.Path:
  return root(workdir) / FINAL_EVAL_FILE


def task_file(workdir: storage.PathLike) -> epath.Path:
  return root(workdir) / TASK_FILE


def results_file(workdir: storage.PathLike) -> epath.Path:
  return root(workdir) / RESULTS_FILE


def predictions_dir(workdir: storage.PathLike, name: str) -> epath.Path:
  """`predictions/<name>/`: `epoch_predictions` and `test_predictions` name them."""
  return root(workdir) / PREDICTIONS_DIR / name


def epoch_predictions(workdir: storage.PathLike, epoch: int) -> epath.Path:
  return predictions_dir(workdir, f"epoch_{epoch}")


def test_predictions(workdir: storage.PathLike) -> epath.Path:
  return predictions_dir(workdir, "test")


def is_finished(workdir: storage.PathLike) -> bool:
  """Whether the run left its final figures (`FINAL_FILES`)."""
  return any((root(workdir) / name).exists() for name in FINAL_FILES)
