"""Gated PixelCNN prior over code grids (van den Oord et al. 2016, "Conditional Image Generation
with PixelCNN Decoders"), and ancestral sampling in one compiled loop.

p(z) = prod_i p(z_i | z_<i) over the positions of an h x w grid in raster
order, each factor a K-way softmax. Two stacks of masked convolutions
(``layers.Conv`` with ``kernel_mask``) keep it causal with no blind spot:

* vertical stack, k x k kernels: the first layer sees only rows above
  (mask type A: rows < centre), later layers rows <= centre of a stack that
  already sees only rows above, so v at (i, j) depends on rows < i, over a
  width that grows by k // 2 columns a layer;
* horizontal stack, 1 x k kernels: the first layer sees the columns left of
  (i, j) (type A), later layers columns <= j (type B) of a stack that sees only
  earlier positions, plus a 1x1 link from the vertical stack at (i, j);
* each layer is gated, tanh(a) * sigmoid(b), with an optional class embedding
  added to a and b; the horizontal stack is residual after the first layer
  (the first layer's input holds the current code, which must not leak).

Grids are int32 [..., h, w] with values in [0, K).
"""

from __future__ import annotations

import functools
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vae_jax import compilation
from vae_jax import data as data_lib
from vae_jax import layers


def vertical_mask(k: int, first: bool) -> np.ndarray:
  """[k, k, 1, 1]: rows above the centre (first layer) or up to and including it."""
  mask = np.zeros((k, k, 1, 1), np.float32)
  mask[: k // 2 + (0 if first else 1)] = 1.0
  return mask


def horizontal_mask(k: int, first: bool) -> np.ndarray:
  """[1, k, 1, 1]: columns left of the centre (first layer) or up to and including it."""
  mask = np.zeros((1, k, 1, 1), np.float32)
  mask[:, : k // 2 + (0 if first else 1)] = 1.0
  return mask


def _gate(a: jax.Array) -> jax.Array:
  x, y = jnp.split(a, 2, axis=-1)
  return jnp.tanh(x) * jax.nn.sigmoid(y)


def gated_stack(x: jax.Array, *, features: int, num_layers: int, kernel_size: int,
                condition=None, valid: jax.Array | None = None) -> jax.Array:
  """The causal gated layers (vertical + horizontal stacks); returns the horizontal stack's output.

  Call it inside a compact method: its convolutions become parameters of the
  calling module, named ``v_conv_l``, ``h_conv_l``, ``v_to_h_l``, ``h_out_l``.

  Args:
    x: [N, H, W, F] embedded inputs; the output at (i, j) depends on x at
      positions before (i, j) in raster order only, within ``num_layers *
      (kernel_size // 2)`` rows above and columns either side.
    features: F, the width of both stacks.
    condition: optional ``condition(l, stack)`` -> a term added to the 2F
      pre-activations of layer l of ``stack`` ("v" or "h"), broadcastable to
      [N, H, W, 2F] (a class embedding, a feature map of a latent).
    valid: optional [N, H, W, 1] mask of the positions inside the image when x
      is a window that overhangs it: activations there are zeroed after every
      layer, as the zero padding of the whole image would have them.
  """
  f, k = features, kernel_size
  v = h = x
  for l in range(num_layers):
    first = l == 0
    v_pre = layers.Conv(2 * f, (k, k), kernel_mask=jnp.asarray(vertical_mask(k, first)),
                        name=f"v_conv_{l}")(v)
    h_pre = layers.Conv(2 * f, (1, k), kernel_mask=jnp.asarray(horizontal_mask(k, first)),
                        name=f"h_conv_{l}")(h)
    h_pre = h_pre + layers.Conv(2 * f, (1, 1), name=f"v_to_h_{l}")(v_pre)
    if condition is not None:
      v_pre = v_pre + condition(l, "v")
      h_pre = h_pre + condition(l, "h")
    v = _gate(v_pre)
    h_new = layers.Conv(f, (1, 1), name=f"h_out_{l}")(_gate(h_pre))
    h = h_new if first else h + h_new
    if valid is not None:
      v, h = v * valid, h * valid
  return h


class GatedPixelCNN(nn.Module):
  """Autoregressive prior over code grids of shape ``grid_shape`` with ``num_codes`` values.

  Attributes:
    num_codes: K.
    grid_shape: (h, w).
    features: channels of both stacks.
    num_layers: gated layers (receptive field: num_layers rows up, num_layers * (k // 2) columns).
    kernel_size: k (odd).
    output_features: width of the 1x1 output network.
    num_classes: 0 for an unconditional prior, else the number of class labels.
  """
  num_codes: int
  grid_shape: Sequence[int]
  features: int = 32
  num_layers: int = 8
  kernel_size: int = 3
  output_features: int = 64
  num_classes: int = 0

  def check_codes(self, codes: jax.Array) -> None:
    """Raises DataError unless codes is an integer array [..., h, w] of this prior's grid."""
    shape = tuple(getattr(codes, "shape", ()))
    if len(shape) < 2 or shape[-2:] != tuple(self.grid_shape):
      raise data_lib.DataError(
          f"code grids have shape {shape}; this prior models grids [..., {self.grid_shape[0]}, "
          f"{self.grid_shape[1]}] (K = {self.num_codes}): was it trained on another VQ-VAE?")
    if not jnp.issubdtype(codes.dtype, jnp.integer):
      raise data_lib.DataError(f"code grids have dtype {codes.dtype}; expected integer codes in "
                               f"[0, {self.num_codes})")

  def _condition(self, label, name: str):
    if self.num_classes == 0:
      return 0.0
    if label is None:
      raise ValueError(f"this prior is class-conditional ({self.num_classes} classes): pass a label")
    onehot = jax.nn.one_hot(label, self.num_classes)
    return nn.Dense(2 * self.features, use_bias=False, name=name)(onehot)[..., None, None, :]

  @nn.compact
  def logits_from_onehot(self, onehot: jax.Array, label: jax.Array | None = None) -> jax.Array:
    """Logits of p(z_i | z_<i) at every position from one-hot grids [..., h, w, K] -> [..., h, w, K].

    The one-hot form makes the map differentiable in its input, so causality
    can be checked with gradients.
    """
    h_, w_ = self.grid_shape
    lead = onehot.shape[:-3]
    x = onehot.reshape((-1, h_, w_, self.num_codes))
    if label is not None:
      label = jnp.broadcast_to(label, lead).reshape(-1)
    x = nn.Dense(self.features, use_bias=False, name="embed")(x)
    cond = lambda l, stack: self._condition(label, f"cond_{stack}_{l}")
    h = gated_stack(x, features=self.features, num_layers=self.num_layers,
                    kernel_size=self.kernel_size, condition=cond)
    out = layers.Conv(self.output_features, (1, 1), name="out_hidden")(jax.nn.relu(h))
    logits = layers.Conv(self.num_codes, (1, 1), name="out_logits")(jax.nn.relu(out))
    return logits.reshape(lead + (h_, w_, self.num_codes))

  def __call__(self, codes: jax.Array, label: jax.Array | None = None) -> jax.Array:
    """Logits [..., h, w, K] of every p(z_i | z_<i) for grids ``codes`` int [..., h, w]."""
    self.check_codes(codes)
    return self.logits_from_onehot(jax.nn.one_hot(codes, self.num_codes), label)

  def log_prob(self, codes: jax.Array, label: jax.Array | None = None) -> jax.Array:
    """log p(codes) = sum_i log p(z_i | z_<i) in nats: int [..., h, w] -> [...]."""
    logp = jax.nn.log_softmax(self(codes, label), axis=-1)
    per_position = jnp.take_along_axis(logp, codes[..., None].astype(jnp.int32), axis=-1)[..., 0]
    return jnp.sum(per_position, axis=(-2, -1))


@functools.partial(jax.jit, static_argnames="model")
def init_params(model: GatedPixelCNN, key: jax.Array) -> dict:
  """Parameters of ``model`` from an explicit key (one compiled program per model, not op by op)."""
  codes = jnp.zeros(tuple(model.grid_shape), jnp.int32)
  label = jnp.zeros((), jnp.int32) if model.num_classes else None
  return model.init({"params": key}, codes, label)["params"]


@compilation.jit(static_argnames=("model", "num_samples", "temperature"))
def sample(model: GatedPixelCNN, params, key: jax.Array, num_samples: int,
           labels: jax.Array | None = None, temperature: float = 1.0) -> jax.Array:
  """Ancestral samples z ~ p(z): int32 [num_samples, h, w], one compiled ``fori_loop`` over positions.

  Position p = i * w + j is drawn from the logits of a full forward pass on
  the grid so far with the key ``fold_in(key, p)``; codes not yet drawn are 0
  and, by causality, do not affect it. ``labels`` [num_samples] (int) for a
  class-conditional prior.
  """
  h, w = model.grid_shape

  def body(p, codes):
    i, j = p // w, p % w
    logits = model.apply({"params": params}, codes, labels)
    row = jax.lax.dynamic_index_in_dim(logits, i, axis=1, keepdims=False)
    at = jax.lax.dynamic_index_in_dim(row, j, axis=1, keepdims=False)  # [N, K]
    new = jax.random.categorical(jax.random.fold_in(key, p), at / temperature, axis=-1)
    return codes.at[:, i, j].set(new.astype(jnp.int32))

  return jax.lax.fori_loop(0, h * w, body, jnp.zeros((num_samples, h, w), jnp.int32))
