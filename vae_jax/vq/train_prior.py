"""The PixelCNN prior trainer: a prior fitted to the code grids of a trained VQ-VAE, and sampling.

The VQ-VAE's training and validation images are encoded once; the prior then
trains on the code grids in the shared loop (``vae_jax.loop``). Samples draw
z ~ p_prior one code at a time in one compiled loop and decode them.
"""

from __future__ import annotations

import json
import logging
import time
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
from vae_jax import workdir as workdir_lib
from vae_jax.train_state import RunKeys, TrainState, global_norm
from vae_jax.vq import config as vq_config
from vae_jax.vq import evaluate as vq_evaluate
from vae_jax.vq import pixelcnn
from vae_jax.vq import vqvae
from vae_jax.vq import workdirs
from vae_jax.vq.state import new_prior_state
from vae_jax.vq.train import check_datasets

log = logging.getLogger(__name__)


def prior_train_step(state: TrainState, batch: dict, key: jax.Array, *, model, loss_fn):
  """One step on a batch {"codes": int [B, h, w], "labels": int [B] (conditional priors only)}."""
  codes, labels = batch["codes"], batch.get("labels")
  example_keys = jax.random.split(key, codes.shape[0])

  def batch_loss(params):
    per_example = jax.vmap(lambda c, l, k: loss_fn(model, params, c, k, label=l))
    loss, aux = per_example(codes, labels, example_keys)
    return jnp.mean(loss), jax.tree.map(jnp.mean, aux)

  (loss, aux), grads = jax.value_and_grad(batch_loss, has_aux=True)(state.params)
  return state.apply_gradients(grads), dict(loss=loss, grad_norm=global_norm(grads), **aux)


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


@lock.scoped
def train_prior(config, workdir: str | Path, *, datasets: dict[str, data_lib.Split] | None = None,
                loss_fn: losses.LossFn | None = None) -> tuple[TrainState, dict]:
  """Fits the configured prior to the codes of the VQ-VAE in ``config.vqvae_workdir``.

  The training and validation images (the VQ-VAE's data config, or
  ``datasets``) are encoded once; ``workdir/vqvae.json`` records the VQ-VAE
  checkpoint (fingerprint), and resuming against a changed VQ-VAE is refused.
  Writes ``figures/samples.png`` (64 samples, ``sample_figure``) at every evaluation.
  """
  vq_config.validate_prior(config)  # the schema's checks and that the VQ-VAE workdir exists
  workdir = loop.open_workdir(config, workdir, vq_config.PRIOR_SCHEMA)
  vq_run = workdirs.load_vqvae(config.vqvae_workdir)
  source_path = workdir / workdirs.PRIOR_SOURCE
  if source_path.exists():
    workdirs.check_prior_source(json.loads(source_path.read_text()), vq_run, workdir)
  vq_model = vq_run.model
  prior = vq_config.make_prior(config, vq_model)
  if datasets is None:
    datasets = {s: data_lib.load_split(vq_run.config.data, s) for s in ("train", "validation")}
  check_datasets(datasets, vq_model.image_shape, vq_run.config.data.mode)
  train_labels = _labels(datasets["train"], prior, "train")
  val_labels = _labels(datasets["validation"], prior, "validation")
  mesh = loop.make_mesh(config)
  if loop.is_writer():
    workdir_lib.write_atomic(source_path, json.dumps(workdirs.prior_source(vq_run), indent=2))

  keys = RunKeys.from_seed(config.seed)
  mode = vq_run.config.data.mode
  code_key = RunKeys.from_seed(vq_run.config.seed).eval
  t0 = time.perf_counter()
  train_codes, _ = vq_evaluate.encode(vq_model, vq_run.params, datasets["train"].images, mode=mode,
                                      key=code_key, batch_size=config.eval.batch_size, likelihood=False)
  val_codes, _ = vq_evaluate.encode(vq_model, vq_run.params, datasets["validation"].images, mode=mode,
                                    key=jax.random.fold_in(code_key, 1), batch_size=config.eval.batch_size,
                                    likelihood=False)
  log.info("encoded %d + %d images to codes in %.1f s", len(train_codes), len(val_codes),
           time.perf_counter() - t0)
  data = {"codes": train_codes}
  if train_labels is not None:
    data["labels"] = train_labels
  steps_per_epoch = max(1, train_codes.shape[0] // config.batch_size)
  schedule = config_lib.make_schedule(config.optimizer, steps_per_epoch, config.num_epochs)
  tx = config_lib.make_optimizer(config.optimizer, schedule)
  step = jax.tree_util.Partial(prior_train_step, model=prior, loss_fn=loss_fn or losses.prior_nll_loss)

  def validate(state):
    lp = vq_evaluate.prior_log_prob(prior, state.params, val_codes, val_labels,
                                    batch_size=config.eval.batch_size)
    nll = float(-np.mean(lp))
    return dict(nll=nll, nats_per_code=nll / val_codes[0].size)

  trainer = loop.Trainer(
      state=new_prior_state(prior, keys.init, tx), step=step, data=data, evaluate=validate,
      schedule=schedule, keys=keys, best_metric="nll",
      figures=lambda state: {"samples": sample_figure(vq_model, vq_run.params, prior, state.params,
                                                      jax.random.fold_in(keys.eval, 1))},
      postfix=("train_nll", "val_nll"))
  return loop.fit(config, workdir, trainer, mesh=mesh)


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


def sample_figure(vq_model, vq_params, prior, prior_params, key, num_samples: int = 64,
                  labels=None) -> summaries.Figure:
  """``num_samples`` images decoded from z ~ prior (a conditional prior: labels 0, 1, ... in turn,
  one row per class when ``num_samples`` is a multiple of the classes)."""
  ncols = None
  if prior.num_classes and labels is None:
    labels = jnp.arange(num_samples) % prior.num_classes
    ncols = prior.num_classes if num_samples % prior.num_classes == 0 else None
  images, _ = sample_images(vq_model, vq_params, prior, prior_params, key, num_samples, labels)
  shown = "means of x ~ p(x | z)" if vq_model.ar_layers else "E[x | z]"
  return summaries.Figure(np.asarray(images), f"VQ-VAE samples: z ~ PixelCNN prior, {shown}", ncols)
