"""Data parallelism: 1 and 4 (forced host) devices give the same training and evaluation."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import pytest

from vae_jax import parallel

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent("""
    import jax, jax.numpy as jnp, numpy as np, optax
    from vae_jax import evaluation as evaluate, losses, models, parallel, train
    assert jax.device_count() == 4, jax.devices()
    model = models.VAE(latent_dims=(4,), hidden_sizes=((16,),))
    images = (np.random.default_rng(0).random((64, 28, 28, 1)) < 0.3).astype(np.uint8)
    loss_fn = losses.make_loss(__import__("ml_collections").ConfigDict(
        dict(name="elbo", num_samples=1, analytic_kl=True, beta=1.0, warmup_epochs=0.0)))
    results = {}
    for n in (1, 4):
      mesh = parallel.make_mesh(n)
      state = train.create_train_state(model, jax.random.key(0), optax.adam(1e-2))
      state = parallel.replicate(state, mesh)
      data = parallel.replicate(images, mesh)
      epoch = train.make_train_epoch(model, loss_fn, mode="static", batch_size=16, mesh=mesh)
      if n == 4:  # the batch is split and the gradients reduced across devices
        hlo = epoch.lower(state, data, 1, jax.random.key(1), jax.random.key(2)).compile().as_text()
        assert "all-reduce" in hlo
        try:
          train.make_train_epoch(model, loss_fn, mode="static", batch_size=18, mesh=mesh)
          raise AssertionError("batch 18 over 4 devices accepted")
        except ValueError as e:
          assert "divisible" in str(e)
      for e in range(1, 3):  # 2 epochs x 4 steps
        state, metrics = epoch(state, data, e, jax.random.key(1), jax.random.key(2))
      assert len(state.params["dec_out"]["kernel"].sharding.device_set) == n
      ev = evaluate.evaluate(model, state.params, images[:20], key=jax.random.key(3), mode="static",
                             num_samples=30, batch_size=8, chunk_size=7, mesh=mesh)
      results[n] = (jax.device_get(state.params), np.asarray(metrics["loss"]), ev)
    (p1, l1, e1), (p4, l4, e4) = results[1], results[4]
    for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(p4)):
      np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(l1, l4, rtol=1e-5)
    for k in ("nll", "elbo", "kl"):
      np.testing.assert_allclose(e1[k], e4[k], rtol=1e-5)
    print("OK", l4[-1], e4["nll"])
""")


def test_one_and_four_devices_agree():
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu",
             PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
  proc = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True,
                        timeout=300)
  assert proc.returncode == 0 and "OK" in proc.stdout, proc.stderr[-3000:]


def test_bad_device_counts_are_named():
  with pytest.raises(ValueError, match="num_devices=99"):
    parallel.make_mesh(99)
  with pytest.raises(ValueError, match="num_devices=-1"):
    parallel.make_mesh(-1)
  mesh = parallel.make_mesh(0)
  assert mesh.size == jax.device_count()
  if mesh.size == 1:
    parallel.check_batch_size(7, mesh)  # anything splits over one device
  with pytest.raises(parallel.DistributedError, match="process_id"):
    parallel.initialize_distributed("localhost:1234", 2, 5)
