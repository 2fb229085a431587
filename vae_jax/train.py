"""Training: ``create_train_state``, ``train_step``, ``train_epoch``, ``train_and_evaluate``.

Keys: one ``config.seed`` -> ``root = key(seed)`` split once into named keys
(``init``, ``train``, ``data``, ``eval``). The step key is
``fold_in(train_key, step)`` and an epoch's order is ``fold_in(data_key,
epoch)``, so a resumed run needs no saved key and reproduces the run that
was never stopped, bit for bit.

The training images live on the device as uint8; an epoch is one jitted
``lax.scan`` over a permutation of their indices, with the state donated.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from vae_jax import checkpointing
from vae_jax import compilation
from vae_jax import config as config_lib
from vae_jax import data as data_lib
from vae_jax import evaluate as eval_lib
from vae_jax import losses
from vae_jax import models
from vae_jax import parallel

log = logging.getLogger(__name__)

# The checkpoint of the epoch with the best validation score (``_val_score``), kept
# beside the latest ones: what early stopping on the validation set would keep.
BEST_DIR = "best"
CHECKPOINTS = ("latest", "best")

# Fields that may change between a run and its resumption.
RESUMABLE_FIELDS = ("num_epochs", "eval_every_epochs", "eval_num_samples", "checkpoint_every_epochs",
                    "keep_checkpoints", "progress", "eval", "data.data_dir", "data.download",
                    "num_devices", "skip_nonfinite_updates", "skip_threshold", "debug_nans")


# Fields added after workdirs were first written, with the value a workdir without them ran
# with: such a workdir resumes and evaluates as before.
ADDED_FIELDS = {"model.kind": "vae", "model.prior": "standard", "model.num_components": 500,
                "model.pseudo_inputs_init": "noise", "loss.corruption": "none",
                "loss.corruption_level": 0.0, "model.num_classes": 0,
                "model.clip_logvar": False, "model.matmul_dtype": "float32"}


class NonFiniteError(FloatingPointError):
  """Training produced a NaN or inf loss or gradient."""


class WorkdirError(OSError):
  """The workdir cannot be created or written."""


class TrainState(flax.struct.PyTreeNode):
  step: jax.Array
  params: Any
  opt_state: Any
  tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)

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


def create_train_state(model: models.VAE, key: jax.Array, tx: optax.GradientTransformation,
                       *, output_bias: np.ndarray | None = None,
                       pseudo_inputs: np.ndarray | None = None) -> TrainState:
  """Initial state; ``output_bias`` (logits, image-shaped) sets the MLP decoder's output bias.

  ``pseudo_inputs`` [K, H, W, C] replaces the VampPrior's initial pseudo-inputs
  (``model.prior == "vamp"``); a shape other than (model.num_components,
  *model.image_shape) is a ConfigError.
  """
  params = jax.jit(models.init_params, static_argnums=0)(model, key)  # one compile, not one per op
  if output_bias is not None and "dec_out" in params:
    bias = jnp.asarray(output_bias, jnp.float32).reshape(-1)
    params = {**params, "dec_out": {**params["dec_out"], "bias": bias}}
  if pseudo_inputs is not None:
    expected = (model.num_components,) + tuple(model.image_shape)
    if model.prior != "vamp":
      raise config_lib.ConfigError(f"pseudo-inputs were given but config.model.prior={model.prior!r}; "
                                   "they belong to the VampPrior ('vamp')")
    if tuple(np.shape(pseudo_inputs)) != expected:
      raise config_lib.ConfigError(
          f"pseudo-inputs have shape {tuple(np.shape(pseudo_inputs))}; expected {expected} "
          f"(config.model.num_components={model.num_components} images of the data's shape)")
    params = {**params, "pseudo_inputs": jnp.asarray(pseudo_inputs, jnp.float32)}
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params), tx=tx)


def pseudo_inputs_from_data(images: np.ndarray, num_components: int, key: jax.Array,
                            mode: str) -> np.ndarray:
  """K distinct training images (model input, chosen by ``key``) plus N(0, 0.01^2) noise.

  The VampPrior's data initialization (Tomczak & Welling 2018, Sec. 4).
  """
  if num_components > images.shape[0]:
    raise config_lib.ConfigError(
        f"config.model.num_components={num_components} is invalid: the 'data' initialization "
        f"picks that many of the {images.shape[0]} training images")
  pick_key, data_key, noise_key = jax.random.split(key, 3)
  idx = jax.random.choice(pick_key, images.shape[0], (num_components,), replace=False)
  x = data_lib.to_model_input(jnp.asarray(np.asarray(images)[np.asarray(idx)]), data_key, mode)
  return np.asarray(x + models.PSEUDO_INPUT_STD * jax.random.normal(noise_key, x.shape))


def kl_weight(step: jax.Array, *, beta: float, warmup_steps: int) -> jax.Array:
  """beta, reached linearly over ``warmup_steps`` steps (KL warm-up; 0 = none)."""
  if warmup_steps <= 0:
    return jnp.asarray(beta, jnp.float32)
  return beta * jnp.minimum(1.0, step.astype(jnp.float32) / warmup_steps)


def train_step(state: TrainState, raw_batch: jax.Array, key: jax.Array, *, model, loss_fn,
               mode: str, beta: float = 1.0, warmup_steps: int = 0, skip_nonfinite: bool = False,
               skip_threshold: float = 0.0):
  """One optimizer step on a uint8 batch [B, H, W, C]; returns (state, metrics).

  A class-conditional model's batch is ``{"image": uint8 [B, H, W, C], "label":
  int32 [B]}``; each label goes to ``loss_fn`` as the keyword ``label``.
  ``key`` is split into a data key (binarization / dequantization) and one
  loss key per example. Metrics are batch means of the loss and its aux terms,
  plus the gradient's global norm, the KL weight used and ``skipped_updates``
  (1 if this update was skipped, else 0).

  Skipping (decided on the device, no host sync): with ``skip_nonfinite`` a
  step whose loss or gradient is NaN or inf, and with ``skip_threshold > 0`` a
  step whose gradient norm exceeds it (or is not finite), leaves the
  parameters and optimizer state as they were; the step counter still
  advances, so keys and the learning-rate schedule stay on the batch index.
  """
  labels = None
  if isinstance(raw_batch, dict):
    raw_batch, labels = raw_batch["image"], raw_batch["label"]
  data_key, loss_key = jax.random.split(key)
  x = data_lib.to_model_input(raw_batch, data_key, mode)
  example_keys = jax.random.split(loss_key, x.shape[0])
  weight = kl_weight(state.step, beta=beta, warmup_steps=warmup_steps)

  def batch_loss(params):
    if labels is None:
      per_example = jax.vmap(lambda xi, ki: loss_fn(model, params, xi, ki, kl_weight=weight))
      loss, aux = per_example(x, example_keys)
    else:
      per_example = jax.vmap(lambda xi, yi, ki: loss_fn(model, params, xi, ki, kl_weight=weight,
                                                        label=yi))
      loss, aux = per_example(x, labels, example_keys)
    # The batch means below start from these per-example values. Without the
    # barrier XLA merges a mean of per-example pixel sums into one reduction over
    # all pixels; the likelihood's per-pixel terms then feed two reductions, and
    # XLA:CPU materializes them instead of fusing them into one.
    loss, aux = jax.lax.optimization_barrier((loss, aux))
    return jnp.mean(loss), jax.tree.map(jnp.mean, aux)

  (loss, aux), grads = jax.value_and_grad(batch_loss, has_aux=True)(state.params)
  grad_norm = _global_norm(grads)
  new_state, skipped = skip_update(state, state.apply_gradients(grads), loss, grad_norm,
                                   skip_nonfinite=skip_nonfinite, skip_threshold=skip_threshold)
  return new_state, dict(loss=loss, grad_norm=grad_norm, kl_weight=weight, skipped_updates=skipped,
                         **aux)


def skip_update(old, new, loss: jax.Array, grad_norm: jax.Array, *, skip_nonfinite: bool,
                skip_threshold: float):
  """(state, skipped): ``new``, or ``old`` with ``new``'s step counter when the update is skipped.

  Skipped (on the device, no host sync): with ``skip_nonfinite`` when the loss
  or gradient norm is NaN or inf, with ``skip_threshold > 0`` when the gradient
  norm exceeds it (or is not finite). Every other field of the state (params,
  optimizer state, a trainer's own statistics such as a VQ-VAE's codebook
  counts) keeps its old value. ``skipped`` is an int32 0 / 1.
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


