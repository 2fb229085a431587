import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vae_jax import models


@pytest.mark.parametrize("network,shape", [("mlp", (28, 28, 1)), ("conv", (28, 28, 1)), ("conv", (32, 32, 3))])
@pytest.mark.parametrize("latent_dims,hidden", [((5,), ((16,),)), ((6, 3), ((16,), (8,)))])
def test_terms_and_samples_have_the_documented_shapes(network, shape, latent_dims, hidden):
  model = models.VAE(image_shape=shape, latent_dims=latent_dims, hidden_sizes=hidden,
                     network=network, conv_features=(4, 8))
  params = models.init_params(model, jax.random.key(0))
  x = (jax.random.uniform(jax.random.key(1), shape) > 0.5).astype(jnp.float32)
  t = model.apply({"params": params}, x, jax.random.key(2), 7)
  for k in ("log_px_z", "log_pz", "log_qz"):
    assert t[k].shape == (7,) and np.all(np.isfinite(t[k]))
  assert t["mean"].shape == (latent_dims[0],)
  assert ("kl" in t) == (len(latent_dims) == 1)
  samples = model.apply({"params": params}, jax.random.key(3), 4, method=model.generate)
  assert samples.shape == (4,) + shape and float(samples.min()) >= 0 and float(samples.max()) <= 1
  batch = jax.vmap(lambda xi: model.apply({"params": params}, xi, jax.random.key(2), 7))(jnp.stack([x, x]))
  np.testing.assert_allclose(batch["log_px_z"][0], t["log_px_z"], rtol=1e-5)


@pytest.mark.parametrize("likelihood", ["gaussian_fixed", "gaussian_shared", "gaussian_pixel"])
def test_gaussian_likelihoods_learn_sigma_only_when_asked(likelihood):
  model = models.VAE(image_shape=(4, 4, 1), latent_dims=(2,), hidden_sizes=((8,),), likelihood=likelihood,
                     fixed_log_sigma=-1.0)
  params = models.init_params(model, jax.random.key(0))
  assert ("sigma_raw" in params) == (likelihood != "gaussian_fixed")
  if likelihood == "gaussian_pixel":
    assert params["sigma_raw"].shape == (4, 4, 1)
  x = jnp.full((4, 4, 1), 0.3)
  loss = lambda p: -model.apply({"params": p}, x, jax.random.key(1), 1)["log_px_z"][0]
  g = jax.grad(loss)(params)
  assert all(np.all(np.isfinite(l)) for l in jax.tree.leaves(g))
  if likelihood != "gaussian_fixed":
    assert float(jnp.abs(g["sigma_raw"]).sum()) > 0


def test_decoder_output_changes_with_z_and_encoder_with_x():
  model = models.VAE(image_shape=(28, 28, 1), latent_dims=(4,), hidden_sizes=((16,),))
  params = models.init_params(model, jax.random.key(0))
  dec = lambda z: model.apply({"params": params}, z, method=model.decode)
  assert not np.allclose(dec(jnp.zeros(4)), dec(jnp.ones(4)))
  enc = lambda x: model.apply({"params": params}, x, method=model.encode)[0]
  assert not np.allclose(enc(jnp.zeros((28, 28, 1))), enc(jnp.ones((28, 28, 1))))


def test_bf16_matmuls_compute_the_float32_model_to_bf16_precision():
  """matmul_dtype='bfloat16': the same parameters and draw give float32 terms within bf16's
  rounding of the float32 model's (relative 8e-3 per rounding), and a gradient that points
  the same way; convolutional networks and the HVAE refuse it."""
  x = jnp.asarray(np.random.default_rng(0).random((16, 28, 28, 1)) < 0.3, jnp.float32)
  kwargs = dict(latent_dims=(20,), hidden_sizes=((200,),), activation="relu")
  m32, m16 = models.VAE(**kwargs), models.VAE(**kwargs, matmul_dtype="bfloat16")
  params = m32.init(jax.random.key(0), x, jax.random.key(1))["params"]
  t32 = m32.apply({"params": params}, x, jax.random.key(2))
  t16 = m16.apply({"params": params}, x, jax.random.key(2))
  for name in ("log_px_z", "kl", "mean", "logvar"):
    assert t16[name].dtype == jnp.float32, name
  np.testing.assert_allclose(t16["log_px_z"], t32["log_px_z"], rtol=4e-3)
  np.testing.assert_allclose(t16["kl"], t32["kl"], rtol=2e-2, atol=2e-2)
  assert not np.allclose(t16["log_px_z"], t32["log_px_z"], rtol=1e-6)  # bf16 was used

  def grad(model):
    loss = lambda p: -jnp.mean(model.apply({"params": p}, x, jax.random.key(2))["log_px_z"])
    return jnp.concatenate([g.ravel() for g in jax.tree.leaves(jax.grad(loss)(params))])
  g32, g16 = grad(m32), grad(m16)
  assert np.all(np.isfinite(g16)) and g16.dtype == jnp.float32
  assert float(g32 @ g16 / (jnp.linalg.norm(g32) * jnp.linalg.norm(g16))) > 0.999
  conv = models.VAE(latent_dims=(4,), network="conv", conv_features=(8,), matmul_dtype="bfloat16")
  with pytest.raises(ValueError, match="network='mlp'"):
    conv.init(jax.random.key(0), x[:2], jax.random.key(1))
  from vae_jax.models import hvae
  two_level = hvae.HVAE(latent_dims=(4, 2), hidden_sizes=((8,), (8,)), matmul_dtype="bfloat16")
  with pytest.raises(ValueError, match="float32 only"):
    two_level.init(jax.random.key(0), x[:2], jax.random.key(1))
