"""Writes tests/data/tf_bundle/: a small checkpoint saved by TensorFlow itself.

Run once with TensorFlow installed (`pip install -e '.[tf]'`):
    python tests/data/make_tf_bundle.py
Its contents are defined by `expected_tensors()`, so a test can check a reader against
them without TensorFlow. 300 tensors make the index span several table blocks.
"""
import os

import numpy as np


def expected_tensors() -> dict[str, np.ndarray]:
  out = {"bert/embeddings/word_embeddings": np.arange(12, dtype=np.float32).reshape(3, 4),
         "global_step": np.array(123456789012, np.int64),
         "cls/predictions/output_bias": np.linspace(-1, 1, 5),  # float64
         "scalar_f16": np.array(0.5, np.float16),
         "int32_matrix": np.arange(-6, 6, dtype=np.int32).reshape(2, 2, 3)}
  for i in range(300):
    out[f"bert/encoder/layer_{i}/attention/self/query/kernel"] = np.full(
        (2, i % 3 + 1), i, np.float32)
  return out


def main():
  import tensorflow as tf
  directory = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tf_bundle")
  os.makedirs(directory, exist_ok=True)
  tensors = expected_tensors()
  names = sorted(tensors)
  tf.raw_ops.SaveV2(prefix=os.path.join(directory, "model.ckpt"), tensor_names=names,
                    shape_and_slices=[""] * len(names),
                    tensors=[tf.constant(tensors[n]) for n in names])


if __name__ == "__main__":
  main()
