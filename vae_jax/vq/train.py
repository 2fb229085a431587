"""Training the VQ-VAE, then a PixelCNN prior on its codes (two stages).

Both stages run on ``loop.fit`` (the core trainer's keys, scan epochs,
checkpoints, metrics rows, resume check, and the core's non-finite handling:
skipped updates or a named stop, ``debug_nans``). The VQ-VAE state is the
core ``TrainState`` plus the codebook statistics (``quantization.CodebookStats``):
the EMA codebook update and the dead-code restarts run inside the jitted step,
after the optimizer update, and write the codebook param.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from vae_jax import config as config_lib
from vae_jax import data as data_lib
from vae_jax import losses
from vae_jax import loop
from vae_jax.vq import pixelcnn
from vae_jax.vq import quantization as vq
from vae_jax import train
from vae_jax.vq import config as vq_config
from vae_jax.vq import evaluate as vq_evaluate
from vae_jax.vq import vqvae

log = logging.getLogger(__name__)


class VQTrainState(train.TrainState):
  codebook_stats: vq.CodebookStats


def create_train_state(model: vqvae.VQVAE, key: jax.Array, tx: optax.GradientTransformation) -> VQTrainState:
  params = vqvae.init_params(model, key)
  return VQTrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params), tx=tx,
                      codebook_stats=vq.init_stats(params["quantizer"]["codebook"]))


def _with_codebook(params, codebook):
  return {**params, "quantizer": {**params["quantizer"], "codebook": codebook}}


def train_step(state: VQTrainState, raw_batch: jax.Array, key: jax.Array, *, model, loss_fn,
               mode: str, ema: bool, decay: float, epsilon: float, restart: bool,
               dead_threshold: float, skip_nonfinite: bool = False, skip_threshold: float = 0.0):
  """One step on a uint8 batch [B, H, W, C]: gradients, then the codebook update; -> (state, metrics).

  The codebook update uses this batch's encoder outputs and codes (from the
  forward pass): the EMA step (``ema``) or only the usage counts, then, with
  ``restart``, dead codes (usage EMA < ``dead_threshold``) move onto encoder
  outputs drawn with this step's restart key. ``skip_nonfinite`` /
  ``skip_threshold``: as ``train.train_step``; a skipped step keeps the
  parameters, optimizer state and codebook statistics (``train.skip_update``).
  Metrics include ``skipped_updates`` (0 / 1).
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
  grad_norm = train._global_norm(grads)
  new_state, skipped = train.skip_update(state, new_state, loss, grad_norm, skip_nonfinite=skip_nonfinite,
                                         skip_threshold=skip_threshold)
  return new_state, dict(loss=loss, grad_norm=grad_norm, dead_codes=dead, skipped_updates=skipped,
                         **vq.usage_metrics(counts), **aux)


def make_loss(config):
  return functools.partial(losses.vqvae_loss, beta=config.vq.beta, ema=config.vq.ema)


def _check_datasets(datasets, image_shape, mode):
  for name, split in datasets.items():
    data_lib.check_images(split.images, image_shape, what=f"{name} images", binary=mode == "static")


