"""Small helpers shared by several test modules."""
import os

import numpy as np


# XLA flags of every test process and its subprocesses (conftest.py puts them in
# os.environ before JAX starts). The CPU tests compile hundreds of tiny programs and run
# each a few steps, so LLVM's optimisation passes cost more than they save: level 0
# cut the 8-device mesh worker's CPU time by a third (71 -> 44 s). It changes code
# generation only (matmuls stay Eigen/oneDNN library calls, HLO passes and buffer
# assignment are untouched), not what any test checks.
TEST_XLA_FLAGS = "--xla_backend_optimization_level=0"


def compilation_cache_dir() -> str:
  """One folder per test run for JAX's persistent compilation cache, shared by every
  job the tests start as a subprocess (`subprocess_env`). The kill/resume, other-mesh,
  gs://, sweep and multi-process tests run the same tiny programs again and again; a
  rerun reads the executable XLA compiled the first time instead of compiling it
  anew. Keyed by pytest-xdist's run id (the same in every worker of one run), so a
  run starts with an empty cache, as on a clean CI checkout. The pytest processes
  themselves keep JAX's in-memory cache only: some tests read compiled programs'
  memory and cost analyses, which a deserialised executable need not carry."""
  import tempfile
  run_id = os.environ.get("PYTEST_XDIST_TESTRUNUID") or f"pid{os.getppid()}-{os.getpid()}"
  return os.path.join(tempfile.gettempdir(), "bert_jax_test_jax_cache", run_id)


def subprocess_env(devices: int | None = None, xla_flags: str = "", **extra) -> dict:
  """os.environ for a CPU-only subprocess: the tests' XLA flags, `devices` host devices
  (--xla_force_host_platform_device_count) if given, then `xla_flags`, then `extra`."""
  flags = [os.environ.get("XLA_FLAGS", TEST_XLA_FLAGS)]
  if devices is not None:
    flags.append(f"--xla_force_host_platform_device_count={devices}")
  flags.append(xla_flags)
  return {**os.environ, "JAX_PLATFORMS": "cpu",
          "XLA_FLAGS": " ".join(f for f in flags if f),
          "JAX_COMPILATION_CACHE_DIR": compilation_cache_dir(),
          "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0.5", **extra}


def assert_same_batches(batches_a, batches_b):
  """Two lists of batch dicts hold the same keys and bitwise-equal arrays."""
  assert len(batches_a) == len(batches_b)
  for a, b in zip(batches_a, batches_b):
    assert a.keys() == b.keys()
    for key in a:
      np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def write_embedded_corpus(path, num_docs: int) -> str:
  """The first `num_docs` embedded documents in the BERT text format; returns the path."""
  from bert_jax.data import corpora   # here: conftest imports this module before JAX
  docs = corpora.embedded_corpus()[:num_docs]
  path.write_text("\n\n".join("\n".join(d) for d in docs) + "\n", encoding="utf-8")
  return str(path)
