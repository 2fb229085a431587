"""The VQ-VAE (van den Oord et al. 2017): convolutional encoder, vector quantizer, decoder (Flax linen).

Encoder: stride-2 4x4 convolutions (``num_downsamples`` of them), a 3x3
convolution, residual blocks ReLU-3x3-ReLU-1x1, a 1x1 projection to D: an
image [H, W, C] becomes a grid [H / 2^n, W / 2^n, D] of vectors, each replaced
by its nearest code. Decoder: a 3x3 convolution, the same residual blocks, then
stride-2 4x4 transposed convolutions back to the image. Like ``models.VAE``,
every method takes one example and maps over any leading axes.

Likelihoods p(x | z_q):
* ``bernoulli``: binary pixels, logits [..., H, W, C].
* ``categorical``: a 256-way softmax per pixel and channel, [..., H, W, C, 256].
* ``logistic``: a discretized logistic per pixel and channel (mean, log scale).
The two 8-bit likelihoods see the integer levels round(255 x) of x in [0, 1]:
with a deterministic encoder, -log p(x|z_q(x)) - log p(z_q(x)) bounds -log P(x)
of the discrete image itself, so its bits/dim need no dequantization offset.
"""

from __future__ import annotations

import functools
import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from vae_jax import data as data_lib
from vae_jax import distributions as dist
from vae_jax import layers
from vae_jax import quantization as vq

LIKELIHOODS = ("bernoulli", "categorical", "logistic")
MIN_LOG_SCALE = -7.0


class ResidualStack(nn.Module):
  """``num_blocks`` blocks h + Conv1x1(ReLU(Conv3x3(ReLU(h)))), then a ReLU."""
  features: int
  residual_features: int
  num_blocks: int

  @nn.compact
  def __call__(self, h: jax.Array) -> jax.Array:
    for i in range(self.num_blocks):
      r = layers.Conv(self.residual_features, (3, 3), name=f"res_{i}_conv3")(jax.nn.relu(h))
      h = h + layers.Conv(self.features, (1, 1), name=f"res_{i}_conv1")(jax.nn.relu(r))
    return jax.nn.relu(h)


