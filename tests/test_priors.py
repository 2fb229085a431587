"""Mixture and VampPrior priors, the Monte Carlo KL they need, and Tomczak & Welling's HVAE."""

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from vae_jax.configs import default
from tests.test_train import synthetic, tiny_config
from vae_jax import config as config_lib
from vae_jax import distributions as dist
from vae_jax.models import hvae
from vae_jax import losses
from vae_jax import models
from vae_jax import train

SHAPE = (4, 4, 1)
# Jitted once per model: eager Flax calls compile every primitive separately (slow on 2 cores).
init = jax.jit(models.init_params, static_argnums=0)


@functools.partial(jax.jit, static_argnums=0, static_argnames="method")
def apply(model, params, *args, method=None):
  return model.apply({"params": params}, *args, method=method)


def random_mixture(k, d, seed):
  rng = np.random.default_rng(seed)
  logits = rng.normal(size=k)
  log_w = logits - np.log(np.sum(np.exp(logits)))
  return log_w, rng.normal(size=(k, d)) * 2, rng.normal(size=(k, d)) * 0.5


def scipy_mixture_density(z, log_w, means, logvars):
  """sum_k w_k N(z; mu_k, diag(var_k)) for z [N, D], the independent reference."""
  return sum(np.exp(lw) * stats.multivariate_normal(m, np.diag(np.exp(lv))).pdf(z)
             for lw, m, lv in zip(log_w, means, logvars))


def grid(d, lo=-12.0, hi=12.0, n=801):
  axis = np.linspace(lo, hi, n if d == 1 else 241)
  pts = np.stack(np.meshgrid(*[axis] * d, indexing="ij"), -1).reshape(-1, d)
  return pts, axis


def integrate(log_density, pts, axis, d):
  vals = np.exp(np.asarray(log_density(jnp.asarray(pts, jnp.float32)), np.float64))
  vals = vals.reshape((len(axis),) * d)
  for _ in range(d):
    vals = np.trapezoid(vals, axis, axis=0)
  return float(vals)


@pytest.mark.parametrize("d", [1, 2])
def test_mixture_log_density_integrates_to_one_and_matches_scipy(d):
  log_w, means, logvars = random_mixture(5, d, seed=d)
  args = tuple(jnp.asarray(a, jnp.float32) for a in (log_w, means, logvars))
  pts, axis = grid(d)
  assert integrate(lambda z: dist.mixture_gaussian_log_prob(z, *args), pts, axis, d) == pytest.approx(1.0, abs=1e-3)
  z = np.random.default_rng(0).normal(size=(50, d)) * 3
  np.testing.assert_allclose(dist.mixture_gaussian_log_prob(jnp.asarray(z, jnp.float32), *args),
                             np.log(scipy_mixture_density(z, log_w, means, logvars)), rtol=1e-4, atol=1e-4)


def test_mixture_log_density_is_exact_for_sharp_components_and_any_batch_shape():
  # VampPrior-like: 40-d, sharp components (log-variance down to -8), samples
  # near the components; the float64 direct sum is the truth. An expansion into
  # matmuls (z^2 a - 2 z m a + m^2 a) errs by about 7e-3 here.
  rng = np.random.default_rng(3)
  k, d = 60, 40
  means = rng.normal(size=(k, d))
  logvars = rng.uniform(-8.0, 0.0, size=(k, d))
  log_w = np.log(rng.dirichlet(np.ones(k)))
  pick = rng.integers(0, k, size=(3, 7))
  z = means[pick] + np.exp(0.5 * logvars[pick]) * rng.normal(size=(3, 7, d))
  comp = (-0.5 * (np.log(2 * np.pi) + logvars + (z[..., None, :] - means) ** 2 * np.exp(-logvars))).sum(-1)
  truth = np.logaddexp.reduce(comp + log_w, axis=-1)
  f32 = lambda a: jnp.asarray(a, jnp.float32)
  lp = dist.mixture_gaussian_log_prob(f32(z), f32(log_w), f32(means), f32(logvars))
  assert lp.shape == (3, 7)
  np.testing.assert_allclose(lp, truth, rtol=0, atol=2e-4)

  def broadcast_form(z, log_w, means, logvars):  # the textbook [N, K, D] computation
    c = dist.gaussian_log_prob(z[..., None, :], means, logvars)
    return jnp.sum(jax.nn.logsumexp(c + log_w, axis=-1))

  args = (f32(z), f32(log_w), f32(means), f32(logvars))
  ours = jax.grad(lambda *a: jnp.sum(dist.mixture_gaussian_log_prob(*a)), argnums=(0, 1, 2, 3))(*args)
  ref = jax.grad(broadcast_form, argnums=(0, 1, 2, 3))(*args)
  for g, r in zip(ours, ref):
    np.testing.assert_allclose(g, r, rtol=1e-3, atol=1e-3 * float(jnp.max(jnp.abs(r))))


