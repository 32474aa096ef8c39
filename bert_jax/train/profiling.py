"""A `jax.profiler` trace of chosen training steps (`train.profile_steps='A,B'`).

    profiler = StepProfiler(workdir, config.train.profile_steps)
    for step in ...:
      profiler.step_start(step)
      state, metrics = p_train_step(state, batch, rng)
      profiler.step_end(step, metrics)
    profiler.close()

Steps A..B (1-based, inclusive) go into `WORKDIR/profile/plugins/profile/<run>/`: the
XSpace (`*.xplane.pb`, for TensorBoard's / xprof's profile plugin) and a Chrome trace
(`perfetto_trace.json.gz`, for ui.perfetto.dev and `benchmarks/profile_summary.py`).
The trace stops after step B's outputs are ready, so it holds B-A+1 whole steps; pick
A past the first step (compilation) and a few steps wide (traces grow with each step).
Every process traces its own devices (one file per host). A remote workdir
(`gs://...`) gets the trace through `bert_jax.storage`: it is written to a local
temporary directory and copied to `WORKDIR/profile/` when it stops.
"""

from __future__ import annotations

import tempfile

import jax

from bert_jax import storage, workdir as workdir_lib


def parse_steps(spec: str, field: str = "train.profile_steps") -> tuple[int, int] | None:
  """'A,B' -> (A, B); 'A' -> (A, A); '' -> None. Bad input names `field`."""
  spec = (spec or "").strip()
  if not spec:
    return None
  try:
    parts = [int(p) for p in spec.split(",")]
    if len(parts) == 1:
      parts *= 2
    first, last = parts
  except ValueError:
    first = last = 0
  if not 1 <= first <= last:
    raise ValueError(f"config field {field}={spec!r}: expected 'A,B' with 1 <= A <= B "
                     "(steps to trace), or '' for none")
  return first, last


class StepProfiler:
  """Starts a trace at step A and stops it once step B's outputs are ready."""

  def __init__(self, workdir: str, spec: str):
    self.steps = parse_steps(spec)
    self.directory = workdir_lib.profile_dir(workdir)
    self._local = None   # a remote workdir's local trace dir, copied over at the end
    self.tracing = False
    self.done = self.steps is None

  def step_start(self, step: int) -> None:
    """Call before dispatching `step`; starts the trace at the first step in A..B
    (a run resumed past A starts at once, one past B never)."""
    if self.done or self.tracing or not self.steps[0] <= step <= self.steps[1]:
      return
    target = str(self.directory)
    if storage.is_remote(target):
      self._local = target = tempfile.mkdtemp(prefix="bert_jax_profile-")
    jax.profiler.start_trace(target, create_perfetto_trace=True)
    self.tracing = True

  def step_end(self, step: int, block_on) -> None:
    """Call after dispatching `step` with its outputs; at step B waits for them and
    writes the trace."""
    if self.tracing and step >= self.steps[1]:
      jax.block_until_ready(block_on)
      self.close()

  def close(self) -> None:
    """Writes a trace still open (a run that ended or was preempted inside A..B)."""
    if self.tracing:
      jax.profiler.stop_trace()
      self.tracing = False
      self.done = True
      if self._local is not None:
        storage.copy_tree(self._local, self.directory)
        storage.path(self._local).rmtree(missing_ok=True)
