"""The VAE trainer (Gaussian VAE, CVAE, autoencoder, HVAE): its state, step and ``train_and_evaluate``.

The loop itself (keys, scan epochs, devices, checkpoints, resume, non-finite
updates, metrics) is ``vae_jax.loop``'s, shared by every trainer; this module
builds what the VAE brings to it: the initial state (decoder output bias,
VampPrior pseudo-inputs), the step on uint8 batches, the validation (ELBO and
importance-sampled NLL) and the figures. The training images live on the device
as uint8; each step binarizes or dequantizes its batch with its own key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from vae_jax import checkpointing
from vae_jax import compilation
from vae_jax import config as config_lib
from vae_jax import data as data_lib
from vae_jax import evaluation as eval_lib
from vae_jax import lock
from vae_jax import loop
from vae_jax import losses
from vae_jax import models
from vae_jax import summaries
from vae_jax import workdir as workdir_lib
from vae_jax.loop import NonFiniteError  # noqa: F401 (public name)
from vae_jax.train_state import RunKeys, TrainState, global_norm, guard, skip_update  # noqa: F401
from vae_jax.workdir import BEST_DIR, CHECKPOINTS, WorkdirError, checkpoint_dir  # noqa: F401

# Fields a VAE workdir written before they existed lacks, with the value it ran with.
ADDED_FIELDS = config_lib.SCHEMA.added


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
  return TrainState.create(params, tx)


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
               mode: str, beta: float = 1.0, warmup_steps: int = 0):
  """One optimizer step on a uint8 batch [B, H, W, C]; returns (state, metrics).

  A class-conditional model's batch is ``{"image": uint8 [B, H, W, C], "label":
  int32 [B]}``; each label goes to ``loss_fn`` as the keyword ``label``.
  ``key`` is split into a data key (binarization / dequantization) and one
  loss key per example. Metrics are batch means of the loss and its aux terms,
  plus the gradient's global norm and the KL weight used. Skipping of
  non-finite updates is the loop's (``train_state.guard``).
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
  return state.apply_gradients(grads), dict(loss=loss, grad_norm=global_norm(grads), kl_weight=weight,
                                            **aux)


def make_train_epoch(model, loss_fn, *, mode: str, batch_size: int, beta: float = 1.0,
                     warmup_steps: int = 0, mesh: jax.sharding.Mesh | None = None,
                     skip_nonfinite: bool = False, skip_threshold: float = 0.0,
                     stepwise: bool = False) -> Callable:
  """The loop's jitted ``train_epoch(state, images, epoch, train_key, data_key) -> (state, metrics)``
  for the VAE's ``train_step`` (``loop.make_epoch``; for benchmarks and tests).

  ``metrics`` holds one value per step (arrays [num_batches]); the state is donated.
  ``images``: uint8 [N, H, W, C], or for a class-conditional model
  ``{"image": [N, H, W, C], "label": int32 [N]}`` (see ``train_step``).
  ``skip_nonfinite`` / ``skip_threshold``: ``train_state.guard``.
  """
  step = guard(jax.tree_util.Partial(train_step, model=model, loss_fn=loss_fn, mode=mode, beta=beta,
                                     warmup_steps=warmup_steps),
               skip_nonfinite=skip_nonfinite, skip_threshold=skip_threshold)
  return loop.make_epoch(step, batch_size, mesh=mesh, stepwise=stepwise,
                         options=compilation.options_for(model))


def load_config(workdir: str | Path):
  """The config a VAE workdir was trained with (``workdir/config.json``); a field it lacks
  takes the value it ran with (``config.SCHEMA``)."""
  return config_lib.SCHEMA.load(workdir)


def restore_state(workdir: str | Path, checkpoint: str = "latest"):
  """(config, model, train state, epoch) of a training ``workdir``'s newest checkpoint, or with
  ``checkpoint="best"`` of the one with the best validation score (``workdir.BEST_DIR``)."""
  workdir = Path(workdir)
  directory = checkpoint_dir(workdir, checkpoint)
  config = load_config(workdir)
  model = config_lib.make_model(config)
  template = jax.eval_shape(lambda: create_train_state(model, jax.random.key(0), config_lib.make_optimizer(
      config.optimizer, config_lib.make_schedule(config.optimizer, 1, 1))))
  ckpt = checkpointing.Checkpointer(directory, max_to_keep=config.keep_checkpoints)
  try:
    epoch, state = ckpt.restore_latest(template)
  finally:
    ckpt.close()
  if state is None:
    latest = checkpoint_dir(workdir, "latest")
    if checkpoint == "best" and latest.is_dir() and any(p.name.isdigit() for p in latest.iterdir()):
      raise FileNotFoundError(
          f"no checkpoint in {directory}: it is written at each validation whose score is finite "
          f"and better than the last best, and none was; the newest checkpoint is in {latest} "
          "(--checkpoint latest)")
    raise FileNotFoundError(f"no checkpoint in {directory}: train first")
  return config, model, state, epoch


def restore_workdir(workdir: str | Path, checkpoint: str = "latest"):
  """(config, model, params, epoch) of a training ``workdir``'s newest checkpoint, or with
  ``checkpoint="best"`` of the one with the best validation score (``workdir.BEST_DIR``)."""
  config, model, state, epoch = restore_state(workdir, checkpoint)
  return config, model, state.params, epoch


