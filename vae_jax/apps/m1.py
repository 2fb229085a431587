"""M1 of Kingma et al. (2014): a VAE's posterior means as features, and the classifier fitted on them.

The VAE (``vae_jax.models.VAE``) is trained on all images without labels; its
posterior means E[z | x] are the features of a classifier fitted to the
labelled subset. The paper uses a transductive SVM; we fit a multinomial
logistic regression with an L2 penalty (``fit_softmax_regression``).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from vae_jax import compilation
from vae_jax import data as data_lib
from vae_jax import models
from vae_jax import train

DataError = data_lib.DataError


@functools.partial(compilation.jit, static_argnames=("vae", "with_logvar"))
def _posterior_batch(params, raw, *, vae: models.VAE, with_logvar: bool) -> jax.Array:
  mean, logvar = vae.apply({"params": params}, raw.astype(jnp.float32) / 255.0, method=vae.encode)
  return jnp.stack([mean, logvar], axis=1) if with_logvar else mean


def posterior_means(vae: models.VAE, params, images: np.ndarray, *, batch_size: int = 1000,
                    with_logvar: bool = False) -> np.ndarray:
  """M1 features: the mean of q(z | x) at the grey-level image x/255, [N, D] (or [N, 2, D]
  with the log-variance, for M1+M2 with sampled features)."""
  out = [np.asarray(_posterior_batch(params, jnp.asarray(images[i:i + batch_size]), vae=vae,
                                     with_logvar=with_logvar))
         for i in range(0, len(images), batch_size)]
  return np.concatenate(out)


def active_dims(means, threshold: float) -> np.ndarray:
  """Indices of the latent dimensions whose posterior mean varies over the data (std > threshold).

  A collapsed unit has E[z | x] = 0 and q(z | x) = N(0, 1) for every x: as a
  feature it is constant (means) or pure noise (draws). Kingma's M1+M2 code
  keeps the dimensions with std > 0.1. ``threshold`` 0 keeps all of them.
  """
  means = np.asarray(means)
  if means.ndim != 2:
    raise DataError(f"posterior means have shape {means.shape}; expected [N, D]")
  if threshold <= 0:
    return np.arange(means.shape[1])
  keep = np.flatnonzero(means.std(axis=0) > threshold)
  if keep.size == 0:
    raise DataError(f"no latent dimension of the M1 VAE has a posterior-mean std above {threshold} "
                    f"(largest: {means.std(axis=0).max():.3g}): its posterior has collapsed; train "
                    "it longer or lower m1_active_threshold")
  return keep


@dataclasses.dataclass(frozen=True)
class SoftmaxRegression:
  """A fitted multinomial logistic regression on standardized features."""
  weights: np.ndarray  # [D, C]
  bias: np.ndarray  # [C]
  shift: np.ndarray  # [D]
  scale: np.ndarray  # [D]

  def predict(self, features) -> np.ndarray:
    z = (np.asarray(features) - self.shift) / self.scale
    return np.argmax(z @ self.weights + self.bias, axis=-1)


def fit_softmax_regression(features, labels, num_classes: int, *, l2: float = 1e-2,
                           steps: int = 2000, learning_rate: float = 0.05) -> SoftmaxRegression:
  """The M1 classifier: argmin_W,b mean -log softmax(W^T z + b)_y + l2 * ||W||^2 on standardized z.

  Full-batch Adam for ``steps`` steps in one ``lax.scan`` from zero weights
  (the objective is convex, so the result is deterministic and needs no key).
  """
  features = np.asarray(features, np.float32)
  labels = data_lib.check_labels(labels, num_classes)
  if features.ndim != 2 or features.shape[0] != labels.shape[0]:
    raise DataError(f"features have shape {features.shape}; expected [{labels.shape[0]}, D] "
                    "(one row per label)")
  shift, scale = features.mean(0), features.std(0) + 1e-6
  z = jnp.asarray((features - shift) / scale)
  y = jnp.asarray(labels)
  params = (jnp.zeros((z.shape[1], num_classes)), jnp.zeros((num_classes,)))
  tx = optax.adam(learning_rate)

  def objective(p):
    w, b = p
    ce = optax.softmax_cross_entropy_with_integer_labels(z @ w + b, y)
    return jnp.mean(ce) + l2 * jnp.sum(jnp.square(w))

  @jax.jit
  def run(params):
    def body(carry, _):
      p, s = carry
      g = jax.grad(objective)(p)
      u, s = tx.update(g, s, p)
      return (optax.apply_updates(p, u), s), None
    (p, _), _ = jax.lax.scan(body, (params, tx.init(params)), None, length=steps)
    return p

  w, b = run(params)
  return SoftmaxRegression(np.asarray(w), np.asarray(b), shift, scale)


def restore_vae(workdir) -> tuple[models.VAE, dict, object, int]:
  """(model, params, config, epoch) of the newest checkpoint of a VAE training workdir (M1)."""
  try:
    config, model, params, epoch = train.restore_workdir(workdir)
  except FileNotFoundError as e:
    raise FileNotFoundError(f"{e} (the M1 VAE: vae_jax/configs/semisupervised/m1_vae.py)") from None
  return model, params, config, epoch
