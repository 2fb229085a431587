import jax
import numpy as np
import pytest

from tests import test_losses as lg  # the exact linear-Gaussian model
from vae_jax import evaluation as eval_lib
from vae_jax import models


def grey_images(n=10, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (n, lg.D, 1, 1)).astype(np.uint8)


def run(params, images, **kw):
  model = lg.ppca()[0]
  kw = dict(dict(key=jax.random.key(0), mode="grey", num_samples=8, batch_size=4, chunk_size=3), **kw)
  return eval_lib.evaluate(model, params, images, **kw)


def test_exact_posterior_gives_the_same_nll_whatever_k_and_chunking():
  # Every importance weight equals p(x): a padded (unmasked) chunk would shift the estimate by log(9/7).
  params, images = lg.exact_params(), grey_images()
  a = run(params, images, num_samples=7, chunk_size=3)
  b = run(params, images, num_samples=1, chunk_size=1)
  np.testing.assert_allclose(a["nll"], b["nll"], rtol=1e-5)
  c = run(params, images, num_samples=2000, chunk_size=500)
  np.testing.assert_allclose(c["nll"], a["nll"], rtol=1e-5)
  np.testing.assert_allclose(c["nll"], -c["elbo"], atol=0.05)  # analytic-KL ELBO, MC recon
  assert a["bits_per_dim"] == pytest.approx(a["nll"] / (lg.D * np.log(2)) + 8)


def test_batch_size_does_not_change_results_and_more_samples_tighten_the_bound():
  params, images = lg.exact_params(mean_shift=0.5, logvar_shift=0.5), grey_images(12)
  a = run(params, images, batch_size=5)
  b = run(params, images, batch_size=12)
  for k in ("nll", "elbo", "recon", "kl"):
    np.testing.assert_allclose(a[k], b[k], rtol=1e-5)
  one = run(params, images, num_samples=1, chunk_size=1)
  many = run(params, images, num_samples=2000, chunk_size=500)
  assert -many["elbo"] > many["nll"] + 0.1  # log p(x) estimate above the ELBO
  assert one["nll"] > many["nll"]


def test_active_units_count_units_whose_mean_varies_with_x():
  params = jax.tree.map(np.array, lg.exact_params())
  params["enc_heads_0"]["mean"]["kernel"][:, 1] = 0.0  # unit 1 ignores x
  assert run(params, grey_images(50))["active_units"] == 1
  assert run(lg.exact_params(), grey_images(50))["active_units"] == 2


def test_two_layer_model_reports_monte_carlo_kl():
  model = models.VAE(image_shape=(lg.D, 1, 1), latent_dims=(3, 2), hidden_sizes=((8,), (4,)),
                     likelihood="gaussian_fixed")
  params = models.init_params(model, jax.random.key(1))
  out = eval_lib.evaluate(model, params, grey_images(6), key=jax.random.key(0), mode="grey",
                          num_samples=1, batch_size=3, chunk_size=1)
  np.testing.assert_allclose(out["nll"], -out["elbo"], rtol=1e-5)  # K = 1: the same single weight
  assert np.isfinite(out["kl"])


def test_k_below_one_is_an_error():
  with pytest.raises(ValueError, match="num_samples=0"):
    run(lg.exact_params(), grey_images(), num_samples=0)


def test_steps_are_capped_at_max_samples_per_step_without_changing_results(monkeypatch):
  assert eval_lib._images_per_step(100, 250) == eval_lib.MAX_SAMPLES_PER_STEP // 250
  assert eval_lib._images_per_step(7, 250) == 7
  assert eval_lib._images_per_step(100, 10**6) == 1  # one image even when its chunk is larger

  class FourDevices:
    size = 4
  assert eval_lib._images_per_step(100, 250, FourDevices()) == 4 * (eval_lib.MAX_SAMPLES_PER_STEP // 250)
  params, images = lg.exact_params(mean_shift=0.5, logvar_shift=0.5), grey_images(12)
  a = run(params, images, batch_size=12)  # 12 images x 3 samples per step
  calls = []
  real = eval_lib._batch_stats
  monkeypatch.setattr(eval_lib, "_batch_stats", lambda *a, **k: calls.append(a[2].shape[0]) or real(*a, **k))
  monkeypatch.setattr(eval_lib, "MAX_SAMPLES_PER_STEP", 7)  # -> 2 images x 3 samples per step
  b = run(params, images, batch_size=12)
  assert calls == [2] * 6
  for k in ("nll", "elbo", "recon", "kl"):
    np.testing.assert_allclose(a[k], b[k], rtol=1e-5)
