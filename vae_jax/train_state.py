"""The train state every trainer uses, the run's named keys, and update skipping.

Keys: one ``config.seed`` -> ``root = key(seed)`` split once into named keys
(``init``, ``train``, ``data``, ``eval``). The loop (``vae_jax.loop``) derives
the step key as ``fold_in(train_key, step)`` and an epoch's order as
``fold_in(data_key, epoch)``, so a resumed run needs no saved key and
reproduces the run that was never stopped, bit for bit.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp
import optax


class TrainState(flax.struct.PyTreeNode):
  step: jax.Array
  params: Any
  opt_state: Any
  tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)

  @classmethod
  def create(cls, params, tx: optax.GradientTransformation, **fields) -> "TrainState":
    """Step 0, ``tx``'s initial state for ``params``; ``fields``: a subclass's own fields."""
    return cls(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params), tx=tx, **fields)

  def apply_gradients(self, grads):
    updates, opt_state = self.tx.update(grads, self.opt_state, self.params)
    return self.replace(step=self.step + 1, params=optax.apply_updates(self.params, updates),
                        opt_state=opt_state)


@dataclasses.dataclass(frozen=True)
class RunKeys:
  init: jax.Array
  train: jax.Array
  data: jax.Array
  eval: jax.Array

  @classmethod
  def from_seed(cls, seed: int) -> "RunKeys":
    return cls(*jax.random.split(jax.random.key(seed), 4))


def skip_update(old, new, loss: jax.Array, grad_norm: jax.Array, *, skip_nonfinite: bool,
                skip_threshold: float):
  """(state, skipped): ``new``, or ``old`` with ``new``'s step counter when the update is skipped.

  Skipped (on the device, no host sync): with ``skip_nonfinite`` when the loss
  or gradient norm is NaN or inf, with ``skip_threshold > 0`` when the gradient
  norm exceeds it (or is not finite). Every other field of the state (params,
  optimizer state, a trainer's own statistics such as a VQ-VAE's codebook
  counts) keeps its old value; the step counter still advances, so keys and the
  learning-rate schedule stay on the batch index. ``skipped`` is an int32 0 / 1.
  """
  if not (skip_nonfinite or skip_threshold > 0):
    return new, jnp.zeros((), jnp.int32)
  skip = jnp.zeros((), bool)
  if skip_nonfinite:
    skip = ~(jnp.isfinite(loss) & jnp.isfinite(grad_norm))
  if skip_threshold > 0:
    skip = skip | ~(grad_norm <= skip_threshold)  # a NaN norm is skipped too
  kept = jax.tree.map(lambda o, n: jnp.where(skip, o, n), old.replace(step=new.step), new)
  return kept, skip.astype(jnp.int32)


def guard(step: Callable, *, skip_nonfinite: bool = False, skip_threshold: float = 0.0) -> Callable:
  """``step(state, batch, key) -> (state, metrics)`` with ``skip_update`` applied to its update.

  ``metrics`` must hold the step's ``loss`` and ``grad_norm``; the guarded step
  adds ``skipped_updates`` (0 / 1). Every trainer's step goes through this in
  the loop, so skipping is the same for every model.
  """
  def guarded(state, batch, key):
    new, metrics = step(state, batch, key)
    new, skipped = skip_update(state, new, metrics["loss"], metrics["grad_norm"],
                               skip_nonfinite=skip_nonfinite, skip_threshold=skip_threshold)
    return new, {**metrics, "skipped_updates": skipped}
  return guarded


def global_norm(tree) -> jax.Array:
  """sqrt(sum of squares) of all leaves, right also for finite gradients above ~1e19
  (whose squares overflow float32) and for norms below 1e-15 (squares can underflow).

  The plain sum of squares takes one pass; only when it is not a normal positive
  number does a ``lax.cond`` take the scaled computation (``_scaled_global_norm``).
  """
  leaves = jax.tree.leaves(tree)
  squares = sum(jnp.sum(jnp.square(g)) for g in leaves)
  plain = jnp.isfinite(squares) & (squares >= 1e-30)
  return jax.lax.cond(plain, lambda: jnp.sqrt(squares), lambda: _scaled_global_norm(leaves))


def _scaled_global_norm(leaves) -> jax.Array:
  """sqrt(sum of squares) of ``leaves``, scaled by the largest entry: exact for any
  finite entries; inf / NaN entries give a non-finite norm."""
  scale = functools.reduce(jnp.maximum, [jnp.max(jnp.abs(g), initial=0.0) for g in leaves])
  safe = jnp.where((scale > 0) & jnp.isfinite(scale), scale, 1.0)
  norm = jnp.sqrt(sum(jnp.sum(jnp.square(g / safe)) for g in leaves))
  return jnp.where(jnp.isfinite(scale), norm * safe, scale)  # inf / NaN entries stay non-finite