def _global_norm(tree) -> jax.Array:
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


def make_train_epoch(model, loss_fn, *, mode: str, batch_size: int, beta: float = 1.0,
                     warmup_steps: int = 0, mesh: jax.sharding.Mesh | None = None,
                     skip_nonfinite: bool = False, skip_threshold: float = 0.0,
                     stepwise: bool = False) -> Callable:
  """A jitted ``train_epoch(state, images, epoch, train_key, data_key) -> (state, metrics)``.

  ``metrics`` holds one value per step (arrays [num_batches]); the state is donated.
  ``images``: uint8 [N, H, W, C], or for a class-conditional model
  ``{"image": [N, H, W, C], "label": int32 [N]}`` (see ``train_step``).
  With a ``mesh`` (``vae_jax.parallel``), each batch is split over its devices;
  place the state and images with ``parallel.replicate`` first.
  ``skip_nonfinite`` / ``skip_threshold``: see ``train_step``. ``stepwise``
  (debug mode): one jitted step per batch, driven from Python, instead of one
  scan, so that ``jax_debug_nans`` re-runs the failing step op by op and names the op.
  """
  if mesh is not None:
    parallel.check_batch_size(batch_size, mesh)
  step = jax.tree_util.Partial(train_step, model=model, loss_fn=loss_fn, mode=mode,
                               beta=beta, warmup_steps=warmup_steps, skip_nonfinite=skip_nonfinite,
                               skip_threshold=skip_threshold)

  def body(state, idx, images, train_key):
    batch = jax.tree.map(lambda a: data_lib.take_rows(a, idx), images)
    if mesh is not None:
      batch = jax.tree.map(lambda b: jax.lax.with_sharding_constraint(b, parallel.batch_sharded(mesh)),
                           batch)
    return step(state, batch, jax.random.fold_in(train_key, state.step))

  def num_examples(images):
    return jax.tree.leaves(images)[0].shape[0]

  def train_epoch(state, images, epoch, train_key, data_key):
    batches = data_lib.epoch_batch_indices(jax.random.fold_in(data_key, epoch), num_examples(images),
                                           batch_size)
    return jax.lax.scan(lambda state, idx: body(state, idx, images, train_key), state, batches)

  options = compilation.options_for(model)
  if stepwise:
    body_jit = compilation.jit(body, options=options)

    def stepwise_epoch(state, images, epoch, train_key, data_key):
      batches = data_lib.epoch_batch_indices(jax.random.fold_in(data_key, epoch), num_examples(images),
                                             batch_size)
      return run_stepwise(lambda state, idx: body_jit(state, idx, images, train_key), state, batches)

    return stepwise_epoch
  return compilation.jit(train_epoch, donate_argnums=(0,), options=options)


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
  return state, jax.tree.map(lambda *m: jnp.stack(m), *metrics)


