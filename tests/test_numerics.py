"""Property tests: the public distribution and loss functions at extreme but legal inputs.

Log-variances in [-30, 30], logits in [-1e4, 1e4], images all zero, all one or
random, a batch of one: every value and gradient is finite and equals an
independent float64 computation (closed forms) where one exists.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp
from scipy.special import logsumexp

from vae_jax import distributions as dist
from vae_jax import losses
from vae_jax import models
from vae_jax import train

SETTINGS = settings(max_examples=60, deadline=None, database=None)
D = 6  # latent units
IMAGE = (4, 4, 1)


def f32_arrays(shape, lo, hi):
  return hnp.arrays(np.float32, shape, elements=st.floats(lo, hi, width=32))


def binary_images(shape=IMAGE):
  """All zero, all one, or random 0/1 pixels."""
  return st.one_of(st.just(np.zeros(shape, np.float32)), st.just(np.ones(shape, np.float32)),
                   hnp.arrays(np.float32, shape, elements=st.sampled_from([0.0, 1.0])))


def assert_finite(tree, what):
  for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
    assert np.all(np.isfinite(leaf)), f"{what}{jax.tree_util.keystr(path)} not finite: {leaf}"


def f64(a):
  return np.asarray(a, np.float64)


# -- distributions ----------------------------------------------------------------------------------

@functools.partial(jax.jit, static_argnums=(0, 1))
def value_and_grads(fn, argnums, *args):
  """fn(*args) and the gradient of its sum with respect to args[i] for i in argnums."""
  return fn(*args), jax.grad(lambda *a: jnp.sum(fn(*a)), argnums=argnums)(*args)


def sample_log_ratio(key, mean, logvar):
  z = dist.gaussian_sample(key, mean, logvar, (3,))
  return dist.gaussian_log_prob(z, mean, logvar) - dist.standard_normal_log_prob(z)


@SETTINGS
@given(x=f32_arrays((D,), -1e3, 1e3), mean=f32_arrays((D,), -1e3, 1e3), logvar=f32_arrays((D,), -30, 30))
def test_gaussian_log_prob_and_kl_at_extreme_log_variances(x, mean, logvar):
  lp, grads = value_and_grads(dist.gaussian_log_prob, (0, 1, 2), x, mean, logvar)
  assert_finite((lp, grads), "gaussian_log_prob")
  terms = -0.5 * (np.log(2 * np.pi) + f64(logvar) + (f64(x) - f64(mean)) ** 2 * np.exp(-f64(logvar)))
  np.testing.assert_allclose(lp, terms.sum(), rtol=1e-5, atol=1e-5 * np.abs(terms).sum())
  # d/dlogvar = -1/2 + (x - mean)^2 exp(-logvar) / 2
  want = -0.5 + 0.5 * (f64(x) - f64(mean)) ** 2 * np.exp(-f64(logvar))
  np.testing.assert_allclose(grads[2], want, rtol=1e-4, atol=1e-4 * np.abs(want).max())

  kl, (g_mean, g_logvar) = value_and_grads(dist.kl_gaussian_standard_normal, (0, 1), mean, logvar)
  assert_finite((kl, g_mean, g_logvar), "kl")
  terms = 0.5 * (f64(mean) ** 2 + np.exp(f64(logvar)) - 1 - f64(logvar))
  np.testing.assert_allclose(kl, terms.sum(), rtol=1e-5, atol=1e-6)
  assert float(kl) >= 0
  np.testing.assert_allclose(g_logvar, 0.5 * (np.exp(f64(logvar)) - 1), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(g_mean, f64(mean), rtol=1e-6)


@SETTINGS
@given(mean=f32_arrays((D,), -1e3, 1e3), logvar=f32_arrays((D,), -30, 30), seed=st.integers(0, 2**31))
def test_gaussian_sample_and_its_log_density_at_extreme_log_variances(mean, logvar, seed):
  key = jax.random.key(seed)
  log_ratio, grads = value_and_grads(sample_log_ratio, (1, 2), key, mean, logvar)
  assert_finite((log_ratio, grads), "log q(z) - log p(z) at z ~ q")
  z, dz = value_and_grads(dist.gaussian_sample, (1, 2), key, mean, logvar)
  eps = np.asarray(jax.random.normal(key, (D,)))
  np.testing.assert_allclose(z, f64(mean) + np.exp(0.5 * f64(logvar)) * eps, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(dz[1], 0.5 * np.exp(0.5 * f64(logvar)) * eps, rtol=1e-5, atol=1e-30)


@SETTINGS
@given(x=st.one_of(binary_images(), f32_arrays(IMAGE, 0, 1)), logits=f32_arrays(IMAGE, -1e4, 1e4))
def test_bernoulli_log_prob_at_extreme_logits(x, logits):
  lp, (gx, gl) = value_and_grads(dist.bernoulli_log_prob, (0, 1), x, logits)
  assert_finite((lp, gx, gl), "bernoulli_log_prob")
  ref = f64(x) * f64(logits) - np.logaddexp(0.0, f64(logits))
  np.testing.assert_allclose(lp, ref.sum(), rtol=1e-5, atol=1e-5 * np.abs(ref).sum() + 1e-5)
  assert float(lp) <= 0 or not np.all(np.isin(x, [0, 1]))
  np.testing.assert_allclose(gl, f64(x) - 1 / (1 + np.exp(-f64(logits))), atol=1e-6)


@SETTINGS
@given(x=f32_arrays(IMAGE, 0, 1), mean=f32_arrays(IMAGE, -1e4, 1e4), log_sigma=st.floats(-10, 5, width=32))
def test_gaussian_likelihood_at_extreme_means_and_scales(x, mean, log_sigma):
  lp, grads = value_and_grads(dist.gaussian_likelihood_log_prob, (0, 1, 2), x, mean,
                              jnp.float32(log_sigma))
  assert_finite((lp, grads), "gaussian_likelihood_log_prob")
  ref = -0.5 * np.log(2 * np.pi) - log_sigma - 0.5 * (f64(x) - f64(mean)) ** 2 * np.exp(-2 * log_sigma)
  np.testing.assert_allclose(lp, ref.sum(), rtol=1e-5, atol=1e-5 * np.abs(ref).sum())


@SETTINGS
@given(log_w=f32_arrays((5,), -1e6, 1e6))
def test_iwae_bound_at_extreme_log_weights(log_w):
  bound, (g,) = value_and_grads(losses.iwae_bound, (0,), log_w)
  assert_finite((bound, g), "iwae_bound")
  np.testing.assert_allclose(bound, logsumexp(f64(log_w)) - np.log(5), rtol=1e-6, atol=1e-3)
  np.testing.assert_allclose(np.sum(g), 1.0, rtol=1e-5)  # the gradient is the softmax of the weights


# -- losses through the model, a batch of one ---------------------------------------------------------

MODELS = {
    "bernoulli": models.VAE(image_shape=IMAGE, latent_dims=(D,), hidden_sizes=((8,),)),
    "bernoulli_2layer": models.VAE(image_shape=IMAGE, latent_dims=(D, 3), hidden_sizes=((8,), (5,))),
    "gaussian_shared": models.VAE(image_shape=IMAGE, latent_dims=(D,), hidden_sizes=((8,),),
                                  likelihood="gaussian_shared"),
}
LOSSES = {
    "elbo_analytic": functools.partial(losses.elbo_loss, num_samples=1, analytic_kl=True),
    "elbo_mc": functools.partial(losses.elbo_loss, num_samples=2, analytic_kl=False),
    "iwae": functools.partial(losses.iwae_loss, num_samples=4),
}
CASES = [("bernoulli", "elbo_analytic"), ("bernoulli_2layer", "elbo_mc"), ("bernoulli_2layer", "iwae"),
         ("gaussian_shared", "elbo_analytic")]


@functools.lru_cache(maxsize=None)
def compiled(model_name, loss_name):
  model, loss_fn = MODELS[model_name], LOSSES[loss_name]
  params = jax.jit(models.init_params, static_argnums=0)(model, jax.random.key(0))

  def batch_loss(params, x_b, key):  # a batch of one, lifted as the trainer does
    loss, aux = jax.vmap(lambda x, k: loss_fn(model, params, x, k, kl_weight=1.0))(
        x_b, jax.random.split(key, x_b.shape[0]))
    return jnp.mean(loss), jax.tree.map(jnp.mean, aux)

  return params, jax.jit(jax.value_and_grad(batch_loss, has_aux=True))


def extreme(params, mean_bias, logvar_bias, out_bias, sigma_raw):
  """Heads and decoder output with zero kernels, so their outputs ARE the given biases."""
  params = jax.tree.map(lambda a: a, params)
  for head in [k for k in params if k.startswith("enc_heads")]:
    for name, bias in (("mean", mean_bias), ("logvar", logvar_bias)):
      n = params[head][name]["bias"].shape[0]
      params[head][name] = {"kernel": jnp.zeros_like(params[head][name]["kernel"]),
                            "bias": jnp.full((n,), bias, jnp.float32)}
  params["dec_out"] = {"kernel": jnp.zeros_like(params["dec_out"]["kernel"]),
                       "bias": jnp.full_like(params["dec_out"]["bias"], out_bias)}
  if "sigma_raw" in params:
    params["sigma_raw"] = jnp.float32(sigma_raw)
  return params


@settings(max_examples=20, deadline=None, database=None)
@given(case=st.sampled_from(CASES), mean_bias=st.floats(-10, 10), logvar_bias=st.floats(-30, 30),
       out_bias=st.floats(-1e4, 1e4), sigma_raw=st.floats(-1e4, 1e4), x=binary_images(),
       seed=st.integers(0, 2**31))
def test_losses_and_gradients_finite_at_extreme_model_outputs(case, mean_bias, logvar_bias, out_bias,
                                                              sigma_raw, x, seed):
  params, loss_and_grad = compiled(*case)
  params = extreme(params, mean_bias, logvar_bias, out_bias, sigma_raw)
  (loss, aux), grads = loss_and_grad(params, x[None], jax.random.key(seed))
  assert_finite((loss, aux, grads), f"{case}: ")
  model_name, loss_name = case
  if model_name.startswith("bernoulli"):
    # log p(x|z) does not depend on z (zero output kernel): recon = -sum(x b - softplus(b)).
    recon = -np.sum(f64(x) * out_bias - np.logaddexp(0.0, out_bias))
    np.testing.assert_allclose(aux["recon"], recon, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(grads["dec_out"]["bias"], (1 / (1 + np.exp(-out_bias)) - f64(x)).ravel(),
                               atol=1e-6)
  if loss_name == "elbo_analytic":
    kl = 0.5 * D * (mean_bias**2 + np.exp(logvar_bias) - 1 - logvar_bias)
    np.testing.assert_allclose(aux["kl"], kl, rtol=1e-5, atol=1e-5)
    if model_name == "bernoulli":  # the KL is the only term that depends on the logvar head
      np.testing.assert_allclose(grads["enc_heads_0"]["logvar"]["bias"],
                                 np.full(D, 0.5 * (np.exp(logvar_bias) - 1)), rtol=1e-5, atol=1e-6)


def test_grad_norm_is_right_for_huge_and_tiny_finite_gradients():
  grads = {"a": jnp.full((1000,), 1e20, jnp.float32), "b": jnp.float32(-3e20)}
  norm = train.global_norm(grads)
  np.testing.assert_allclose(norm, np.sqrt(1000 * 1e40 + 9e40), rtol=1e-5)
  tiny = {"a": jnp.full((1000,), 1e-25, jnp.float32), "b": jnp.float32(-3e-25)}  # squares underflow
  np.testing.assert_allclose(train.global_norm(tiny), np.sqrt(1000 * 1e-50 + 9e-50), rtol=1e-5)
  usual = {"a": jnp.arange(5.0), "b": jnp.float32(-2.0)}
  np.testing.assert_allclose(train.global_norm(usual), np.sqrt(30.0 + 4.0), rtol=1e-6)
  assert float(train.global_norm({"a": jnp.zeros(3)})) == 0.0
  assert not np.isfinite(train.global_norm({"a": jnp.array([1.0, jnp.nan])}))
  assert not np.isfinite(train.global_norm({"a": jnp.array([1.0, jnp.inf])}))
