"""The likelihoods p(x | z_1) of the VAE family, one small class each, picked by name.

``LIKELIHOODS`` maps the config's names to the classes:

  "bernoulli"        ``Bernoulli``: the decoder gives logits; E[x | z] = sigmoid(logits).
  "gaussian_fixed"   ``GaussianFixed``: N(x; mean, sigma^2 I), log sigma = ``vae.fixed_log_sigma``.
  "gaussian_shared"  ``GaussianShared``: one learned sigma (params["sigma_raw"], shape ()).
  "gaussian_pixel"   ``GaussianPixel``: a learned sigma per pixel (params["sigma_raw"], [H, W, C]).

Learned sigmas are MIN_SIGMA + softplus(sigma_raw), starting at 1. As with the
priors (``vae_jax.models.priors``), a likelihood holds no state: its class
methods take the VAE (a bound Flax module):

  setup(vae)                   declares the parameters (from ``VAE.setup``)
  log_prob(vae, x, decoded)    log p(x | z_1) summed over pixels; decoded has leading sample axes
  mean(vae, decoded)           E[x | z_1] from the decoder output
  log_sigma(vae)               log sigma of a Gaussian likelihood

Class-level facts: ``learns_sigma`` (it has params["sigma_raw"]) and
``needs_binary_data`` (Bernoulli: the pixels are 0 or 1).
"""

from __future__ import annotations

from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from vae_jax import distributions as dist

MIN_SIGMA = 1e-3
SIGMA_RAW_INIT = 0.5413  # softplus(0.5413) = 1.000: learned sigmas start at 1


class Likelihood:
  """p(x | z_1): the interface (see the module docstring)."""
  name: ClassVar[str] = ""
  learns_sigma: ClassVar[bool] = False
  needs_binary_data: ClassVar[bool] = False

  @classmethod
  def setup(cls, vae) -> None:
    """Declares the likelihood's parameters on ``vae`` (called in its ``setup``); none here."""

  @classmethod
  def log_prob(cls, vae, x: jax.Array, decoded: jax.Array) -> jax.Array:
    raise NotImplementedError

  @classmethod
  def mean(cls, vae, decoded: jax.Array) -> jax.Array:
    raise NotImplementedError

  @classmethod
  def log_sigma(cls, vae) -> jax.Array:
    raise ValueError(f"likelihood={cls.name!r} has no sigma")


class Bernoulli(Likelihood):
  """Independent Bernoulli pixels with the decoder's logits."""
  name = "bernoulli"
  needs_binary_data = True

  @classmethod
  def log_prob(cls, vae, x, decoded):
    return dist.bernoulli_log_prob(x, decoded)

  @classmethod
  def mean(cls, vae, decoded):
    return jax.nn.sigmoid(decoded)


class _Gaussian(Likelihood):
  """N(x; decoded, sigma^2) per pixel, sigma from ``log_sigma``."""

  @classmethod
  def log_prob(cls, vae, x, decoded):
    return dist.gaussian_likelihood_log_prob(x, decoded, cls.log_sigma(vae))

  @classmethod
  def mean(cls, vae, decoded):
    return decoded


class GaussianFixed(_Gaussian):
  """log sigma = ``vae.fixed_log_sigma``; no parameters."""
  name = "gaussian_fixed"

  @classmethod
  def log_sigma(cls, vae):
    return jnp.asarray(vae.fixed_log_sigma, jnp.float32)


class _LearnedSigma(_Gaussian):
  """sigma = MIN_SIGMA + softplus(params["sigma_raw"]) of shape ``sigma_shape(vae)``."""
  learns_sigma = True

  @classmethod
  def sigma_shape(cls, vae) -> tuple[int, ...]:
    raise NotImplementedError

  @classmethod
  def setup(cls, vae):
    vae.sigma_raw = vae.param("sigma_raw", nn.initializers.constant(SIGMA_RAW_INIT),
                              cls.sigma_shape(vae))

  @classmethod
  def log_sigma(cls, vae):
    return jnp.log(MIN_SIGMA + jax.nn.softplus(vae.sigma_raw))


class GaussianShared(_LearnedSigma):
  """One learned sigma for every pixel."""
  name = "gaussian_shared"

  @classmethod
  def sigma_shape(cls, vae):
    return ()


class GaussianPixel(_LearnedSigma):
  """A learned sigma per pixel, [H, W, C]."""
  name = "gaussian_pixel"

  @classmethod
  def sigma_shape(cls, vae):
    return tuple(vae.image_shape)


LIKELIHOODS: dict[str, type[Likelihood]] = {
    l.name: l for l in (Bernoulli, GaussianFixed, GaussianShared, GaussianPixel)}


def get(name: str) -> type[Likelihood]:
  """The likelihood class named ``name``; ValueError naming the choices otherwise."""
  try:
    return LIKELIHOODS[name]
  except KeyError:
    raise ValueError(f"likelihood={name!r}: choose one of {tuple(LIKELIHOODS)}") from None