def run_epoch(train_epoch: Callable, state, data, epoch: int, keys: RunKeys, *, steps_per_epoch: int,
              ckpt: checkpointing.Checkpointer) -> tuple[Any, dict]:
  """Runs one epoch and checks its per-step metrics; -> (state, {"train_<name>": epoch mean}).

  The means are over the applied updates; ``train_skipped_updates`` counts the
  others. Raises NonFiniteError naming the step and the offending term when an
  applied step has a non-finite metric, when every update was skipped, or (debug
  mode, ``jax_debug_nans`` on) at the op that made a NaN; each names the newest
  good checkpoint, which is kept.
  """
  kept_ckpt = lambda: f"the newest good checkpoint (epoch {max(ckpt.epochs(), default=0)}) is kept in {ckpt.directory}"
  try:
    state, step_metrics = train_epoch(state, data, epoch, keys.train, keys.data)
  except FloatingPointError as e:  # config.debug_nans: raised at the op that made the NaN
    raise NonFiniteError(f"{e} in epoch {epoch} (steps {(epoch - 1) * steps_per_epoch} to "
                         f"{epoch * steps_per_epoch - 1}); {kept_ckpt()}") from e
  step_metrics = jax.device_get(step_metrics)
  bad = _first_non_finite(step_metrics)
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