def test_mixture_is_stable_far_from_every_component():
  log_w, means, logvars = (jnp.asarray(a, jnp.float32) for a in random_mixture(3, 2, seed=0))
  lp = dist.mixture_gaussian_log_prob(jnp.full((2,), 300.0), log_w, means, logvars)
  assert np.isfinite(float(lp)) and float(lp) < -1e4  # logsumexp: no underflow to -inf


def test_mixture_samples_follow_the_weights_and_components():
  log_w = jnp.log(jnp.asarray([0.7, 0.3]))
  means, logvars = jnp.asarray([[-5.0], [5.0]]), jnp.log(jnp.asarray([[0.25], [1.0]]))
  z = np.asarray(dist.mixture_gaussian_sample(jax.random.key(0), log_w, means, logvars, (20000,)))[:, 0]
  left = z[z < 0]
  assert len(left) / len(z) == pytest.approx(0.7, abs=0.015)
  assert left.mean() == pytest.approx(-5.0, abs=0.02) and left.std() == pytest.approx(0.5, abs=0.02)


def tiny_vae(prior, d, k=3, **kw):
  model = models.VAE(image_shape=SHAPE, latent_dims=(d,), hidden_sizes=((8,),), prior=prior,
                     num_components=k, **kw)
  return model, init(model, jax.random.key(0))


@pytest.mark.parametrize("d", [1, 2])
def test_vampprior_is_the_mixture_of_posteriors_at_the_pseudo_inputs(d):
  model, params = tiny_vae("vamp", d, k=3)
  u = np.asarray(params["pseudo_inputs"])
  assert u.shape == (3,) + SHAPE
  # Direct computation: encode each clipped pseudo-input alone, average the Gaussians.
  comps = [apply(model, params, jnp.clip(u[i], 0, 1), method="encode") for i in range(3)]
  means = np.stack([np.asarray(m) for m, _ in comps])
  logvars = np.stack([np.asarray(v) for _, v in comps])
  log_prior = lambda z: apply(model, params, z, method="prior_log_prob")
  z = np.random.default_rng(1).normal(size=(40, d))
  np.testing.assert_allclose(log_prior(jnp.asarray(z, jnp.float32)),
                             np.log(scipy_mixture_density(z, np.full(3, -np.log(3)), means, logvars)),
                             rtol=1e-4, atol=1e-4)
  pts, axis = grid(d)
  assert integrate(log_prior, pts, axis, d) == pytest.approx(1.0, abs=1e-3)


def test_learnable_mixture_prior_integrates_to_one_and_uses_its_parameters():
  d = 2
  model, params = tiny_vae("mog", d, k=4)
  mix = params["mixture"]
  logits = np.asarray(mix["logits"]) + np.arange(4.0)  # unequal weights
  params = {**params, "mixture": {**mix, "logits": jnp.asarray(logits)}}
  log_w = logits - np.log(np.sum(np.exp(logits)))
  log_prior = lambda z: apply(model, params, z, method="prior_log_prob")
  z = np.random.default_rng(2).normal(size=(40, d)) * 2
  np.testing.assert_allclose(log_prior(jnp.asarray(z, jnp.float32)),
                             np.log(scipy_mixture_density(z, log_w, np.asarray(mix["means"]),
                                                          np.asarray(mix["logvars"]))), rtol=1e-4, atol=1e-4)
  pts, axis = grid(d)
  assert integrate(log_prior, pts, axis, d) == pytest.approx(1.0, abs=1e-3)


