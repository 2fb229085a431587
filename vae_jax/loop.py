"""The epoch loop shared by every trainer that is not the Gaussian VAE's (VQ-VAE, PixelCNN prior).

It follows ``train.train_and_evaluate`` to the letter and reuses its pieces:
the workdir's ``config.json`` and the resume check (``train._config_diff``),
``RunKeys`` (step key ``fold_in(train_key, step)``, epoch order
``fold_in(data_key, epoch)``), one jitted ``lax.scan`` per epoch with the state
donated, Orbax checkpoints (``checkpointing.Checkpointer``), ``metrics.jsonl``
rows, the crash clean-up (half-written checkpoints, unreadable ones set aside,
atomic ``config.json``), the non-finite handling (``train.run_epoch``: skipped
updates counted, or a stop naming the step and term; ``config.debug_nans``), and
the progress bar. A trainer brings
its step, its data (any pytree of arrays with a leading example axis) and a
validation function.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from pathlib import Path
from typing import Callable

import jax

from vae_jax import checkpointing
from vae_jax import compilation
from vae_jax import config as config_lib
from vae_jax import data as data_lib
from vae_jax import train
from vae_jax.vq import config as vq_config

log = logging.getLogger(__name__)

# A field a VQ-VAE or prior workdir's config.json lacks counts as this value (written before it existed).
ADDED_FIELDS = {**train.ADDED_FIELDS, **vq_config.VQVAE_ADDED_FIELDS}


def prepare_workdir(config, workdir: str | Path, added: dict | None = None) -> Path:
  """Creates ``workdir`` (WorkdirError if it cannot be written); refuses one that holds a run of
  another config (listing the differences). A field the saved config lacks counts as its value
  in ``added`` (default ``ADDED_FIELDS``)."""
  workdir = train._prepare_workdir(Path(workdir))
  cfg_path = workdir / "config.json"
  if cfg_path.exists():
    diffs = train._config_diff(json.loads(cfg_path.read_text()), train._config_to_json(config),
                               added=ADDED_FIELDS if added is None else added)
    if diffs:
      raise config_lib.ConfigError(
          f"{workdir} holds a run with another config; use a new workdir or the same config. "
          "Differences:\n  " + "\n  ".join(diffs))
  return workdir


def write_config(config, workdir: Path) -> None:
  train._write_atomic(workdir / "config.json", config.to_json(indent=2))


def make_epoch(step: Callable, batch_size: int, *, stepwise: bool = False) -> Callable:
  """A jitted ``epoch(state, data, epoch, train_key, data_key) -> (state, metrics [num_batches])``.

  ``step(state, batch, key) -> (state, metrics)``; ``data`` is a pytree of
  device arrays with a common leading axis, cut into batches by a permutation
  from ``fold_in(data_key, epoch)``; the step key is ``fold_in(train_key,
  state.step)``. The state is donated. ``stepwise`` (debug mode): one jitted
  step per batch driven from Python (``train.run_stepwise``) instead of one scan.
  """
  def body(state, idx, data, train_key):
    batch = jax.tree.map(lambda a: data_lib.take_rows(a, idx), data)
    return step(state, batch, jax.random.fold_in(train_key, state.step))

  def batches(data, epoch, data_key):
    n = jax.tree.leaves(data)[0].shape[0]
    return data_lib.epoch_batch_indices(jax.random.fold_in(data_key, epoch), n, batch_size)

  if stepwise:
    body_jit = compilation.jit(body)
    return lambda state, data, epoch, train_key, data_key: train.run_stepwise(
        lambda state, idx: body_jit(state, idx, data, train_key), state, batches(data, epoch, data_key))

  def epoch_fn(state, data, epoch, train_key, data_key):
    return jax.lax.scan(lambda state, idx: body(state, idx, data, train_key), state,
                        batches(data, epoch, data_key))

  return compilation.jit(epoch_fn, donate_argnums=(0,))


def fit(config, workdir: Path, *, state, epoch_fn: Callable, data, keys: train.RunKeys,
        schedule: Callable, validate: Callable[[object], dict], postfix: tuple[str, ...] = ("loss",)):
  """Runs (or resumes) ``config.num_epochs`` epochs; returns (state, last metrics row).

  Args:
    config: has num_epochs, batch_size, eval_every_epochs, checkpoint_every_epochs,
      keep_checkpoints, progress; optionally debug_nans (jax_debug_nans on for the run).
    workdir: holds ``checkpoints/`` and ``metrics.jsonl``.
    state: the initial train state (also the template checkpoints are restored into).
    epoch_fn: from ``make_epoch``; data: its training data pytree (on the device).
    schedule: the learning-rate schedule (logged per epoch).
    validate: ``state -> {name: float}``, logged with a ``val_`` prefix every
      ``eval_every_epochs`` epochs and after the last one.
    postfix: metric names shown on the progress bar.
  """
  n = jax.tree.leaves(data)[0].shape[0]
  steps_per_epoch = n // config.batch_size
  if steps_per_epoch < 1:
    raise config_lib.ConfigError(f"config.batch_size={config.batch_size} is larger than the "
                                 f"{n} training examples")
  total_epochs = int(config.num_epochs)
  ckpt = checkpointing.Checkpointer(workdir / "checkpoints", max_to_keep=config.keep_checkpoints)
  ckpt.clean_up_after_crash()
  start_epoch, restored = ckpt.restore_latest(state, set_aside_unreadable=True)
  if restored is not None:
    state = restored
    log.info("resuming %s from epoch %d (step %d)", workdir, start_epoch, int(state.step))
  metrics_path = workdir / "metrics.jsonl"
  train._truncate_metrics(metrics_path, start_epoch)
  last = {}
  epochs = range(start_epoch + 1, total_epochs + 1)
  bar = None
  if config.progress and len(epochs):
    from tqdm.auto import tqdm
    bar = tqdm(total=total_epochs, initial=start_epoch, desc="train", unit="epoch")
  debug = contextlib.ExitStack()
  debug.enter_context(train.debug_nans(bool(config.get("debug_nans", False))))
  try:
    for epoch in epochs:
      t0 = time.perf_counter()
      state, train_row = train.run_epoch(epoch_fn, state, data, epoch, keys,
                                         steps_per_epoch=steps_per_epoch, ckpt=ckpt)
      seconds = time.perf_counter() - t0
      row = {"epoch": epoch, "step": int(state.step), "seconds": seconds,
             "examples_per_s": steps_per_epoch * config.batch_size / seconds,
             "learning_rate": float(schedule(int(state.step) - 1))}
      row.update(train_row)
      if epoch % config.eval_every_epochs == 0 or epoch == total_epochs:
        row.update({f"val_{k}": v for k, v in validate(state).items()})
      train._append_jsonl(metrics_path, row)
      last = row
      if epoch % config.checkpoint_every_epochs == 0 or epoch == total_epochs:
        ckpt.save(epoch, state)
      if bar is not None:
        bar.update(1)
        bar.set_postfix({k: f"{row[k]:.3g}" for k in postfix if k in row})
  finally:
    debug.close()
    if bar is not None:
      bar.close()
    ckpt.close()
  return state, last
