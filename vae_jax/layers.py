"""Convolutions that are fast on every backend.

XLA's CPU convolution is several times slower than the same convolution
written as patches + one matmul; on GPU and TPU the native convolution wins.
On CPU, a convolution is patches + one matmul (``conv_patches``), or for
stride 1 with fewer output than input channels, one matmul then a shift-add of
its columns (``_conv_columns``: smaller arrays); a transposed convolution is
one patches matmul per output phase (``conv_transpose_patches``). Each form
keeps its gradients to slices, pads and matmuls of the smaller arrays
(``benchmarks/throughput.py --models conv``: the conv VAE step at about 2x
the rate of the earlier forms, one matmul and an overlap-add for a transposed
convolution and patches for every convolution).
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
  if (sh, sw) == (1, 1) and cout < cin:
    return _conv_columns(x, kernel, ((pt, pb), (pl, pr)))
  x = jnp.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
  ho = (x.shape[1] - kh) // sh + 1
  wo = (x.shape[2] - kw) // sw + 1
  taps = [x[:, i:i + sh * (ho - 1) + 1:sh, j:j + sw * (wo - 1) + 1:sw, :]
          for i in range(kh) for j in range(kw)]
  patches = jnp.concatenate(taps, axis=-1) if len(taps) > 1 else taps[0]
  return patches @ kernel.reshape(kh * kw * cin, cout)


def _conv_columns(x: jax.Array, kernel: jax.Array, pads) -> jax.Array:
  """A stride-1 ``conv_patches`` with fewer output than input channels: matmul first, then shift-add.

  Every pixel's [kh * kw * Cout] column of tap outputs comes from one matmul,
  and output pixel o adds tap (i, j)'s column of input pixel o + (i, j) -
  pad_lo. Its arrays hold kh * kw * Cout values per pixel where patches hold
  kh * kw * Cin (a decoder's output layer, 32 channels to 1: 32x fewer).
  """
  n, h, w, cin = x.shape
  kh, kw, _, cout = kernel.shape
  (pt, pb), (pl, pr) = pads
  ho, wo = h + pt + pb - kh + 1, w + pl + pr - kw + 1
  cols = (x @ kernel.transpose(2, 0, 1, 3).reshape(cin, kh * kw * cout)).reshape(n, h, w, kh, kw, cout)
  zero = jnp.zeros((), cols.dtype)
  out = None
  for i in range(kh):
    for j in range(kw):
      # Tap (i, j) of input pixel b feeds output pixel b - i + pad_lo; negative pads crop.
      tap = lax.pad(cols[:, :, :, i, j, :], zero,
                    ((0, 0, 0), (pt - i, ho - h - pt + i, 0), (pl - j, wo - w - pl + j, 0), (0, 0, 0)))
      out = tap if out is None else out + tap
  return out


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
  """``lax.conv_transpose`` (transpose_kernel=False) as one patches matmul per output phase.

  Tap (i, j) of input pixel (a, b) lands at output row s * a + (k - 1 - i):
  only on the rows of one phase, (k - 1 - i) mod s. So each phase (of
  sh * sw) is a stride-1 convolution of the undilated input with that phase's
  taps: shifted copies of x side by side, times those taps' kernels stacked
  (no multiply by the zeros of a dilated input), and the phases are
  interleaved once at the end. Its gradients are slices and matmuls of
  input-sized arrays (an earlier form, one matmul for all taps and an
  overlap-add of their columns, spent most of the conv VAE's step padding
  the columns' gradients).

  Args:
    x: [N, H, W, Cin].
    kernel: [kh, kw, Cin, Cout].

  Returns:
    [N, Ho, Wo, Cout] with Ho = (H - 1) * sh + 1 + pad_lo + pad_hi - kh + 1.
  """
  n, h, w, _ = x.shape
  kh, kw, _, cout = kernel.shape
  sh, sw = strides
  (pt, pb), (pl, pr) = _transpose_pads(padding, (kh, kw), strides)
  # The full output has (H - 1) * s + k rows; phase r holds rows s * q + r,
  # q < Q = H - 1 + ceil(k / s); tap i reads input row q - (k - 1 - i) // s.
  qh, qw = h - 1 + -(-kh // sh), w - 1 + -(-kw // sw)
  zero = jnp.zeros((), x.dtype)
  rows = []
  for ri in range(sh):
    phases = []
    for rj in range(sw):
      taps = [(i, j) for i in range(kh) for j in range(kw)
              if (kh - 1 - i) % sh == ri and (kw - 1 - j) % sw == rj]
      if not taps:  # k < s: rows of this phase get no tap
        phases.append(jnp.zeros((n, qh, qw, cout), jnp.result_type(x, kernel)))
        continue
      shifted = []
      for i, j in taps:
        di, dj = (kh - 1 - i) // sh, (kw - 1 - j) // sw
        shifted.append(lax.pad(x, zero, ((0, 0, 0), (di, qh - h - di, 0), (dj, qw - w - dj, 0),
                                         (0, 0, 0))))
      patches = jnp.concatenate(shifted, axis=-1) if len(shifted) > 1 else shifted[0]
      phases.append(patches @ jnp.concatenate([kernel[i, j] for i, j in taps], axis=0))
    rows.append(jnp.stack(phases, axis=3))  # [N, Qh, Qw, sw, Cout]
  out = jnp.stack(rows, axis=2).reshape(n, qh * sh, qw * sw, cout)
  # Output row o is full row o + (k - 1 - pad_lo); negative pads crop.
  ho = (h - 1) * sh + 1 + pt + pb - kh + 1
  wo = (w - 1) * sw + 1 + pl + pr - kw + 1
  top, left = kh - 1 - pt, kw - 1 - pl
  zero = jnp.zeros((), out.dtype)
  return lax.pad(out, zero, ((0, 0, 0), (-top, ho + top - qh * sh, 0),
                             (-left, wo + left - qw * sw, 0), (0, 0, 0)))


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
