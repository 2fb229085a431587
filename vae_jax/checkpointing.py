"""Orbax checkpoints of the train state, indexed by epoch.

Orbax writes each checkpoint into a temporary directory and renames it when
complete, so a kill mid-write leaves the previous checkpoints intact. Restore
walks back from the newest checkpoint to the newest one that reads.
"""

from __future__ import annotations

import logging
from pathlib import Path

import flax.serialization
import jax
import orbax.checkpoint as ocp

log = logging.getLogger(__name__)


class CheckpointError(RuntimeError):
  """No checkpoint in a directory could be restored into the expected state."""


class Checkpointer:
  """Save / restore-latest for a pytree-like train state (params, opt_state, step)."""

  def __init__(self, directory: str | Path, *, max_to_keep: int = 2):
    self.directory = Path(directory).absolute()
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                             enable_async_checkpointing=False))

  def save(self, epoch: int, state) -> None:
    tree = flax.serialization.to_state_dict(state)
    self._manager.save(epoch, args=ocp.args.StandardSave(tree), force=True)
    self._manager.wait_until_finished()

  def epochs(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def restore_latest(self, template):
    """(epoch, state) from the newest readable checkpoint, or (0, None) when there is none.

    ``template`` is a state with the expected structure, shapes and dtypes; a
    checkpoint from another model or config fails to fit it and is reported.
    """
    epochs = self.epochs()
    if not epochs:
      return 0, None
    target = jax.tree.map(ocp.utils.to_shape_dtype_struct, flax.serialization.to_state_dict(template))
    errors = []
    for epoch in reversed(epochs):
      try:
        tree = self._manager.restore(epoch, args=ocp.args.StandardRestore(target))
        state = flax.serialization.from_state_dict(template, tree)
      except Exception as e:  # corrupt, truncated or from another model
        errors.append(f"epoch {epoch}: {type(e).__name__}: {str(e)[:300]}")
        log.warning("checkpoint %s/%d cannot be restored (%s); trying an older one",
                    self.directory, epoch, e)
        continue
      if errors:
        log.warning("restored epoch %d from %s after skipping unreadable newer checkpoints",
                    epoch, self.directory)
      return epoch, state
    raise CheckpointError(f"no checkpoint in {self.directory} could be restored into this "
                          f"model's state:\n  " + "\n  ".join(errors))

  def close(self) -> None:
    self._manager.close()
