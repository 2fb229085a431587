"""Gated PixelCNN prior: causality (by gradients), normalization (by enumeration), sampling."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vae_jax import data as data_lib
from vae_jax.vq import pixelcnn


pytestmark = pytest.mark.usefixtures("fast_compiling_rng")


def prior(grid=(2, 2), k=3, **kw):
  model = pixelcnn.GatedPixelCNN(num_codes=k, grid_shape=grid, **dict(
      dict(features=6, num_layers=2, output_features=6), **kw))
  return model, pixelcnn.init_params(model, jax.random.key(0))


def all_grids(k, grid):
  n = grid[0] * grid[1]
  return jnp.asarray(list(itertools.product(range(k), repeat=n)), jnp.int32).reshape((-1,) + grid)


def test_logits_depend_on_exactly_the_earlier_positions():
  # 4 layers of 3x3 / 1x3 kernels see the whole 4x4 grid: the dependency pattern
  # must be strictly lower-triangular in raster order (causal) and full below
  # the diagonal (no blind spot), with class conditioning on.
  grid, k = (4, 4), 3
  model, params = prior(grid, k, num_layers=4, num_classes=2)
  onehot = jax.nn.one_hot(jax.random.randint(jax.random.key(1), grid, 0, k), k)
  fn = lambda o: model.apply({"params": params}, o, jnp.int32(1), method=model.logits_from_onehot)
  jac = jax.jit(jax.jacrev(fn))(onehot)  # [4, 4, K, 4, 4, K]
  depends = np.abs(np.asarray(jac)).sum(axis=(2, 5)).reshape(16, 16) > 0
  np.testing.assert_array_equal(depends, np.tril(np.ones((16, 16), bool), k=-1))


def test_probabilities_of_all_81_grids_sum_to_one():
  grids = all_grids(3, (2, 2))
  assert grids.shape == (81, 2, 2)
  model, params = prior(num_classes=2)
  log_p = jax.jit(lambda g, l: model.apply({"params": params}, g, l, method=model.log_prob))
  for label in (0, 1):
    total = jax.nn.logsumexp(log_p(grids, jnp.full((81,), label)))
    np.testing.assert_allclose(total, 0.0, atol=1e-5)
  # ... for trained-looking (large) weights too, not only near-uniform ones.
  sharp = jax.tree.map(lambda w: 4.0 * w, params)
  lp = model.apply({"params": sharp}, grids, jnp.zeros((81,), jnp.int32), method=model.log_prob)
  assert float(jnp.max(lp) - jnp.min(lp)) > 1.0
  np.testing.assert_allclose(jax.nn.logsumexp(lp), 0.0, atol=1e-5)


def test_sampling_is_reproducible_in_range_and_follows_the_prior():
  model, params = prior(k=3)
  params = jax.tree.map(lambda w: 3.0 * w, params)  # a far-from-uniform distribution
  a = pixelcnn.sample(model, params, jax.random.key(0), 4000)
  b = pixelcnn.sample(model, params, jax.random.key(0), 4000)
  c = pixelcnn.sample(model, params, jax.random.key(1), 4000)
  assert a.shape == (4000, 2, 2) and a.dtype == jnp.int32
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)
  assert int(a.min()) >= 0 and int(a.max()) < 3
  # Empirical grid frequencies against the exact probabilities of the 81 grids.
  grids = all_grids(3, (2, 2))
  p = np.exp(np.asarray(model.apply({"params": params}, grids, method=model.log_prob)))
  index = np.asarray(a).reshape(-1, 4) @ np.array([27, 9, 3, 1])
  freq = np.bincount(index, minlength=81) / len(index)
  assert 0.5 * np.abs(freq - p).sum() < 0.06, 0.5 * np.abs(freq - p).sum()  # total variation


def test_class_conditional_sampling_uses_the_labels():
  model, params = prior(k=3, num_classes=2)
  params = jax.tree.map(lambda w: 3.0 * w, params)
  labels = jnp.asarray([0] * 300 + [1] * 300)
  s = np.asarray(pixelcnn.sample(model, params, jax.random.key(0), 600, labels))
  assert s.min() >= 0 and s.max() < 3
  first = [np.bincount(s[lab * 300:(lab + 1) * 300, 0, 0], minlength=3) / 300 for lab in (0, 1)]
  logits = model.apply({"params": params}, jnp.zeros((2, 2, 2), jnp.int32), jnp.asarray([0, 1]))
  expected = np.asarray(jax.nn.softmax(logits[:, 0, 0]))
  np.testing.assert_allclose(first, expected, atol=0.1)


def test_bad_grids_and_missing_labels_are_named():
  model, params = prior((7, 7), k=4)
  with pytest.raises(data_lib.DataError, match=r"shape \(2, 8, 8\).*\[\.\.\., 7, 7\]"):
    model.apply({"params": params}, jnp.zeros((2, 8, 8), jnp.int32), method=model.log_prob)
  with pytest.raises(data_lib.DataError, match="dtype float32"):
    model.apply({"params": params}, jnp.zeros((7, 7), jnp.float32))
  cond, cparams = prior((2, 2), k=3, num_classes=2)
  with pytest.raises(ValueError, match="class-conditional.*pass a label"):
    cond.apply({"params": cparams}, jnp.zeros((2, 2), jnp.int32))


def test_masks():
  np.testing.assert_array_equal(pixelcnn.vertical_mask(3, True)[..., 0, 0], [[1, 1, 1], [0, 0, 0], [0, 0, 0]])
  np.testing.assert_array_equal(pixelcnn.vertical_mask(3, False)[..., 0, 0], [[1, 1, 1], [1, 1, 1], [0, 0, 0]])
  np.testing.assert_array_equal(pixelcnn.horizontal_mask(5, True)[0, :, 0, 0], [1, 1, 0, 0, 0])
  np.testing.assert_array_equal(pixelcnn.horizontal_mask(5, False)[0, :, 0, 0], [1, 1, 1, 0, 0])
