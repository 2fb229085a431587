"""The linear-Gaussian model against scipy and the joint-Gaussian conditioning formula."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from vae_jax import distributions as dist
from vae_jax import linear_gaussian as lgm

D, LATENT, SIGMA = 5, 3, 0.7


def general_model():
  """W with correlated columns: the posterior covariance is not diagonal."""
  rng = np.random.default_rng(0)
  w, b = rng.normal(size=(D, LATENT)), rng.normal(size=D)
  return lgm.LinearGaussian(jnp.asarray(w, jnp.float32), jnp.asarray(b, jnp.float32), SIGMA), w, b


def test_log_marginal_and_log_joint_match_scipy():
  lg, w, b = general_model()
  x = np.random.default_rng(1).normal(size=(2, 3, D))
  ref = stats.multivariate_normal(b, w @ w.T + SIGMA**2 * np.eye(D)).logpdf(x)
  np.testing.assert_allclose(lgm.log_marginal(lg, jnp.asarray(x, jnp.float32)), ref, rtol=1e-5)
  z = np.random.default_rng(2).normal(size=(2, 3, LATENT))
  ref_joint = (stats.norm(z @ w.T + b, SIGMA).logpdf(x).sum(-1) + stats.norm.logpdf(z).sum(-1))
  np.testing.assert_allclose(lgm.log_joint(lg, jnp.asarray(x, jnp.float32), jnp.asarray(z, jnp.float32)),
                             ref_joint, rtol=1e-5)


def test_posterior_matches_gaussian_conditioning():
  lg, w, b = general_model()
  x = np.random.default_rng(3).normal(size=(4, D))
  # Joint of (z, x): Cov(x) = W W^T + s^2 I, Cov(z, x) = W^T, so
  # p(z | x) = N(W^T C^{-1} (x - b), I - W^T C^{-1} W).
  c_inv = np.linalg.inv(w @ w.T + SIGMA**2 * np.eye(D))
  mean, cov = lgm.posterior(lg, jnp.asarray(x, jnp.float32))
  np.testing.assert_allclose(mean, (x - b) @ c_inv @ w, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(cov, np.eye(LATENT) - w.T @ c_inv @ w, rtol=1e-4, atol=1e-5)


def test_exact_elbo_equals_log_px_at_the_posterior_and_matches_monte_carlo_elsewhere():
  lg = lgm.orthogonal(jax.random.key(0), D, [1.5, 0.9, 0.4], sigma=SIGMA)
  x = lgm.sample(lg, jax.random.key(1), 3)
  mean, cov = lgm.posterior(lg, x)
  np.testing.assert_allclose(cov, np.diag(np.diag(cov)), atol=1e-5)  # diagonal for orthogonal W
  logvar = jnp.log(jnp.diag(cov))
  np.testing.assert_allclose(lgm.elbo(lg, x, mean, logvar), lgm.log_marginal(lg, x), rtol=1e-5)
  q_mean, q_logvar = mean + 0.5, logvar + 0.3
  exact = lgm.elbo(lg, x, q_mean, q_logvar)
  assert np.all(exact < lgm.log_marginal(lg, x) - 0.1)
  z = dist.gaussian_sample(jax.random.key(2), q_mean, q_logvar, (200_000,))  # [N, 3, d]
  mc = jnp.mean(lgm.log_joint(lg, x, z) - dist.gaussian_log_prob(z, q_mean, q_logvar), axis=0)
  np.testing.assert_allclose(mc, exact, atol=0.02)


def test_vae_params_encode_the_exact_posterior_plus_shifts():
  lg = lgm.orthogonal(jax.random.key(3), D, [1.2, 0.5, 0.3], sigma=SIGMA)
  x = lgm.sample(lg, jax.random.key(4), 2)
  model = lgm.vae(lg)
  shift = jnp.array([0.1, -0.2, 0.3])
  params = lgm.vae_params(lg, mean_shift=shift, logvar_shift=0.5)
  q_mean, q_logvar = model.apply({"params": params}, x.reshape(2, D, 1, 1), method=model.encode)
  mean, cov = lgm.posterior(lg, x)
  np.testing.assert_allclose(q_mean, mean + shift, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(q_logvar, jnp.broadcast_to(jnp.log(jnp.diag(cov)) + 0.5, q_logvar.shape),
                             rtol=1e-5, atol=1e-5)
  decoded = model.apply({"params": params}, jnp.ones((LATENT,)), method=model.decode)
  np.testing.assert_allclose(decoded.reshape(D), lg.w.sum(axis=1) + lg.b, rtol=1e-5, atol=1e-6)


def test_vae_params_refuses_a_non_diagonal_posterior():
  with pytest.raises(ValueError, match="not diagonal"):
    lgm.vae_params(general_model()[0])


def test_orthogonal_rejects_more_scales_than_dimensions():
  with pytest.raises(ValueError, match="data_dim=2"):
    lgm.orthogonal(jax.random.key(0), 2, [1.0, 1.0, 1.0], sigma=1.0)
