"""Missing-data imputation with a trained VAE (binary images, Bernoulli likelihood).

Pure functions: parameters, images, masks and keys in; imputations and
per-iteration metrics out. A mask is a boolean array, True where a pixel is
MISSING, of the image's shape [H, W, C] (one mask for every image) or of the
batch's shape [N, H, W, C].

Two Markov chains over the missing pixels x_m given the observed ones x_o,
both started from the same random fill x_m^0 ~ Bernoulli(fill):

* pseudo-Gibbs (Rezende, Mohamed & Wierstra 2014, Sec. 6): z_t ~ q(z | x_o, x_m^t),
  x_m^{t+1} ~ p(x_m | z_t). Its stationary law is not p(x_m | x_o) in general
  (q is only an approximation of the posterior).
* Metropolis-within-Gibbs (Mattei & Frellsen, NeurIPS 2018, Algorithm 1): the
  encoder q(z | x_o, x_m^t) is an independence proposal z~ for z; accept with
  probability min(1, rho),

      rho = [p(x_o, x_m^t | z~) p(z~) / q(z~ | x_o, x_m^t)]
          / [p(x_o, x_m^t | z_t) p(z_t) / q(z_t | x_o, x_m^t)],

  then x_m^{t+1} ~ p(x_m | z_{t+1}). This is an exact MCMC kernel for
  p(z, x_m | x_o): the chain's x_m converges to draws of p(x_m | x_o).

Cost per iteration is the same for both: one encoder and one decoder pass (the
chain keeps the decoder output of its current z, so the reverse weight needs no
second decoder pass). The first Metropolis-within-Gibbs step always accepts
(there is no current z yet), so it equals the first pseudo-Gibbs step under the
same key. With ``warmup = k`` the first k steps accept always, i.e. are
pseudo-Gibbs steps: Metropolis-within-Gibbs started from pseudo-Gibbs's state
(``warmup = num_iters`` is pseudo-Gibbs exactly), at the same cost.

Keys: each image's key splits into (init, chain); iteration t uses
``fold_in(chain, t)`` split into (proposal, accept, pixels). Image i of a batch
gets ``fold_in(key, offset + i)``, so results do not depend on the batch size.

Metrics compare imputed pixels with the truth on the missing pixels only,
with pixel value 1 (ink) as the positive class, for three single imputations
per iteration: ``sample`` (the chain's current x_m), ``mode`` (p(x_m = 1 | z_t)
>= 1/2) and ``average`` (the running average of p(x_m = 1 | z_s) over s <= t,
>= 1/2: an estimate of the conditional mean E[x_m | x_o] for the exact chain).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from vae_jax import distributions as dist

MASKS = ("top", "bottom", "centre", "random")
METHODS = ("pseudo_gibbs", "mwg")
IMPUTATIONS = ("sample", "mode", "average")  # order of the metric axis
COUNTS = ("tp", "fp", "fn", "tn")  # order of the count axis


class MaskError(ValueError):
  """A mask that cannot be used: unknown kind, wrong shape or dtype, nothing missing."""


class ModelError(ValueError):
  """A model the imputation chains do not support."""


# -- masks ------------------------------------------------------------------------------------

def make_mask(kind: str, image_shape, *, key: jax.Array | None = None, num_images: int | None = None,
              fraction: float = 0.5, band_rows: int | None = None) -> np.ndarray:
  """A missing-pixel mask (True = missing).

  Args:
    kind: "top" (rows [0, H/2) missing), "bottom" (rows [H/2, H)), "centre" (a
      band of ``band_rows`` central rows, default H // 4), "random" (per image,
      exactly round(fraction * H * W) pixels chosen by ``fold_in(key, i)`` for
      image i, so the first images' masks do not depend on num_images; all
      channels of a pixel together).
    image_shape: (H, W, C).
    key, num_images: "random" only: the key and the number of images.
    fraction: "random" only, in (0, 1).
    band_rows: "centre" only, in [1, H].

  Returns:
    bool [H, W, C] for the structured kinds, [num_images, H, W, C] for "random".
  """
  if kind not in MASKS:
    raise MaskError(f"mask kind {kind!r} is unknown; choose one of {MASKS}")
  if len(tuple(image_shape)) != 3:
    raise MaskError(f"image_shape={tuple(image_shape)} must be (H, W, C)")
  h, w, c = (int(s) for s in image_shape)
  rows = np.arange(h)[:, None, None]
  if kind == "top":
    return np.broadcast_to(rows < h // 2, (h, w, c)).copy()
  if kind == "bottom":
    return np.broadcast_to(rows >= h // 2, (h, w, c)).copy()
  if kind == "centre":
    band = h // 4 if band_rows is None else int(band_rows)
    if not 1 <= band <= h:
      raise MaskError(f"band_rows={band_rows} must be in [1, {h}] (the image height)")
    start = (h - band) // 2
    return np.broadcast_to((rows >= start) & (rows < start + band), (h, w, c)).copy()
  if key is None or num_images is None or int(num_images) < 1:
    raise MaskError(f"mask kind 'random' needs a key and num_images >= 1; got key={key}, "
                    f"num_images={num_images}")
  if not 0.0 < fraction < 1.0:
    raise MaskError(f"fraction={fraction} must be in (0, 1) for mask kind 'random'")
  k = int(round(fraction * h * w))
  if not 1 <= k <= h * w:
    raise MaskError(f"fraction={fraction} of {h * w} pixels gives {k} missing; need at least 1")
  keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(int(num_images)))
  u = jax.vmap(lambda k: jax.random.uniform(k, (h * w,)))(keys)  # image i: fold_in(key, i)
  ranks = jnp.argsort(jnp.argsort(u, axis=1), axis=1)
  missing = np.asarray(ranks < k).reshape(int(num_images), h, w, 1)
  return np.broadcast_to(missing, (int(num_images), h, w, c)).copy()


def check_mask(missing, images_shape) -> np.ndarray:
  """The mask as bool [N, H, W, C] for images of ``images_shape`` [N, H, W, C].

  Raises MaskError unless the mask is boolean (or 0/1), of shape [H, W, C] or
  [N, H, W, C], and has at least one missing pixel.
  """
  missing = np.asarray(missing)
  images_shape = tuple(int(s) for s in images_shape)
  if missing.shape not in (images_shape, images_shape[1:]):
    raise MaskError(f"mask has shape {missing.shape}; expected {images_shape[1:]} (one mask for "
                    f"every image) or {images_shape} (one per image)")
  if missing.dtype != np.bool_:
    if not (np.issubdtype(missing.dtype, np.number) and np.all((missing == 0) | (missing == 1))):
      raise MaskError(f"mask has dtype {missing.dtype} with values other than 0 and 1; expected a "
                      "boolean mask, True where a pixel is missing")
    missing = missing.astype(bool)
  if not missing.any():
    raise MaskError("mask has no missing pixels (all False): nothing to impute. True marks a "
                    "missing pixel")
  return np.broadcast_to(missing, images_shape)


def check_model(model) -> None:
  """Raises ModelError unless the chains can run on ``model``.

  They need one stochastic layer (encoder q(z|x), decoder p(x|z)), a
  probabilistic encoder (not the autoencoder) and a Bernoulli likelihood.
  """
  if getattr(model, "kind", "vae") != "vae":
    raise ModelError(f"model.kind={model.kind!r}: imputation needs a VAE ('vae'), whose encoder "
                     "is a distribution")
  if len(model.latent_dims) != 1:
    raise ModelError(f"model.latent_dims={tuple(model.latent_dims)}: imputation supports one "
                     "stochastic layer")
  if model.likelihood != "bernoulli":
    raise ModelError(f"model.likelihood={model.likelihood!r}: imputation of binary pixels needs "
                     "'bernoulli'")


# -- the chains ---------------------------------------------------------------------------------

def _apply(model, params, method, *args):
  return model.apply({"params": params}, *args, method=method)


def log_joint_over_proposal(model, params, x: jax.Array, z: jax.Array, logits: jax.Array,
                            q_mean: jax.Array, q_logvar: jax.Array) -> jax.Array:
  """log p(x | z) + log p(z) - log q(z | x): one side of the acceptance ratio, in nats.

  ``logits`` is the decoder output at z (passed in so that the chain decodes
  each z once); ``q_mean``, ``q_logvar`` the encoder output at x.
  """
  log_px_z = dist.bernoulli_log_prob(x, logits)
  log_pz = _apply(model, params, model.prior_log_prob, z)
  log_qz = dist.gaussian_log_prob(z, q_mean, q_logvar)
  return log_px_z + log_pz - log_qz


def mwg_log_acceptance(model, params, x: jax.Array, z_current: jax.Array, logits_current: jax.Array,
                       z_proposed: jax.Array, logits_proposed: jax.Array, q_mean: jax.Array,
                       q_logvar: jax.Array) -> jax.Array:
  """log rho of Metropolis-within-Gibbs for a proposal z~ ~ q(z | x) (x = the completed image)."""
  return (log_joint_over_proposal(model, params, x, z_proposed, logits_proposed, q_mean, q_logvar)
          - log_joint_over_proposal(model, params, x, z_current, logits_current, q_mean, q_logvar))


def _confusion(pred: jax.Array, truth: jax.Array, missing: jax.Array) -> jax.Array:
  """(tp, fp, fn, tn) over the missing pixels, float32 [4]."""
  p, t, m = pred > 0.5, truth > 0.5, missing
  return jnp.stack([jnp.sum(p & t & m), jnp.sum(p & ~t & m), jnp.sum(~p & t & m),
                    jnp.sum(~p & ~t & m)]).astype(jnp.float32)


def impute_one(model, params, x: jax.Array, missing: jax.Array, key: jax.Array, *, method: str,
               num_iters: int, fill: jax.Array, warmup: jax.Array | int = 1,
               trajectory: bool = False) -> dict:
  """Runs one chain on one image x [H, W, C]; all iterations in one ``lax.scan``.

  x holds the truth at the missing pixels too; the chain never reads it there
  (it starts from x_m ~ Bernoulli(fill)): the truth enters the metrics only.
  ``warmup`` (>= 1, "mwg" only): steps t < warmup accept always (pseudo-Gibbs steps).

  Returns:
    dict with ``image`` (the last completed image), ``average`` (running
    average of p(x = 1 | z) at the missing pixels, observed pixels = x),
    ``counts`` [num_iters, 3, 4] (IMPUTATIONS x COUNTS), ``accepted`` and
    ``log_rho`` [num_iters] (Metropolis-within-Gibbs; pseudo-Gibbs: all True and 0)
    and, with ``trajectory``, ``images`` [num_iters, H, W, C] (the chain's states).
  """
  if method not in METHODS:
    raise ValueError(f"method={method!r} is unknown; choose one of {METHODS}")
  init_key, chain_key = jax.random.split(key)
  x = x.astype(jnp.float32)
  x0 = jnp.where(missing, jax.random.bernoulli(init_key, fill, x.shape).astype(jnp.float32), x)
  z_dim = model.latent_dims[0]

  def step(carry, t):
    x_t, z_t, logits_t, prob_sum = carry
    z_key, accept_key, pixel_key = jax.random.split(jax.random.fold_in(chain_key, t), 3)
    mean, logvar = _apply(model, params, model.encode, x_t)
    z_prop = dist.gaussian_sample(z_key, mean, logvar)
    logits_prop = _apply(model, params, model.decode, z_prop)
    if method == "mwg":
      log_rho = mwg_log_acceptance(model, params, x_t, z_t, logits_t, z_prop, logits_prop, mean, logvar)
      log_u = jnp.log(jax.random.uniform(accept_key))
      accepted = (t < warmup) | (log_u < log_rho)
    else:
      log_rho, accepted = jnp.zeros(()), jnp.ones((), bool)
    z_new = jnp.where(accepted, z_prop, z_t)
    logits_new = jnp.where(accepted, logits_prop, logits_t)
    probs = jax.nn.sigmoid(logits_new)
    draw = jax.random.bernoulli(pixel_key, probs).astype(jnp.float32)
    x_new = jnp.where(missing, draw, x)
    prob_sum = prob_sum + probs
    average = prob_sum / (t + 1).astype(jnp.float32)
    counts = jnp.stack([_confusion(x_new, x, missing), _confusion(probs, x, missing),
                        _confusion(average, x, missing)])
    out = dict(counts=counts, accepted=accepted, log_rho=log_rho)
    if trajectory:
      out["images"] = x_new
    return (x_new, z_new, logits_new, prob_sum), out

  init = (x0, jnp.zeros((z_dim,), jnp.float32), jnp.zeros(x.shape, jnp.float32),
          jnp.zeros(x.shape, jnp.float32))
  (x_last, _, _, prob_sum), per_iter = jax.lax.scan(step, init, jnp.arange(num_iters))
  per_iter["image"] = x_last
  per_iter["average"] = jnp.where(missing, prob_sum / num_iters, x)
  return per_iter


@functools.partial(jax.jit, static_argnames=("model", "method", "num_iters", "trajectory"))
def impute_batch(model, params, images: jax.Array, missing: jax.Array, key: jax.Array,
                 offset: jax.Array, *, method: str, num_iters: int, fill: jax.Array,
                 warmup: jax.Array | int = 1, trajectory: bool = False) -> dict:
  """``impute_one`` over a batch [B, H, W, C] (missing [B, H, W, C]); image i uses
  ``fold_in(key, offset + i)``. Returns impute_one's dict with a leading batch axis."""
  keys = jax.vmap(lambda i: jax.random.fold_in(key, offset + i))(jnp.arange(images.shape[0]))
  one = functools.partial(impute_one, model, params, method=method, num_iters=num_iters, fill=fill,
                          warmup=warmup, trajectory=trajectory)
  return jax.vmap(one)(images, missing, keys)


def impute(model, params, images, missing, key: jax.Array, *, method: str, num_iters: int,
           fill, warmup: int = 1, batch_size: int = 500, trajectory: bool = False) -> dict:
  """Imputes the missing pixels of binary images [N, H, W, C] with one chain per image.

  Checks model, mask, method and sizes before any compute (ModelError,
  MaskError, ValueError), then runs ``impute_batch`` over batches.

  Args:
    model, params: a trained one-layer Bernoulli VAE (``vae_jax.models.VAE``).
    images: binary images (truth at the missing pixels, used by the metrics only).
    missing: bool mask, True = missing, [H, W, C] or [N, H, W, C].
    key: one key for everything (image i: ``fold_in(key, i)``).
    method: "pseudo_gibbs" or "mwg".
    num_iters: iterations (= decoder passes) per chain.
    fill: [H, W, C] probabilities of the initial random fill (e.g. training means).
    warmup: "mwg": the first ``warmup`` steps are pseudo-Gibbs steps (1 = none but the first).

  Returns:
    dict of NumPy arrays: ``image`` and ``average`` [N, H, W, C], ``counts``
    [num_iters, 3, 4] summed over images, ``acceptance`` [num_iters] (fraction of
    chains that accepted at each iteration), ``images`` [N, num_iters, H, W, C]
    with ``trajectory``.
  """
  check_model(model)
  if method not in METHODS:
    raise ValueError(f"method={method!r} is unknown; choose one of {METHODS}")
  if int(num_iters) < 1:
    raise ValueError(f"num_iters={num_iters} must be >= 1")
  if not 1 <= int(warmup) <= int(num_iters):
    raise ValueError(f"warmup={warmup} must be in [1, num_iters={num_iters}]")
  images = np.asarray(images, np.float32)
  if images.ndim != 4 or tuple(images.shape[1:]) != tuple(model.image_shape):
    raise ValueError(f"images have shape {images.shape}; expected [N, {', '.join(map(str, model.image_shape))}]")
  if not np.all((images == 0) | (images == 1)):
    raise ValueError(f"images have values in [{images.min()}, {images.max()}]; imputation needs binary "
                     "images in {0, 1} (static binarized data)")
  missing = check_mask(missing, images.shape)
  fill = np.asarray(fill, np.float32)
  if fill.shape != tuple(model.image_shape) or fill.min() < 0 or fill.max() > 1:
    raise ValueError(f"fill has shape {fill.shape} and range [{fill.min()}, {fill.max()}]; expected "
                     f"probabilities in [0, 1] of shape {tuple(model.image_shape)}")
  outs = []
  for start in range(0, len(images), batch_size):
    stop = min(start + batch_size, len(images))
    outs.append(jax.device_get(impute_batch(
        model, params, jnp.asarray(images[start:stop]), jnp.asarray(missing[start:stop]), key,
        jnp.asarray(start), method=method, num_iters=int(num_iters), fill=jnp.asarray(fill),
        warmup=jnp.asarray(int(warmup)), trajectory=trajectory)))
  cat = lambda name: np.concatenate([o[name] for o in outs])
  result = dict(image=cat("image"), average=cat("average"),
                counts=np.sum([o["counts"].sum(0) for o in outs], axis=0),
                acceptance=cat("accepted").mean(0))
  if trajectory:
    result["images"] = cat("images")
  return result


# -- baseline and metrics -------------------------------------------------------------------------

def mean_fill(images, missing, pixel_means) -> np.ndarray:
  """The baseline: missing pixels set to the per-pixel training mean thresholded at 1/2."""
  images = np.asarray(images, np.float32)
  missing = check_mask(missing, images.shape)
  fill = (np.asarray(pixel_means, np.float32) >= 0.5).astype(np.float32)
  return np.where(missing, fill, images)


def confusion(imputed, truth, missing) -> np.ndarray:
  """(tp, fp, fn, tn) of binary ``imputed`` against ``truth`` on the missing pixels (NumPy)."""
  p, t = np.asarray(imputed) > 0.5, np.asarray(truth) > 0.5
  m = np.broadcast_to(np.asarray(missing, bool), t.shape)
  return np.array([np.sum(p & t & m), np.sum(p & ~t & m), np.sum(~p & t & m), np.sum(~p & ~t & m)],
                  np.float64)


def f1_accuracy(counts) -> tuple[np.ndarray, np.ndarray]:
  """F1 (ink = positive) and accuracy from counts [..., 4] = (tp, fp, fn, tn)."""
  counts = np.asarray(counts, np.float64)
  tp, fp, fn, tn = np.moveaxis(counts, -1, 0)
  denom = 2 * tp + fp + fn
  f1 = np.where(denom > 0, 2 * tp / np.maximum(denom, 1e-300), 1.0)
  return f1, (tp + tn) / np.maximum(tp + fp + fn + tn, 1e-300)
