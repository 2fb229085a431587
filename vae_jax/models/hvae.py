"""Tomczak & Welling's (2018) two-level HVAE and convHVAE (Flax linen).

Unlike ``vae.VAE`` with two layers (Burda et al.'s bottom-up chain
q(z_1|x) q(z_2|z_1)), the top layer here is inferred from x directly and the
decoder sees both layers:

    q(z_2 | x) q(z_1 | x, z_2),        p(z_2) p(z_1 | z_2) p(x | z_1, z_2).

So the VampPrior on z_2, (1/K) sum_k q(z_2 | u_k), is exactly a mixture of the
encoder's posteriors at the pseudo-inputs. ``latent_dims`` is (D_1, D_2),
bottom first as in ``vae.VAE``; ``__call__`` returns the same per-sample
terms, so the ELBO / IWAE losses, the trainer and the evaluation are shared.

Networks (``activation="gated"`` gives the paper's gated layers):
  mlp:  x-networks with widths ``hidden_sizes[0]``, p(z_1 | z_2) with
        ``hidden_sizes[1]`` (the paper: 300 units everywhere).
  conv: for each c in ``conv_features`` a stride-1 then a stride-2
        convolution with c channels, then 6 channels (the paper: 32, 32, 64,
        64, 6 with kernels 7, 3, 5, 3, 3 for q(z_2|x) and 3x3 for q(z_1|x));
        the decoder maps (z_1, z_2) to an image-sized map, then 4 full-size 3x3
        convolutions with ``conv_features[-1]`` channels and a 1x1 output.
Log-variances are clipped to [-6, 2] as in the paper.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from vae_jax import distributions as dist
from vae_jax import layers
from vae_jax.models import networks
from vae_jax.models import vae

LOGVAR_BOUNDS = networks.LOGVAR_BOUNDS
DECODER_CONV_LAYERS = 4
CODE_CHANNELS = 6


class ConvStack(nn.Module):
  """Convolutions (features, kernel, stride) with an activation each, then flatten.

  [..., H, W, C] -> [..., F], any leading axes.
  """
  spec: Sequence[tuple[int, int, int]]
  activation: str = "gated"
  implementation: str = "auto"
  flatten: bool = True

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    lead = x.shape[:-3]
    h = x.reshape((-1,) + x.shape[-3:])
    for i, (f, k, s) in enumerate(self.spec):
      conv = lambda n, f=f, k=k, s=s: layers.Conv(f, (k, k), strides=(s, s), padding="SAME", name=n,
                                                  implementation=self.implementation)
      h = networks.activate(self.activation, conv, h, f"conv_{i}", f"gate_{i}")
    return h.reshape(lead + ((-1,) if self.flatten else h.shape[1:]))


def _encoder_spec(conv_features: Sequence[int], first_kernels: Sequence[int]):
  spec = []
  for i, c in enumerate(conv_features):
    spec += [(c, first_kernels[i] if i < len(first_kernels) else 3, 1), (c, 3, 2)]
  return tuple(spec) + ((CODE_CHANNELS, 3, 1),)


class HVAE(vae.VAE):
  """Two stochastic layers with q(z_2|x) q(z_1|x,z_2) and p(x|z_1,z_2); see the module docstring.

  The attributes are ``vae.VAE``'s; ``latent_dims`` must have two entries.
  """
  activation: str = "gated"

  def setup(self):
    if len(self.latent_dims) != 2:
      raise ValueError(f"HVAE needs two stochastic layers, got latent_dims={self.latent_dims}")
    if self.matmul_dtype != "float32":
      raise ValueError(f"matmul_dtype={self.matmul_dtype!r}: the HVAE computes in float32 only")
    d1, d2 = self.latent_dims
    widths = tuple(self.hidden_sizes[0])
    act = self.activation
    dense = lambda w: networks.MLP((w,), act)
    if self.network == "conv":
      self.q2_x = ConvStack(_encoder_spec(self.conv_features, (7, 5)), act, self.conv_implementation)
      self.q1_x = ConvStack(_encoder_spec(self.conv_features, ()), act, self.conv_implementation)
      h, w, c = self.image_shape
      scale = 2 ** len(self.conv_features)
      x_features = (h // scale) * (w // scale) * CODE_CHANNELS
      self.px_joint = dense(self.num_pixels)
      self.px_convs = ConvStack(((self.conv_features[-1], 3, 1),) * DECODER_CONV_LAYERS, act,
                                self.conv_implementation, flatten=False)
      self.px_out = layers.Conv(c, (1, 1), implementation=self.conv_implementation)
    else:
      self.q2_x = networks.MLP(widths, act)
      self.q1_x = dense(widths[-1])
      x_features = widths[-1]
      self.px_joint = dense(widths[-1])
      self.dec_out = nn.Dense(self.num_pixels)  # the name train.create_train_state sets the bias of
    self.q2_head = networks.GaussianHead(d2, LOGVAR_BOUNDS)
    self.q1_z2 = dense(x_features)
    self.q1_joint = dense(widths[-1])
    self.q1_head = networks.GaussianHead(d1, LOGVAR_BOUNDS)
    self.p1_trunk = networks.MLP(tuple(self.hidden_sizes[1]), act)
    self.p1_head = networks.GaussianHead(d1, LOGVAR_BOUNDS)
    self.px_z1 = dense(widths[-1])
    self.px_z2 = dense(widths[-1])
    self._setup_likelihood_and_prior()

  def _x_input(self, x: jax.Array) -> jax.Array:
    return x if self.network == "conv" else x.reshape(x.shape[:-3] + (-1,))

  # -- pieces ---------------------------------------------------------------
  def encode(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Mean and log-variance of q(z_2 | x): [..., H, W, C] -> ([..., D2], [..., D2])."""
    return self.q2_head(self.q2_x(self._x_input(x)))

  def encode_top(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    return self.encode(x)

  def encode_z1(self, x: jax.Array, z2: jax.Array) -> tuple[jax.Array, jax.Array]:
    """q(z_1 | x, z_2) for one image x [H, W, C] and z2 [..., D2]."""
    hx = self.q1_x(self._x_input(x))
    hx = jnp.broadcast_to(hx, z2.shape[:-1] + hx.shape[-1:])
    return self.q1_head(self.q1_joint(jnp.concatenate([hx, self.q1_z2(z2)], axis=-1)))

  def decode(self, z1: jax.Array, z2: jax.Array) -> jax.Array:
    """Parameters of p(x | z_1, z_2) (logits or mean), [..., H, W, C]."""
    h = self.px_joint(jnp.concatenate([self.px_z1(z1), self.px_z2(z2)], axis=-1))
    lead = z1.shape[:-1]
    if self.network == "conv":
      h = self.px_convs(h.reshape((-1,) + tuple(self.image_shape)))
      return self.px_out(h).reshape(lead + tuple(self.image_shape))
    return self.dec_out(h).reshape(lead + tuple(self.image_shape))

  def prior_z1(self, z2: jax.Array) -> tuple[jax.Array, jax.Array]:
    """p(z_1 | z_2) as (mean, logvar)."""
    return self.p1_head(self.p1_trunk(z2))

  # -- what losses and evaluation use ----------------------------------------
  def __call__(self, x: jax.Array, key: jax.Array, num_samples: int = 1) -> dict:
    """Per-sample ``log_px_z``, ``log_pz``, ``log_qz`` ([K]) for one image; ``mean`` / ``logvar`` of q(z_2|x)."""
    key2, key1 = jax.random.split(key)
    mean2, logvar2 = self.encode(x)
    z2 = dist.gaussian_sample(key2, mean2, logvar2, (num_samples,))
    mean1, logvar1 = self.encode_z1(x, z2)
    z1 = dist.gaussian_sample(key1, mean1, logvar1)
    log_qz = dist.gaussian_log_prob(z2, mean2, logvar2) + dist.gaussian_log_prob(z1, mean1, logvar1)
    p_mean1, p_logvar1 = self.prior_z1(z2)
    log_pz = self.prior_log_prob(z2) + dist.gaussian_log_prob(z1, p_mean1, p_logvar1)
    log_px_z = self.log_likelihood(x, self.decode(z1, z2))
    return dict(log_px_z=log_px_z, log_pz=log_pz, log_qz=log_qz, mean=mean2, logvar=logvar2)

  # -- the pieces of log w, for gradient estimators (``vae_jax.estimators``) ----
  def sample_posterior(self, x: jax.Array, key: jax.Array, num_samples: int) -> tuple[jax.Array, jax.Array]:
    """(z_1, z_2), each [K, D_l]: the draws ``__call__`` makes with ``key``."""
    key2, key1 = jax.random.split(key)
    z2 = dist.gaussian_sample(key2, *self.encode(x), (num_samples,))
    return dist.gaussian_sample(key1, *self.encode_z1(x, z2)), z2

  def log_posterior(self, x: jax.Array, zs: tuple[jax.Array, jax.Array]) -> jax.Array:
    """log q(z_2 | x) + log q(z_1 | x, z_2), [K]."""
    z1, z2 = zs
    return dist.gaussian_log_prob(z2, *self.encode(x)) + dist.gaussian_log_prob(z1, *self.encode_z1(x, z2))

  def log_joint(self, x: jax.Array, zs: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
    """(log p(x | z_1, z_2), log p(z_2) + log p(z_1 | z_2)), each [K]."""
    z1, z2 = zs
    log_pz = self.prior_log_prob(z2) + dist.gaussian_log_prob(z1, *self.prior_z1(z2))
    return self.log_likelihood(x, self.decode(z1, z2)), log_pz

  def generate(self, key: jax.Array, num_samples: int) -> jax.Array:
    """z_2 ~ p(z_2), z_1 ~ p(z_1 | z_2); returns E[x | z_1, z_2]."""
    key2, key1 = jax.random.split(key)
    z2 = self.prior_sample(key2, num_samples)
    z1 = dist.gaussian_sample(key1, *self.prior_z1(z2))
    return self.mean_image(self.decode(z1, z2))

  def reconstruct(self, x: jax.Array) -> jax.Array:
    """E[x | z_1, z_2] at the posterior means (z_2 = E q(z_2|x), z_1 = E q(z_1|x, z_2))."""
    z2, _ = self.encode(x)
    z1, _ = self.encode_z1(x, z2)
    return self.mean_image(self.decode(z1, z2))
