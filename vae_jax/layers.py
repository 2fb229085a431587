"""Convolutions that are fast on every backend.

XLA's CPU convolution is several times slower than the same convolution
written as patches + one matmul; on GPU and TPU the native convolution wins.
``Conv`` and ``ConvTranspose`` hold the same parameters as ``flax.linen.Conv``
and ``flax.linen.ConvTranspose`` (``kernel`` [kh, kw, in, out], ``bias``
[out]) and compute the same function, choosing the implementation per backend
at trace time (``implementation="auto"``), so checkpoints move between them.

Images are NHWC with one batch axis in front: x [N, H, W, C].
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

Padding = Union[str, Sequence[tuple[int, int]]]
IMPLEMENTATIONS = ("auto", "xla", "patches")


def _use_patches(implementation: str) -> bool:
  if implementation not in IMPLEMENTATIONS:
    raise ValueError(f"implementation={implementation!r}: choose one of {IMPLEMENTATIONS}")
  if implementation == "auto":
    return jax.default_backend() == "cpu"
  return implementation == "patches"


def _pads(padding: Padding, in_hw, kernel_hw, strides) -> list[tuple[int, int]]:
  if isinstance(padding, str):
    return list(lax.padtype_to_pads(in_hw, kernel_hw, strides, padding.upper()))
  return [tuple(int(p) for p in pair) for pair in padding]


def conv_patches(x: jax.Array, kernel: jax.Array, strides=(1, 1), padding: Padding = "SAME") -> jax.Array:
  """Cross-correlation as patches + one matmul (the same function as ``lax.conv``).

  Args:
    x: [N, H, W, Cin].
    kernel: [kh, kw, Cin, Cout].
    strides: (sh, sw).
    padding: "SAME", "VALID" or ((lo, hi), (lo, hi)).

  Returns:
    [N, Ho, Wo, Cout].
  """
  kh, kw, cin, cout = kernel.shape
  sh, sw = strides
  (pt, pb), (pl, pr) = _pads(padding, x.shape[1:3], (kh, kw), strides)
  x = jnp.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
  ho = (x.shape[1] - kh) // sh + 1
  wo = (x.shape[2] - kw) // sw + 1
  taps = [x[:, i:i + sh * (ho - 1) + 1:sh, j:j + sw * (wo - 1) + 1:sw, :]
          for i in range(kh) for j in range(kw)]
  patches = jnp.concatenate(taps, axis=-1) if len(taps) > 1 else taps[0]
  return patches @ kernel.reshape(kh * kw * cin, cout)


def _transpose_pads(padding: Padding, kernel_hw, strides) -> list[tuple[int, int]]:
  """The padding of the dilated input that ``lax.conv_transpose`` uses."""
  if not isinstance(padding, str):
    return [tuple(int(p) for p in pair) for pair in padding]
  pads = []
  for k, s in zip(kernel_hw, strides):
    if padding.upper() == "SAME":
      total = k + s - 2
      lo = k - 1 if s > k - 1 else -(-total // 2)
    elif padding.upper() == "VALID":
      total = k + s - 2 + max(k - s, 0)
      lo = k - 1
    else:
      raise ValueError(f"padding={padding!r}: use 'SAME', 'VALID' or explicit pairs")
    pads.append((lo, total - lo))
  return pads


def conv_transpose_patches(x: jax.Array, kernel: jax.Array, strides=(1, 1),
                           padding: Padding = "SAME") -> jax.Array:
  """``lax.conv_transpose`` (transpose_kernel=False) as one matmul plus overlap-add.

  Each input pixel's [kh * kw * Cout] column comes from one matmul; the
  columns are added into the output at stride ``strides`` (no multiply by the
  zeros of a dilated input).

  Args:
    x: [N, H, W, Cin].
    kernel: [kh, kw, Cin, Cout].

  Returns:
    [N, Ho, Wo, Cout] with Ho = (H - 1) * sh + 1 + pad_lo + pad_hi - kh + 1.
  """
  n, h, w, cin = x.shape
  kh, kw, _, cout = kernel.shape
  sh, sw = strides
  (pt, pb), (pl, pr) = _transpose_pads(padding, (kh, kw), strides)
  cols = x @ kernel.transpose(2, 0, 1, 3).reshape(cin, kh * kw * cout)
  cols = cols.reshape(n, h, w, kh, kw, cout)
  # Tap (i, j) of input pixel (a, b) lands at u = s * a + (k - 1 - i) of the
  # full output, which has (H - 1) * s + k rows.
  full_h, full_w = (h - 1) * sh + kh, (w - 1) * sw + kw
  out = jnp.zeros((n, full_h, full_w, cout), cols.dtype)
  zero = jnp.zeros((), cols.dtype)
  for i in range(kh):
    for j in range(kw):
      ui, uj = kh - 1 - i, kw - 1 - j
      out = out + lax.pad(cols[:, :, :, i, j, :], zero,
                          ((0, 0, 0), (ui, full_h - ui - (h - 1) * sh - 1, sh - 1),
                           (uj, full_w - uj - (w - 1) * sw - 1, sw - 1), (0, 0, 0)))
  # Output row o is full row o + (k - 1 - pad_lo); negative pads crop.
  ho = (h - 1) * sh + 1 + pt + pb - kh + 1
  wo = (w - 1) * sw + 1 + pl + pr - kw + 1
  top, left = kh - 1 - pt, kw - 1 - pl
  return lax.pad(out, zero, ((0, 0, 0), (-top, ho + top - full_h, 0),
                             (-left, wo + left - full_w, 0), (0, 0, 0)))


class Conv(nn.Module):
  """``nn.Conv`` (NHWC, one batch axis) with the per-backend implementation.

  Attributes:
    kernel_mask: optional array broadcastable to the kernel [kh, kw, in, out],
      multiplied into it (masked convolutions for autoregressive models).
  """
  features: int
  kernel_size: Sequence[int] = (3, 3)
  strides: Sequence[int] = (1, 1)
  padding: Padding = "SAME"
  use_bias: bool = True
  kernel_mask: Optional[jax.Array] = None
  implementation: str = "auto"
  kernel_init: nn.initializers.Initializer = nn.initializers.lecun_normal()

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kh, kw = self.kernel_size
    kernel = self.param("kernel", self.kernel_init, (kh, kw, x.shape[-1], self.features))
    if self.kernel_mask is not None:
      kernel = kernel * self.kernel_mask
    strides = tuple(self.strides)
    if _use_patches(self.implementation):
      y = conv_patches(x, kernel, strides, self.padding)
    else:
      padding = self.padding if isinstance(self.padding, str) else [tuple(p) for p in self.padding]
      y = lax.conv_general_dilated(x, kernel, strides, padding,
                                   dimension_numbers=("NHWC", "HWIO", "NHWC"))
    if self.use_bias:
      y = y + self.param("bias", nn.initializers.zeros_init(), (self.features,))
    return y


class ConvTranspose(nn.Module):
  """``nn.ConvTranspose`` (NHWC, one batch axis) with the per-backend implementation."""
  features: int
  kernel_size: Sequence[int] = (3, 3)
  strides: Sequence[int] = (1, 1)
  padding: Padding = "SAME"
  use_bias: bool = True
  implementation: str = "auto"
  kernel_init: nn.initializers.Initializer = nn.initializers.lecun_normal()

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kh, kw = self.kernel_size
    kernel = self.param("kernel", self.kernel_init, (kh, kw, x.shape[-1], self.features))
    strides = tuple(self.strides)
    if _use_patches(self.implementation):
      y = conv_transpose_patches(x, kernel, strides, self.padding)
    else:
      y = lax.conv_transpose(x, kernel, strides, self.padding,
                             dimension_numbers=("NHWC", "HWIO", "NHWC"))
    if self.use_bias:
      y = y + self.param("bias", nn.initializers.zeros_init(), (self.features,))
    return y
