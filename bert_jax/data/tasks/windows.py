"""Overlapping windows over token sequences longer than the model's input.

The scheme of google-research/bert `run_squad.py`, used here for every task: windows
of at most `max_len` tokens start `stride` tokens apart, the last one ends at the end of
the sequence, and each token is scored in the window where it has the most context
(`min(left, right) + 0.01 * window_length`, as `_check_is_max_context`).
"""

from __future__ import annotations

import numpy as np


def spans(length: int, max_len: int, stride: int) -> list[tuple[int, int]]:
  """(start, window_length) pairs covering `length` tokens; one empty span if 0."""
  if max_len < 1:
    raise ValueError(f"window length must be >= 1, got {max_len}")
  if stride < 1:
    raise ValueError(f"window stride must be >= 1, got {stride}")
  out, start = [], 0
  while True:
    n = min(length - start, max_len)
    out.append((start, n))
    if start + n >= length:
      return out
    start += min(n, stride)


def max_context(windows: list[tuple[int, int]], length: int) -> list[np.ndarray]:
  """For each window, a bool [window_length]: True where it is the token's best window."""
  best_score = np.full(length, -np.inf)
  best_window = np.zeros(length, np.int64)
  for w, (start, n) in enumerate(windows):
    pos = np.arange(start, start + n)
    score = np.minimum(pos - start, start + n - 1 - pos) + 0.01 * n
    better = score > best_score[pos]
    best_score[pos[better]] = score[better]
    best_window[pos[better]] = w
  return [best_window[start:start + n] == w for w, (start, n) in enumerate(windows)]
