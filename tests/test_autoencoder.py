"""The deterministic and denoising autoencoder baselines on the shared losses, trainer and evaluation."""

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vae_jax.configs import default
from tests.test_train import synthetic, tiny_config
from vae_jax import config as config_lib
from vae_jax import evaluation as eval_lib
from vae_jax import losses
from vae_jax import models
from vae_jax import train

SHAPE = (4, 4, 1)


@pytest.fixture(scope="module")
def ae():
  model = models.VAE(image_shape=SHAPE, latent_dims=(3,), hidden_sizes=((8,),), kind="autoencoder")
  return model, jax.jit(models.init_params, static_argnums=0)(model, jax.random.key(0))


def binary(key, shape=SHAPE):
  return (jax.random.uniform(key, shape) > 0.5).astype(jnp.float32)


def test_autoencoder_has_exactly_zero_kl_and_ignores_the_sampling_key(ae):
  model, params = ae
  x = binary(jax.random.key(1))
  call = jax.jit(lambda k: model.apply({"params": params}, x, k, 3))
  t1, t2 = call(jax.random.key(2)), call(jax.random.key(3))
  for name in t1:
    np.testing.assert_array_equal(t1[name], t2[name])
  assert float(t1["kl"]) == 0.0 and np.all(t1["log_pz"] == 0) and np.all(t1["log_qz"] == 0)
  assert "logvar" not in t1 and "logvar" not in params["enc_heads_0"]  # no variance to learn
  # The loss is the reconstruction term alone: -log Bernoulli(x; sigmoid(decoder(encoder(x)))).
  loss = jax.jit(functools.partial(losses.autoencoder_loss, model))
  (l1, aux1), (l2, _) = loss(params, x, jax.random.key(4)), loss(params, x, jax.random.key(5))
  assert float(l1) == float(l2) and float(aux1["kl"]) == 0.0
  logits = np.asarray(model.apply({"params": params}, t1["mean"], method=model.decode), np.float64)
  xn = np.asarray(x, np.float64)
  expected = -np.sum(xn * logits - np.logaddexp(0, logits))
  assert float(l1) == pytest.approx(expected, rel=1e-5)
  np.testing.assert_allclose(t1["log_px_z"], -expected, rtol=1e-5)


@pytest.mark.parametrize("corruption,level", [("mask", 0.25), ("flip", 0.1), ("gaussian", 0.3)])
def test_denoising_corruption_is_reproducible_from_its_key(corruption, level):
  x = binary(jax.random.key(0), (100, 28, 28, 1))
  c = jax.jit(lambda k: losses.corrupt(k, x, corruption, level))
  a, b, other = c(jax.random.key(1)), c(jax.random.key(1)), c(jax.random.key(2))
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, other)
  changed = np.asarray(a != x)
  if corruption == "mask":  # only ones can change (to 0), each with probability `level`
    assert np.all(np.asarray(a)[changed] == 0)
    assert changed.sum() / np.asarray(x).sum() == pytest.approx(level, abs=0.01)
  elif corruption == "flip":
    np.testing.assert_array_equal(np.asarray(a)[changed], 1 - np.asarray(x)[changed])
    assert changed.mean() == pytest.approx(level, abs=0.005)
  else:
    assert float(jnp.std(a - x)) == pytest.approx(level, rel=0.01)
  np.testing.assert_array_equal(losses.corrupt(jax.random.key(1), x, "none", 0.5), x)


def test_denoising_loss_encodes_the_corrupted_input_and_scores_the_clean_one(ae):
  model, params = ae
  x = binary(jax.random.key(1))
  loss = jax.jit(functools.partial(losses.autoencoder_loss, model, corruption="flip", corruption_level=0.3))
  key = jax.random.key(7)
  np.testing.assert_array_equal(loss(params, x, key)[0], loss(params, x, key)[0])
  x_tilde = losses.corrupt(key, x, "flip", 0.3)
  assert not np.array_equal(x_tilde, x)
  code, _ = model.apply({"params": params}, x_tilde, method=model.encode)
  logits = model.apply({"params": params}, code, method=model.decode)
  expected = -model.apply({"params": params}, x, logits, method=model.log_likelihood)
  assert float(loss(params, x, key)[0]) == pytest.approx(float(expected), rel=1e-5)
  assert float(loss(params, x, jax.random.key(8))[0]) != float(loss(params, x, key)[0])


def test_autoencoder_trains_on_the_shared_trainer_and_evaluation_reports_recon_only(tmp_path):
  cfg = tiny_config(num_epochs=3, eval_every_epochs=3, **{"model.kind": "autoencoder", "loss.name": "autoencoder",
                                                         "loss.corruption": "mask", "loss.corruption_level": 0.2})
  cfg.optimizer.learning_rate = 3e-3
  state, last = train.train_and_evaluate(cfg, tmp_path, datasets=synthetic())
  rows = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert rows[-1]["train_recon"] < rows[0]["train_recon"] - 5
  assert all(r["train_kl"] == 0.0 for r in rows)
  assert last["val_kl"] == 0.0 and "val_nll" not in last and "val_elbo" not in last
  model = config_lib.make_model(cfg)
  images = synthetic()["validation"].images[:8]
  result = eval_lib.evaluate(model, state.params, images, key=jax.random.key(0), mode="static",
                             num_samples=100, batch_size=8)
  x = jnp.asarray(images, jnp.float32)
  by_hand = -jnp.mean(jax.vmap(lambda xi: model.apply({"params": state.params}, xi, jax.random.key(0), 1)[
      "log_px_z"][0])(x))
  assert result["recon"] == pytest.approx(float(by_hand), rel=1e-5) and result["kl"] == 0.0
  assert (tmp_path / "figures" / "samples.png").exists()


@pytest.mark.parametrize("overrides,match", [
    ({"model.kind": "autoencoder"}, "loss.name='elbo'"),
    ({"loss.name": "autoencoder"}, "needs model.kind='autoencoder'"),
    ({"model.kind": "autoencoder", "loss.name": "autoencoder", "model.prior": "vamp"}, "no prior"),
    ({"model.kind": "autoencoder", "loss.name": "autoencoder", "model.latent_dims": (4, 2),
      "model.hidden_sizes": ((8,), (8,))}, "one code layer"),
    ({"loss.corruption": "mask", "loss.corruption_level": 0.2}, "denoising autoencoder"),
    ({"model.kind": "autoencoder", "loss.name": "autoencoder", "loss.corruption": "mask",
      "loss.corruption_level": 1.5}, "loss.corruption_level=1.5"),
    ({"model.kind": "autoencoder", "loss.name": "autoencoder", "loss.corruption": "blur"}, "loss.corruption"),
])
def test_autoencoder_config_errors_are_named(overrides, match):
  cfg = default.get_config()
  for field, value in overrides.items():
    section, leaf = field.split(".")
    cfg[section][leaf] = value
  with pytest.raises(config_lib.ConfigError, match=match):
    config_lib.validate(cfg)
