"""Encoders, decoders and the Gaussian VAE (Flax linen).

The VAE works on ONE example (no batch axis); the trainer lifts it over the
batch with ``jax.vmap``. Latent samples carry a leading sample axis ``K`` and
every layer maps over leading axes, so K importance samples cost one matmul
per layer, not K.

Stochastic layers are numbered from the data up: z_1 is next to x, z_L is the
top, with prior N(0, I). The inference network is q(z_1|x) q(z_2|z_1) ...,
the generative one p(z_L) p(z_{L-1}|z_L) ... p(x|z_1) (Burda et al. 2016).
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from vae_jax import distributions as dist
from vae_jax import layers

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "tanh": jnp.tanh,
    "relu": jax.nn.relu,
    "elu": jax.nn.elu,
    "softplus": jax.nn.softplus,
    "gelu": jax.nn.gelu,
    "silu": jax.nn.silu,
    "linear": lambda h: h,  # for linear-Gaussian models with exact likelihoods
}
LIKELIHOODS = ("bernoulli", "gaussian_fixed", "gaussian_shared", "gaussian_pixel")
NETWORKS = ("mlp", "conv")
MIN_SIGMA = 1e-3


class MLP(nn.Module):
  """Dense layers with an activation after each, over any leading axes."""
  features: Sequence[int]
  activation: str = "tanh"

  @nn.compact
  def __call__(self, h: jax.Array) -> jax.Array:
    act = ACTIVATIONS[self.activation]
    for i, width in enumerate(self.features):
      h = act(nn.Dense(width, name=f"dense_{i}")(h))
    return h


class GaussianHead(nn.Module):
  """Dense map to the mean and log-variance of a diagonal Gaussian."""
  features: int

  @nn.compact
  def __call__(self, h: jax.Array) -> tuple[jax.Array, jax.Array]:
    mean = nn.Dense(self.features, name="mean")(h)
    logvar = nn.Dense(self.features, name="logvar")(h)
    return mean, logvar


class ConvEncoderTrunk(nn.Module):
  """Stride-2 3x3 convolutions, then flatten: image [..., H, W, C] -> [..., F]."""
  features: Sequence[int]
  activation: str = "relu"
  implementation: str = "auto"  # see vae_jax.layers

  @nn.compact
  def __call__(self, x: jax.Array, image_ndim: int = 3) -> jax.Array:
    act = ACTIVATIONS[self.activation]
    lead = x.shape[:-image_ndim]
    h = x.reshape((-1,) + x.shape[-image_ndim:])
    for i, f in enumerate(self.features):
      h = act(layers.Conv(f, (3, 3), strides=(2, 2), padding="SAME", name=f"conv_{i}",
                              implementation=self.implementation)(h))
    return h.reshape(lead + (-1,))


class ConvDecoderTrunk(nn.Module):
  """Dense to a coarse grid, then stride-2 transposed convolutions up to the image."""
  features: Sequence[int]
  image_shape: Sequence[int]
  out_channels: int
  activation: str = "relu"
  implementation: str = "auto"  # see vae_jax.layers

  @nn.compact
  def __call__(self, z: jax.Array) -> jax.Array:
    act = ACTIVATIONS[self.activation]
    height, width, _ = self.image_shape
    scale = 2 ** len(self.features)
    base = (height // scale, width // scale)
    lead = z.shape[:-1]
    feats = tuple(reversed(self.features))
    h = act(nn.Dense(base[0] * base[1] * feats[0], name="project")(z))
    h = h.reshape((-1,) + base + (feats[0],))
    for i, f in enumerate(feats):
      h = act(layers.ConvTranspose(f, (3, 3), strides=(2, 2), padding="SAME",
                                       name=f"deconv_{i}", implementation=self.implementation)(h))
    h = layers.Conv(self.out_channels, (3, 3), padding="SAME", name="out",
                    implementation=self.implementation)(h)
    return h.reshape(lead + tuple(self.image_shape[:2]) + (self.out_channels,))


class VAE(nn.Module):
  """Gaussian VAE with one or more stochastic layers.

  Attributes:
    image_shape: (H, W, C) of one example.
    latent_dims: size of each stochastic layer, bottom (next to x) first.
    hidden_sizes: widths of the deterministic layers in each stochastic
      layer's networks, one tuple per stochastic layer. The encoder of layer l
      uses them in order, the decoder in reverse (Burda et al. 2016, App. C).
    network: "mlp" or "conv" for the x <-> z_1 networks (upper layers are MLPs).
    conv_features: channels of the stride-2 convolutions ("conv" only).
    conv_implementation: "auto" (patches + matmul on CPU, XLA's convolution
      elsewhere), "patches" or "xla"; see ``vae_jax.layers``.
    likelihood: one of ``LIKELIHOODS``.
    fixed_log_sigma: log sigma of the "gaussian_fixed" likelihood.
  """
  image_shape: Sequence[int] = (28, 28, 1)
  latent_dims: Sequence[int] = (50,)
  hidden_sizes: Sequence[Sequence[int]] = ((200, 200),)
  activation: str = "tanh"
  network: str = "mlp"
  conv_features: Sequence[int] = (32, 64)
  conv_implementation: str = "auto"
  likelihood: str = "bernoulli"
  fixed_log_sigma: float = 0.0

  @property
  def num_pixels(self) -> int:
    return int(math.prod(self.image_shape))

  def setup(self):
    n_layers = len(self.latent_dims)
    if self.network == "conv":
      self.enc_trunk0 = ConvEncoderTrunk(self.conv_features, self.activation,
                                         self.conv_implementation)
      self.dec_trunk0 = ConvDecoderTrunk(self.conv_features, tuple(self.image_shape),
                                         self.image_shape[-1], self.activation,
                                         self.conv_implementation)
    else:
      self.enc_trunk0 = MLP(tuple(self.hidden_sizes[0]), self.activation)
      self.dec_trunk0 = MLP(tuple(reversed(self.hidden_sizes[0])), self.activation)
      self.dec_out = nn.Dense(self.num_pixels)
    self.enc_heads = [GaussianHead(d) for d in self.latent_dims]
    self.enc_trunks = [MLP(tuple(self.hidden_sizes[l]), self.activation)
                       for l in range(1, n_layers)]
    # p(z_l | z_{l+1}) for l = 1 .. L-1 (index l-1).
    self.dec_trunks = [MLP(tuple(reversed(self.hidden_sizes[l])), self.activation)
                       for l in range(1, n_layers)]
    self.dec_heads = [GaussianHead(self.latent_dims[l - 1]) for l in range(1, n_layers)]
    if self.likelihood == "gaussian_shared":
      self.sigma_raw = self.param("sigma_raw", nn.initializers.constant(0.5413), ())
    elif self.likelihood == "gaussian_pixel":
      self.sigma_raw = self.param("sigma_raw", nn.initializers.constant(0.5413),
                                  tuple(self.image_shape))

  # -- pieces ---------------------------------------------------------------
  def encode(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Mean and log-variance of q(z_1 | x). x: [..., H, W, C] -> ([..., D1], [..., D1])."""
    if self.network == "conv":
      h = self.enc_trunk0(x)
    else:
      h = self.enc_trunk0(x.reshape(x.shape[:-3] + (-1,)))
    return self.enc_heads[0](h)

  def decode(self, z1: jax.Array) -> jax.Array:
    """Parameters of p(x | z_1): logits (Bernoulli) or mean (Gaussian), [..., H, W, C]."""
    if self.network == "conv":
      return self.dec_trunk0(z1)
    h = self.dec_out(self.dec_trunk0(z1))
    return h.reshape(z1.shape[:-1] + tuple(self.image_shape))

  def log_sigma(self) -> jax.Array:
    if self.likelihood == "gaussian_fixed":
      return jnp.asarray(self.fixed_log_sigma, jnp.float32)
    return jnp.log(MIN_SIGMA + jax.nn.softplus(self.sigma_raw))

  def log_likelihood(self, x: jax.Array, decoded: jax.Array) -> jax.Array:
    """log p(x | z_1) summed over pixels; decoded has leading sample axes."""
    if self.likelihood == "bernoulli":
      return dist.bernoulli_log_prob(x, decoded)
    return dist.gaussian_likelihood_log_prob(x, decoded, self.log_sigma())

  def mean_image(self, decoded: jax.Array) -> jax.Array:
    """E[x | z_1] from the decoder output."""
    return jax.nn.sigmoid(decoded) if self.likelihood == "bernoulli" else decoded

  # -- what losses and evaluation use ----------------------------------------
  def __call__(self, x: jax.Array, key: jax.Array, num_samples: int = 1) -> dict:
    """Per-sample log-density terms for one example x [H, W, C].

    Draws ``num_samples`` z ~ q(z | x) (one key split per stochastic layer).

    Returns:
      dict with ``log_px_z``, ``log_pz``, ``log_qz`` (each [K]) and, for one
      stochastic layer, ``kl`` (scalar): KL(q(z|x) || N(0, I)) in closed form;
      also ``mean`` and ``logvar`` of q(z_1 | x) ([D1]).
    """
    n_layers = len(self.latent_dims)
    keys = jax.random.split(key, n_layers)
    mean1, logvar1 = self.encode(x)
    z = dist.gaussian_sample(keys[0], mean1, logvar1, (num_samples,))
    log_qz = dist.gaussian_log_prob(z, mean1, logvar1)
    zs = [z]
    for l in range(1, n_layers):
      mean, logvar = self.enc_heads[l](self.enc_trunks[l - 1](zs[-1]))
      z = dist.gaussian_sample(keys[l], mean, logvar)
      log_qz = log_qz + dist.gaussian_log_prob(z, mean, logvar)
      zs.append(z)
    log_pz = dist.standard_normal_log_prob(zs[-1])
    for l in range(n_layers - 1, 0, -1):
      mean, logvar = self.dec_heads[l - 1](self.dec_trunks[l - 1](zs[l]))
      log_pz = log_pz + dist.gaussian_log_prob(zs[l - 1], mean, logvar)
    log_px_z = self.log_likelihood(x, self.decode(zs[0]))
    out = dict(log_px_z=log_px_z, log_pz=log_pz, log_qz=log_qz, mean=mean1, logvar=logvar1)
    if n_layers == 1:
      out["kl"] = dist.kl_gaussian_standard_normal(mean1, logvar1)
    return out

  def generate(self, key: jax.Array, num_samples: int) -> jax.Array:
    """Ancestral samples: z_L ~ N(0, I), z_l ~ p(z_l | z_{l+1}); returns E[x | z_1]."""
    n_layers = len(self.latent_dims)
    keys = jax.random.split(key, n_layers)
    z = jax.random.normal(keys[0], (num_samples, self.latent_dims[-1]))
    for l in range(n_layers - 1, 0, -1):
      mean, logvar = self.dec_heads[l - 1](self.dec_trunks[l - 1](z))
      z = dist.gaussian_sample(keys[l], mean, logvar)
    return self.mean_image(self.decode(z))

  def reconstruct(self, x: jax.Array) -> jax.Array:
    """E[x | z_1 = posterior mean]: a deterministic reconstruction (single layer path)."""
    mean, _ = self.encode(x)
    return self.mean_image(self.decode(mean))


def init_params(model: VAE, key: jax.Array) -> dict:
  """Parameters of ``model`` from an explicit key (traces one example)."""
  x = jnp.zeros(tuple(model.image_shape), jnp.float32)
  param_key, sample_key = jax.random.split(key)
  return model.init({"params": param_key}, x, sample_key)["params"]
