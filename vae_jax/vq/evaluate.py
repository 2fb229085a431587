"""VQ-VAE evaluation: reconstruction NLL, the likelihood bound with a prior, codebook usage.

The encoder is deterministic and q(z|x) is one-hot on z_q(x), so
KL(q || p) = -log p(z_q(x)) and

    -log p(x) <= -log p(x | z_q(x)) - log p_prior(z_q(x))

in nats per image (and bits/dim: divided by the number of pixels times log 2;
the data are discrete, see ``vqvae``). With a uniform prior the second term
is h * w * log K: the ``uniform_bound`` every learned prior must beat.
Codebook usage on the evaluated images: ``perplexity`` = exp(entropy of the
code frequencies), ``codes_used`` = the fraction of the K codes assigned at
least once, ``dead_codes`` = those never assigned.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from vae_jax import compilation
from vae_jax import data as data_lib
from vae_jax.vq import pixelcnn
from vae_jax.vq import quantization as vq
from vae_jax.vq import vqvae


def _pad(a: np.ndarray, size: int) -> np.ndarray:
  if a.shape[0] == size:
    return a
  return np.concatenate([a, np.zeros((size - a.shape[0],) + a.shape[1:], a.dtype)])


def _batches(n: int, batch_size: int):
  for start in range(0, n, batch_size):
    yield start, min(batch_size, n - start)


@compilation.jit(static_argnames=("model", "mode", "likelihood"))
def _vq_batch(model, params, raw, index, key, *, mode, likelihood=True):
  def one(r, i):
    x = vqvae.model_input(r, jax.random.fold_in(key, i), mode, model.likelihood)
    if not likelihood:
      return model.apply({"params": params}, x, method=model.codes), jnp.zeros(())
    t = model.apply({"params": params}, x)
    return t["indices"], t["log_px_z"]
  return jax.vmap(one)(raw, index)


def encode(model: vqvae.VQVAE, params, images: np.ndarray, *, mode: str, key: jax.Array,
           batch_size: int = 500, likelihood: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
  """Codes and log p(x | z_q(x)) of uint8 ``images`` [N, H, W, C] -> (int32 [N, h, w], [N]).

  Image i's input noise (dynamic binarization) comes from ``fold_in(key, i)``,
  so results do not depend on the batch size. ``likelihood=False``: the codes
  alone (no decoder pass; the second value is None).
  """
  n = images.shape[0]
  codes, log_px = [], []
  for start, m in _batches(n, batch_size):
    raw = jnp.asarray(_pad(np.asarray(images[start:start + m]), batch_size))
    index = jnp.arange(start, start + batch_size)
    c, lp = jax.device_get(_vq_batch(model, params, raw, index, key, mode=mode, likelihood=likelihood))
    codes.append(c[:m])
    log_px.append(lp[:m])
  codes = np.concatenate(codes).astype(np.int32)
  return codes, (np.concatenate(log_px).astype(np.float64) if likelihood else None)


@compilation.jit(static_argnames=("prior",))
def _prior_batch(prior, params, codes, labels):
  return prior.apply({"params": params}, codes, labels, method=prior.log_prob)


def prior_log_prob(prior: pixelcnn.GatedPixelCNN, params, codes: np.ndarray,
                   labels: np.ndarray | None = None, *, batch_size: int = 500) -> np.ndarray:
  """log p(z) of code grids int [N, h, w] (labels [N] for a class-conditional prior) -> [N] nats."""
  prior.check_codes(np.asarray(codes))
  if prior.num_classes and labels is None:
    raise data_lib.DataError(f"this prior is conditioned on {prior.num_classes} classes: "
                             "the images need labels")
  out = []
  for start, m in _batches(codes.shape[0], batch_size):
    c = jnp.asarray(_pad(codes[start:start + m], batch_size))
    lab = None if not prior.num_classes else jnp.asarray(_pad(labels[start:start + m], batch_size))
    out.append(np.asarray(_prior_batch(prior, params, c, lab))[:m])
  return np.concatenate(out).astype(np.float64)


def codebook_usage(codes: np.ndarray, num_codes: int) -> dict:
  counts = np.bincount(np.asarray(codes).reshape(-1), minlength=num_codes)
  used = int(np.sum(counts > 0))
  return dict(perplexity=float(vq.perplexity(jnp.asarray(counts, jnp.float32))),
              codes_used=used / num_codes, num_codes_used=used, dead_codes=num_codes - used)


def evaluate(model: vqvae.VQVAE, params, images: np.ndarray, *, mode: str, key: jax.Array,
             batch_size: int = 500, prior: pixelcnn.GatedPixelCNN | None = None, prior_params=None,
             labels: np.ndarray | None = None) -> dict:
  """Metrics of a VQ-VAE (and, given one, its prior) on uint8 ``images`` [N, H, W, C].

  Returns a dict of floats, nats per image averaged over the images:
    recon: -log p(x | z_q(x));
    uniform_bound, uniform_bits_per_dim: recon + h w log K;
    perplexity, codes_used, num_codes_used, dead_codes: codebook usage on these images;
    with a prior: prior_nll = -log p(z_q(x)), bound = recon + prior_nll, bits_per_dim.
  """
  codes, log_px = encode(model, params, images, mode=mode, key=key, batch_size=batch_size)
  num_dims = model.num_pixels
  to_bpd = lambda nats: float(nats / (num_dims * math.log(2.0)))
  recon = float(-np.mean(log_px))
  h, w = model.grid_shape
  uniform = recon + h * w * math.log(model.num_codes)
  out = dict(recon=recon, uniform_bound=uniform, uniform_bits_per_dim=to_bpd(uniform),
             **codebook_usage(codes, model.num_codes), num_images=int(images.shape[0]))
  if prior is not None:
    if (prior.num_codes, tuple(prior.grid_shape)) != (model.num_codes, tuple(model.grid_shape)):
      raise data_lib.DataError(
          f"the prior models {prior.grid_shape[0]}x{prior.grid_shape[1]} grids of K = "
          f"{prior.num_codes} codes; this VQ-VAE makes {h}x{w} grids of K = {model.num_codes}")
    prior_nll = float(-np.mean(prior_log_prob(prior, prior_params, codes, labels,
                                              batch_size=batch_size)))
    out.update(prior_nll=prior_nll, bound=recon + prior_nll, bits_per_dim=to_bpd(recon + prior_nll))
  return out
