"""The class-conditional VAE (CVAE) and the latent-map helpers.

The conditional bounds are checked on a class-conditional linear-Gaussian
model, p(z) = N(0, I), p(x | z, y) = N(W z + b + B[y], sigma^2 I): per class it
is probabilistic PCA, so log p(x | y) = log N(x; b + B[y], W W^T + sigma^2 I)
is exact (scipy), and a linear CVAE with the label appended to its inputs
holds both the decoder and the exact posterior q(z | x, y).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from tests import test_losses as lg  # the unconditional linear-Gaussian model and its exact params
from tests.test_train import synthetic, tiny_config
from vae_jax import config as config_lib
from vae_jax import data as data_lib
from vae_jax import distributions as dist
from vae_jax import evaluation as eval_lib
from vae_jax import losses
from vae_jax import models
from vae_jax import plotting
from vae_jax import train

pytestmark = pytest.mark.usefixtures("fast_compiling_rng")

C = 3  # classes
SHIFTS = np.random.default_rng(7).normal(size=(C, lg.D)) * 1.5  # B[y]: the class moves the data mean


@functools.lru_cache(maxsize=None)
def cvae_model():
  return models.VAE(image_shape=(lg.D, 1, 1), latent_dims=(lg.LATENT,), hidden_sizes=((lg.D,),),
                    activation="linear", likelihood="gaussian_fixed", fixed_log_sigma=float(np.log(lg.SIGMA)),
                    num_classes=C)


def cvae_params(mean_shift=0.0, logvar_shift=0.0):
  """The unconditional exact parameters with the one-hot rows added: the encoder sees x - B[y],
  the decoder adds B[y]."""
  p = jax.tree.map(np.asarray, lg.exact_params(mean_shift=mean_shift, logvar_shift=logvar_shift))
  enc = p["enc_trunk0"]["dense_0"]
  dec = p["dec_trunk0"]["dense_0"]
  p["enc_trunk0"]["dense_0"] = dict(enc, kernel=np.concatenate([enc["kernel"], -SHIFTS]))
  p["dec_trunk0"]["dense_0"] = dict(dec, kernel=np.concatenate([dec["kernel"], SHIFTS]))
  return jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), p)


def conditional_data(n=6, seed=1):
  """x ~ p(x | y) for y = 0, 1, 2, 0, ... with the exact log p(x | y)."""
  _, w, b, _ = lg.ppca()
  cov = w @ w.T + lg.SIGMA**2 * np.eye(lg.D)
  y = np.arange(n) % C
  rng = np.random.default_rng(seed)
  x = np.stack([rng.multivariate_normal(b + SHIFTS[c], cov) for c in y])
  log_px_y = np.array([stats.multivariate_normal(b + SHIFTS[c], cov).logpdf(xi) for xi, c in zip(x, y)])
  return jnp.asarray(x.reshape(n, lg.D, 1, 1), jnp.float32), jnp.asarray(y, jnp.int32), log_px_y


@functools.partial(jax.jit, static_argnames="k")
def iwae(params, x, y, key, *, k):
  """-L_K per example (the IWAE loss given y) for a batch."""
  keys = jax.random.split(key, x.shape[0])
  return jax.vmap(lambda xi, yi, ki: losses.iwae_loss(cvae_model(), params, xi, ki, kl_weight=1.0,
                                                      num_samples=k, label=yi)[0])(x, y, keys)


# -- the label conditions the networks ----------------------------------------------------------------

def test_changing_the_label_changes_the_decoder_output_as_the_one_hot_input_says():
  model = models.VAE(image_shape=(3, 3, 1), latent_dims=(2,), hidden_sizes=((5,),), num_classes=4)
  params = models.init_params(model, jax.random.key(0))
  z = jnp.asarray([[0.3, -1.2], [0.3, -1.2]])
  labels = jnp.asarray([1, 3], jnp.int32)
  x, key = jnp.ones((3, 3, 1)), jax.random.key(2)

  @jax.jit
  def outputs(params):
    apply = functools.partial(model.apply, {"params": params})
    return (apply(z, labels, method=model.decode),
            jax.vmap(lambda y: apply(x, y, method=model.encode)[0])(labels),
            jax.vmap(lambda y: apply(key, 2, y, method=model.generate))(labels))

  logits, means, samples = map(np.asarray, outputs(params))
  assert logits.shape == (2, 3, 3, 1)
  assert np.abs(logits[0] - logits[1]).max() > 1e-3  # same z, another digit: another image
  # By hand: tanh([z, onehot(y)] W1 + b1) W2 + b2.
  p = jax.tree.map(np.asarray, params)
  h = np.tanh(np.concatenate([np.asarray(z), np.eye(4)[np.asarray(labels)]], 1)
              @ p["dec_trunk0"]["dense_0"]["kernel"] + p["dec_trunk0"]["dense_0"]["bias"])
  expect = h @ p["dec_out"]["kernel"] + p["dec_out"]["bias"]
  np.testing.assert_allclose(logits.reshape(2, -1), expect, rtol=1e-5, atol=1e-5)
  # The encoder sees the label too, and samples from the same key follow it.
  assert np.abs(means[0] - means[1]).max() > 1e-3
  assert np.abs(samples[0] - samples[1]).max() > 1e-4


def test_class_prior_kl_is_the_closed_form_and_starts_at_the_standard_normal():
  model = models.VAE(image_shape=(3, 3, 1), latent_dims=(2,), hidden_sizes=((5,),), num_classes=4,
                     prior="conditional")
  params = jax.tree.map(np.array, models.init_params(model, jax.random.key(0)))
  terms = jax.jit(lambda p, n: model.apply({"params": p}, jnp.ones((3, 3, 1)), jax.random.key(1), n,
                                           jnp.int32(2)), static_argnums=1)
  t0 = terms(params, 1)
  np.testing.assert_allclose(t0["kl"], dist.kl_gaussian_standard_normal(t0["mean"], t0["logvar"]), rtol=1e-6)
  params["class_prior"]["means"][2] = [1.0, -0.5]
  params["class_prior"]["logvars"][2] = [0.4, -0.7]
  t = terms(params, 200_000)
  mc = float(jnp.mean(t["log_qz"] - t["log_pz"]))  # E_q[log q - log p(z | y)]
  assert float(t["kl"]) == pytest.approx(mc, abs=0.01)
  m, v = np.asarray(t["mean"], np.float64), np.exp(np.asarray(t["logvar"], np.float64))
  mp, vp = np.array([1.0, -0.5]), np.exp([0.4, -0.7])
  np.testing.assert_allclose(float(t["kl"]), np.sum(0.5 * (np.log(vp / v) + (v + (m - mp) ** 2) / vp - 1)),
                             rtol=1e-5)


# -- log p(x | y): the IWAE properties of the core ---------------------------------------------------

def test_exact_posterior_makes_every_conditional_bound_equal_log_p_x_given_y():
  x, y, log_px_y = conditional_data()
  for k in (1, 7):
    loss = iwae(cvae_params(), x, y, jax.random.key(k), k=k)
    np.testing.assert_allclose(-loss, log_px_y, atol=2e-4)
  # The label matters: with the wrong classes the bound falls far below the truth.
  loss = iwae(cvae_params(), x, (y + 1) % C, jax.random.key(0), k=7)
  assert np.mean(-loss) < np.mean(log_px_y) - 1.0


def test_conditional_iwae_is_the_elbo_at_k1_increases_with_k_and_reaches_log_p_x_given_y():
  x, y, log_px_y = conditional_data(3)
  params = cvae_params(mean_shift=0.6, logvar_shift=0.7)  # a poor q(z | x, y)
  # The exact ELBO of that q, per class: the unconditional one at x - B[y].
  _, _, _, model_lg = lg.ppca()
  xs = np.asarray(x).reshape(3, lg.D) - SHIFTS[np.asarray(y)]
  exact_elbo = np.asarray(jax.jit(lambda p, x, y, xs: lg.linear_gaussian.elbo(
      model_lg, xs, *jax.vmap(lambda xi, yi: cvae_model().apply({"params": p}, xi, yi, method="encode"))(x, y)))(
          params, x, y, jnp.asarray(xs)))
  assert np.all(exact_elbo < log_px_y - 0.3)
  expected = []
  reps = 200
  xr, yr = jnp.repeat(x, reps, axis=0), jnp.repeat(y, reps)
  for k in (1, 10, 100):
    loss = iwae(params, xr, yr, jax.random.key(k), k=k)
    expected.append(np.asarray(-loss).reshape(3, reps).mean(1))
  expected = np.stack(expected)
  np.testing.assert_allclose(expected[0], exact_elbo, atol=0.15)  # K = 1: the ELBO in expectation
  assert np.all(np.diff(expected, axis=0) > -0.02), expected
  assert np.all(expected[-1] < log_px_y + 0.02)  # a lower bound in expectation
  assert np.all(expected[-1] > expected[0] + 0.2)  # ... that tightens with K


def test_evaluate_estimates_log_p_x_given_y_with_the_labels_it_is_given():
  """Grey images: the chunked K = 2000 NLL is near the exact -log p(x | y) for the labels given."""
  rng = np.random.default_rng(3)
  images = rng.integers(0, 256, (6, lg.D, 1, 1)).astype(np.uint8)
  y = np.arange(6) % C
  params = cvae_params(mean_shift=0.3, logvar_shift=0.3)
  kw = dict(key=jax.random.key(0), mode="grey", num_samples=2000, batch_size=4, chunk_size=500)
  out = eval_lib.evaluate(cvae_model(), params, images, labels=y, **kw)
  wrong = eval_lib.evaluate(cvae_model(), params, images, labels=(y + 1) % C, **kw)
  # Exact: x = (level + u) / 256, u ~ U(0, 1) drawn from the image's data key (as evaluate does).
  _, w, b, _ = lg.ppca()
  cov = w @ w.T + lg.SIGMA**2 * np.eye(lg.D)

  def exact_nll(labels):
    lp = []
    for i, (img, c) in enumerate(zip(images, labels)):
      data_key, _ = jax.random.split(jax.random.fold_in(kw["key"], i))
      x = np.asarray(jax.random.uniform(data_key, img.shape) + img) / 256.0
      lp.append(stats.multivariate_normal(b + SHIFTS[c], cov).logpdf(x.reshape(-1)))
    return -np.mean(lp)

  assert out["nll"] == pytest.approx(exact_nll(y), abs=0.05)
  assert wrong["nll"] == pytest.approx(exact_nll((y + 1) % C), abs=0.05)
  assert abs(wrong["nll"] - out["nll"]) > 0.1  # the labels reach every term
  assert out["nll"] < -out["elbo"] - 0.05  # the importance-sampled estimate is above the ELBO


# -- bad input ------------------------------------------------------------------------------------

def labelled(labels_train, labels_val=None):
  data = synthetic(64)
  val = data["validation"]
  return {"train": data_lib.Split(data["train"].images, labels_train),
          "validation": data_lib.Split(val.images, np.zeros(len(val.images), np.int32)
                                       if labels_val is None else labels_val)}


CVAE = {"data.name": "mnist", "data.mode": "dynamic", "model.num_classes": 10}


@pytest.mark.parametrize("labels,match", [
    (np.full(64, 10), r"train labels lie in \[10, 10\]; expected class indices in \[0, 10\)"),
    (np.full(64, -1), r"train labels lie in \[-1, -1\]"),
    (None, r"train labels are missing"),
    (np.zeros((64, 2), np.int32), r"train labels have shape \(64, 2\); expected \(64,\)"),
    (np.zeros(63, np.int32), r"train labels have shape \(63,\)"),
    (np.full(64, 0.5), r"non-integer values"),
])
def test_bad_labels_are_named_before_training(tmp_path, labels, match):
  with pytest.raises(data_lib.DataError, match=match):
    train.train_and_evaluate(tiny_config(**CVAE), tmp_path, datasets=labelled(labels))
  assert not (tmp_path / "checkpoints").exists()


def test_the_samples_figure_of_a_cvae_has_one_row_per_class():
  model = config_lib.make_model(tiny_config(**CVAE))
  params = models.init_params(model, jax.random.key(0))
  data = labelled(np.arange(64) % 10)
  figs = train.figures(model, params, data["validation"].images, jax.random.key(1), "dynamic",
                       np.arange(64) % 10)
  samples = figs["samples"]
  assert samples.images.shape == (100, 28, 28, 1) and samples.ncols == 10
  assert "one row per class" in samples.caption
  np.testing.assert_array_equal(samples.images, train.class_samples(
      model, params, jax.random.split(jax.random.fold_in(jax.random.key(1), 1))[0]))
  assert figs["reconstructions"].images.shape == (64, 28, 28, 1)  # 32 originals, 32 reconstructions


def test_bad_labels_at_evaluation_and_in_the_model_are_named():
  model, params = cvae_model(), cvae_params()
  images = np.zeros((4, lg.D, 1, 1), np.uint8)
  kw = dict(key=jax.random.key(0), mode="static", num_samples=1, batch_size=4, chunk_size=1)
  with pytest.raises(data_lib.DataError, match=r"labels lie in \[0, 3\]; expected class indices in \[0, 3\)"):
    eval_lib.evaluate(model, params, images, labels=np.arange(4), **kw)
  with pytest.raises(data_lib.DataError, match="labels are missing"):
    eval_lib.evaluate(model, params, images, **kw)
  with pytest.raises(data_lib.DataError, match="unconditional"):
    eval_lib.evaluate(lg.ppca()[0], lg.exact_params(), images, labels=np.zeros(4, int), **kw)
  x, key = jnp.zeros((lg.D, 1, 1)), jax.random.key(0)
  with pytest.raises(ValueError, match="class-conditional .*pass a label"):
    model.apply({"params": params}, x, key)
  with pytest.raises(ValueError, match=r"label has shape \(2,\); expected one label per example"):
    model.apply({"params": params}, x, key, 1, jnp.zeros(2, jnp.int32))
  with pytest.raises(ValueError, match="label has dtype float32"):
    model.apply({"params": params}, x, key, 1, jnp.float32(1))
  with pytest.raises(ValueError, match="unconditional model"):
    lg.ppca()[0].apply({"params": lg.exact_params()}, x, key, 1, jnp.int32(0))


@pytest.mark.parametrize("overrides,field", [
    ({"model.num_classes": 10}, r"config.model.num_classes=10 .*binarized_mnist has no labels"),
    ({**CVAE, "model.kind": "hvae", "model.latent_dims": (4, 2), "model.hidden_sizes": ((8,), (8,)),
      "loss.analytic_kl": False}, r"config.model.num_classes=10 .*model.kind='vae'"),
    ({"data.name": "mnist", "data.mode": "dynamic", "model.prior": "conditional"},
     r"config.model.prior='conditional' .*needs labels"),
    ({**CVAE, "model.prior": "vamp", "loss.analytic_kl": False}, r"config.model.num_classes=10 .*VampPrior"),
])
def test_impossible_conditional_configs_are_named(overrides, field):
  with pytest.raises(config_lib.ConfigError, match=field):
    config_lib.validate(tiny_config(**overrides))
  config_lib.validate(tiny_config(**CVAE, **{"model.prior": "conditional"}))  # closed-form KL allowed


# -- latent maps -----------------------------------------------------------------------------------

def test_manifold_grid_is_the_inverse_gaussian_cdf_of_an_even_grid():
  z = plotting.manifold_latents(5)
  ppf = stats.norm.ppf(np.linspace(0.05, 0.95, 5))
  assert z.shape == (5, 5, 2)
  np.testing.assert_allclose(z[2, :, 0], ppf, rtol=1e-6)        # z_1 grows left to right
  np.testing.assert_allclose(z[:, 1, 1], ppf[::-1], rtol=1e-6)  # z_2 grows bottom to top
  np.testing.assert_allclose(z[0, 0], [stats.norm.ppf(0.05), stats.norm.ppf(0.95)], rtol=1e-6)
  # Equal prior mass between neighbours along each axis.
  np.testing.assert_allclose(np.diff(stats.norm.cdf(z[0, :, 0])), 0.225, rtol=1e-6)
  with pytest.raises(ValueError, match=r"\[lo, hi\]"):
    plotting.manifold_latents(5, 0.0, 0.95)


def test_pca_projection_recovers_the_principal_axes():
  rng = np.random.default_rng(0)
  basis, _ = np.linalg.qr(rng.normal(size=(6, 6)))
  coords = rng.normal(size=(2000, 6)) * np.array([5.0, 2.0, 0.3, 0.2, 0.1, 0.1])
  projected, ratio = plotting.pca_2d(coords @ basis.T + 3.0)
  # Each component is one of the two largest axes (up to sign).
  for i in range(2):
    c = abs(np.corrcoef(projected[:, i], coords[:, i])[0, 1])
    assert c > 0.99, (i, c)
  var = np.var(coords, axis=0)
  np.testing.assert_allclose(ratio, var[:2] / var.sum(), rtol=0.05)
  line = plotting.interpolate(np.zeros(3), np.ones(3), 5)
  np.testing.assert_allclose(line[:, 0], [0, 0.25, 0.5, 0.75, 1.0])
