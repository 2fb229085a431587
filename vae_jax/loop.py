"""The training loop every trainer runs: the VAE and HVAE, the VQ-VAE, the PixelCNN prior, M2.

A trainer supplies a ``Trainer``: its initial state, its step, its data and
its evaluation. The loop owns everything else, the same for every model:

* keys: the step key is ``fold_in(keys.train, step)``, an epoch's order
  ``fold_in(keys.data, epoch)`` (``train_state.RunKeys``): a resumed run needs
  no saved key and ends bit for bit where the uninterrupted run ends;
* the epoch: one jitted ``lax.scan`` over a permutation of the training
  examples, the state donated (or, with ``config.debug_nans``, one jitted step
  per batch under ``jax_debug_nans``, which names the op that made a NaN);
* devices: a mesh over ``config.num_devices`` (``vae_jax.parallel``), state and
  data replicated, every batch split over the devices;
* non-finite updates: skipped and counted (``config.skip_nonfinite_updates``,
  ``config.skip_threshold``; ``train_state.guard``) or a ``NonFiniteError``
  naming the step, the term and the checkpoint that is kept (``vae_jax.nonfinite``);
* checkpoints: the latest ones every ``checkpoint_every_epochs`` and at the
  end, and the best one by a validation metric; resume from the newest
  intact checkpoint (``vae_jax.checkpointing``);
* the workdir lock: one run at a time in a workdir, taken by ``open_workdir``
  before any data is loaded (``vae_jax.lock``); process 0 holds it;
* ``metrics.jsonl`` (one row per epoch), the progress bar or one log line per
  epoch, TensorBoard events and the trainer's figures at every evaluation,
  titled with the run and the epoch (``vae_jax.summaries``);
* a finished run rerun: one line saying so, and its last metrics row.

The config check of a resumed workdir is ``open_workdir`` (``vae_jax.schema``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import signal
import threading
import time
from pathlib import Path
from typing import Any, Callable

import jax
import numpy as np

from vae_jax import checkpointing
from vae_jax import compilation
from vae_jax import data as data_lib
from vae_jax import lock
from vae_jax import parallel
from vae_jax import schema
from vae_jax import summaries
from vae_jax import workdir as workdir_lib
from vae_jax.nonfinite import (  # noqa: F401 (public names)
    NonFiniteError, check_validation, debug_nans, first_non_finite, run_epoch)
from vae_jax.train_state import RunKeys, guard  # noqa: F401 (guard: replaced in tests)

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Trainer:
  """What a model family brings to the loop.

  Attributes:
    state: the initial train state (a ``train_state.TrainState``, possibly
      with fields of its own); also the template checkpoints restore into.
    step: ``(state, batch, key) -> (state, metrics)``, pure and jittable; the
      metrics (batch means) must hold ``loss`` and ``grad_norm``.
    data: the training examples, a pytree of host arrays with a common leading
      axis, cut into batches of ``config.batch_size``.
    evaluate: ``state -> {name: float}``, logged as ``val_<name>`` every
      ``config.eval_every_epochs`` epochs and after the last one.
    schedule: the learning-rate schedule (logged per epoch).
    keys: the run's named keys (``RunKeys.from_seed(config.seed)``).
    fixed_data: optional pytree passed whole with every batch: the step then
      gets ``(batch, fixed_data)`` (M2's labelled subset).
    best_metric: the validation metric (a key of ``evaluate``'s result) that
      the checkpoint in ``best/`` minimizes; None keeps no best checkpoint.
    figures: ``state -> {name: summaries.Figure or (images, caption)}``, called
      at every evaluation on the state fetched to the host (on process 0); the
      loop saves ``figures/NAME.png`` and sends them to TensorBoard. Keep it cheap.
    postfix: row names shown on the progress bar and in the per-epoch log line.
    compile_options: XLA options of the epoch (``vae_jax.compilation``).
  """
  state: Any
  step: Callable
  data: Any
  evaluate: Callable[[Any], dict]
  schedule: Callable
  keys: RunKeys
  fixed_data: Any = None
  best_metric: str | None = None
  figures: Callable[[Any], dict] | None = None
  postfix: tuple[str, ...] = ("train_loss",)
  compile_options: dict | None = None


def open_workdir(config, workdir: str | Path, config_schema: schema.Schema) -> Path:
  """Validates ``config``, creates ``workdir`` (WorkdirError if it cannot be written), takes its
  lock (WorkdirError naming the run that holds it) and refuses one that holds a run of another
  config, listing the differences. No compute.

  The lock is held until ``fit`` ends or, inside a ``lock.scoped`` call (every
  trainer's entry point), until that call ends.
  """
  config_schema.validate(config)
  make_mesh(config)  # the devices exist and split the batches evenly: checked before any data is read
  workdir = _prepare(workdir)
  taken = take_lock(workdir)
  try:
    config_schema.check_resume(config, workdir)
  except BaseException:
    if taken:
      lock.release(workdir)
    raise
  return workdir


def is_writer() -> bool:
  """Whether this process writes the workdir: process 0 of a multi-process run (the others
  compute their share of every step and evaluation and read nothing but their inputs)."""
  return jax.process_index() == 0


def _prepare(workdir: str | Path) -> Path:
  return workdir_lib.prepare(workdir) if is_writer() else Path(workdir)


def take_lock(workdir: Path) -> bool:
  """``lock.acquire`` on process 0 (the others run beside it); -> whether it was taken now."""
  return is_writer() and lock.acquire(workdir)


def make_mesh(config) -> jax.sharding.Mesh:
  """The mesh over ``config.num_devices`` devices; ConfigError if they do not exist or do not
  split ``config.batch_size`` and ``config.eval.batch_size`` evenly."""
  try:
    mesh = parallel.make_mesh(config.get("num_devices", 1))
    parallel.check_batch_size(config.batch_size, mesh, "config.batch_size")
    parallel.check_batch_size(config.eval.batch_size, mesh, "config.eval.batch_size")
  except ValueError as e:
    raise schema.ConfigError(f"config.num_devices={config.get('num_devices', 1)}: {e}") from None
  return mesh


def make_epoch(step: Callable, batch_size: int, *, mesh: jax.sharding.Mesh | None = None,
               with_fixed: bool = False, stepwise: bool = False,
               options: dict | None = None) -> Callable:
  """A jitted ``epoch(state, data, epoch, train_key, data_key) -> (state, metrics [num_batches])``.

  ``step(state, batch, key) -> (state, metrics)``. ``data``: a pytree of device
  arrays with a common leading axis, cut into batches by a permutation from
  ``fold_in(data_key, epoch)``; with ``with_fixed``, ``data = (batched, fixed)``
  and the step gets ``(batch, fixed)``. The step key is ``fold_in(train_key,
  state.step)``. With a ``mesh`` each batch is split over its devices (place
  state and data with ``parallel.replicate`` first). The state is donated.
  ``stepwise`` (debug mode): one jitted step per batch, driven from Python
  (``run_stepwise``), so that ``jax_debug_nans`` names the op.
  """
  if mesh is not None:
    parallel.check_batch_size(batch_size, mesh)

  def split(data):
    return data if with_fixed else (data, None)

  def body(state, idx, data, train_key):
    batched, fixed = split(data)
    batch = jax.tree.map(lambda a: data_lib.take_rows(a, idx), batched)
    if mesh is not None:
      sharding = parallel.batch_sharded(mesh)
      batch = jax.tree.map(lambda b: jax.lax.with_sharding_constraint(b, sharding), batch)
    if with_fixed:
      batch = (batch, fixed)
    return step(state, batch, jax.random.fold_in(train_key, state.step))

  def batches(data, epoch, data_key):
    n = jax.tree.leaves(split(data)[0])[0].shape[0]
    return data_lib.epoch_batch_indices(jax.random.fold_in(data_key, epoch), n, batch_size)

  if stepwise:
    body_jit = compilation.jit(body, options=options)
    return lambda state, data, epoch, train_key, data_key: run_stepwise(
        lambda state, idx: body_jit(state, idx, data, train_key), state, batches(data, epoch, data_key))

  def epoch_fn(state, data, epoch, train_key, data_key):
    return jax.lax.scan(lambda state, idx: body(state, idx, data, train_key), state,
                        batches(data, epoch, data_key))

  return compilation.jit(epoch_fn, donate_argnums=(0,), options=options)


def run_stepwise(step: Callable, state, batches) -> tuple[Any, dict]:
  """Debug mode's epoch: ``step(state, idx) -> (state, metrics)`` (jitted) once per row of
  ``batches``, driven from Python; -> (state, metrics stacked [num_batches]).

  Under ``jax_debug_nans`` a step that makes a NaN re-runs op by op and raises
  FloatingPointError naming the op; the step number is added here.
  """
  metrics = []
  for idx in batches:
    try:
      state, m = step(state, idx)
    except FloatingPointError as e:
      raise FloatingPointError(f"{e} at step {int(state.step)}") from e
    metrics.append(m)
  return state, jax.tree.map(lambda *m: np.stack(m), *parallel.to_host(metrics))


@contextlib.contextmanager
def deferred_interrupt():
  """Ctrl-C (SIGINT) inside the block takes effect when it ends: a checkpoint being written is
  finished first. Outside the main thread (where no signal handler can be set) a plain block."""
  if threading.current_thread() is not threading.main_thread():
    yield
    return
  received = []
  previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
  try:
    yield
  finally:
    signal.signal(signal.SIGINT, previous)
    if received and callable(previous):
      previous(signal.SIGINT, None)  # Python's default handler raises KeyboardInterrupt


def _epoch_ranges(epochs: list[int]) -> str:
  """'1-3, 7' for [1, 2, 3, 7]."""
  out, start = [], epochs[0]
  for a, b in zip(epochs, epochs[1:] + [None]):
    if b != a + 1:
      out.append(f"{start}-{a}" if a > start else f"{a}")
      start = b
  return ", ".join(out)


def num_examples(data) -> int:
  return int(jax.tree.leaves(data)[0].shape[0])


def fit(config, workdir: str | Path, trainer: Trainer, *, mesh: jax.sharding.Mesh | None = None,
        num_epochs: int | None = None):
  """Runs (or resumes) the training of ``trainer`` in ``workdir``; returns (state, last metrics row).

  A workdir that already holds every epoch is not trained again: one line says
  so and the last row of its ``metrics.jsonl`` is returned.

  Args:
    config: a validated config with the loop's fields (``schema.training_fields``).
    workdir: from ``open_workdir``; ``config.json`` is written here, then
      ``checkpoints/``, ``best/``, ``metrics.jsonl``, ``tensorboard/`` and ``figures/``.
    trainer: the model family's state, step, data and evaluation.
    mesh: the devices (default ``make_mesh(config)``).
    num_epochs: the run's length (default ``config.num_epochs``).
  """
  workdir = _prepare(workdir)
  taken = take_lock(workdir)
  try:
    out = _fit(config, workdir, trainer, mesh=mesh, num_epochs=num_epochs)
    parallel.wait_for_all("vae_jax.loop.fit")  # the workdir is complete when fit returns on any process
    return out
  finally:
    if taken or not lock.in_scope():
      lock.release(workdir)


def _resume(workdir: Path, state, ckpt: checkpointing.Checkpointer | None, mesh) -> tuple[int, Any]:
  """(epoch, state) of the newest intact checkpoint (0 and ``state`` if none), read by process 0
  and sent to the others; ``metrics.jsonl`` cut back to that epoch, with a warning when it lacks
  rows the checkpoint holds."""
  host_state = jax.device_get(state)  # replicated: every process holds all of it
  start_epoch, restored = 0, None
  if ckpt is not None:
    ckpt.clean_up_after_crash()
    start_epoch, restored = ckpt.restore_latest(host_state, set_aside_unreadable=True)
  if jax.process_count() > 1:
    start_epoch, restored = parallel.broadcast_from_writer(
        (start_epoch, host_state if restored is None else restored))
    start_epoch = int(start_epoch)
    restored = restored if start_epoch else None
  if restored is not None:
    state = parallel.replicate(restored, mesh)
    log.info("resuming %s from epoch %d (step %d)", workdir, start_epoch, int(state.step))
  if ckpt is None:
    return start_epoch, state
  metrics_path = workdir / workdir_lib.METRICS
  workdir_lib.truncate_metrics(metrics_path, start_epoch)
  if start_epoch:
    recorded = {r.get("epoch") for r in workdir_lib.read_metrics(workdir)}
    missing = [e for e in range(1, start_epoch + 1) if e not in recorded]
    if missing:
      log.warning("%s has no rows for epochs %s of the %d the checkpoint holds (deleted or edited?); "
                  "the run resumes from epoch %d and the file will lack them", metrics_path,
                  _epoch_ranges(missing), start_epoch, start_epoch + 1)
  return start_epoch, state


def _fit(config, workdir: Path, trainer: Trainer, *, mesh, num_epochs):
  mesh = make_mesh(config) if mesh is None else mesh
  n = num_examples(trainer.data)
  steps_per_epoch = n // config.batch_size
  if steps_per_epoch < 1:
    raise schema.ConfigError(f"config.batch_size={config.batch_size} is larger than the "
                             f"{n} training examples")
  total_epochs = int(config.num_epochs if num_epochs is None else num_epochs)
  main = is_writer()
  if main:
    workdir_lib.write_config(config, workdir)

  step = guard(trainer.step, skip_nonfinite=bool(config.skip_nonfinite_updates),
               skip_threshold=float(config.skip_threshold))
  with_fixed = trainer.fixed_data is not None
  epoch_fn = make_epoch(step, config.batch_size, mesh=mesh, with_fixed=with_fixed,
                        stepwise=bool(config.debug_nans), options=trainer.compile_options)
  data = parallel.replicate((trainer.data, trainer.fixed_data) if with_fixed else trainer.data, mesh)
  state = parallel.replicate(trainer.state, mesh)

  ckpt = None  # process 0 alone writes and reads the run's checkpoints
  if main:
    ckpt = checkpointing.Checkpointer(workdir / workdir_lib.LATEST_DIR, max_to_keep=config.keep_checkpoints)
  start_epoch, state = _resume(workdir, state, ckpt, mesh)
  metrics_path = workdir / workdir_lib.METRICS
  best_ckpt, best = None, math.inf
  if trainer.best_metric is not None and main:
    best_ckpt = checkpointing.Checkpointer(workdir / workdir_lib.BEST_DIR, max_to_keep=1)
    best_ckpt.clean_up_after_crash()
    for e in best_ckpt.epochs():
      if e > start_epoch:  # written after the checkpoint we resume from: the rerun writes it again
        best_ckpt.delete(e)
    score = workdir_lib.best_score(metrics_path, best_ckpt.epochs(), f"val_{trainer.best_metric}")
    best = math.inf if score is None else score

  epochs = range(start_epoch + 1, total_epochs + 1)
  if not len(epochs):
    if not main:
      return state, {}
    try:
      best_epochs = best_ckpt.epochs() if best_ckpt is not None else []
      log.info("%s", summaries.complete_line(
          workdir, start_epoch, total_epochs, best_metric=trainer.best_metric,
          best_score=None if math.isinf(best) else best, best_epoch=max(best_epochs, default=None)))
      rows = workdir_lib.read_metrics(workdir)
      return state, rows[-1] if rows else {}
    finally:
      ckpt.close()
      if best_ckpt is not None:
        best_ckpt.close()

  last, bar, reporter = {}, None, None
  best_name = (f"val_{trainer.best_metric}",) if trainer.best_metric else ()
  names = tuple(dict.fromkeys(trainer.postfix + best_name))  # the per-epoch log line's columns
  try:
    reporter = summaries.Reporter(workdir, start_epoch=start_epoch, total_epochs=total_epochs,
                                  names=names, log_epochs=not config.progress, enabled=main)
    if config.progress and main:
      from tqdm.auto import tqdm
      bar = tqdm(total=total_epochs, initial=start_epoch, desc="train", unit="epoch")
    with debug_nans(bool(config.debug_nans)):
      for epoch in epochs:
        t0 = time.perf_counter()
        state, train_row = run_epoch(epoch_fn, state, data, epoch, trainer.keys,
                                     steps_per_epoch=steps_per_epoch, ckpt=ckpt)
        seconds = time.perf_counter() - t0
        row = {"epoch": epoch, "step": int(state.step), "seconds": seconds,
               "examples_per_s": steps_per_epoch * config.batch_size / seconds,
               "learning_rate": float(trainer.schedule(int(state.step) - 1))}
        row.update(train_row)
        evaluated = epoch % config.eval_every_epochs == 0 or epoch == total_epochs
        if evaluated:
          row.update({f"val_{k}": v for k, v in trainer.evaluate(state).items()})
        # The epoch's writes (metrics row, TensorBoard, checkpoints, figures) are never cut halfway: a
        # Ctrl-C during them takes effect once they are done.
        with deferred_interrupt():
          if main:
            workdir_lib.append_jsonl(metrics_path, row)  # recorded as it is, NaN included
          reporter.epoch(row)
          check_validation(row, epoch, ckpt)
          last = row
          score = row.get(f"val_{trainer.best_metric}")
          if best_ckpt is not None and score is not None and np.isfinite(score) and score < best:
            best_ckpt.save(epoch, state)
            best = score
          if ckpt is not None and (epoch % config.checkpoint_every_epochs == 0 or epoch == total_epochs):
            ckpt.save(epoch, state)
          if evaluated and trainer.figures is not None and main:
            # On the host: figures mix the state with arrays of other devices.
            reporter.figures(trainer.figures(jax.device_get(state)), epoch)
        if bar is not None:
          bar.update(1)
          bar.set_postfix({k.removeprefix("train_"): f"{row[k]:.4g}" for k in trainer.postfix if k in row})
  finally:
    with deferred_interrupt():  # a second Ctrl-C does not cut the writers' close short
      if bar is not None:
        bar.close()
      if reporter is not None:
        reporter.close()
      if ckpt is not None:
        ckpt.close()
      if best_ckpt is not None:
        best_ckpt.close()
  return state, last