def debug_nans(enabled: bool) -> contextlib.AbstractContextManager:
  """``jax_debug_nans`` on for the ``with`` block when ``enabled`` (config.debug_nans), restored after."""
  return jax.debug_nans(True) if enabled else contextlib.nullcontext()


def _first_non_finite(metrics: dict) -> tuple[int, list[str]] | None:
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


def _config_diff(saved: dict, current: dict, prefix="", added: dict | None = None) -> list[str]:
  """'name: saved in the workdir, current now' for each setting that differs; a field missing
  from the saved config counts as ``added``'s value (default ``ADDED_FIELDS``)."""
  added = ADDED_FIELDS if added is None else added
  diffs = []
  for k in sorted(set(saved) | set(current)):
    name = f"{prefix}{k}"
    if name in RESUMABLE_FIELDS:
      continue
    a, b = saved.get(k, "<missing>"), current.get(k, "<missing>")
    if a == "<missing>" and name in added and b == added[name]:
      continue
    if isinstance(a, dict) and isinstance(b, dict):
      diffs += _config_diff(a, b, name + ".", added)
    elif a != b:  # by value: 0 and 0.0 are the same setting
      diffs.append(f"{name}: {a!r} in the workdir, {b!r} now")
  return diffs


def _config_to_json(config) -> dict:
  return json.loads(config.to_json())


def load_config(workdir: str | Path, added: dict | None = None) -> ml_collections.ConfigDict:
  """The config a workdir was trained with (``workdir/config.json``); a field it lacks takes
  its value from ``added`` (default ``ADDED_FIELDS``)."""
  path = Path(workdir) / "config.json"
  if not path.exists():
    raise FileNotFoundError(f"{path} does not exist: is {workdir} a training workdir?")
  cfg = json.loads(path.read_text())
  for name, value in (ADDED_FIELDS if added is None else added).items():
    section, _, field = name.rpartition(".")
    (cfg.get(section, {}) if section else cfg).setdefault(field, value)

  def tuplify(d):
    for k, v in d.items():
      if isinstance(v, dict):
        tuplify(v)
      elif isinstance(v, list):
        d[k] = tuple(tuple(e) if isinstance(e, list) else e for e in v)
    return d

  return ml_collections.ConfigDict(tuplify(cfg))


def restore_workdir(workdir: str | Path, checkpoint: str = "latest"):
  """(config, model, params, epoch) of a training ``workdir``'s newest checkpoint, or with
  ``checkpoint="best"`` of the one with the best validation score (``BEST_DIR``)."""
  workdir = Path(workdir)
  if checkpoint not in CHECKPOINTS:
    raise ValueError(f"checkpoint={checkpoint!r}; expected one of {CHECKPOINTS}")
  config = load_config(workdir)
  model = config_lib.make_model(config)
  ckpt = checkpointing.Checkpointer(checkpoint_dir(workdir, checkpoint), max_to_keep=config.keep_checkpoints)
  template = create_train_state(model, jax.random.key(0), config_lib.make_optimizer(
      config.optimizer, config_lib.make_schedule(config.optimizer, 1, 1)))
  try:
    epoch, state = ckpt.restore_latest(template)
  finally:
    ckpt.close()
  if state is None:
    raise FileNotFoundError(f"no checkpoint in {checkpoint_dir(workdir, checkpoint)}: train first"
                            + (" (the best one is written at each validation that improves on "
                               "the last best)" if checkpoint == "best" else ""))
  return config, model, state.params, epoch


