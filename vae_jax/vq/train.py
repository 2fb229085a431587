"""The VQ-VAE trainer: its step (gradients, then the codebook update) and ``train_and_evaluate``.

The loop is ``vae_jax.loop``'s (keys, scan epochs, devices, checkpoints,
resume, non-finite updates, metrics). The VQ-VAE state is the core
``TrainState`` plus the codebook statistics (``vq.state.VQTrainState``): the
EMA codebook update and the dead-code restarts run inside the jitted step,
after the optimizer update, and write the codebook param. The prior is
trained in a second stage (``vae_jax.vq.train_prior``).
"""

from __future__ import annotations

import functools
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from vae_jax import config as config_lib
from vae_jax import data as data_lib
from vae_jax import lock
from vae_jax import loop
from vae_jax import losses
from vae_jax import summaries
from vae_jax.train_state import RunKeys, global_norm
from vae_jax.vq import config as vq_config
from vae_jax.vq import evaluate as vq_evaluate
from vae_jax.vq import quantization as vq
from vae_jax.vq import vqvae
from vae_jax.vq.state import VQTrainState, create_train_state  # noqa: F401 (public names)


def _with_codebook(params, codebook):
  return {**params, "quantizer": {**params["quantizer"], "codebook": codebook}}


def train_step(state: VQTrainState, raw_batch: jax.Array, key: jax.Array, *, model, loss_fn,
               mode: str, ema: bool, decay: float, epsilon: float, restart: bool,
               dead_threshold: float):
  """One step on a uint8 batch [B, H, W, C]: gradients, then the codebook update; -> (state, metrics).

  The codebook update uses this batch's encoder outputs and codes (from the
  forward pass): the EMA step (``ema``) or only the usage counts, then, with
  ``restart``, dead codes (usage EMA < ``dead_threshold``) move onto encoder
  outputs drawn with this step's restart key. A skipped step (the loop's
  ``train_state.guard``) keeps the codebook statistics too.
  """
  data_key, loss_key, restart_key = jax.random.split(key, 3)
  x = vqvae.model_input(raw_batch, data_key, mode, model.likelihood)
  example_keys = jax.random.split(loss_key, x.shape[0])

  def batch_loss(params):
    loss, aux = jax.vmap(lambda xi, ki: loss_fn(model, params, xi, ki))(x, example_keys)
    z_e, indices = aux.pop("z_e"), aux.pop("indices")
    return jnp.mean(loss), (jax.tree.map(jnp.mean, aux), z_e, indices)

  (loss, (aux, z_e, indices)), grads = jax.value_and_grad(batch_loss, has_aux=True)(state.params)
  new_state = state.apply_gradients(grads)
  counts = vq.code_counts(indices, model.num_codes)
  stats = new_state.codebook_stats
  codebook = new_state.params["quantizer"]["codebook"]
  if ema:
    stats, codebook = vq.ema_update(stats, z_e, indices, decay=decay, eps=epsilon)
  else:
    stats = vq.update_usage(stats, counts, decay=decay)
  dead = jnp.sum(stats.count < dead_threshold)
  if restart:
    codebook, stats, _ = vq.restart_dead_codes(restart_key, codebook, stats, z_e, threshold=dead_threshold)
  new_state = new_state.replace(params=_with_codebook(new_state.params, codebook), codebook_stats=stats)
  return new_state, dict(loss=loss, grad_norm=global_norm(grads), dead_codes=dead,
                         **vq.usage_metrics(counts), **aux)


def make_loss(config):
  return functools.partial(losses.vqvae_loss, beta=config.vq.beta, ema=config.vq.ema)


def check_datasets(datasets, image_shape, mode):
  for name, split in datasets.items():
    data_lib.check_images(split.images, image_shape, what=f"{name} images", binary=mode == "static")


@lock.scoped
def train_and_evaluate(config, workdir: str | Path, *, loss_fn: losses.LossFn | None = None,
                       datasets: dict[str, data_lib.Split] | None = None) -> tuple[VQTrainState, dict]:
  """Trains (or resumes) the configured VQ-VAE in ``workdir``; returns (state, last metrics).

  Args:
    config: shaped like ``vae_jax/configs/vq/vqvae_mnist.py``.
    workdir: ``config.json``, ``metrics.jsonl``, ``checkpoints/``, ``best/``
      (lowest validation reconstruction NLL), ``figures/``.
    loss_fn: per-example ``(model, params, x, key) -> (loss, aux)``
      returning ``z_e`` and ``indices`` in aux (default: ``losses.vqvae_loss``).
    datasets: ``{"train": Split, "validation": Split}`` instead of TFDS.
  """
  workdir = loop.open_workdir(config, workdir, vq_config.VQVAE_SCHEMA)
  model = vq_config.make_vqvae(config)
  if datasets is None:
    datasets = {s: data_lib.load_split(config.data, s) for s in ("train", "validation")}
  check_datasets(datasets, model.image_shape, config.data.mode)
  mesh = loop.make_mesh(config)

  keys = RunKeys.from_seed(config.seed)
  train_images = np.asarray(datasets["train"].images, np.uint8)
  steps_per_epoch = max(1, train_images.shape[0] // config.batch_size)
  schedule = config_lib.make_schedule(config.optimizer, steps_per_epoch, config.num_epochs)
  tx = config_lib.make_optimizer(config.optimizer, schedule)
  step = jax.tree_util.Partial(
      train_step, model=model, loss_fn=loss_fn or make_loss(config), mode=config.data.mode,
      ema=config.vq.ema, decay=config.vq.decay, epsilon=config.vq.epsilon,
      restart=config.vq.restart, dead_threshold=config.vq.dead_threshold)
  val_images = datasets["validation"].images

  def validate(state):
    out = vq_evaluate.evaluate(model, state.params, val_images, mode=config.data.mode,
                               key=keys.eval, batch_size=config.eval.batch_size)
    return {k: v for k, v in out.items() if k != "num_images"}

  trainer = loop.Trainer(
      state=create_train_state(model, keys.init, tx), step=step, data=train_images, evaluate=validate,
      schedule=schedule, keys=keys, best_metric="recon",
      figures=lambda state: figures(model, state.params, val_images, keys.eval, config.data.mode),
      postfix=("train_recon", "train_perplexity", "val_recon"))
  return loop.fit(config, workdir, trainer, mesh=mesh)


@functools.partial(jax.jit, static_argnames="model")
def _reconstruct(model, params, x, key):
  codes = model.apply({"params": params}, x, method=model.codes)
  return vqvae.images_from_codes(model, params, codes, key)


def figures(model, params, images, key, mode) -> dict[str, summaries.Figure]:
  """The figure of every evaluation: ``reconstructions`` of the first 32 ``images`` through
  their codes (samples need a prior: ``vae_jax.vq.train_prior``)."""
  k_input, k_draw = jax.random.split(key)
  x = vqvae.model_input(jnp.asarray(images[:32]), k_input, mode, model.likelihood)
  recon = _reconstruct(model, params, x, k_draw)
  return {"reconstructions": summaries.reconstructions(x, recon)}