def test_one_component_equal_to_the_standard_normal_gives_the_closed_form_kl():
  model, params = tiny_vae("mog", 3, k=1)
  params = {**params, "mixture": {"logits": jnp.zeros(1), "means": jnp.zeros((1, 3)),
                                  "logvars": jnp.zeros((1, 3))}}
  std_model = models.VAE(image_shape=SHAPE, latent_dims=(3,), hidden_sizes=((8,),))
  std_params = {k: v for k, v in params.items() if k != "mixture"}
  x = (jax.random.uniform(jax.random.key(1), SHAPE) > 0.5).astype(jnp.float32)
  terms = lambda m, n: jax.jit(lambda p, k: m.apply({"params": p}, x, k, n))
  t = terms(model, 4)(params, jax.random.key(2))
  t_std = terms(std_model, 4)(std_params, jax.random.key(2))
  np.testing.assert_allclose(t["log_pz"], t_std["log_pz"], rtol=1e-6)  # same samples, same density
  assert "kl" not in t  # no closed form is claimed for a mixture
  n = 50_000
  _, aux = jax.jit(functools.partial(losses.elbo_loss, model, num_samples=n, analytic_kl=False))(
      params, x, jax.random.key(3))
  tn = terms(model, n)(params, jax.random.key(3))
  se = float(np.std(tn["log_qz"] - tn["log_pz"])) / np.sqrt(n)
  assert float(aux["kl"]) == pytest.approx(float(t_std["kl"]), abs=5 * se)
  assert float(t_std["kl"]) > 20 * se  # a KL far from 0, so the comparison can fail


@pytest.mark.parametrize("prior,name", [("vamp", "pseudo_inputs"), ("mog", "mixture")])
def test_prior_parameters_receive_gradients_from_the_monte_carlo_kl(prior, name):
  model, params = tiny_vae(prior, 2, k=3)
  xs = (jax.random.uniform(jax.random.key(1), (4,) + SHAPE) > 0.5).astype(jnp.float32)

  def batch_loss(p):
    per = jax.vmap(lambda x, k: losses.elbo_loss(model, p, x, k, num_samples=2, analytic_kl=False)[0])
    return jnp.mean(per(xs, jax.random.split(jax.random.key(2), 4)))

  g = jax.jit(jax.grad(batch_loss))(params)[name]
  for leaf in jax.tree.leaves(g):
    assert np.all(np.isfinite(leaf)) and float(jnp.abs(leaf).sum()) > 0
  if prior == "vamp":  # every pseudo-input gets a gradient, not just one
    assert np.all(np.abs(np.asarray(g)).reshape(3, -1).sum(1) > 0)


def test_vampprior_samples_come_from_the_components():
  model, params = tiny_vae("vamp", 2, k=3)
  z = jax.jit(lambda p, k: model.apply({"params": p}, k, 3000, method=model.prior_sample))(
      params, jax.random.key(0))
  log_w, means, logvars = apply(model, params, method="prior_components")
  mix_mean = np.sum(np.exp(np.asarray(log_w))[:, None] * np.asarray(means), 0)
  np.testing.assert_allclose(np.mean(np.asarray(z), 0), mix_mean, atol=0.1)


