import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads
from scipy import stats

from vae_jax import distributions as dist

jax.config.update("jax_enable_x64", False)


def _rand(key, shape, scale=1.0):
  return scale * jax.random.normal(jax.random.key(key), shape)


def test_kl_closed_form_matches_direct_formula_and_monte_carlo():
  mean, logvar = _rand(0, (5,)), _rand(1, (5,), 0.8)
  kl = dist.kl_gaussian_standard_normal(mean, logvar)
  # Direct formula, per dimension: log(s2/s1) + (s1^2 + (m1 - m2)^2) / (2 s2^2) - 1/2 with N(0, 1).
  s1 = np.exp(0.5 * np.asarray(logvar, np.float64))
  direct = np.sum(-np.log(s1) + (s1**2 + np.asarray(mean, np.float64) ** 2) / 2 - 0.5)
  np.testing.assert_allclose(kl, direct, rtol=1e-5)
  # Monte Carlo: E_q[log q - log p] with 400k draws; standard error ~ 0.004.
  z = dist.gaussian_sample(jax.random.key(2), mean, logvar, (400_000,))
  mc = jnp.mean(dist.gaussian_log_prob(z, mean, logvar) - dist.standard_normal_log_prob(z))
  assert abs(float(mc) - float(kl)) < 0.03
  assert float(kl) > 0


def test_kl_is_zero_only_at_the_prior():
  assert float(dist.kl_gaussian_standard_normal(jnp.zeros(3), jnp.zeros(3))) == 0.0
  assert float(dist.kl_gaussian_standard_normal(jnp.full(3, 1e-2), jnp.zeros(3))) > 0.0


def test_gaussian_log_prob_against_scipy():
  x, mean, logvar = _rand(3, (4, 6)), _rand(4, (4, 6)), _rand(5, (4, 6))
  ours = dist.gaussian_log_prob(x, mean, logvar)
  ref = stats.norm.logpdf(x, loc=mean, scale=np.exp(0.5 * np.asarray(logvar))).sum(-1)
  np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-4)
  np.testing.assert_allclose(dist.standard_normal_log_prob(x), stats.norm.logpdf(x).sum(-1), rtol=1e-5)


def test_bernoulli_log_prob_against_scipy_and_stable_at_extremes():
  x = (jax.random.uniform(jax.random.key(6), (2, 3, 3, 1)) > 0.5).astype(jnp.float32)
  logits = _rand(7, (2, 3, 3, 1), 3.0)
  ref = stats.bernoulli.logpmf(np.asarray(x), 1 / (1 + np.exp(-np.asarray(logits, np.float64))))
  np.testing.assert_allclose(dist.bernoulli_log_prob(x, logits), ref.sum((1, 2, 3)), rtol=1e-5)
  big = jnp.array([1e4, -1e4, 50.0, -50.0]).reshape(1, 2, 2, 1)
  target = jnp.array([1.0, 0.0, 0.0, 1.0]).reshape(1, 2, 2, 1)
  lp = dist.bernoulli_log_prob(target, big)
  np.testing.assert_allclose(lp, [-100.0], rtol=1e-5)  # only the +-50 terms cost (50 nats each)
  g = jax.grad(lambda l: dist.bernoulli_log_prob(target, l).sum())(big)
  assert np.all(np.isfinite(g))


def test_softplus_against_log1p_exp_in_float64_with_sigmoid_gradient():
  x = np.array([-1e4, -100.0, -30.0, -1.0, -1e-3, 0.0, 1e-3, 1.0, 30.0, 100.0, 1e4], np.float32)
  want = np.logaddexp(0.0, x.astype(np.float64))  # log(1 + e^x), exact in float64
  np.testing.assert_allclose(dist.softplus(jnp.asarray(x)), want, rtol=1e-6, atol=1e-30)
  grad = jax.vmap(jax.grad(dist.softplus))(jnp.asarray(x))
  np.testing.assert_allclose(grad, 1 / (1 + np.exp(-x.astype(np.float64))), rtol=1e-6, atol=1e-30)
  assert float(jax.grad(dist.softplus)(0.0)) == 0.5  # not a one-sided derivative of max(x, 0)
  check_grads(dist.softplus, (jnp.linspace(-5.0, 5.0, 7),), order=2, modes=["fwd", "rev"])


