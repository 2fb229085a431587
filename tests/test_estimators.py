"""The importance-weighted family against independent truth, on the exact linear-Gaussian model.

Every estimator reports the same bound; STL is unbiased for the exact ELBO's gradient, DReG for
the IWAE gradient (against the plain reparameterization gradient, within their standard
errors); both are exactly zero at the exact posterior; the encoder gradient's signal-to-noise
ratio falls with K for IWAE and not for DReG (Rainforth et al. 2018, Tucker et al. 2019);
MIWAE, CIWAE and PIWAE are the bounds and gradients they are defined as.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests import test_train
from vae_jax import config as config_lib
from vae_jax import estimators
from vae_jax import linear_gaussian as lg_lib
from vae_jax import losses
from vae_jax import train

pytestmark = pytest.mark.usefixtures("fast_compiling_rng")


@pytest.fixture(scope="module")
def setup():
  lg = lg_lib.orthogonal(jax.random.key(0), 6, [1.5, 0.8, 0.4], sigma=0.5)
  model = lg_lib.vae(lg)
  x = lg_lib.sample(lg, jax.random.key(1), 1)[0].reshape(6, 1, 1)
  exact = lg_lib.vae_params(lg)
  off = lg_lib.vae_params(lg, mean_shift=jnp.array([0.4, -0.3, 0.2]),
                          logvar_shift=jnp.array([-0.5, 0.3, 0.4]))
  return lg, model, x, exact, off


def encoder_leaves(grads):
  g = grads["enc_heads_0"]
  return jnp.concatenate([g["mean"]["bias"], g["logvar"]["bias"]])


def decoder_leaves(grads):
  return jnp.concatenate([grads["dec_out"]["bias"], grads["dec_trunk0"]["dense_0"]["kernel"].ravel()])


def grads(loss_fn, model, params, x, keys):
  """Per-key gradients of the loss (the negative bound), [N, ...] trees."""
  one = jax.grad(lambda p, k: loss_fn(model, p, x, k)[0])
  return jax.jit(jax.vmap(one, in_axes=(None, 0)))(params, keys)


def keys(n, seed=0):
  return jax.random.split(jax.random.key(seed), n)


IWAE = {g: functools.partial(losses.iwae_loss, num_samples=10, gradient=g) for g in estimators.GRADIENTS}


def test_every_estimator_reports_the_same_bound(setup):
  _, model, x, _, params = setup
  key = jax.random.key(3)
  values = {g: IWAE[g](model, params, x, key)[1]["iwae"] for g in estimators.GRADIENTS}
  t = model.apply({"params": params}, x, key, 10)  # the model's own forward pass
  log_w = np.asarray(t["log_px_z"] + t["log_pz"] - t["log_qz"], np.float64)
  direct = np.log(np.mean(np.exp(log_w - log_w.max()))) + log_w.max()
  for g, v in values.items():
    np.testing.assert_allclose(v, direct, rtol=0, atol=1e-5, err_msg=g)
  mc = losses.elbo_loss(model, params, x, key, num_samples=4, analytic_kl=False)
  stl = losses.elbo_loss(model, params, x, key, num_samples=4, analytic_kl=False, gradient="stl")
  np.testing.assert_allclose(mc[0], stl[0], atol=1e-5)


def test_stl_and_reparam_elbo_gradients_are_unbiased_for_the_exact_elbo(setup):
  lg, model, x, _, params = setup

  def exact_elbo(p):
    mean, logvar = model.apply({"params": p}, x, method=model.encode)
    return lg_lib.elbo(lg, x.reshape(-1), mean, logvar)

  truth = -encoder_leaves(jax.grad(exact_elbo)(params))  # the loss is the negative bound
  for gradient in ("reparam", "stl"):
    fn = functools.partial(losses.elbo_loss, num_samples=1, analytic_kl=False, gradient=gradient)
    g = np.asarray(jax.vmap(encoder_leaves)(grads(fn, model, params, x, keys(20_000))))
    se = g.std(0) / np.sqrt(len(g))
    assert np.all(np.abs(g.mean(0) - truth) < 4 * se + 1e-4), (gradient, g.mean(0), truth, se)


def test_dreg_is_unbiased_for_the_iwae_gradient_and_stl_is_not(setup):
  _, model, x, _, params = setup
  k = keys(40_000, seed=1)
  g = {name: np.asarray(jax.vmap(encoder_leaves)(grads(IWAE[name], model, params, x, k)))
       for name in estimators.GRADIENTS}
  mean = {n: v.mean(0) for n, v in g.items()}
  se = {n: v.std(0) / np.sqrt(len(v)) for n, v in g.items()}
  # Same draws: the difference's own standard error is the honest tolerance.
  diff = g["dreg"] - g["reparam"]
  assert np.all(np.abs(diff.mean(0)) < 4 * diff.std(0) / np.sqrt(len(diff)) + 1e-4), (mean, se)
  stl_bias = np.abs((g["stl"] - g["reparam"]).mean(0)) / ((g["stl"] - g["reparam"]).std(0) / np.sqrt(len(diff)))
  assert stl_bias.max() > 6, stl_bias  # STL is biased for IWAE with K > 1 (Tucker et al. 2019)


def test_dreg_gives_the_decoder_the_plain_iwae_gradient_draw_for_draw(setup):
  _, model, x, _, params = setup
  k = keys(64, seed=2)
  plain = jax.vmap(decoder_leaves)(grads(IWAE["reparam"], model, params, x, k))
  dreg = jax.vmap(decoder_leaves)(grads(IWAE["dreg"], model, params, x, k))
  np.testing.assert_allclose(dreg, plain, rtol=1e-4, atol=1e-5)


def test_dreg_and_stl_encoder_gradients_are_exactly_zero_at_the_exact_posterior(setup):
  _, model, x, exact, _ = setup
  k = keys(256, seed=4)
  stl_elbo = functools.partial(losses.elbo_loss, num_samples=3, analytic_kl=False, gradient="stl")
  for name, fn in (("dreg", IWAE["dreg"]), ("stl iwae", IWAE["stl"]), ("stl elbo", stl_elbo)):
    g = np.asarray(jax.vmap(encoder_leaves)(grads(fn, model, exact, x, k)))
    assert np.abs(g).max() < 1e-4, (name, np.abs(g).max())
  plain = np.asarray(jax.vmap(encoder_leaves)(grads(IWAE["reparam"], model, exact, x, k)))
  assert np.abs(plain).max() > 0.05  # the plain estimator is noisy there (its mean is zero)


def snr(loss_fn, model, params, x, n=4000):
  g = np.asarray(jax.vmap(encoder_leaves)(grads(loss_fn, model, params, x, keys(n, seed=5))))
  return np.abs(g.mean(0)) / g.std(0)


def test_the_encoder_snr_falls_with_k_for_iwae_and_not_for_dreg(setup):
  """Rainforth et al. 2018, Fig. 1, at small size: near the posterior, the SNR of IWAE's encoder
  gradient falls with K (like 1/sqrt(K)), DReG's grows (Tucker et al. 2019). Means over the 6
  encoder parameters (3 means, 3 log-variances)."""
  lg, model, x, _, _ = setup
  near = lg_lib.vae_params(lg, mean_shift=0.1 * jnp.array([1.0, -0.75, 0.5]),
                           logvar_shift=0.1 * jnp.array([-1.25, 0.75, 1.0]))
  by_k = {g: [snr(functools.partial(losses.iwae_loss, num_samples=k, gradient=g), model, near, x).mean()
              for k in (1, 10, 100)] for g in ("reparam", "dreg")}
  iwae, dreg = by_k["reparam"], by_k["dreg"]
  assert iwae[2] < 0.5 * iwae[0] and iwae[1] < iwae[0], by_k  # 100x the draws, under half the SNR
  assert dreg[0] < dreg[1] < dreg[2] and dreg[2] > 2 * dreg[0], by_k


def test_miwae_and_ciwae_are_the_bounds_they_are_defined_as(setup):
  _, model, x, _, params = setup
  key = jax.random.key(7)
  t = model.apply({"params": params}, x, key, 12)
  log_w = np.asarray(t["log_px_z"] + t["log_pz"] - t["log_qz"], np.float64)

  def lme(a, axis=-1):
    m = a.max(axis, keepdims=True)
    return np.squeeze(m, axis) + np.log(np.mean(np.exp(a - m), axis))

  miwae = estimators.miwae_loss(model, params, x, key, num_samples=4, num_groups=3)[1]
  np.testing.assert_allclose(miwae["miwae"], lme(log_w.reshape(3, 4)).mean(), atol=1e-5)
  np.testing.assert_allclose(miwae["iwae"], lme(log_w), atol=1e-5)
  assert miwae["miwae"] <= miwae["iwae"] + 1e-6
  ciwae = estimators.ciwae_loss(model, params, x, key, num_samples=12, beta=0.3)[1]
  np.testing.assert_allclose(ciwae["ciwae"], 0.3 * log_w.mean() + 0.7 * lme(log_w), atol=1e-5)


def test_piwae_trains_the_encoder_on_miwae_and_the_decoder_on_iwae(setup):
  _, model, x, _, params = setup
  k = keys(16, seed=8)
  piwae = grads(functools.partial(estimators.piwae_loss, num_samples=4, num_groups=3), model, params, x, k)
  miwae = grads(functools.partial(estimators.miwae_loss, num_samples=4, num_groups=3), model, params, x, k)
  iwae = grads(functools.partial(losses.iwae_loss, num_samples=12), model, params, x, k)
  np.testing.assert_allclose(jax.vmap(encoder_leaves)(piwae), jax.vmap(encoder_leaves)(miwae),
                             rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(jax.vmap(decoder_leaves)(piwae), jax.vmap(decoder_leaves)(iwae),
                             rtol=1e-4, atol=1e-5)


def test_dreg_is_unbiased_through_two_stochastic_layers():
  cfg = test_train.tiny_config(**{"model.latent_dims": (4, 2), "model.hidden_sizes": ((16,), (8,)),
                                  "loss.analytic_kl": False})
  model = config_lib.make_model(cfg)
  params = train.create_train_state(model, jax.random.key(0), train.optax.adam(1e-3)).params
  x = (jax.random.uniform(jax.random.key(1), (28, 28, 1)) < 0.3).astype(jnp.float32)
  k = keys(4000, seed=9)

  def head_grad(g):
    return g["enc_heads_1"]["mean"]["bias"]  # q(z_2 | z_1): reached through both layers' draws

  plain = np.asarray(jax.vmap(head_grad)(grads(functools.partial(losses.iwae_loss, num_samples=5),
                                               model, params, x, k)))
  dreg = np.asarray(jax.vmap(head_grad)(grads(functools.partial(
      losses.iwae_loss, num_samples=5, gradient="dreg"), model, params, x, k)))
  diff = dreg - plain
  assert np.all(np.abs(diff.mean(0)) < 4 * diff.std(0) / np.sqrt(len(diff)) + 1e-5)


@pytest.mark.parametrize("loss", [
    {"loss.name": "iwae", "loss.num_samples": 5, "loss.gradient": "dreg"},
    {"loss.name": "elbo", "loss.analytic_kl": False, "loss.gradient": "stl"},
    {"loss.name": "miwae", "loss.num_samples": 2, "loss.num_groups": 3, "loss.gradient": "dreg"},
    {"loss.name": "ciwae", "loss.num_samples": 4, "loss.ciwae_beta": 0.5, "loss.gradient": "stl"},
    {"loss.name": "piwae", "loss.num_samples": 2, "loss.num_groups": 2},
], ids=["iwae_dreg", "elbo_stl", "miwae_dreg", "ciwae_stl", "piwae"])
def test_each_estimator_trains_from_the_config(tmp_path, loss):
  _, last = train.train_and_evaluate(test_train.tiny_config(num_epochs=2, **loss), tmp_path,
                                     datasets=test_train.synthetic(128))
  rows = test_train.read_metrics(tmp_path)
  assert rows[-1]["train_loss"] < rows[0]["train_loss"] and np.isfinite(last["val_nll"])


@pytest.mark.parametrize("overrides,match", [
    ({"loss.name": "elbo", "loss.gradient": "dreg"}, r"config.loss.gradient='dreg' .*IWAE-type"),
    ({"loss.name": "elbo", "loss.gradient": "stl"}, r"config.loss.analytic_kl=True .*STL"),
    ({"loss.name": "piwae", "loss.gradient": "stl"}, r"config.loss.gradient='stl' .*'reparam'"),
    ({"loss.name": "iwae", "loss.num_groups": 4}, r"config.loss.num_groups=4 .*'miwae' or 'piwae'"),
    ({"loss.gradient": "score"}, r"config.loss.gradient='score' is invalid"),
])
def test_impossible_estimator_configs_are_named(overrides, match):
  with pytest.raises(config_lib.ConfigError, match=match):
    config_lib.validate(test_train.tiny_config(**overrides))
