"""The deterministic networks of the VAE family (Flax linen): dense and convolutional trunks, heads.

Every module maps over any leading axes, so K importance samples cost one
matmul per layer, not K. ``activation="gated"`` gives gated linear units
(Dauphin et al. 2017), as in Tomczak & Welling (2018).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from vae_jax import layers

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "tanh": jnp.tanh,
    "relu": jax.nn.relu,
    "elu": jax.nn.elu,
    "softplus": jax.nn.softplus,
    "gelu": jax.nn.gelu,
    "silu": jax.nn.silu,
    "linear": lambda h: h,  # for linear-Gaussian models with exact likelihoods
    # Gated linear units, h = (W x + b) * sigmoid(V x + c) (Dauphin et al. 2017), as in
    # Tomczak & Welling (2018): layers built with ``activate`` use two maps; the entry is the gate.
    "gated": jax.nn.sigmoid,
}
GATED = "gated"
NETWORKS = ("mlp", "conv")
# The dtype of the MLP networks' matmuls (``VAE.matmul_dtype``); parameters stay float32.
MATMUL_DTYPES = ("float32", "bfloat16")
# Tomczak & Welling clip every Gaussian log-variance to this range (their Hardtanh).
LOGVAR_BOUNDS = (-6.0, 2.0)


def activate(activation: str, make_layer: Callable[[str], nn.Module], h: jax.Array,
             name: str, gate_name: str) -> jax.Array:
  """activation(layer(h)), or layer(h) * sigmoid(gate(h)) for "gated".

  ``make_layer(name)`` builds the (dense or convolutional) layer; the gated
  form builds a second one named ``gate_name``.
  """
  if activation == GATED:
    return make_layer(name)(h) * jax.nn.sigmoid(make_layer(gate_name)(h))
  return ACTIVATIONS[activation](make_layer(name)(h))


class MLP(nn.Module):
  """Dense layers with an activation after each, over any leading axes.

  ``dtype``: the computation dtype (``jnp.bfloat16`` for bf16 matmuls; parameters
  stay float32); None computes in the inputs' and parameters' dtype.
  """
  features: Sequence[int]
  activation: str = "tanh"
  dtype: Any = None

  @nn.compact
  def __call__(self, h: jax.Array) -> jax.Array:
    for i, width in enumerate(self.features):
      h = activate(self.activation, lambda n, w=width: nn.Dense(w, name=n, dtype=self.dtype), h,
                   f"dense_{i}", f"gate_{i}")
    return h


class DenseParams(nn.Module):
  """The parameters of ``nn.Dense(features)`` on inputs of width ``in_features``
  (the same names, shapes and initial values), returned as (kernel, bias)."""
  features: int

  @nn.compact
  def __call__(self, in_features: int) -> tuple[jax.Array, jax.Array]:
    kernel = self.param("kernel", nn.linear.default_kernel_init, (in_features, self.features))
    return kernel, self.param("bias", nn.initializers.zeros_init(), (self.features,))


class GaussianHead(nn.Module):
  """Dense map to the mean and log-variance of a diagonal Gaussian.

  Two ``nn.Dense`` layers' parameters ("mean", "logvar") applied as one matmul
  of the concatenated kernels: the same function and checkpoints, one small
  matmul fewer each way through the network.
  ``logvar_bounds`` (lo, hi) clips the log-variance (Tomczak & Welling clip to [-6, 2]).
  ``dtype``: the matmul's dtype (``jnp.bfloat16`` for bf16); mean and log-variance
  come out float32 either way.
  """
  features: int
  logvar_bounds: tuple[float, float] | None = None
  dtype: Any = None

  @nn.compact
  def __call__(self, h: jax.Array) -> tuple[jax.Array, jax.Array]:
    mean_kernel, mean_bias = DenseParams(self.features, name="mean")(h.shape[-1])
    logvar_kernel, logvar_bias = DenseParams(self.features, name="logvar")(h.shape[-1])
    kernel = jnp.concatenate([mean_kernel, logvar_kernel], axis=1)
    if self.dtype is not None:
      h, kernel = h.astype(self.dtype), kernel.astype(self.dtype)
    out = (h @ kernel).astype(jnp.float32) + jnp.concatenate([mean_bias, logvar_bias])
    mean, logvar = out[..., :self.features], out[..., self.features:]
    if self.logvar_bounds is not None:
      logvar = jnp.clip(logvar, *self.logvar_bounds)
    return mean, logvar


class CodeHead(nn.Module):
  """Dense map to a deterministic code (the autoencoder's encoder output); no variance."""
  features: int

  @nn.compact
  def __call__(self, h: jax.Array) -> tuple[jax.Array, None]:
    return nn.Dense(self.features, name="mean")(h), None


class ConvEncoderTrunk(nn.Module):
  """Stride-2 3x3 convolutions, then flatten: image [..., H, W, C] -> [..., F]."""
  features: Sequence[int]
  activation: str = "relu"
  implementation: str = "auto"  # see vae_jax.layers

  @nn.compact
  def __call__(self, x: jax.Array, image_ndim: int = 3) -> jax.Array:
    lead = x.shape[:-image_ndim]
    h = x.reshape((-1,) + x.shape[-image_ndim:])
    for i, f in enumerate(self.features):
      conv = lambda n, f=f: layers.Conv(f, (3, 3), strides=(2, 2), padding="SAME", name=n,
                                        implementation=self.implementation)
      h = activate(self.activation, conv, h, f"conv_{i}", f"gate_{i}")
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
    height, width, _ = self.image_shape
    scale = 2 ** len(self.features)
    base = (height // scale, width // scale)
    lead = z.shape[:-1]
    feats = tuple(reversed(self.features))
    h = activate(self.activation, lambda n: nn.Dense(base[0] * base[1] * feats[0], name=n), z,
                 "project", "project_gate")
    h = h.reshape((-1,) + base + (feats[0],))
    for i, f in enumerate(feats):
      deconv = lambda n, f=f: layers.ConvTranspose(f, (3, 3), strides=(2, 2), padding="SAME", name=n,
                                                   implementation=self.implementation)
      h = activate(self.activation, deconv, h, f"deconv_{i}", f"deconv_gate_{i}")
    h = layers.Conv(self.out_channels, (3, 3), padding="SAME", name="out",
                    implementation=self.implementation)(h)
    return h.reshape(lead + tuple(self.image_shape[:2]) + (self.out_channels,))