def checkpoint_dir(workdir: str | Path, checkpoint: str = "latest") -> Path:
  return Path(workdir) / ("checkpoints" if checkpoint == "latest" else BEST_DIR)


def _val_score(row: dict) -> float | None:
  """The validation figure the best checkpoint minimizes: the NLL estimate, or the
  reconstruction for a model without a likelihood (autoencoder)."""
  return row.get("val_nll", row.get("val_recon"))


def _best_score(metrics_path: Path, best_epochs: list[int]) -> float:
  """The score of the checkpoint in ``BEST_DIR``, read back from the metrics (inf if none)."""
  if not best_epochs or not metrics_path.exists():
    return math.inf
  for line in metrics_path.read_text().splitlines():
    row = json.loads(line)
    if row.get("epoch") == best_epochs[-1] and _val_score(row) is not None:
      return float(_val_score(row))
  return math.inf


def load_datasets(config) -> dict[str, data_lib.Split]:
  return {s: data_lib.load_split(config.data, s) for s in ("train", "validation")}


def _append_jsonl(path: Path, row: dict) -> None:
  with path.open("a") as f:
    f.write(json.dumps(row) + "\n")


def _write_atomic(path: Path, text: str) -> None:
  """Write a whole file or nothing: a kill mid-write leaves the old file."""
  tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
  tmp.write_text(text)
  os.replace(tmp, path)


def _truncate_metrics(path: Path, last_epoch: int) -> None:
  """Drop rows of epochs after the checkpoint we resume from (they will be redone).

  A line cut short by a kill mid-append is dropped too.
  """
  if not path.exists():
    return
  kept = []
  for r in path.read_text().splitlines():
    try:
      if r.strip() and json.loads(r).get("epoch", 0) <= last_epoch:
        kept.append(r)
    except json.JSONDecodeError:
      log.warning("dropping a partly written line of %s: %r", path, r[:80])
  _write_atomic(path, "".join(r + "\n" for r in kept))


def _prepare_workdir(workdir: Path) -> Path:
  """Creates ``workdir`` and checks that it can be written, before any compute."""
  try:
    workdir.mkdir(parents=True, exist_ok=True)
    probe = workdir / f".write_probe.{os.getpid()}"
    probe.write_text("")
    probe.unlink()
  except OSError as e:
    raise WorkdirError(f"workdir {workdir} cannot be {'written' if workdir.is_dir() else 'created'}: "
                       f"{e.strerror or e}. Choose a writable --workdir.") from e
  return workdir


