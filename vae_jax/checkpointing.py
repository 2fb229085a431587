"""Orbax checkpoints of the train state, indexed by epoch.

Crash safety (tested by killing a training process at random moments, see
tests/test_reliability.py):

* Orbax writes each checkpoint into ``<epoch>.orbax-checkpoint-tmp`` and
  renames it when complete, so a kill mid-write leaves only older, complete
  checkpoints visible; the half-written directory is ignored and replaced when
  that epoch is saved again.
* Old checkpoints are deleted by first renaming them into ``_deleted/`` (one
  atomic rename) and then removing that folder, so a kill mid-delete never
  leaves a half-deleted checkpoint where restore would look.
* Restore walks back from the newest checkpoint to the newest one that reads
  and fits the expected state, and logs what it skipped. A trainer resuming
  from an older checkpoint moves the unreadable newer ones into
  ``_unreadable/`` (kept for inspection) so that it can write those epochs anew.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

import flax.serialization
import jax
import numpy as np
import orbax.checkpoint as ocp

log = logging.getLogger(__name__)

_DELETED = "_deleted"
_UNREADABLE = "_unreadable"


def _this_process_only() -> ocp.options.MultiprocessingOptions:
  """Orbax options of a checkpointer used by one process alone, with no barrier with the others:
  in a multi-process run process 0 writes every checkpoint (``vae_jax.loop``)."""
  if jax.process_count() == 1:
    return ocp.options.MultiprocessingOptions()
  i = jax.process_index()
  return ocp.options.MultiprocessingOptions(primary_host=i, active_processes={i},
                                            barrier_sync_key_prefix=f"vae_jax_process_{i}")


def _to_host(tree):
  """Host copies of the arrays of ``tree``; each must be whole on this process (replicated)."""
  def one(x):
    if isinstance(x, jax.Array) and not (x.is_fully_addressable or x.is_fully_replicated):
      raise ValueError(f"an array of shape {x.shape} is split over several processes; a checkpoint "
                       "holds replicated arrays only")
    return np.asarray(jax.device_get(x)) if isinstance(x, jax.Array) else x
  return jax.tree.map(one, tree)


class CheckpointError(RuntimeError):
  """No checkpoint in a directory could be restored into the expected state."""


class Checkpointer:
  """Save / restore-latest for a pytree-like train state (params, opt_state, step)."""

  def __init__(self, directory: str | Path, *, max_to_keep: int = 2):
    self.directory = Path(directory).absolute()
    self.directory.mkdir(parents=True, exist_ok=True)
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=False,
                                             enable_async_checkpointing=False,
                                             todelete_subdir=_DELETED,
                                             multiprocessing_options=_this_process_only()))

  def save(self, epoch: int, state) -> None:
    """Writes ``epoch``'s checkpoint and returns once it is complete on disk.

    The arrays are fetched to the host first: a replicated state is written once,
    by this process alone, whatever the devices and processes it lives on.
    """
    tree = _to_host(flax.serialization.to_state_dict(state))
    self._manager.save(epoch, args=ocp.args.StandardSave(tree), force=True)
    self._manager.wait_until_finished()
    self._purge_deleted()

  def delete(self, epoch: int) -> None:
    self._manager.delete(epoch)
    self._purge_deleted()

  def _purge_deleted(self) -> None:
    shutil.rmtree(self.directory / _DELETED, ignore_errors=True)

  def clean_up_after_crash(self) -> None:
    """Removes what a killed writer left: half-written and half-deleted checkpoints.

    Call only from the one process that writes this directory (the trainer).
    """
    for tmp in self.directory.glob("*.orbax-checkpoint-tmp*"):
      log.info("removing %s, a checkpoint whose writing was interrupted", tmp)
      shutil.rmtree(tmp, ignore_errors=True)
    self._purge_deleted()

  def epochs(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def restore(self, epoch: int, template):
    """The state saved at ``epoch``, shaped like ``template``; raises if it does not read or fit."""
    target = jax.tree.map(ocp.utils.to_shape_dtype_struct, flax.serialization.to_state_dict(template))
    tree = self._manager.restore(epoch, args=ocp.args.StandardRestore(target))
    # Host (NumPy) arrays are restored as saved, whatever the target's shape: check it here.
    got, want = jax.tree.leaves(tree), jax.tree.leaves(target)
    if len(got) != len(want) or any(np.shape(g) != tuple(w.shape) for g, w in zip(got, want)):
      raise ValueError(f"checkpoint {self.directory / str(epoch)} does not fit the template's shapes")
    return flax.serialization.from_state_dict(template, tree)

  def restore_latest(self, template, *, set_aside_unreadable: bool = False):
    """(epoch, state) from the newest readable checkpoint, or (0, None) when there is none.

    ``template`` is a state with the expected structure, shapes and dtypes; a
    checkpoint from another model or config fails to fit it and is reported.
    With ``set_aside_unreadable``, checkpoints newer than the one restored that
    could not be read are moved into ``_unreadable/`` (for a trainer about to
    write those epochs again).
    """
    epochs = self.epochs()
    if not epochs:
      return 0, None
    errors, unreadable = [], []
    for epoch in reversed(epochs):
      try:
        state = self.restore(epoch, template)
      except Exception as e:  # corrupt, truncated or from another model
        mismatch = self._shape_mismatch(epoch, template)
        errors.append(f"{self.directory / str(epoch)}: "
                      + (f"another model's state: {mismatch}" if mismatch
                         else f"{type(e).__name__}: {str(e)[:300]}"))
        unreadable.append(epoch)
        log.warning("checkpoint %s cannot be restored (%s: %s); trying an older one",
                    self.directory / str(epoch), type(e).__name__, str(e)[:300])
        continue
      if unreadable:
        log.warning("restored epoch %d from %s after skipping unreadable newer checkpoints %s",
                    epoch, self.directory, sorted(unreadable))
        if set_aside_unreadable:
          self._set_aside(unreadable)
      return epoch, state
    raise CheckpointError(f"no checkpoint in {self.directory} could be restored into this "
                          f"model's state (is it from another model or config?):\n  "
                          + "\n  ".join(errors))

  def _shape_mismatch(self, epoch: int, template) -> str:
    """Which arrays of a readable checkpoint differ in shape from ``template`` ("" if none or unreadable)."""
    try:
      saved = self._manager.item_metadata(epoch)
      saved = dict(jax.tree_util.tree_leaves_with_path(getattr(saved, "tree", saved)))
    except Exception:  # metadata unreadable too: a corrupt checkpoint, not another model
      return ""
    wanted = dict(jax.tree_util.tree_leaves_with_path(flax.serialization.to_state_dict(template)))
    name = lambda path: jax.tree_util.keystr(path, simple=True, separator=".")
    diffs = [f"{name(k)} has shape {tuple(saved[k].shape)} in the checkpoint, {tuple(v.shape)} here"
             for k, v in wanted.items() if k in saved and tuple(saved[k].shape) != tuple(v.shape)]
    diffs += [f"{name(k)} is missing from the checkpoint" for k in wanted if k not in saved]
    diffs += [f"{name(k)} is in the checkpoint only" for k in saved if k not in wanted]
    diffs.sort(key=lambda d: not d.startswith("params."))  # parameters first, then optimizer state
    return "; ".join(diffs[:5]) + (f"; and {len(diffs) - 5} more" if len(diffs) > 5 else "")

  def _set_aside(self, epochs: list[int]) -> None:
    folder = self.directory / _UNREADABLE
    folder.mkdir(exist_ok=True)
    for epoch in epochs:
      dest = folder / f"{epoch}-{time.strftime('%Y%m%d-%H%M%S')}"
      (self.directory / str(epoch)).rename(dest)
      log.warning("moved unreadable checkpoint %s to %s", self.directory / str(epoch), dest)
    self._manager.reload()

  def close(self) -> None:
    self._manager.close()