def test_bernoulli_log_prob_event_shapes_agree():
  """Flattening the event before the sum changes nothing: image-shaped, flat and broadcast x."""
  key_x, key_l = jax.random.split(jax.random.key(3))
  x = jax.random.bernoulli(key_x, 0.3, (4, 5, 3)).astype(jnp.float32)
  logits = 3 * jax.random.normal(key_l, (2, 4, 5, 3))
  image = dist.bernoulli_log_prob(x, logits, event_ndim=3)
  flat = dist.bernoulli_log_prob(x.reshape(-1), logits.reshape(2, -1), event_ndim=1)
  per_pixel = dist.bernoulli_log_prob(x, logits, event_ndim=0)
  assert image.shape == (2,) and per_pixel.shape == (2, 4, 5, 3)
  np.testing.assert_allclose(image, flat, rtol=1e-6)
  np.testing.assert_allclose(image, per_pixel.sum((1, 2, 3)), rtol=1e-6)


@pytest.mark.parametrize("log_sigma", [0.0, -1.3, np.log(np.linspace(0.1, 2, 12)).reshape(2, 3, 2)])
def test_gaussian_likelihood_fixed_and_per_pixel_sigma_against_scipy(log_sigma):
  x, mean = _rand(8, (2, 3, 2)), _rand(9, (2, 3, 2))
  ours = dist.gaussian_likelihood_log_prob(x, mean, log_sigma)
  ref = stats.norm.logpdf(x, loc=mean, scale=np.exp(log_sigma)).sum()
  np.testing.assert_allclose(ours, ref, rtol=1e-5)


def test_fixed_sigma_likelihood_is_scaled_mse_plus_constant():
  x, m1, m2 = _rand(10, (3, 3, 1)), _rand(11, (3, 3, 1)), _rand(12, (3, 3, 1))
  diff = dist.gaussian_likelihood_log_prob(x, m1, 0.0) - dist.gaussian_likelihood_log_prob(x, m2, 0.0)
  mse = jnp.sum((x - m2) ** 2) - jnp.sum((x - m1) ** 2)
  np.testing.assert_allclose(diff, 0.5 * mse, rtol=1e-5)


def test_reparameterization_gradients_reach_mean_and_logvar():
  mean, logvar = _rand(13, (4,)), _rand(14, (4,))
  key = jax.random.key(15)
  f = lambda m, lv: jnp.sum(dist.gaussian_sample(key, m, lv) ** 2)
  gm, glv = jax.grad(f, argnums=(0, 1))(mean, logvar)
  eps = jax.random.normal(key, mean.shape)
  z = mean + jnp.exp(0.5 * logvar) * eps
  np.testing.assert_allclose(gm, 2 * z, rtol=1e-5)
  np.testing.assert_allclose(glv, 2 * z * eps * 0.5 * jnp.exp(0.5 * logvar), rtol=1e-5)
  assert np.all(np.abs(glv) > 0)
  check_grads(lambda m, lv: dist.gaussian_sample(key, m, lv), (mean, logvar), order=2, atol=1e-2, rtol=1e-2)
  check_grads(dist.kl_gaussian_standard_normal, (mean, logvar), order=2, atol=1e-2, rtol=1e-2)


def test_same_key_same_sample_new_key_new_sample():
  mean, logvar = jnp.zeros(8), jnp.zeros(8)
  a = dist.gaussian_sample(jax.random.key(1), mean, logvar)
  b = dist.gaussian_sample(jax.random.key(1), mean, logvar)
  c = dist.gaussian_sample(jax.random.key(2), mean, logvar)
  np.testing.assert_array_equal(a, b)
  assert not np.allclose(a, c)


def test_functions_agree_under_jit_and_vmap():
  mean, logvar = _rand(16, (6, 5)), _rand(17, (6, 5))
  np.testing.assert_allclose(jax.jit(dist.kl_gaussian_standard_normal)(mean, logvar),
                             jax.vmap(dist.kl_gaussian_standard_normal)(mean, logvar), rtol=1e-6)
