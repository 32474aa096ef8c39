"""Preemption: SIGTERM makes every process save at the same step and exit cleanly.

Multi-process runs use JAX's own agreement, `multihost_utils.reached_preemption_sync_point`
(the coordination service of `jax.distributed` catches SIGTERM on any host and picks
one step at which all processes stop). A single process has no coordination service,
so a SIGTERM handler sets a flag that the loop reads at the next step boundary.
"""

from __future__ import annotations

import signal

import jax
from jax.experimental import multihost_utils


class PreemptionWatcher:
  def __init__(self):
    self._signalled = False
    self._distributed = jax.process_count() > 1
    self._previous = None
    if not self._distributed:
      self._previous = signal.signal(signal.SIGTERM, self._on_sigterm)

  def _on_sigterm(self, signum, frame):
    del signum, frame
    self._signalled = True

  def reached(self, step: int) -> bool:
    """True at the step boundary where all processes must save and stop."""
    if self._distributed:
      return multihost_utils.reached_preemption_sync_point(step)
    return self._signalled

  def close(self) -> None:
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
      self._previous = None