def load_datasets(config) -> dict[str, data_lib.Split]:
  return {s: data_lib.load_split(config.data, s) for s in ("train", "validation")}


@lock.scoped
def train_and_evaluate(config, workdir: str | Path, *, loss_fn: losses.LossFn | None = None,
                       datasets: dict[str, data_lib.Split] | None = None) -> tuple[TrainState, dict]:
  """Trains (or resumes) the configured VAE in ``workdir``; returns (state, last metrics).

  Args:
    config: a ConfigDict shaped like ``vae_jax/configs/default.py``.
    workdir: checkpoints, ``config.json``, ``metrics.jsonl`` and figures go here;
      rerunning with the same workdir resumes from the newest checkpoint.
    loss_fn: a per-example loss ``(model, params, x, key, *, kl_weight) -> (loss, aux)``
      to use instead of ``config.loss`` (see ``vae_jax.losses``). The fields of
      ``config.loss.kwargs`` are passed to it (or to the configured loss) as
      keywords. The workdir records its "module:name" and refuses to resume
      with another loss.
    datasets: ``{"train": Split, "validation": Split}`` to use instead of TFDS.
  """
  workdir = loop.open_workdir(config, workdir, config_lib.SCHEMA)
  base_loss = loss_fn or losses.make_loss(config.loss)
  workdir_lib.check_loss(workdir, losses.loss_name(base_loss), write=False)  # another loss: refused
  loss_fn = losses.bind_kwargs(base_loss, config.loss.get("kwargs", {}))
  workdir_lib.check_loss(workdir, losses.loss_name(base_loss), write=loop.is_writer())
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
  mesh = loop.make_mesh(config)
  keys = RunKeys.from_seed(config.seed)
  num_train = len(datasets["train"].images)
  train_images = np.asarray(datasets["train"].images, np.uint8)
  if model.num_classes:  # labels travel with the images, batch by batch
    train_images = {"image": train_images, "label": labels["train"]}
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
  state = create_train_state(model, keys.init, tx, output_bias=output_bias, pseudo_inputs=pseudo_inputs)

  warmup_steps = int(round(config.loss.warmup_epochs * steps_per_epoch))
  step = jax.tree_util.Partial(train_step, model=model, loss_fn=loss_fn,
                               mode=config.data.mode, beta=config.loss.beta, warmup_steps=warmup_steps)
  val_images = datasets["validation"].images
  val_labels = labels.get("validation")

  def validate(state):
    val = eval_lib.evaluate(model, state.params, val_images, labels=val_labels, key=keys.eval,
                            mode=config.data.mode, num_samples=config.eval_num_samples,
                            batch_size=config.eval.batch_size, chunk_size=config.eval.chunk_size, mesh=mesh)
    return {k: v for k, v in val.items() if k != "num_images"}

  trainer = loop.Trainer(
      state=state, step=step, data=train_images, evaluate=validate, schedule=schedule, keys=keys,
      best_metric="recon" if model.deterministic else "nll",
      figures=lambda state: figures(model, state.params, val_images, keys.eval, config.data.mode,
                                    val_labels),
      postfix=("train_loss", "val_elbo"), compile_options=compilation.options_for(model))
  return loop.fit(config, workdir, trainer, mesh=mesh, num_epochs=total_epochs)


def _mean_image(images: np.ndarray, mode: str) -> np.ndarray:
  scale = 1.0 if mode == "static" else 255.0
  return np.mean(images, axis=0, dtype=np.float64) / scale


def class_samples(model, params, key: jax.Array, per_class: int = 10) -> np.ndarray:
  """[num_classes * per_class, H, W, C] mean images of a conditional model, class by class (row y = label y)."""
  labels = jnp.repeat(jnp.arange(model.num_classes, dtype=jnp.int32), per_class)
  return np.asarray(model.apply({"params": params}, key, labels.shape[0], labels, method=model.generate))


def figures(model, params, images, key, mode, labels=None) -> dict[str, summaries.Figure]:
  """The figures of every evaluation: ``samples`` (64, or 10 per class of a conditional model,
  one row per class) and ``reconstructions`` of the first 32 ``images`` (uint8 [N, H, W, C])."""
  sample_key, data_key = jax.random.split(jax.random.fold_in(key, 1))
  if getattr(model, "num_classes", 0):
    samples = summaries.Figure(class_samples(model, params, sample_key),
                               "samples from p(x|z,y), z ~ p(z|y): one row per class y", ncols=10)
  else:
    samples = summaries.Figure(np.asarray(model.apply({"params": params}, sample_key, 64,
                                                      method=model.generate)),
                               "samples from p(x|z), z ~ p(z)")
  x = data_lib.to_model_input(jnp.asarray(images[:32]), data_key, mode)
  if labels is None:
    recon = jax.vmap(lambda xi: model.apply({"params": params}, xi, method=model.reconstruct))(x)
  else:
    recon = jax.vmap(lambda xi, yi: model.apply({"params": params}, xi, yi, method=model.reconstruct))(
        x, jnp.asarray(labels[:32]))
  return {"samples": samples, "reconstructions": summaries.reconstructions(x, recon)}
