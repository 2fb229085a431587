"""The VQ-VAE's autoregressive decoder: p(x | z_q) = prod_i p(x_i | x_<i, z_q) from a gated PixelCNN head.

Independent truths: gradients (causality), exhaustive sums over every image of
a 2x2 grid (normalisation), the full teacher-forced pass (the windowed draw),
and Monte Carlo frequencies against exact probabilities (the sampler).
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vae_jax.configs.vq import vqvae_mnist
from tests import test_config as tc
from vae_jax.vq import config as vq_config
from vae_jax.vq import vqvae

pytestmark = pytest.mark.usefixtures("fast_compiling_rng")


def ar_model(shape=(6, 6, 1), **kw):
  args = dict(image_shape=shape, num_codes=3, code_dim=4, hidden=8, residual_hidden=4,
              num_residual_blocks=1, num_downsamples=1, ar_layers=2, ar_features=8)
  return vqvae.VQVAE(**{**args, **kw})


def params_of(model, seed=0):
  return vqvae.init_params(model, jax.random.key(seed))


def teacher_forced(model, params, codes, x):
  return model.apply({"params": params}, codes, x, method=lambda m, c, xx: m.decode_codes(c, xx))


@pytest.mark.parametrize("kernel_size", [3, 5])
def test_the_parameters_at_a_pixel_depend_on_exactly_earlier_pixels_within_reach(kernel_size):
  model = ar_model(ar_kernel_size=kernel_size)
  params = params_of(model)
  codes = jnp.asarray([[[0, 1, 2], [2, 1, 0], [1, 1, 1]]])
  x = jax.random.bernoulli(jax.random.key(1), 0.5, (1, 6, 6, 1)).astype(jnp.float32)
  r = model.reach
  assert r == 2 * (kernel_size // 2)
  for i, j in [(0, 0), (0, 3), (2, 2), (5, 5)]:
    g = jax.grad(lambda xx: teacher_forced(model, params, codes, xx)[0, i, j, 0])(x)[0, ..., 0]
    depends = {tuple(p) for p in np.argwhere(np.abs(np.asarray(g)) > 0)}
    before = {(a, b) for a in range(6) for b in range(6) if a * 6 + b < i * 6 + j}
    assert depends <= before, (i, j, sorted(depends - before))
    window = {(a, b) for (a, b) in before if a >= i - r and abs(b - j) <= r}
    assert depends <= window
    if (i, j) != (0, 0):
      assert depends, "the head ignores the pixels before it"


def test_the_likelihood_of_every_2x2_binary_image_sums_to_one_for_each_code():
  model = ar_model(shape=(2, 2, 1), ar_layers=3)
  params = params_of(model)
  images = jnp.asarray(list(itertools.product([0.0, 1.0], repeat=4))).reshape(16, 2, 2, 1)
  for code in range(3):
    codes = jnp.full((16, 1, 1), code, jnp.int32)
    logp = model.apply({"params": params}, images, teacher_forced(model, params, codes, images),
                       method=model.log_likelihood)
    np.testing.assert_allclose(float(jnp.sum(jnp.exp(logp))), 1.0, rtol=1e-5)


@pytest.mark.parametrize("likelihood,kernel_size", [("bernoulli", 3), ("bernoulli", 5), ("categorical", 3)])
def test_the_windowed_draw_matches_the_full_pass_and_is_reproducible(likelihood, kernel_size):
  model = ar_model(likelihood=likelihood, ar_kernel_size=kernel_size)
  params = params_of(model)
  codes = jax.random.randint(jax.random.key(2), (4, 3, 3), 0, 3)
  x, means = vqvae.draw_images(model, params, codes, jax.random.key(3))
  assert x.shape == means.shape == (4, 6, 6, 1)
  levels = np.asarray(x) * (255 if likelihood == "categorical" else 1)
  np.testing.assert_allclose(levels, np.round(levels), atol=1e-4)  # values of the support only
  assert 0 <= levels.min() and levels.max() <= (255 if likelihood == "categorical" else 1)
  # The mean recorded at each step is the full teacher-forced pass on the drawn image.
  full = model.apply({"params": params}, teacher_forced(model, params, codes, x), method=model.mean_image)
  np.testing.assert_allclose(np.asarray(means), np.asarray(full), atol=1e-5)
  again = vqvae.draw_images(model, params, codes, jax.random.key(3))
  np.testing.assert_array_equal(np.asarray(x), np.asarray(again[0]))
  other = vqvae.draw_images(model, params, codes, jax.random.key(4))[0]
  assert not np.array_equal(np.asarray(x), np.asarray(other))
  np.testing.assert_array_equal(np.asarray(vqvae.images_from_codes(model, params, codes, jax.random.key(3))),
                                np.asarray(means))


def test_draws_follow_the_exact_probabilities_of_every_2x2_image():
  model = ar_model(shape=(2, 2, 1), ar_layers=3)
  params = params_of(model, seed=5)
  # Sharpen the head so the 16 probabilities differ a lot.
  params = jax.tree.map(lambda p: 3.0 * p, params)
  images = jnp.asarray(list(itertools.product([0.0, 1.0], repeat=4))).reshape(16, 2, 2, 1)
  codes16 = jnp.full((16, 1, 1), 1, jnp.int32)
  exact = np.exp(np.asarray(model.apply({"params": params}, images,
                                        teacher_forced(model, params, codes16, images),
                                        method=model.log_likelihood), np.float64))
  n = 20000
  x, _ = vqvae.draw_images(model, params, jnp.full((n, 1, 1), 1, jnp.int32), jax.random.key(6))
  index = np.asarray(x).reshape(n, 4).astype(int) @ np.array([8, 4, 2, 1])
  freq = np.bincount(index, minlength=16) / n
  # Within 5 binomial standard errors of the exact probability, pattern by pattern.
  np.testing.assert_array_less(np.abs(freq - exact), 5 * np.sqrt(exact * (1 - exact) / n) + 1e-3)
  assert exact.max() > 3 * exact.min()


def test_a_plain_decoder_is_unchanged_and_the_autoregressive_one_asks_for_what_it_needs():
  plain = ar_model(ar_layers=0)
  params = params_of(plain)
  codes = jnp.zeros((2, 3, 3), jnp.int32)
  a = vqvae.images_from_codes(plain, params, codes)
  b = plain.apply({"params": params}, codes, method=lambda m, c: m.mean_image(m.decode_codes(c)))
  np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  model = ar_model()
  params = params_of(model)
  with pytest.raises(ValueError, match="needs the image x"):
    model.apply({"params": params}, codes, method=model.decode_codes)
  with pytest.raises(ValueError, match="pass a key"):
    vqvae.images_from_codes(model, params, codes)
  with pytest.raises(ValueError, match="images_from_codes"):
    model.apply({"params": params}, jnp.zeros((1, 6, 6, 1)), method=model.reconstruct)
  with pytest.raises(ValueError, match="logistic"):
    params_of(ar_model(likelihood="logistic"))
  with pytest.raises(ValueError, match="3 channels"):
    params_of(ar_model(shape=(6, 6, 3)))


@pytest.mark.parametrize("overrides,match", [
    ({"model.ar_layers": 2, "model.ar_kernel_size": 4}, "odd"),
    ({"model.ar_layers": 1, "data.name": "mnist", "data.mode": "grey", "model.likelihood": "logistic"},
     "logistic"),
    ({"model.ar_layers": 1, "data.name": "cifar10", "data.mode": "grey", "model.likelihood": "categorical"},
     "3 channels"),
])
def test_impossible_autoregressive_configs_are_named(overrides, match):
  cfg = tc.override(vqvae_mnist.get_config(), overrides)
  with pytest.raises(vq_config.ConfigError, match=f"config.model.ar_layers.*{match}"):
    vq_config.validate_vqvae(cfg)