def train_and_evaluate(config, workdir: str | Path, *, loss_fn: losses.LossFn | None = None,
                       datasets: dict[str, data_lib.Split] | None = None) -> tuple[TrainState, dict]:
  """Trains (or resumes) the configured VAE in ``workdir``; returns (state, last metrics).

  Args:
    config: a ConfigDict shaped like ``experiments/configs/default.py``.
    workdir: checkpoints, ``config.json``, ``metrics.jsonl`` and figures go here;
      rerunning with the same workdir resumes from the newest checkpoint.
    loss_fn: a per-example loss ``(model, params, x, key, *, kl_weight) -> (loss, aux)``
      to use instead of ``config.loss`` (see ``vae_jax.losses``).
    datasets: ``{"train": Split, "validation": Split}`` to use instead of TFDS.
  """
  config_lib.validate(config)
  workdir = _prepare_workdir(Path(workdir))
  cfg_path = workdir / "config.json"
  if cfg_path.exists():
    diffs = _config_diff(json.loads(cfg_path.read_text()), _config_to_json(config))
    if diffs:
      raise config_lib.ConfigError(
          f"{workdir} holds a run with another config; use a new workdir or the same config. "
          "Differences:\n  " + "\n  ".join(diffs))
  model = config_lib.make_model(config)
  if datasets is None:
    datasets = load_datasets(config)
  labels = {}
  for name, split in datasets.items():
    data_lib.check_images(split.images, model.image_shape, what=f"{name} images",
                          binary=config.data.mode == "static")
    if model.num_classes:
      labels[name] = data_lib.check_labels(split.labels, model.num_classes, len(split.images),
                                           what=f"{name} labels")
  _write_atomic(cfg_path, config.to_json(indent=2))

  keys = RunKeys.from_seed(config.seed)
  try:
    mesh = parallel.make_mesh(config.num_devices)
    parallel.check_batch_size(config.batch_size, mesh, "config.batch_size")
    parallel.check_batch_size(config.eval.batch_size, mesh, "config.eval.batch_size")
  except ValueError as e:
    raise config_lib.ConfigError(f"config.num_devices={config.num_devices}: {e}") from None
  num_train = len(datasets["train"].images)
  train_images = np.asarray(datasets["train"].images, np.uint8)
  if model.num_classes:  # labels travel with the images, batch by batch
    train_images = {"image": train_images, "label": labels["train"]}
  train_images = parallel.replicate(train_images, mesh)
  steps_per_epoch = num_train // config.batch_size
  if steps_per_epoch < 1:
    raise config_lib.ConfigError(f"config.batch_size={config.batch_size} is larger than the "
                                 f"{num_train} training images")
  total_epochs = config_lib.num_epochs(config)
  schedule = config_lib.make_schedule(config.optimizer, steps_per_epoch, total_epochs)
  tx = config_lib.make_optimizer(config.optimizer, schedule)
  output_bias = None
  if config.model.init_output_bias and config.model.likelihood == "bernoulli":
    p = np.clip(_mean_image(datasets["train"].images, config.data.mode), 1e-3, 1 - 1e-3)
    output_bias = np.log(p) - np.log1p(-p)
  pseudo_inputs = None
  if config.model.prior == "vamp" and config.model.pseudo_inputs_init == "data":
    pseudo_inputs = pseudo_inputs_from_data(datasets["train"].images, config.model.num_components,
                                            jax.random.fold_in(keys.init, 1), config.data.mode)
  state = parallel.replicate(create_train_state(model, keys.init, tx, output_bias=output_bias,
                                                pseudo_inputs=pseudo_inputs), mesh)

  ckpt = checkpointing.Checkpointer(workdir / "checkpoints", max_to_keep=config.keep_checkpoints)
  ckpt.clean_up_after_crash()
  start_epoch, restored = ckpt.restore_latest(state, set_aside_unreadable=True)
  if restored is not None:
    state = restored
    log.info("resuming %s from epoch %d (step %d)", workdir, start_epoch, int(state.step))
  metrics_path = workdir / "metrics.jsonl"
  _truncate_metrics(metrics_path, start_epoch)
  best_ckpt = checkpointing.Checkpointer(workdir / BEST_DIR, max_to_keep=1)
  best_ckpt.clean_up_after_crash()
  for e in best_ckpt.epochs():
    if e > start_epoch:  # written after the checkpoint we resume from: the rerun writes it again
      best_ckpt.delete(e)
  best_score = _best_score(metrics_path, best_ckpt.epochs())

  warmup_steps = int(round(config.loss.warmup_epochs * steps_per_epoch))
  loss_fn = loss_fn or losses.make_loss(config.loss)
  train_epoch = make_train_epoch(model, loss_fn, mode=config.data.mode, batch_size=config.batch_size,
                                 beta=config.loss.beta, warmup_steps=warmup_steps, mesh=mesh,
                                 skip_nonfinite=config.skip_nonfinite_updates,
                                 skip_threshold=config.skip_threshold, stepwise=config.debug_nans)
  val_images = datasets["validation"].images
  val_labels = labels.get("validation")
  last = {}
  epochs = range(start_epoch + 1, total_epochs + 1)
  bar = None
  if config.progress and len(epochs):
    from tqdm.auto import tqdm
    bar = tqdm(total=total_epochs, initial=start_epoch, desc="train", unit="epoch")
  debug = contextlib.ExitStack()
  debug.enter_context(debug_nans(config.debug_nans))
  try:
    for epoch in epochs:
      t0 = time.perf_counter()
      state, train_row = run_epoch(train_epoch, state, train_images, epoch, keys,
                                   steps_per_epoch=steps_per_epoch, ckpt=ckpt)
      seconds = time.perf_counter() - t0
      row = {"epoch": epoch, "step": int(state.step), "seconds": seconds,
             "examples_per_s": steps_per_epoch * config.batch_size / seconds,
             "learning_rate": float(schedule(int(state.step) - 1))}
      row.update(train_row)
      if epoch % config.eval_every_epochs == 0 or epoch == total_epochs:
        val = eval_lib.evaluate(model, state.params, val_images, labels=val_labels, key=keys.eval,
                                mode=config.data.mode,
                                num_samples=config.eval_num_samples, batch_size=config.eval.batch_size,
                                chunk_size=config.eval.chunk_size, mesh=mesh)
        row.update({f"val_{k}": v for k, v in val.items() if k not in ("num_images",)})
      _append_jsonl(metrics_path, row)
      last = row
      score = _val_score(row)
      if score is not None and np.isfinite(score) and score < best_score:
        best_ckpt.save(epoch, state)
        best_score = score
      if epoch % config.checkpoint_every_epochs == 0 or epoch == total_epochs:
        ckpt.save(epoch, state)
      if bar is not None:
        bar.update(1)
        bar.set_postfix(loss=f"{row['train_loss']:.2f}",
                        **({"val_elbo": f"{row['val_elbo']:.2f}"} if "val_elbo" in row else {}))
  finally:
    debug.close()
    if bar is not None:
      bar.close()
    ckpt.close()
    best_ckpt.close()
  _save_figures(model, state.params, val_images, keys.eval, config.data.mode, workdir, val_labels)
  return state, last


