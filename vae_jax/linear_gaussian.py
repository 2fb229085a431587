"""A linear-Gaussian latent-variable model (probabilistic PCA) whose log p(x) is exact.

    p(z) = N(0, I_d),   p(x | z) = N(W z + b, sigma^2 I_D)
    p(x) = N(b, W W^T + sigma^2 I_D)
    p(z | x) = N(S W^T (x - b) / sigma^2, S),   S = (I_d + W^T W / sigma^2)^{-1}

(Tipping & Bishop 1999). With orthogonal columns of W the posterior covariance S
is diagonal, and the library's ``VAE`` with linear layers and a fixed-sigma
Gaussian likelihood represents both p(x | z) and the exact posterior
(``vae`` and ``vae_params``): every bound the library computes can then be
compared with the exact log-likelihood. Functions take one model and any
leading axes on ``x``; nothing here creates a PRNG key.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from vae_jax import distributions as dist
from vae_jax import models


class LinearGaussian(NamedTuple):
  """p(z) = N(0, I_d), p(x | z) = N(w z + b, sigma^2 I_D)."""
  w: jax.Array  # [D, d]
  b: jax.Array  # [D]
  sigma: float


def orthogonal(key: jax.Array, data_dim: int, scales, *, sigma: float,
               bias_scale: float = 0.3) -> LinearGaussian:
  """A random model with W = U diag(scales), U [D, d] with orthonormal columns.

  Its posterior covariance is diagonal, so ``vae_params`` can express it.
  """
  scales = jnp.asarray(scales, jnp.float32)
  if scales.ndim != 1 or scales.shape[0] > data_dim:
    raise ValueError(f"scales has shape {scales.shape}; expected [d] with d <= data_dim={data_dim}")
  u_key, b_key = jax.random.split(key)
  u, _ = jnp.linalg.qr(jax.random.normal(u_key, (data_dim, scales.shape[0])))
  b = bias_scale * jax.random.normal(b_key, (data_dim,))
  return LinearGaussian(u * scales, b, float(sigma))


def log_marginal(lg: LinearGaussian, x: jax.Array) -> jax.Array:
  """Exact log p(x) = log N(x; b, W W^T + sigma^2 I). x: [..., D] -> [...]."""
  data_dim = lg.w.shape[0]
  cov = lg.w @ lg.w.T + lg.sigma**2 * jnp.eye(data_dim)
  chol = jnp.linalg.cholesky(cov)
  r = (x - lg.b).reshape(-1, data_dim).T  # [D, N]
  y = jax.scipy.linalg.solve_triangular(chol, r, lower=True)
  maha = jnp.sum(jnp.square(y), axis=0).reshape(x.shape[:-1])
  log_det = 2.0 * jnp.sum(jnp.log(jnp.diag(chol)))
  return -0.5 * (data_dim * dist.LOG_2PI + log_det + maha)


def posterior(lg: LinearGaussian, x: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Exact p(z | x): mean [..., d] and covariance [d, d] (the same for every x)."""
  latent_dim = lg.w.shape[1]
  cov = jnp.linalg.inv(jnp.eye(latent_dim) + lg.w.T @ lg.w / lg.sigma**2)
  mean = (x - lg.b) @ lg.w @ cov / lg.sigma**2
  return mean, cov


def log_joint(lg: LinearGaussian, x: jax.Array, z: jax.Array) -> jax.Array:
  """log p(x, z) = log p(x | z) + log p(z). x: [..., D], z: [..., d] -> [...]."""
  log_px_z = dist.gaussian_likelihood_log_prob(x, z @ lg.w.T + lg.b, math.log(lg.sigma), event_ndim=1)
  return log_px_z + dist.standard_normal_log_prob(z)


def elbo(lg: LinearGaussian, x: jax.Array, q_mean: jax.Array, q_logvar: jax.Array) -> jax.Array:
  """Exact ELBO of q(z) = N(q_mean, diag(exp(q_logvar))): no Monte Carlo.

  E_q[log p(x|z)] = log N(x; W m + b, sigma^2 I) - sum_j ||W_j||^2 exp(logvar_j) / (2 sigma^2),
  minus the closed-form KL(q || N(0, I)).
  """
  log_sigma = math.log(lg.sigma)
  at_mean = dist.gaussian_likelihood_log_prob(x, q_mean @ lg.w.T + lg.b, log_sigma, event_ndim=1)
  spread = jnp.sum(jnp.sum(jnp.square(lg.w), axis=0) * jnp.exp(q_logvar), axis=-1) / (2 * lg.sigma**2)
  return at_mean - spread - dist.kl_gaussian_standard_normal(q_mean, q_logvar)


def sample(lg: LinearGaussian, key: jax.Array, num: int) -> jax.Array:
  """``num`` draws x ~ p(x), [num, D]."""
  z_key, noise_key = jax.random.split(key)
  z = jax.random.normal(z_key, (num, lg.w.shape[1]))
  return z @ lg.w.T + lg.b + lg.sigma * jax.random.normal(noise_key, (num, lg.w.shape[0]))


def vae(lg: LinearGaussian) -> models.VAE:
  """The library's VAE for this model: x is a [D, 1, 1] "image", linear layers, fixed sigma."""
  data_dim, latent_dim = lg.w.shape
  return models.VAE(image_shape=(data_dim, 1, 1), latent_dims=(latent_dim,), hidden_sizes=((data_dim,),),
                    activation="linear", likelihood="gaussian_fixed", fixed_log_sigma=math.log(lg.sigma))


def vae_params(lg: LinearGaussian, *, mean_shift=0.0, logvar_shift=0.0) -> dict:
  """Parameters of ``vae(lg)``: decoder p(x | z) and encoder q(z | x) = exact posterior.

  ``mean_shift`` and ``logvar_shift`` ([d] or scalars) move q away from the
  posterior (0 and 0 give it exactly). Raises ValueError unless the posterior
  covariance is diagonal (orthogonal columns of W).
  """
  w, b = np.asarray(lg.w, np.float64), np.asarray(lg.b, np.float64)
  data_dim, latent_dim = w.shape
  gram = w.T @ w
  off_diag = np.abs(gram - np.diag(np.diag(gram))).max(initial=0.0)
  if off_diag > 1e-4 * max(1.0, np.abs(gram).max()):
    raise ValueError(f"W^T W has off-diagonal entries up to {off_diag:.3g}: the exact posterior is "
                     "not diagonal, so a diagonal-Gaussian encoder cannot express it")
  post_var = 1.0 / (1.0 + np.diag(gram) / lg.sigma**2)  # [d]
  enc = w * post_var / lg.sigma**2  # [D, d]: posterior mean = (x - b) @ enc
  params = {
      "enc_trunk0": {"dense_0": dict(kernel=np.eye(data_dim), bias=np.zeros(data_dim))},
      "enc_heads_0": {"mean": dict(kernel=enc, bias=-b @ enc + mean_shift),
                      "logvar": dict(kernel=np.zeros((data_dim, latent_dim)),
                                     bias=np.log(post_var) + logvar_shift)},
      "dec_trunk0": {"dense_0": dict(kernel=w.T, bias=np.zeros(data_dim))},
      "dec_out": dict(kernel=np.eye(data_dim), bias=b),
  }
  return jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), params)
