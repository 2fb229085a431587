"""Losses on a linear-Gaussian model (probabilistic PCA), whose log p(x) is exact.

p(z) = N(0, I_d), p(x|z) = N(W z + b, sigma^2 I_D), so p(x) = N(b, W W^T + sigma^2 I).
With W = U diag(s) (orthonormal U) the true posterior is a diagonal Gaussian,
which our VAE (linear "MLP", fixed-sigma Gaussian likelihood) can represent
exactly (``vae_jax.linear_gaussian``). The exact log p(x) the bounds are checked
against comes from scipy.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from vae_jax import linear_gaussian
from vae_jax import losses

D, LATENT, SIGMA = 4, 2, 0.5


@functools.lru_cache(maxsize=None)
def ppca():
  rng = np.random.default_rng(0)
  u, _ = np.linalg.qr(rng.normal(size=(D, LATENT)))
  w = u * np.array([1.5, 0.8])
  b = rng.normal(size=D) * 0.3
  lg = linear_gaussian.LinearGaussian(jnp.asarray(w, jnp.float32), jnp.asarray(b, jnp.float32), SIGMA)
  return linear_gaussian.vae(lg), w, b, lg


def exact_params(mean_shift=0.0, logvar_shift=0.0):
  return linear_gaussian.vae_params(ppca()[3], mean_shift=mean_shift, logvar_shift=logvar_shift)


def data_points(n=3):
  _, w, b, _ = ppca()
  x = np.random.default_rng(1).multivariate_normal(b, w @ w.T + SIGMA**2 * np.eye(D), size=n)
  log_px = stats.multivariate_normal(b, w @ w.T + SIGMA**2 * np.eye(D)).logpdf(x)
  return jnp.asarray(x.reshape(n, D, 1, 1), jnp.float32), log_px


def batch_loss(loss_fn, params, x, key, **kw):
  model = ppca()[0]
  keys = jax.random.split(key, x.shape[0])
  return jax.jit(jax.vmap(lambda xi, ki: loss_fn(model, params, xi, ki, **kw)))(x, keys)


def test_exact_posterior_makes_every_bound_equal_log_px():
  x, log_px = data_points()
  params = exact_params()
  for k in (1, 7, 100):
    loss, aux = batch_loss(functools.partial(losses.iwae_loss, num_samples=k), params, x, jax.random.key(k))
    np.testing.assert_allclose(-loss, log_px, atol=2e-4)
  loss, _ = batch_loss(functools.partial(losses.elbo_loss, num_samples=5, analytic_kl=False),
                       params, x, jax.random.key(3))
  np.testing.assert_allclose(-loss, log_px, atol=2e-4)
  # Analytic KL: exact in expectation; 20000 draws leave ~0.01 nats of MC noise.
  loss, _ = batch_loss(functools.partial(losses.elbo_loss, num_samples=20000), params, x, jax.random.key(4))
  np.testing.assert_allclose(-loss, log_px, atol=0.05)


def test_elbo_below_log_px_and_iwae_increases_with_k_to_log_px():
  x, log_px = data_points()
  params = exact_params(mean_shift=0.6, logvar_shift=0.7)  # a poor q
  loss, aux = batch_loss(functools.partial(losses.elbo_loss, num_samples=20000), params, x, jax.random.key(5))
  assert np.all(-loss < log_px - 0.3), (-loss, log_px)
  bounds = []  # E[L_K] per data point, averaged over independent repetitions
  for k, reps in ((1, 400), (10, 200), (100, 100), (1000, 20)):
    xr = jnp.repeat(x, reps, axis=0)
    l, _ = batch_loss(functools.partial(losses.iwae_loss, num_samples=k), params, xr, jax.random.key(k))
    bounds.append(np.asarray(-l).reshape(x.shape[0], reps).mean(1))
  bounds = np.stack(bounds)  # [num_k, n]
  assert np.all(np.diff(bounds, axis=0) > -0.02), bounds
  assert np.all(bounds[0] < log_px - 0.3)
  # One estimate with K = 5000 is within 0.1 nats of the truth (it may land above it by chance).
  l, _ = batch_loss(functools.partial(losses.iwae_loss, num_samples=5000), params, x, jax.random.key(9))
  np.testing.assert_allclose(-l, log_px, atol=0.1)


def test_iwae_with_one_sample_is_the_monte_carlo_elbo():
  x, _ = data_points()
  params = exact_params(mean_shift=0.4, logvar_shift=-0.5)
  key = jax.random.key(11)
  iw, _ = batch_loss(functools.partial(losses.iwae_loss, num_samples=1), params, x, key)
  el, _ = batch_loss(functools.partial(losses.elbo_loss, num_samples=1, analytic_kl=False), params, x, key)
  np.testing.assert_allclose(iw, el, rtol=1e-6)


def test_kl_weight_scales_only_the_kl_term():
  x, _ = data_points()
  params = exact_params(mean_shift=0.4)
  key = jax.random.key(12)
  l1, aux1 = batch_loss(losses.elbo_loss, params, x, key, kl_weight=1.0)
  l2, aux2 = batch_loss(losses.elbo_loss, params, x, key, kl_weight=0.25)
  np.testing.assert_allclose(l2, aux1["recon"] + 0.25 * aux1["kl"], rtol=1e-6)
  np.testing.assert_allclose(aux2["elbo"], aux1["elbo"], rtol=1e-6)  # the reported ELBO is unweighted


def test_losses_compose_with_grad_jit_vmap():
  model = ppca()[0]
  x, _ = data_points()
  params = exact_params(mean_shift=0.3)

  def mean_loss(p, loss_fn):
    keys = jax.random.split(jax.random.key(0), x.shape[0])
    return jnp.mean(jax.vmap(lambda xi, ki: loss_fn(model, p, xi, ki)[0])(x, keys))

  for fn in (losses.elbo_loss, functools.partial(losses.iwae_loss, num_samples=5)):
    g = jax.jit(jax.grad(mean_loss), static_argnums=1)(params, fn)
    g_nojit = jax.grad(mean_loss)(params, fn)
    leaves = jax.tree.leaves(g)
    assert all(np.all(np.isfinite(l)) for l in leaves)
    assert float(jnp.abs(g["enc_heads_0"]["mean"]["bias"]).sum()) > 0
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), g, g_nojit)


def test_iwae_bound_is_stable_logsumexp():
  lw = jnp.array([-1e4, -1e4 + 1.0, -1e4 - 2.0])
  expected = -1e4 + np.log(np.mean(np.exp([0.0, 1.0, -2.0])))
  np.testing.assert_allclose(losses.iwae_bound(lw), expected, rtol=1e-7)


def test_make_loss_rejects_unknown_names():
  from vae_jax.configs import default
  cfg = default.get_config().loss
  cfg.name = "wasserstein"
  with pytest.raises(ValueError, match="wasserstein"):
    losses.make_loss(cfg)
