"""Shared test setup: CPU only, float32 matmuls at full precision, no network; TPU
topologies compile-only (bert_jax/aot.py)."""
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
from tests.helpers import TEST_XLA_FLAGS  # noqa: E402

os.environ["XLA_FLAGS"] = f"{TEST_XLA_FLAGS} {os.environ.get('XLA_FLAGS', '')}".strip()
# libtpu (the tpu extra) compiles for TPU topologies without metadata look-ups.
from bert_jax import aot  # noqa: E402  (no JAX import at module level)

aot.set_compile_only_env()

import jax  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")
