"""What the training loop does with NaN and inf: stop naming the step and the term, or skip.

``run_epoch`` runs one epoch and checks its per-step metrics: an applied
update with a non-finite loss, gradient norm or aux term stops the run with a
``NonFiniteError`` naming the step, the batch, the term and the checkpoint that
is kept; updates skipped by ``train_state.guard`` (``config.skip_nonfinite_updates``,
``config.skip_threshold``) are counted, and an epoch of only skipped updates
stops the run. ``check_validation`` does the same for the validation row;
``debug_nans`` switches ``jax_debug_nans`` on (``config.debug_nans``).
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Callable

import jax
import numpy as np

from vae_jax import checkpointing
from vae_jax import parallel
from vae_jax.train_state import RunKeys


class NonFiniteError(FloatingPointError):
  """Training produced a NaN or inf loss or gradient."""


def debug_nans(enabled: bool) -> contextlib.AbstractContextManager:
  """``jax_debug_nans`` on for the ``with`` block when ``enabled`` (config.debug_nans), restored after."""
  return jax.debug_nans(True) if enabled else contextlib.nullcontext()


def first_non_finite(metrics: dict) -> tuple[int, list[str]] | None:
  """(batch index, offending terms) of the first non-skipped step with a non-finite metric."""
  bad = {k: ~np.isfinite(v) for k, v in metrics.items() if k != "skipped_updates"}
  any_bad = np.any(np.stack(list(bad.values())), axis=0)
  if "skipped_updates" in metrics:
    any_bad &= metrics["skipped_updates"] == 0
  if not np.any(any_bad):
    return None
  i = int(np.argmax(any_bad))
  order = ["loss", "grad_norm", "kl_weight"] + sorted(set(bad) - {"loss", "grad_norm", "kl_weight"})
  names = {"grad_norm": "gradient (grad_norm)", "kl_weight": "kl_weight", "loss": "loss"}
  return i, [names.get(k, f"aux term {k!r}") for k in order if k in bad and bad[k][i]]


def run_epoch(epoch_fn: Callable, state, data, epoch: int, keys: RunKeys, *, steps_per_epoch: int,
              ckpt: checkpointing.Checkpointer | None) -> tuple[Any, dict]:
  """Runs one epoch and checks its per-step metrics; -> (state, {"train_<name>": epoch mean}).

  The means are over the applied updates; ``train_skipped_updates`` counts the
  others. Raises NonFiniteError naming the step and the offending term when an
  applied step has a non-finite metric, when every update was skipped, or (debug
  mode, ``jax_debug_nans`` on) at the op that made a NaN; each says which
  checkpoint is kept.
  """
  kept_ckpt = lambda: kept_checkpoint(ckpt)
  try:
    state, step_metrics = epoch_fn(state, data, epoch, keys.train, keys.data)
  except FloatingPointError as e:  # config.debug_nans: raised at the op that made the NaN
    raise NonFiniteError(f"{e} in epoch {epoch} (steps {(epoch - 1) * steps_per_epoch} to "
                         f"{epoch * steps_per_epoch - 1}); {kept_ckpt()}") from e
  step_metrics = parallel.to_host(step_metrics)
  bad = first_non_finite(step_metrics)
  skipped = step_metrics.pop("skipped_updates", np.zeros(steps_per_epoch, np.int32))
  if np.all(skipped):
    raise NonFiniteError(f"all {len(skipped)} updates of epoch {epoch} were skipped (non-finite or "
                         f"above config.skip_threshold): the run is stuck; {kept_ckpt()}")
  if bad is not None:
    i, terms = bad
    step = (epoch - 1) * steps_per_epoch + i
    raise NonFiniteError(
        f"non-finite {', '.join(terms)} at step {step} (epoch {epoch}, batch {i}); the run "
        f"stopped and {kept_ckpt()}. Lower the learning rate, set config.optimizer.grad_clip_norm "
        "or config.skip_nonfinite_updates, or find the op with config.debug_nans.")
  kept = skipped == 0  # means over the updates that were applied
  row = {f"train_{k}": float(np.mean(np.asarray(v)[kept])) for k, v in step_metrics.items()}
  row["train_skipped_updates"] = int(np.sum(skipped))
  return state, row


def kept_checkpoint(ckpt: checkpointing.Checkpointer | None) -> str:
  if ckpt is None:  # not the writing process of a multi-process run
    return "process 0 keeps the checkpoints"
  epochs = ckpt.epochs()
  if not epochs:
    return f"no checkpoint has been written yet in {ckpt.directory}"
  return f"the newest good checkpoint (epoch {max(epochs)}) is kept in {ckpt.directory}"


def check_validation(row: dict, epoch: int, ckpt: checkpointing.Checkpointer | None) -> None:
  """NonFiniteError naming the validation terms that are NaN or inf (the epoch is not checkpointed)."""
  bad = sorted(k for k, v in row.items() if k.startswith("val_") and isinstance(v, float)
               and not math.isfinite(v))
  if bad:
    raise NonFiniteError(f"non-finite validation {', '.join(bad)} after epoch {epoch}: the model has "
                         f"diverged; the run stopped and {kept_checkpoint(ckpt)}. Lower the learning "
                         "rate or set config.optimizer.grad_clip_norm.")