def test_every_registered_prior_drives_the_vae_density_samples_and_kl():
  """For each name in ``models.PRIORS``, through the VAE: log p(z) integrates to 1 in 1-D and is
  scipy's normal log-density for the Gaussian priors; a mixture's Monte Carlo sample mean is its
  weighted mean (within 5 standard errors); the closed-form KL, where claimed, is the KL by
  quadrature, and a prior without one refuses."""
  z = np.linspace(-12.0, 12.0, 2001)
  n = 4000
  q_mean, q_logvar = jnp.asarray([0.3]), jnp.asarray([-0.5])
  for name, prior in models.PRIORS.items():
    num_classes = 3 if prior.needs_labels else 0
    model = models.VAE(image_shape=SHAPE, latent_dims=(1,), hidden_sizes=((8,),), prior=name,
                       num_components=3, num_classes=num_classes)
    label = jnp.asarray(1, jnp.int32) if num_classes else None

    def pieces(m, points):
      kl = m.kl_to_prior(q_mean, q_logvar, label) if prior.closed_form_kl else None
      comps = m.prior_components() if prior.is_mixture else None
      return m.prior_log_prob(points, label), m.prior_sample(jax.random.key(5), n, label), kl, comps

    @jax.jit
    def run(init_key):  # one compilation per prior; only the parameters the prior reads
      params = model.init({"params": init_key}, jnp.zeros((1, 1)), method=pieces).get("params", {})
      if name == "conditional":  # class 1 away from N(0, I), so the label matters
        params = {**params, "class_prior": {"means": jnp.asarray([[0.0], [0.7], [0.0]]),
                                            "logvars": jnp.asarray([[0.0], [-0.4], [0.0]])}}
      if name == "mog":  # unequal weights
        params = {**params, "mixture": {**params["mixture"], "logits": jnp.asarray([0.0, 1.0, -1.0])}}
      return params, model.apply({"params": params}, jnp.asarray(z[:, None], jnp.float32), method=pieces)

    params, (log_p, samples, kl, comps) = run(jax.random.key(0))
    log_p = np.asarray(log_p, np.float64)
    assert np.trapezoid(np.exp(log_p), z) == pytest.approx(1.0, abs=1e-3), name
    if name in ("standard", "conditional"):
      mu, sd = (0.0, 1.0) if name == "standard" else (0.7, np.exp(-0.2))
      np.testing.assert_allclose(log_p, stats.norm.logpdf(z, mu, sd), rtol=1e-5, atol=1e-4)
    if prior.is_mixture:
      w, means, var = (np.exp(np.asarray(comps[0], np.float64)), np.asarray(comps[1], np.float64)[:, 0],
                       np.exp(np.asarray(comps[2], np.float64))[:, 0])
      mix_mean = np.sum(w * means)
      se = np.sqrt((np.sum(w * (var + means ** 2)) - mix_mean ** 2) / n)
      assert abs(float(np.mean(samples)) - mix_mean) < 5 * se, name
    if prior.closed_form_kl:
      log_q = stats.norm.logpdf(z, 0.3, np.exp(-0.25))
      assert float(kl) == pytest.approx(np.trapezoid(np.exp(log_q) * (log_q - log_p), z), abs=1e-4)
    else:
      with pytest.raises(ValueError, match="no closed-form KL"):
        model.apply({"params": params}, q_mean, q_logvar, label, method=model.kl_to_prior)


def test_num_components_below_one_and_pseudo_input_shape_mismatch_are_config_errors():
  cfg = default.get_config()
  cfg.model.prior = "vamp"
  cfg.loss.analytic_kl = False
  cfg.model.num_components = 0
  with pytest.raises(config_lib.ConfigError, match="model.num_components=0"):
    config_lib.validate(cfg)
  model, _ = tiny_vae("vamp", 2, k=3)
  tx = config_lib.make_optimizer(cfg.optimizer, config_lib.make_schedule(cfg.optimizer, 1, 1))
  for bad in [np.zeros((2,) + SHAPE), np.zeros((3, 5, 5, 1))]:  # wrong K, wrong image shape
    with pytest.raises(config_lib.ConfigError, match=r"pseudo-inputs have shape .*expected \(3, 4, 4, 1\)"):
      train.create_train_state(model, jax.random.key(0), tx, pseudo_inputs=bad)
  state = train.create_train_state(model, jax.random.key(0), tx, pseudo_inputs=np.full((3,) + SHAPE, 0.5))
  assert np.all(np.asarray(state.params["pseudo_inputs"]) == 0.5)


