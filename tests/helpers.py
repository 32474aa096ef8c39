"""Small helpers shared by several test modules."""
import numpy as np

from bert_jax.data import corpora


def assert_same_batches(batches_a, batches_b):
  """Two lists of batch dicts hold the same keys and bitwise-equal arrays."""
  assert len(batches_a) == len(batches_b)
  for a, b in zip(batches_a, batches_b):
    assert a.keys() == b.keys()
    for key in a:
      np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def write_embedded_corpus(path, num_docs: int) -> str:
  """The first `num_docs` embedded documents in the BERT text format; returns the path."""
  docs = corpora.embedded_corpus()[:num_docs]
  path.write_text("\n\n".join("\n".join(d) for d in docs) + "\n", encoding="utf-8")
  return str(path)
