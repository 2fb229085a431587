"""Fast convolutions against flax's (lax.conv) reference, values and gradients."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vae_jax import layers

CASES = [  # kernel, stride, padding, height
    (3, 2, "SAME", 7), (3, 2, "SAME", 14), (4, 2, "SAME", 7), (4, 2, ((1, 1), (1, 1)), 8),
    (3, 1, "SAME", 5), (3, 1, "VALID", 5), (4, 2, "VALID", 7), (1, 1, "SAME", 4),
    (5, 2, ((2, 1), (0, 3)), 9), (2, 3, "VALID", 4),  # k < s: a transposed phase without taps
]
FEATURES = (5, 2)  # output channels: more than the input's 3 (patches), and fewer (conv_columns)


@pytest.mark.parametrize("ours,ref", [(layers.Conv, nn.Conv), (layers.ConvTranspose, nn.ConvTranspose)])
@pytest.mark.parametrize("k,s,pad,h", CASES)
@pytest.mark.parametrize("features", FEATURES)
def test_patches_match_flax(ours, ref, k, s, pad, h, features):
  x = jax.random.normal(jax.random.key(0), (2, h, h + 1, 3))
  reference = ref(features, (k, k), strides=(s, s), padding=pad)
  params = reference.init(jax.random.key(1), x)
  fast = ours(features, (k, k), strides=(s, s), padding=pad, implementation="patches")
  np.testing.assert_allclose(fast.apply(params, x), reference.apply(params, x), atol=2e-5)

  def loss(apply, p, x):
    return jnp.sum(jnp.sin(apply(p, x)))

  g_ref = jax.grad(loss, argnums=(1, 2))(reference.apply, params, x)
  g_fast = jax.grad(loss, argnums=(1, 2))(fast.apply, params, x)
  for a, b in zip(jax.tree.leaves(g_fast), jax.tree.leaves(g_ref)):
    np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-4)


def test_kernel_mask_zeroes_taps():
  x = jax.random.normal(jax.random.key(0), (1, 5, 5, 2))
  mask = np.ones((3, 3, 1, 1), np.float32)
  mask[2, :] = 0  # the bottom row of taps sees nothing
  conv = layers.Conv(4, (3, 3), kernel_mask=jnp.asarray(mask), implementation="patches")
  params = conv.init(jax.random.key(1), x)
  # Output row 0 reads input rows -1, 0, 1; the masked tap is row 1, so it must not matter.
  grad = jax.grad(lambda x: conv.apply(params, x)[0, 0, 2].sum())(x)
  assert np.all(np.asarray(grad[0, 1]) == 0) and np.any(np.asarray(grad[0, 0]) != 0)


def test_unknown_implementation_is_named():
  with pytest.raises(ValueError, match="implementation='cudnn'"):
    layers.Conv(2, implementation="cudnn").init(jax.random.key(0), jnp.zeros((1, 4, 4, 1)))
