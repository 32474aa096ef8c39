"""Orbax checkpoints: the train state plus the data-loader position, in one manager.

One `CheckpointManager` item for the state (sharded arrays, restored onto the target
shardings of the current mesh) and one JSON item for the loader state, so a resumed run
continues at the exact next batch (as MaxText `checkpointing.py` does with grain).
Saves are asynchronous; orbax commits a step directory atomically, so a run killed
mid-save never leaves a checkpoint that looks complete.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp


def _state_dict(state) -> dict:
  return {"step": state.step, "params": state.params, "opt_state": state.opt_state}


class Checkpointer:
  def __init__(self, directory: str, keep: int = 3):
    self.directory = os.path.abspath(directory)
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)
    self.manager = ocp.CheckpointManager(
        self.directory, options=options, item_names=("state", "data"))

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, step: int, state, data_state: dict) -> bool:
    """Starts an asynchronous save of `step` (the loop decides when to save)."""
    return self.manager.save(
        int(step),
        args=ocp.args.Composite(state=ocp.args.StandardSave(_state_dict(state)),
                                data=ocp.args.JsonSave(data_state)),
        force=True)

  def restore(self, step: int, state_target) -> tuple[Any, dict]:
    """`state_target`: a TrainState of ShapeDtypeStructs carrying target shardings."""
    restored = self.manager.restore(
        int(step),
        args=ocp.args.Composite(
            state=ocp.args.StandardRestore(_state_dict(state_target)),
            data=ocp.args.JsonRestore()))
    s = restored["state"]
    return state_target.replace(step=s["step"], params=s["params"],
                                opt_state=s["opt_state"]), dict(restored["data"])

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()