def _mean_image(images: np.ndarray, mode: str) -> np.ndarray:
  scale = 1.0 if mode == "static" else 255.0
  return np.mean(images, axis=0, dtype=np.float64) / scale


def class_samples(model, params, key: jax.Array, per_class: int = 10) -> np.ndarray:
  """[num_classes * per_class, H, W, C] mean images of a conditional model, class by class (row y = label y)."""
  labels = jnp.repeat(jnp.arange(model.num_classes, dtype=jnp.int32), per_class)
  return np.asarray(model.apply({"params": params}, key, labels.shape[0], labels, method=model.generate))


def _save_figures(model, params, images, key, mode, workdir: Path, labels=None) -> None:
  from vae_jax import plotting
  figures = workdir / "figures"
  sample_key, data_key = jax.random.split(jax.random.fold_in(key, 1))
  if getattr(model, "num_classes", 0):
    plotting.save_grid(class_samples(model, params, sample_key), figures / "samples.png", ncols=10,
                       title="samples from p(x|z,y), z ~ p(z|y): one row per class y")
  else:
    samples = model.apply({"params": params}, sample_key, 64, method=model.generate)
    plotting.save_grid(np.asarray(samples), figures / "samples.png", title="samples from p(x|z), z ~ p(z)")
  x = data_lib.to_model_input(jnp.asarray(images[:32]), data_key, mode)
  if labels is None:
    recon = jax.vmap(lambda xi: model.apply({"params": params}, xi, method=model.reconstruct))(x)
  else:
    recon = jax.vmap(lambda xi, yi: model.apply({"params": params}, xi, yi, method=model.reconstruct))(
        x, jnp.asarray(labels[:32]))
  plotting.save_reconstructions(np.asarray(x), np.asarray(recon), figures / "reconstructions.png")