@pytest.mark.parametrize("field,value,match", [
    ("loss.analytic_kl", True, "closed-form KL needs the standard prior"),
    ("model.prior", "gamma", "model.prior='gamma'"),
    ("model.pseudo_inputs_init", "zeros", "model.pseudo_inputs_init"),
])
def test_prior_config_errors_are_named(field, value, match):
  cfg = default.get_config()
  cfg.model.prior = "vamp"
  cfg.loss.analytic_kl = False
  section, leaf = field.split(".")
  cfg[section][leaf] = value
  with pytest.raises(config_lib.ConfigError, match=match):
    config_lib.validate(cfg)


def test_data_initialized_pseudo_inputs_are_training_images():
  images = synthetic(n=64)["train"].images
  u = train.pseudo_inputs_from_data(images, 5, jax.random.key(0), "static")
  assert u.shape == (5,) + images.shape[1:]
  nearest = np.min(np.abs(u[:, None] - images[None]).reshape(5, len(images), -1).max(-1), axis=1)
  assert np.all(nearest < 0.06)  # each is a training image up to the N(0, 0.01^2) noise
  with pytest.raises(config_lib.ConfigError, match="num_components=65"):
    train.pseudo_inputs_from_data(images, 65, jax.random.key(0), "static")


# -- Tomczak & Welling's two-level HVAE ----------------------------------------------------------