class Encoder(nn.Module):
  hidden: int
  residual_hidden: int
  num_residual_blocks: int
  num_downsamples: int
  code_dim: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    h = x
    for i in range(self.num_downsamples):
      width = self.hidden if i == self.num_downsamples - 1 else max(1, self.hidden // 2)
      h = jax.nn.relu(layers.Conv(width, (4, 4), strides=(2, 2), name=f"down_{i}")(h))
    h = layers.Conv(self.hidden, (3, 3), name="conv_in")(h)
    h = ResidualStack(self.hidden, self.residual_hidden, self.num_residual_blocks, name="res")(h)
    return layers.Conv(self.code_dim, (1, 1), name="to_codes")(h)


class Decoder(nn.Module):
  hidden: int
  residual_hidden: int
  num_residual_blocks: int
  num_downsamples: int
  out_channels: int

  @nn.compact
  def __call__(self, z: jax.Array) -> jax.Array:
    h = layers.Conv(self.hidden, (3, 3), name="conv_in")(z)
    h = ResidualStack(self.hidden, self.residual_hidden, self.num_residual_blocks, name="res")(h)
    for i in range(self.num_downsamples):
      last = i == self.num_downsamples - 1
      width = self.out_channels if last else max(1, self.hidden // 2)
      h = layers.ConvTranspose(width, (4, 4), strides=(2, 2), name=f"up_{i}")(h)
      if not last:
        h = jax.nn.relu(h)
    return h


class VQVAE(nn.Module):
  """Encoder -> nearest code -> decoder.

  Attributes:
    image_shape: (H, W, C) of one example; H and W divisible by 2^num_downsamples.
    num_codes: K; code_dim: D.
    hidden, residual_hidden, num_residual_blocks: widths and depth of both networks.
    num_downsamples: stride-2 layers (2: 28x28 -> 7x7, 32x32 -> 8x8).
    likelihood: one of ``LIKELIHOODS``.
  """
  image_shape: Sequence[int] = (28, 28, 1)
  num_codes: int = 64
  code_dim: int = 16
  hidden: int = 64
  residual_hidden: int = 32
  num_residual_blocks: int = 2
  num_downsamples: int = 2
  likelihood: str = "bernoulli"

  @property
  def grid_shape(self) -> tuple[int, int]:
    scale = 2 ** self.num_downsamples
    return (self.image_shape[0] // scale, self.image_shape[1] // scale)

  @property
  def num_pixels(self) -> int:
    return int(math.prod(self.image_shape))

  @property
  def _out_per_channel(self) -> int:
    return {"bernoulli": 1, "categorical": dist.NUM_LEVELS, "logistic": 2}[self.likelihood]

  def setup(self):
    vq.check_codebook_size(self.num_codes)
    if self.likelihood not in LIKELIHOODS:
      raise ValueError(f"likelihood={self.likelihood!r}: choose one of {LIKELIHOODS}")
    self.encoder = Encoder(self.hidden, self.residual_hidden, self.num_residual_blocks,
                           self.num_downsamples, self.code_dim)
    self.quantizer = vq.VectorQuantizer(self.num_codes, self.code_dim)
    self.decoder = Decoder(self.hidden, self.residual_hidden, self.num_residual_blocks,
                           self.num_downsamples, self.image_shape[-1] * self._out_per_channel)

  def _batched(self, fn, x, event_ndim):
    lead = x.shape[:-event_ndim]
    y = fn(x.reshape((-1,) + x.shape[-event_ndim:]))
    return y.reshape(lead + y.shape[1:])

  def encode(self, x: jax.Array) -> jax.Array:
    """z_e: [..., H, W, C] -> [..., h, w, D]."""
    return self._batched(self.encoder, x, 3)

  def decode(self, z_q: jax.Array) -> jax.Array:
    """Parameters of p(x | z_q): [..., h, w, D] -> [..., H, W, C] (x 256 or x 2, see LIKELIHOODS)."""
    out = self._batched(self.decoder, z_q, 3)
    if self.likelihood == "bernoulli":
      return out
    c = self.image_shape[-1]
    return out.reshape(out.shape[:-1] + (c, self._out_per_channel))

  def codes(self, x: jax.Array) -> jax.Array:
    """Nearest-code indices of x: [..., H, W, C] -> int32 [..., h, w]."""
    return self.quantizer(self.encode(x))["indices"]

  def decode_codes(self, indices: jax.Array) -> jax.Array:
    """p(x | z_q) parameters for a code grid: int [..., h, w] -> decoder output."""
    return self.decode(self.quantizer.lookup(indices))

  def log_likelihood(self, x: jax.Array, decoded: jax.Array) -> jax.Array:
    """log p(x | z_q) summed over pixels; x in [0, 1] (levels round(255 x) for 8-bit likelihoods)."""
    if self.likelihood == "bernoulli":
      return dist.bernoulli_log_prob(x, decoded)
    levels = jnp.clip(jnp.round(x * (dist.NUM_LEVELS - 1)), 0, dist.NUM_LEVELS - 1).astype(jnp.int32)
    if self.likelihood == "categorical":
      return dist.categorical_log_prob(levels, decoded)
    mean, log_scale = decoded[..., 0], jnp.maximum(decoded[..., 1], MIN_LOG_SCALE)
    return dist.discretized_logistic_log_prob(levels, mean, log_scale)

  def mean_image(self, decoded: jax.Array) -> jax.Array:
    """E[x | z_q] in [0, 1] (for the logistic: its clipped mode), [..., H, W, C]."""
    if self.likelihood == "bernoulli":
      return jax.nn.sigmoid(decoded)
    if self.likelihood == "categorical":
      levels = jnp.arange(dist.NUM_LEVELS, dtype=decoded.dtype)
      return jnp.sum(jax.nn.softmax(decoded, axis=-1) * levels, axis=-1) / (dist.NUM_LEVELS - 1)
    return jnp.clip((decoded[..., 0] + 1.0) / 2.0, 0.0, 1.0)

  def __call__(self, x: jax.Array) -> dict:
    """Everything the objective needs for x [..., H, W, C].

    Returns:
      dict with ``z_e`` [..., h, w, D]; ``indices`` int32 [..., h, w];
      ``codebook_loss`` and ``commitment_loss`` summed over the grid [...];
      ``log_px_z`` = log p(x | z_q) [...] through the straight-through output.
    """
    z_e = self.encode(x)
    q = self.quantizer(z_e)
    decoded = self.decode(q["z_q"])
    return dict(z_e=z_e, indices=q["indices"], log_px_z=self.log_likelihood(x, decoded),
                codebook_loss=jnp.sum(q["codebook_loss"], axis=(-2, -1)),
                commitment_loss=jnp.sum(q["commitment_loss"], axis=(-2, -1)))

  def reconstruct(self, x: jax.Array) -> jax.Array:
    """E[x | z_q(x)]."""
    return self.mean_image(self.decode_codes(self.codes(x)))


@functools.partial(jax.jit, static_argnames="model")
def init_params(model: VQVAE, key: jax.Array) -> dict:
  """Parameters of ``model`` from an explicit key (one compiled program per model, not op by op)."""
  return model.init({"params": key}, jnp.zeros(tuple(model.image_shape), jnp.float32))["params"]


def model_input(raw: jax.Array, key: jax.Array | None, mode: str, likelihood: str) -> jax.Array:
  """uint8 batch -> float32 x in [0, 1] for the VQ-VAE (pure, jittable).

  Binary likelihood: the data module's ``static`` / ``dynamic`` input. 8-bit
  likelihoods: the levels themselves, x = raw / 255 (no dequantization noise:
  the likelihood is discrete).
  """
  if likelihood == "bernoulli":
    return data_lib.to_model_input(raw, key, mode)
  return raw.astype(jnp.float32) / (dist.NUM_LEVELS - 1)
