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

Autoregressive decoder (``ar_layers > 0``, one-channel images, ``bernoulli``
or ``categorical``): the decoder's last layer gives a feature map of z_q, and
a small gated PixelCNN over the pixels (``PixelHead``) turns it into
p(x | z_q) = prod_i p(x_i | x_<i, z_q). The codes then need not describe what
neighbouring pixels predict (stroke edges, binarization noise), which lowers
both terms of the bound. Training and the bound take one pass (the image is
known); drawing x from p(x | z_q) takes one step per pixel
(``images_from_codes``), each on a window of the pixels it can see.
"""

from __future__ import annotations

import functools
import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from vae_jax import compilation
from vae_jax import data as data_lib
from vae_jax import distributions as dist
from vae_jax import layers
from vae_jax.vq import pixelcnn
from vae_jax.vq import quantization as vq

LIKELIHOODS = ("bernoulli", "categorical", "logistic")
AR_LIKELIHOODS = ("bernoulli", "categorical")  # the ones an autoregressive decoder can draw from
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


class PixelHead(nn.Module):
  """p(x_i | x_<i, z_q) for every pixel: a gated PixelCNN over x, conditioned on a feature map of z_q.

  The feature map enters every layer of both stacks through 1x1 convolutions
  and the output directly (a skip that starts the head as the plain decoder).
  ``reach`` = num_layers * (kernel_size // 2): the output at (i, j) sees the
  pixels of rows i - reach .. i, columns j - reach .. j + reach before (i, j).
  """
  features: int
  num_layers: int
  kernel_size: int
  out_features: int

  @property
  def reach(self) -> int:
    return self.num_layers * (self.kernel_size // 2)

  @nn.compact
  def __call__(self, x: jax.Array, cond: jax.Array, valid: jax.Array | None = None) -> jax.Array:
    """x [N, H, W, C] in [0, 1], cond [N, H, W, F] -> [N, H, W, out_features].

    ``valid`` (see ``pixelcnn.gated_stack``) when x and cond are windows that overhang the image.
    """
    embedded = nn.Dense(self.features, use_bias=False, name="embed")(x)  # 0 where x is padding
    project = lambda l, stack: layers.Conv(2 * self.features, (1, 1), name=f"cond_{stack}_{l}")(cond)
    h = pixelcnn.gated_stack(embedded, features=self.features, num_layers=self.num_layers,
                             kernel_size=self.kernel_size, condition=project, valid=valid)
    out = layers.Conv(self.out_features, (1, 1), name="out")(jax.nn.relu(h))
    return out + layers.Conv(self.out_features, (1, 1), name="skip")(cond)


class VQVAE(nn.Module):
  """Encoder -> nearest code -> decoder.

  Attributes:
    image_shape: (H, W, C) of one example; H and W divisible by 2^num_downsamples.
    num_codes: K; code_dim: D.
    hidden, residual_hidden, num_residual_blocks: widths and depth of both networks.
    num_downsamples: stride-2 layers (2: 28x28 -> 7x7, 32x32 -> 8x8).
    likelihood: one of ``LIKELIHOODS``.
    ar_layers: 0 for the plain decoder; else the gated layers of its ``PixelHead``.
    ar_features: width of the head and of the feature map it is conditioned on.
    ar_kernel_size: k (odd) of the head's masked convolutions.
  """
  image_shape: Sequence[int] = (28, 28, 1)
  num_codes: int = 64
  code_dim: int = 16
  hidden: int = 64
  residual_hidden: int = 32
  num_residual_blocks: int = 2
  num_downsamples: int = 2
  likelihood: str = "bernoulli"
  ar_layers: int = 0
  ar_features: int = 16
  ar_kernel_size: int = 3

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

  @property
  def reach(self) -> int:
    """How far the autoregressive decoder looks back (0 for the plain decoder)."""
    return self.ar_layers * (self.ar_kernel_size // 2)

  def setup(self):
    vq.check_codebook_size(self.num_codes)
    if self.likelihood not in LIKELIHOODS:
      raise ValueError(f"likelihood={self.likelihood!r}: choose one of {LIKELIHOODS}")
    check_autoregressive(self.ar_layers, self.ar_kernel_size, self.likelihood, self.image_shape)
    out = self.image_shape[-1] * self._out_per_channel
    self.encoder = Encoder(self.hidden, self.residual_hidden, self.num_residual_blocks,
                           self.num_downsamples, self.code_dim)
    self.quantizer = vq.VectorQuantizer(self.num_codes, self.code_dim)
    self.decoder = Decoder(self.hidden, self.residual_hidden, self.num_residual_blocks,
                           self.num_downsamples, self.ar_features if self.ar_layers else out)
    if self.ar_layers:
      self.head = PixelHead(self.ar_features, self.ar_layers, self.ar_kernel_size, out)

  def _batched(self, fn, x, event_ndim):
    lead = x.shape[:-event_ndim]
    y = fn(x.reshape((-1,) + x.shape[-event_ndim:]))
    return y.reshape(lead + y.shape[1:])

  def encode(self, x: jax.Array) -> jax.Array:
    """z_e: [..., H, W, C] -> [..., h, w, D]."""
    return self._batched(self.encoder, x, 3)

  def _split_params(self, out: jax.Array) -> jax.Array:
    if self.likelihood == "bernoulli":
      return out
    return out.reshape(out.shape[:-1] + (self.image_shape[-1], self._out_per_channel))

  def condition(self, z_q: jax.Array) -> jax.Array:
    """The autoregressive decoder's feature map of z_q: [..., h, w, D] -> [..., H, W, ar_features]."""
    return jax.nn.relu(self._batched(self.decoder, z_q, 3))

  def head_params(self, x: jax.Array, cond: jax.Array, valid: jax.Array | None = None) -> jax.Array:
    """p(x_i | x_<i, z_q) parameters from x [N, H, W, C] and ``condition`` [N, H, W, F] (or windows)."""
    return self._split_params(self.head(x, cond, valid))

  def decode(self, z_q: jax.Array, x: jax.Array | None = None) -> jax.Array:
    """Parameters of p(x | z_q): [..., h, w, D] -> [..., H, W, C] (x 256 or x 2, see LIKELIHOODS).

    An autoregressive decoder also needs the image x [..., H, W, C]: the
    parameters at pixel i are those of p(x_i | x_<i, z_q).
    """
    if not self.ar_layers:
      return self._split_params(self._batched(self.decoder, z_q, 3))
    if x is None:
      raise ValueError("this VQ-VAE's decoder is autoregressive: decode(z_q, x) needs the image x; "
                       "to draw images from codes use vqvae.images_from_codes(model, params, codes, key)")
    cond = self.condition(z_q)
    lead = cond.shape[:-3]
    x = jnp.broadcast_to(x, lead + x.shape[-3:])
    out = self.head(x.reshape((-1,) + x.shape[-3:]), cond.reshape((-1,) + cond.shape[-3:]))
    return self._split_params(out.reshape(lead + out.shape[1:]))

  def codes(self, x: jax.Array) -> jax.Array:
    """Nearest-code indices of x: [..., H, W, C] -> int32 [..., h, w]."""
    return self.quantizer(self.encode(x))["indices"]

  def lookup(self, indices: jax.Array) -> jax.Array:
    """The code vectors z_q of a code grid: int [..., h, w] -> [..., h, w, D]."""
    return self.quantizer.lookup(indices)

  def decode_codes(self, indices: jax.Array, x: jax.Array | None = None) -> jax.Array:
    """p(x | z_q) parameters for a code grid: int [..., h, w] -> decoder output (see ``decode``)."""
    return self.decode(self.quantizer.lookup(indices), x)

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
    decoded = self.decode(q["z_q"], x)
    return dict(z_e=z_e, indices=q["indices"], log_px_z=self.log_likelihood(x, decoded),
                codebook_loss=jnp.sum(q["codebook_loss"], axis=(-2, -1)),
                commitment_loss=jnp.sum(q["commitment_loss"], axis=(-2, -1)))

  def reconstruct(self, x: jax.Array) -> jax.Array:
    """E[x | z_q(x)] (plain decoder; an autoregressive one draws: ``images_from_codes``)."""
    if self.ar_layers:
      raise ValueError("this VQ-VAE's decoder is autoregressive: reconstruct with "
                       "vqvae.images_from_codes(model, params, model.codes(x), key)")
    return self.mean_image(self.decode_codes(self.codes(x)))


def check_autoregressive(ar_layers: int, kernel_size: int, likelihood: str, image_shape) -> None:
  """Raises ValueError for an autoregressive decoder this module cannot build."""
  if not ar_layers:
    return
  if likelihood not in AR_LIKELIHOODS:
    raise ValueError(f"likelihood={likelihood!r} with an autoregressive decoder (ar_layers={ar_layers}): "
                     f"choose one of {AR_LIKELIHOODS}")
  if image_shape[-1] != 1:
    raise ValueError(f"an autoregressive decoder (ar_layers={ar_layers}) models one-channel images; "
                     f"these have {image_shape[-1]} channels (set ar_layers=0)")
  if kernel_size % 2 == 0:
    raise ValueError(f"ar_kernel_size={kernel_size}: expected an odd size")


def _draw(model: VQVAE, pixel: jax.Array, key: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(a draw of x_i, its mean) [N, C] from ``pixel``, the parameters of p(x_i | x_<i, z_q) at one pixel."""
  if model.likelihood == "bernoulli":
    p = jax.nn.sigmoid(pixel)
    return jax.random.bernoulli(key, p).astype(jnp.float32), p
  levels = jax.random.categorical(key, pixel, axis=-1)
  scale = dist.NUM_LEVELS - 1
  mean = jnp.sum(jax.nn.softmax(pixel, axis=-1) * jnp.arange(dist.NUM_LEVELS), axis=-1) / scale
  return levels.astype(jnp.float32) / scale, mean


@compilation.jit(static_argnames=("model",))
def images_from_codes(model: VQVAE, params, codes: jax.Array, key: jax.Array | None = None) -> jax.Array:
  """Images [N, H, W, C] in [0, 1] for code grids int [N, h, w].

  Plain decoder: E[x | z_q] (``key`` unused). Autoregressive decoder: the
  means of ``draw_images``: at each pixel, the mean of p(x_i | x_<i, z_q)
  given the pixels drawn before it (smooth where the model is unsure, like
  E[x | z_q]).
  """
  if not model.ar_layers:
    return model.apply({"params": params}, codes, method=lambda m, c: m.mean_image(m.decode_codes(c)))
  if key is None:
    raise ValueError("an autoregressive decoder draws its images: pass a key")
  return draw_images(model, params, codes, key)[1]


@compilation.jit(static_argnames=("model",))
def draw_images(model: VQVAE, params, codes: jax.Array, key: jax.Array) -> tuple[jax.Array, jax.Array]:
  """x ~ p(x | z_q) from an autoregressive decoder: (x, means), both [N, H, W, C] in [0, 1].

  One compiled ``fori_loop`` over the pixels in raster order, pixel p drawn
  with the key ``fold_in(key, p)``; ``means`` holds the mean of each
  p(x_i | x_<i, z_q). Each step evaluates the head on the window of rows
  i - r .. i, columns j - r .. j + r (r = ``model.reach``) around pixel
  (i, j), which is all it can see, so a step costs a window, not an image.
  """
  if not model.ar_layers:
    raise ValueError("draw_images needs an autoregressive decoder (ar_layers > 0)")
  apply = lambda *a, method: model.apply({"params": params}, *a, method=method)
  n = codes.shape[0]
  (height, width, channels), r = model.image_shape, model.reach
  cond = apply(apply(codes, method=VQVAE.lookup), method=VQVAE.condition)
  pad = ((0, 0), (r, 0), (r, r), (0, 0))
  cond = jnp.pad(cond, pad)
  valid = jnp.pad(jnp.ones((1, height, width, 1), cond.dtype), pad)
  window = (r + 1, 2 * r + 1)

  def body(p, carry):
    x, mean = carry
    i, j = p // width, p % width
    xs = jax.lax.dynamic_slice(x, (0, i, j, 0), (n,) + window + (channels,))
    cs = jax.lax.dynamic_slice(cond, (0, i, j, 0), (n,) + window + (cond.shape[-1],))
    vs = jax.lax.dynamic_slice(valid, (0, i, j, 0), (1,) + window + (1,))
    at = apply(xs, cs, vs, method=VQVAE.head_params)[:, r, r]  # [N, C] (x 256)
    value, m = _draw(model, at, jax.random.fold_in(key, p))
    return x.at[:, i + r, j + r].set(value), mean.at[:, i, j].set(m)

  x0 = jnp.zeros((n, height + r, width + 2 * r, channels), jnp.float32)
  mean0 = jnp.zeros((n, height, width, channels), jnp.float32)
  x, mean = jax.lax.fori_loop(0, height * width, body, (x0, mean0))
  return x[:, r:, r:r + width], mean


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