@pytest.mark.parametrize("network", ["mlp", "conv"])
def test_hvae_terms_match_a_direct_computation(network):
  model = hvae.HVAE(image_shape=SHAPE, latent_dims=(3, 2), hidden_sizes=((8,), (8,)), network=network,
                    conv_features=(2,), prior="vamp", num_components=2)
  x = (jax.random.uniform(jax.random.key(1), SHAPE) > 0.5).astype(jnp.float32)
  key = jax.random.key(2)

  @jax.jit
  def terms_and_pieces(init_key):
    params = models.init_params(model, init_key)
    t = model.apply({"params": params}, x, key, 5)
    # Every term again from the pieces, with the same keys.
    ap = lambda *a, method: model.apply({"params": params}, *a, method=method)
    key2, key1 = jax.random.split(key)
    m2, lv2 = ap(x, method=model.encode)
    z2 = dist.gaussian_sample(key2, m2, lv2, (5,))
    m1, lv1 = ap(x, z2, method=model.encode_z1)
    z1 = dist.gaussian_sample(key1, m1, lv1)
    pm1, plv1 = ap(z2, method=model.prior_z1)
    comps = [ap(jnp.clip(u, 0, 1), method=model.encode) for u in params["pseudo_inputs"]]
    samples = model.apply({"params": params}, jax.random.key(3), 4, method=model.generate)
    return t, dict(m2=m2, lv2=lv2, z2=z2, m1=m1, lv1=lv1, z1=z1, pm1=pm1, plv1=plv1, comps=comps,
                   logits=ap(z1, z2, method=model.decode), samples=samples)

  t, p = jax.tree.map(np.asarray, terms_and_pieces(jax.random.key(0)))
  assert all(t[k].shape == (5,) for k in ("log_px_z", "log_pz", "log_qz")) and t["mean"].shape == (2,)
  log_p2 = np.log(np.mean([stats.multivariate_normal(m, np.diag(np.exp(v))).pdf(p["z2"])
                           for m, v in p["comps"]], axis=0))
  np.testing.assert_allclose(t["log_pz"], log_p2 + stats.norm(p["pm1"], np.exp(p["plv1"] / 2)).logpdf(
      p["z1"]).sum(-1), rtol=1e-4, atol=1e-4)
  log_q = (stats.norm(p["m2"], np.exp(p["lv2"] / 2)).logpdf(p["z2"]).sum(-1)
           + stats.norm(p["m1"], np.exp(p["lv1"] / 2)).logpdf(p["z1"]).sum(-1))
  np.testing.assert_allclose(t["log_qz"], log_q, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(t["log_px_z"], stats.bernoulli(1 / (1 + np.exp(-p["logits"]))).logpmf(
      np.asarray(x)).sum((-3, -2, -1)), rtol=1e-4, atol=1e-4)
  assert np.all(p["lv1"] >= hvae.LOGVAR_BOUNDS[0]) and np.all(p["lv1"] <= hvae.LOGVAR_BOUNDS[1])
  assert p["samples"].shape == (4,) + SHAPE and p["samples"].min() >= 0 and p["samples"].max() <= 1


@pytest.mark.parametrize("overrides", [
    {"model.prior": "vamp", "model.num_components": 8, "loss.analytic_kl": False},
    {"model.kind": "hvae", "model.prior": "vamp", "model.num_components": 8, "loss.analytic_kl": False,
     "model.latent_dims": (4, 2), "model.hidden_sizes": ((16,), (8,)), "model.activation": "gated",
     "model.pseudo_inputs_init": "data"},
], ids=["vamp", "hvae_vamp_data_init"])
def test_training_with_a_learned_prior_improves_the_validation_nll(tmp_path, overrides):
  cfg = tiny_config(num_epochs=3, eval_every_epochs=3, **overrides)
  cfg.loss.warmup_epochs = 1.0
  cfg.optimizer.learning_rate = 3e-3
  state, last = train.train_and_evaluate(cfg, tmp_path, datasets=synthetic())
  rows = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert rows[-1]["train_elbo"] > rows[0]["train_elbo"] + 5
  assert np.isfinite(last["val_nll"]) and last["val_kl"] > 0
  assert last["val_elbo"] <= -last["val_nll"] + 1e-3  # the ELBO stays below the IWAE estimate
  assert (tmp_path / "figures" / "samples.png").exists()


def test_a_workdir_written_before_the_prior_fields_resumes_and_loads(tmp_path):
  cfg = default.get_config()
  saved = json.loads(cfg.to_json())
  for name in train.ADDED_FIELDS:
    section, _, field = name.rpartition(".")
    del (saved[section] if section else saved)[field]
  (tmp_path / "config.json").write_text(json.dumps(saved))
  assert config_lib.SCHEMA.diff(saved, json.loads(cfg.to_json())) == []
  loaded = train.load_config(tmp_path)
  config_lib.validate(loaded)
  assert loaded.model.prior == "standard" and loaded.model.kind == "vae"
  cfg.model.prior, cfg.loss.analytic_kl = "vamp", False  # a real change is still refused
  assert config_lib.SCHEMA.diff(saved, json.loads(cfg.to_json())) == [
      "loss.analytic_kl: True in the workdir, False now", "model.prior: '<missing>' in the workdir, 'vamp' now"]


def test_clip_logvar_bounds_every_posterior_log_variance():
  x = jnp.asarray(np.random.default_rng(0).random((3, 28, 28, 1)) > 0.5, jnp.float32)
  for clip in (False, True):
    model = models.VAE(latent_dims=(4, 3), hidden_sizes=((8,), (8,)), clip_logvar=clip)
    params = model.init(jax.random.key(0), x, jax.random.key(1))["params"]
    params = jax.tree.map(lambda p: p * 300.0, params)  # push the heads far outside [-6, 2]
    _, logvar = model.apply({"params": params}, x, method=model.encode)
    top = model.apply({"params": params}, x, method=model.encode_top)[1]
    inside = [bool(jnp.all((v >= -6.0) & (v <= 2.0))) for v in (logvar, top)]
    assert inside == [clip, clip]
  cfg = default.get_config()
  cfg.model.clip_logvar = True
  assert config_lib.make_model(cfg).clip_logvar
