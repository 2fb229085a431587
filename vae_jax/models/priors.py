"""The priors p(z_L) on the VAE's top stochastic layer, one small class each, picked by name.

``PRIORS`` maps the config's names to the classes:

  "standard"     ``StandardNormal``: N(0, I).
  "mog"          ``LearnedMixture``: a learnable mixture of ``num_components``
                 diagonal Gaussians (params["mixture"], ``MixturePrior``).
  "vamp"         ``VampPrior`` (Tomczak & Welling 2018): (1/K) sum_k q(z_L | u_k),
                 the mixture of the encoder's posteriors at K = ``num_components``
                 learnable pseudo-inputs u_k (params["pseudo_inputs"], [K, H, W, C]).
  "conditional"  ``ClassConditional``: a learned Gaussian p(z_L | y) =
                 N(mu_y, diag(exp(logvar_y))) per class (params["class_prior"],
                 ``ClassPrior``); needs ``num_classes``.

A prior holds no state: its class methods take the VAE (a bound Flax module)
and declare or read the parameters on it, under the names old checkpoints have:

  setup(vae)                            declares the parameters (from ``VAE.setup``)
  log_prob(vae, z, label)               log p(z_L[ | y]), z [..., D_L] -> [...]
  sample(vae, key, num_samples, label)  z_L ~ p(z_L[ | y]), [num_samples, D_L]
  kl(vae, mean, logvar, label)          KL(N(mean, exp(logvar)) || p(z_L[ | y])) in
                                        closed form, where ``closed_form_kl``
  components(vae)                       (log_weights [K], means [K, D], logvars [K, D])
                                        of a mixture prior (``is_mixture``)
  gaussian(vae, label, lead)            (mean, logvar) [*lead, D] of a per-class prior

The class-level facts are what the config checks need: ``needs_labels``
(p(z | y): the model must be conditional), ``allows_labels`` (False: the model
must be unconditional), ``closed_form_kl`` (the one-layer KL is exact) and
``is_mixture``. A new prior is a subclass of ``Prior`` and an entry of ``PRIORS``.
"""

from __future__ import annotations

import math
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from vae_jax import distributions as dist

# VampPrior pseudo-inputs start at N(0.05, 0.01^2) per pixel (Tomczak & Welling's default)
# and enter the encoder clipped to [0, 1], the range of the data.
PSEUDO_INPUT_MEAN, PSEUDO_INPUT_STD = 0.05, 0.01


def pseudo_input_init(key: jax.Array, shape, dtype=jnp.float32) -> jax.Array:
  """VampPrior pseudo-inputs at N(PSEUDO_INPUT_MEAN, PSEUDO_INPUT_STD^2) per pixel."""
  return PSEUDO_INPUT_MEAN + PSEUDO_INPUT_STD * jax.random.normal(key, shape, dtype)


class MixturePrior(nn.Module):
  """Learnable prior p(z) = sum_k softmax(logits)_k N(z; means_k, diag(exp(logvars_k))).

  Means start at N(0, 1) draws (distinct components), log-variances at 0,
  weights uniform. Calling it returns (log_weights [K], means [K, D], logvars [K, D]).
  """
  features: int
  num_components: int

  @nn.compact
  def __call__(self) -> tuple[jax.Array, jax.Array, jax.Array]:
    k, d = self.num_components, self.features
    logits = self.param("logits", nn.initializers.zeros_init(), (k,))
    means = self.param("means", nn.initializers.normal(1.0), (k, d))
    logvars = self.param("logvars", nn.initializers.zeros_init(), (k, d))
    return jax.nn.log_softmax(logits), means, logvars


class ClassPrior(nn.Module):
  """Learned per-class Gaussian p(z | y) = N(means[y], diag(exp(logvars[y]))), starting at N(0, I).

  Called with a one-hot (or soft) label [..., C], returns (mean, logvar), each [..., D].
  """
  features: int
  num_classes: int

  @nn.compact
  def __call__(self, onehot: jax.Array) -> tuple[jax.Array, jax.Array]:
    shape = (self.num_classes, self.features)
    means = self.param("means", nn.initializers.zeros_init(), shape)
    logvars = self.param("logvars", nn.initializers.zeros_init(), shape)
    return onehot @ means, onehot @ logvars


