"""Evaluation: ELBO, its terms, importance-sampled log-likelihood, bits/dim, active units.

The log-likelihood estimate is the IWAE bound with many samples (Burda et al.
2016, Sec. 5: K = 5000), computed per image in chunks of samples with a
running logsumexp, so memory is bounded by ``batch_size * chunk_size`` decoder
outputs whatever K is. Keys come from one ``key`` folded with the image's index,
so the numbers do not depend on the batch size.

A compiled step handles at most ``MAX_SAMPLES_PER_STEP`` samples (images x
chunk): ``batch_size`` is lowered to fit. Smaller steps keep the decoder's
activations in cache (Burda's MLP, K = 5000: 106-111 s for the 10,000 test
images at 2,500-10,000 samples per step against 260 s at 25,000, 2-core CPU),
and bound memory for the convolutional models, whose activations and patches
at 100 images x 250 samples asked for 47 GB.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from vae_jax import compilation
from vae_jax import data as data_lib
from vae_jax import distributions as dist
from vae_jax import parallel


MAX_SAMPLES_PER_STEP = 5000


def _label_kw(label) -> dict:
  return {} if label is None else {"label": label}


def _batch_stats_fn(model, params, raw, index, key, labels=None, *, mode, num_samples, chunk_size):
  """Per-image sums for a batch: logsumexp of log w, sum of log w, sum of log p(x|z), KL.

  ``labels`` (int [B]) for a class-conditional model: then every term is given y."""
  num_chunks = -(-num_samples // chunk_size)

  def one_image(raw_x, i, label):
    image_key = jax.random.fold_in(key, i)
    data_key, sample_key = jax.random.split(image_key)
    x = data_lib.to_model_input(raw_x, data_key, mode)

    def chunk(carry, c):
      lse, sum_lw, sum_lpx = carry
      t = model.apply({"params": params}, x, jax.random.fold_in(sample_key, c), chunk_size,
                      **_label_kw(label))
      log_w = t["log_px_z"] + t["log_pz"] - t["log_qz"]
      valid = c * chunk_size + jnp.arange(chunk_size) < num_samples
      lse = jnp.logaddexp(lse, jax.nn.logsumexp(jnp.where(valid, log_w, -jnp.inf)))
      sum_lw = sum_lw + jnp.sum(jnp.where(valid, log_w, 0.0))
      sum_lpx = sum_lpx + jnp.sum(jnp.where(valid, t["log_px_z"], 0.0))
      return (lse, sum_lw, sum_lpx), None

    init = (jnp.float32(-jnp.inf), jnp.float32(0.0), jnp.float32(0.0))
    (lse, sum_lw, sum_lpx), _ = jax.lax.scan(chunk, init, jnp.arange(num_chunks))
    mean, logvar = model.apply({"params": params}, x, method=model.encode, **_label_kw(label))
    if not (_closed_form_kl(model) and logvar is not None):
      kl_analytic = jnp.float32(0.0)
    elif getattr(model, "prior", "standard") == "conditional":
      kl_analytic = model.apply({"params": params}, mean, logvar, label, method=model.kl_to_prior)
    else:
      kl_analytic = dist.kl_gaussian_standard_normal(mean, logvar)
    return dict(log_px=lse - math.log(num_samples), elbo_mc=sum_lw / num_samples,
                log_px_z=sum_lpx / num_samples, kl_analytic=kl_analytic, mean=mean)

  return jax.vmap(one_image)(raw, index, labels)


_STATIC = ("model", "mode", "num_samples", "chunk_size")
_batch_stats = compilation.jit(_batch_stats_fn, static_argnames=_STATIC)


def _images_per_step(batch_size: int, chunk_size: int, mesh=None) -> int:
  """``batch_size`` lowered so that each device's step has <= MAX_SAMPLES_PER_STEP samples."""
  if batch_size < 1:
    raise ValueError(f"batch_size={batch_size} must be >= 1")
  devices = 1 if mesh is None else mesh.size
  per_device = max(1, MAX_SAMPLES_PER_STEP // chunk_size)
  if batch_size <= per_device * devices:
    return batch_size
  return per_device * devices


def _closed_form_kl(model) -> bool:
  return getattr(model, "closed_form_kl", len(model.latent_dims) == 1)


def evaluate(model, params, images: np.ndarray, *, key: jax.Array, mode: str,
             num_samples: int = 5000, batch_size: int = 100, chunk_size: int = 250,
             progress: bool = False, mesh=None, labels: np.ndarray | None = None) -> dict:
  """Metrics of ``model`` on uint8 ``images`` [N, H, W, C].

  A class-conditional model (``model.num_classes > 0``) needs ``labels`` (int
  [N] in [0, num_classes), else DataError): every figure is then given the
  label, and ``nll`` is -log p(x | y).

  Returns a dict of floats in nats per image (averaged over the images):
    elbo: E_q[log p(x|z)] - KL, with the KL in closed form for one
      stochastic layer and by Monte Carlo otherwise;
    recon: -E_q[log p(x|z)];  kl: KL(q(z|x) || p(z));
    nll: -log p(x) estimated with ``num_samples`` importance samples;
    bits_per_dim: nll in bits per pixel (discrete data);
    active_units: units of z_1 with Cov_x(E_q[z_1]) > 0.01 (Burda et al. 2016);
      for ``hvae.HVAE``, units of z_2 (the layer inferred from x).
  The KL is in closed form only for one stochastic layer with the standard
  prior. An autoencoder (``model.deterministic``) has no likelihood: it gets
  ``recon``, ``kl`` = 0 and ``active_units`` only, from one pass per image.

  With a ``mesh`` (``vae_jax.parallel``) each batch of images is split over
  its devices (``batch_size`` must divide evenly).
  """
  if num_samples < 1:
    raise ValueError(f"num_samples={num_samples} must be >= 1")
  num_classes = getattr(model, "num_classes", 0)
  if num_classes:
    labels = data_lib.check_labels(labels, num_classes, images.shape[0])
  elif labels is not None:
    raise data_lib.DataError("labels were given for an unconditional model (num_classes=0)")
  deterministic = getattr(model, "deterministic", False)
  if deterministic:
    num_samples = 1
  chunk_size = min(chunk_size, num_samples)
  if mesh is not None:
    parallel.check_batch_size(batch_size, mesh)
    params = parallel.replicate(params, mesh)
  batch_size = _images_per_step(batch_size, chunk_size, mesh)
  n = images.shape[0]
  sums = dict(log_px=0.0, elbo_mc=0.0, log_px_z=0.0, kl_analytic=0.0)
  means = []
  starts = range(0, n, batch_size)
  if progress:
    from tqdm.auto import tqdm
    starts = tqdm(starts, desc=f"eval K={num_samples}", unit="batch")
  for start in starts:
    raw = jnp.asarray(images[start:start + batch_size])
    index = jnp.arange(start, start + raw.shape[0])
    label = None if labels is None else jnp.asarray(labels[start:start + batch_size])
    if raw.shape[0] < batch_size:  # pad to one compiled shape; padded rows are dropped
      pad = batch_size - raw.shape[0]
      raw = jnp.concatenate([raw, jnp.zeros((pad,) + raw.shape[1:], raw.dtype)])
      index = jnp.concatenate([index, jnp.full((pad,), n, index.dtype)])
      if label is not None:
        label = jnp.concatenate([label, jnp.zeros((pad,), label.dtype)])
    if mesh is not None:
      raw, index = parallel.shard_batch(raw, mesh), parallel.shard_batch(index, mesh)
      label = None if label is None else parallel.shard_batch(label, mesh)
    out = _batch_stats(model, params, raw, index, key, label, mode=mode, num_samples=num_samples,
                       chunk_size=chunk_size)
    m = min(batch_size, n - start)
    out = parallel.to_host(out)
    for name in sums:
      sums[name] += float(np.sum(out[name][:m], dtype=np.float64))
    means.append(out["mean"][:m])
  means = np.concatenate(means)
  result = {name: value / n for name, value in sums.items()}
  recon = -result["log_px_z"]
  if _closed_form_kl(model):  # closed form: the ELBO carries only the recon's MC noise
    kl = result["kl_analytic"]
  else:  # E_q[log q(z|x) - log p(z)] from the same samples
    kl = -result["elbo_mc"] - recon
  nll = -result["log_px"]
  num_dims = int(np.prod(images.shape[1:]))
  active = int(np.sum(np.var(means, axis=0, dtype=np.float64) > 0.01))
  if deterministic:
    return dict(recon=recon, kl=0.0, active_units=active, num_images=n, num_importance_samples=0)
  return dict(elbo=-(recon + kl), recon=recon, kl=kl, nll=nll,
              bits_per_dim=data_lib.bits_per_dim(nll, num_dims, mode),
              active_units=active, num_images=n, num_importance_samples=num_samples)