def train_and_evaluate(config, workdir: str | Path, *, loss_fn: losses.LossFn | None = None,
                       datasets: dict[str, data_lib.Split] | None = None) -> tuple[VQTrainState, dict]:
  """Trains (or resumes) the configured VQ-VAE in ``workdir``; returns (state, last metrics).

  Args:
    config: shaped like ``experiments/configs/vq/vqvae_mnist.py``.
    workdir: ``config.json``, ``metrics.jsonl``, ``checkpoints/``, ``figures/``.
    loss_fn: per-example ``(model, params, x, key, *, kl_weight) -> (loss, aux)``
      returning ``z_e`` and ``indices`` in aux (default: ``losses.vqvae_loss``).
    datasets: ``{"train": Split, "validation": Split}`` instead of TFDS.
  """
  vq_config.validate_vqvae(config)
  workdir = loop.prepare_workdir(config, workdir)
  model = vq_config.make_vqvae(config)
  if datasets is None:
    datasets = train.load_datasets(config)
  _check_datasets(datasets, model.image_shape, config.data.mode)
  loop.write_config(config, workdir)

  keys = train.RunKeys.from_seed(config.seed)
  train_images = jax.device_put(jnp.asarray(datasets["train"].images, jnp.uint8))
  steps_per_epoch = max(1, train_images.shape[0] // config.batch_size)
  schedule = config_lib.make_schedule(config.optimizer, steps_per_epoch, config.num_epochs)
  tx = config_lib.make_optimizer(config.optimizer, schedule)
  state = create_train_state(model, keys.init, tx)
  step = jax.tree_util.Partial(
      train_step, model=model, loss_fn=loss_fn or make_loss(config), mode=config.data.mode,
      ema=config.vq.ema, decay=config.vq.decay, epsilon=config.vq.epsilon,
      restart=config.vq.restart, dead_threshold=config.vq.dead_threshold,
      skip_nonfinite=config.skip_nonfinite_updates, skip_threshold=config.skip_threshold)
  val_images = datasets["validation"].images

  def validate(state):
    out = vq_evaluate.evaluate(model, state.params, val_images, mode=config.data.mode,
                               key=keys.eval, batch_size=config.eval.batch_size)
    return {k: v for k, v in out.items() if k != "num_images"}

  epoch_fn = loop.make_epoch(step, config.batch_size, stepwise=config.debug_nans)
  state, last = loop.fit(config, workdir, state=state, epoch_fn=epoch_fn, data=train_images, keys=keys,
                         schedule=schedule, validate=validate, postfix=("train_recon", "train_perplexity", "val_recon"))
  _save_reconstructions(model, state.params, val_images, keys.eval, config.data.mode, workdir)
  return state, last


@functools.partial(jax.jit, static_argnames="model")
def _reconstruct(model, params, x, key):
  codes = model.apply({"params": params}, x, method=model.codes)
  return vqvae.images_from_codes(model, params, codes, key)


def _save_reconstructions(model, params, images, key, mode, workdir: Path) -> None:
  from vae_jax import plotting
  k_input, k_draw = jax.random.split(key)
  x = vqvae.model_input(jnp.asarray(images[:32]), k_input, mode, model.likelihood)
  recon = _reconstruct(model, params, x, k_draw)
  plotting.save_reconstructions(np.asarray(x), np.asarray(recon), workdir / "figures" / "reconstructions.png")


# -- stage 2: the prior ---------------------------------------------------------------

def prior_train_step(state: train.TrainState, batch: dict, key: jax.Array, *, model, loss_fn,
                     skip_nonfinite: bool = False, skip_threshold: float = 0.0):
  """One step on a batch {"codes": int [B, h, w], "labels": int [B] (conditional priors only)}.

  ``skip_nonfinite`` / ``skip_threshold``: as ``train.train_step``.
  """
  codes, labels = batch["codes"], batch.get("labels")
  example_keys = jax.random.split(key, codes.shape[0])

  def batch_loss(params):
    per_example = jax.vmap(lambda c, l, k: loss_fn(model, params, c, k, label=l))
    loss, aux = per_example(codes, labels, example_keys)
    return jnp.mean(loss), jax.tree.map(jnp.mean, aux)

  (loss, aux), grads = jax.value_and_grad(batch_loss, has_aux=True)(state.params)
  grad_norm = train._global_norm(grads)
  state, skipped = train.skip_update(state, state.apply_gradients(grads), loss, grad_norm,
                                     skip_nonfinite=skip_nonfinite, skip_threshold=skip_threshold)
  return state, dict(loss=loss, grad_norm=grad_norm, skipped_updates=skipped, **aux)


def _labels(split: data_lib.Split, prior, name: str):
  if not prior.num_classes:
    return None
  if split.labels is None:
    raise data_lib.DataError(f"config.model.num_classes={prior.num_classes} asks for a class-"
                             f"conditional prior, but the {name} split has no labels")
  labels = np.asarray(split.labels)
  if labels.min() < 0 or labels.max() >= prior.num_classes:
    raise data_lib.DataError(f"{name} labels lie in [{labels.min()}, {labels.max()}]; "
                             f"config.model.num_classes={prior.num_classes} allows [0, {prior.num_classes})")
  return labels.astype(np.int32)


def train_prior(config, workdir: str | Path, *, datasets: dict[str, data_lib.Split] | None = None,
                loss_fn: losses.LossFn | None = None) -> tuple[train.TrainState, dict]:
  """Fits the configured prior to the codes of the VQ-VAE in ``config.vqvae_workdir``.

  The training and validation images (the VQ-VAE's data config, or
  ``datasets``) are encoded once; ``workdir/vqvae.json`` records the VQ-VAE
  checkpoint (fingerprint), and resuming against a changed VQ-VAE is refused.
  Writes ``figures/samples.png`` (64 samples) at the end.
  """
  vq_config.validate_prior(config)
  workdir = loop.prepare_workdir(config, workdir)
  vq_run = vq_evaluate.load_vqvae(config.vqvae_workdir)
  source_path = workdir / vq_evaluate.PRIOR_SOURCE
  if source_path.exists():
    vq_evaluate.check_prior_source(json.loads(source_path.read_text()), vq_run, workdir)
  vq_model = vq_run.model
  prior = vq_config.make_prior(config, vq_model)
  if datasets is None:
    datasets = train.load_datasets(vq_run.config)
  _check_datasets(datasets, vq_model.image_shape, vq_run.config.data.mode)
  train_labels = _labels(datasets["train"], prior, "train")
  val_labels = _labels(datasets["validation"], prior, "validation")
  loop.write_config(config, workdir)
  source_path.write_text(json.dumps(vq_evaluate.prior_source(vq_run), indent=2))

  keys = train.RunKeys.from_seed(config.seed)
  mode = vq_run.config.data.mode
  code_key = train.RunKeys.from_seed(vq_run.config.seed).eval
  t0 = time.perf_counter()
  train_codes, _ = vq_evaluate.encode(vq_model, vq_run.params, datasets["train"].images, mode=mode,
                                      key=code_key, batch_size=config.eval.batch_size, likelihood=False)
  val_codes, _ = vq_evaluate.encode(vq_model, vq_run.params, datasets["validation"].images, mode=mode,
                                    key=jax.random.fold_in(code_key, 1), batch_size=config.eval.batch_size,
                                    likelihood=False)
  log.info("encoded %d + %d images to codes in %.1f s", len(train_codes), len(val_codes),
           time.perf_counter() - t0)
  data = {"codes": jnp.asarray(train_codes)}
  if train_labels is not None:
    data["labels"] = jnp.asarray(train_labels)
  steps_per_epoch = max(1, train_codes.shape[0] // config.batch_size)
  schedule = config_lib.make_schedule(config.optimizer, steps_per_epoch, config.num_epochs)
  tx = config_lib.make_optimizer(config.optimizer, schedule)
  state = vq_evaluate.new_prior_state(prior, keys.init, tx)
  step = jax.tree_util.Partial(prior_train_step, model=prior, loss_fn=loss_fn or losses.prior_nll_loss,
                               skip_nonfinite=config.skip_nonfinite_updates,
                               skip_threshold=config.skip_threshold)

  def validate(state):
    lp = vq_evaluate.prior_log_prob(prior, state.params, val_codes, val_labels,
                                    batch_size=config.eval.batch_size)
    nll = float(-np.mean(lp))
    return dict(nll=nll, nats_per_code=nll / val_codes[0].size)

  epoch_fn = loop.make_epoch(step, config.batch_size, stepwise=config.debug_nans)
  state, last = loop.fit(config, workdir, state=state, epoch_fn=epoch_fn, data=data, keys=keys,
                         schedule=schedule, validate=validate, postfix=("train_nll", "val_nll"))
  save_samples(vq_model, vq_run.params, prior, state.params, jax.random.fold_in(keys.eval, 1),
               workdir / "figures" / "samples.png")
  return state, last


def sample_images(vq_model, vq_params, prior, prior_params, key: jax.Array, num_samples: int,
                  labels: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
  """(images [N, H, W, C], codes [N, h, w]) with z ~ p_prior (ancestral, one compiled loop).

  The images are E[x | z] for a plain decoder, and for an autoregressive one
  the pixel means of one draw x ~ p(x | z) (``vqvae.images_from_codes``).
  """
  k_codes, k_pixels = jax.random.split(key)
  codes = pixelcnn.sample(prior, prior_params, k_codes, num_samples, labels)
  images = vqvae.images_from_codes(vq_model, vq_params, codes, k_pixels)
  return images, codes


def save_samples(vq_model, vq_params, prior, prior_params, key, path: Path, num_samples: int = 64,
                 labels=None) -> Path:
  from vae_jax import plotting
  if prior.num_classes and labels is None:
    labels = jnp.arange(num_samples) % prior.num_classes
  images, _ = sample_images(vq_model, vq_params, prior, prior_params, key, num_samples, labels)
  shown = "means of x ~ p(x | z)" if vq_model.ar_layers else "E[x | z]"
  title = f"VQ-VAE samples: z ~ PixelCNN prior, {shown}"
  return plotting.save_grid(np.asarray(images), path, title=title)