class Prior:
  """p(z_L): the interface (see the module docstring); subclasses override what they have."""
  name: ClassVar[str] = ""
  needs_labels: ClassVar[bool] = False
  allows_labels: ClassVar[bool] = True
  closed_form_kl: ClassVar[bool] = False
  is_mixture: ClassVar[bool] = False

  @classmethod
  def setup(cls, vae) -> None:
    """Declares the prior's parameters on ``vae`` (called in its ``setup``); none here."""

  @classmethod
  def log_prob(cls, vae, z: jax.Array, label: jax.Array | None = None) -> jax.Array:
    raise NotImplementedError

  @classmethod
  def sample(cls, vae, key: jax.Array, num_samples: int, label: jax.Array | None = None) -> jax.Array:
    raise NotImplementedError

  @classmethod
  def kl(cls, vae, mean: jax.Array, logvar: jax.Array, label: jax.Array | None = None) -> jax.Array:
    raise ValueError(f"prior={cls.name!r} has no closed-form KL: estimate it by Monte Carlo")

  @classmethod
  def components(cls, vae) -> tuple[jax.Array, jax.Array, jax.Array]:
    mixtures = [n for n, p in PRIORS.items() if p.is_mixture]
    raise ValueError(f"prior={cls.name!r} is not a mixture; choose one of {mixtures}")

  @classmethod
  def gaussian(cls, vae, label: jax.Array, lead: tuple[int, ...] = ()) -> tuple[jax.Array, jax.Array]:
    raise ValueError(f"prior={cls.name!r} is not a per-class Gaussian p(z | y)")


class StandardNormal(Prior):
  """N(0, I); the label, if any, is ignored."""
  name = "standard"
  closed_form_kl = True

  @classmethod
  def log_prob(cls, vae, z, label=None):
    return dist.standard_normal_log_prob(z)

  @classmethod
  def sample(cls, vae, key, num_samples, label=None):
    return jax.random.normal(key, (num_samples, vae.latent_dims[-1]))

  @classmethod
  def kl(cls, vae, mean, logvar, label=None):
    return dist.kl_gaussian_standard_normal(mean, logvar)


class _Mixture(Prior):
  """A mixture of diagonal Gaussians given by ``components``."""
  is_mixture = True

  @classmethod
  def log_prob(cls, vae, z, label=None):
    return dist.mixture_gaussian_log_prob(z, *cls.components(vae))

  @classmethod
  def sample(cls, vae, key, num_samples, label=None):
    return dist.mixture_gaussian_sample(key, *cls.components(vae), (num_samples,))


class LearnedMixture(_Mixture):
  """A learnable mixture of ``vae.num_components`` Gaussians (``MixturePrior``, params["mixture"])."""
  name = "mog"

  @classmethod
  def setup(cls, vae):
    vae.mixture = MixturePrior(vae.latent_dims[-1], vae.num_components)

  @classmethod
  def components(cls, vae):
    return vae.mixture()


class VampPrior(_Mixture):
  """(1/K) sum_k q(z_L | u_k) at the pseudo-inputs u_k (params["pseudo_inputs"], [K, H, W, C]).

  The components are ``vae.encode_top`` at the pseudo-inputs clipped to [0, 1];
  the encoder takes no label, so the model must be unconditional.
  """
  name = "vamp"
  allows_labels = False

  @classmethod
  def setup(cls, vae):
    vae.pseudo_inputs = vae.param("pseudo_inputs", pseudo_input_init,
                                  (vae.num_components,) + tuple(vae.image_shape))

  @classmethod
  def components(cls, vae):
    means, logvars = vae.encode_top(jnp.clip(vae.pseudo_inputs, 0.0, 1.0))
    log_weights = jnp.full((vae.num_components,), -math.log(vae.num_components), means.dtype)
    return log_weights, means, logvars


class ClassConditional(Prior):
  """p(z_L | y) = N(mu_y, diag(exp(logvar_y))) (``ClassPrior``, params["class_prior"])."""
  name = "conditional"
  needs_labels = True
  closed_form_kl = True

  @classmethod
  def setup(cls, vae):
    vae.class_prior = ClassPrior(vae.latent_dims[-1], vae.num_classes)

  @classmethod
  def gaussian(cls, vae, label, lead=()):
    return vae.class_prior(vae.onehot(label, lead))

  @classmethod
  def log_prob(cls, vae, z, label=None):
    return dist.gaussian_log_prob(z, *cls.gaussian(vae, label, z.shape[:-1]))

  @classmethod
  def sample(cls, vae, key, num_samples, label=None):
    return dist.gaussian_sample(key, *cls.gaussian(vae, label, (num_samples,)))

  @classmethod
  def kl(cls, vae, mean, logvar, label=None):
    return dist.kl_gaussians(mean, logvar, *cls.gaussian(vae, label, mean.shape[:-1]))


PRIORS: dict[str, type[Prior]] = {p.name: p for p in (StandardNormal, LearnedMixture, VampPrior,
                                                       ClassConditional)}


def get(name: str) -> type[Prior]:
  """The prior class named ``name``; ValueError naming the choices otherwise."""
  try:
    return PRIORS[name]
  except KeyError:
    raise ValueError(f"prior={name!r}: choose one of {tuple(PRIORS)}") from None
