"""compilation.jit: which XLA options each step gets, and that they reach jax.jit."""

import jax
import jax.numpy as jnp
import numpy as np

from vae_jax import compilation
from vae_jax import models


def test_mixture_priors_train_with_individual_dot_and_the_rest_with_xla_defaults():
  assert compilation.COMPILER_OPTIONS == {}
  for prior in ("mog", "vamp"):
    assert compilation.options_for(models.VAE(latent_dims=(2,), prior=prior)) == compilation.INDIVIDUAL_DOT
  assert compilation.options_for(models.VAE(latent_dims=(2,))) == {}
  assert compilation.options_for(object()) == {}  # models without a prior (VQ-VAE, classifiers)


def test_options_reach_jax_jit_and_leave_values_unchanged(monkeypatch):
  seen = []
  real = jax.jit
  monkeypatch.setattr(compilation.jax, "jit", lambda f, **kw: seen.append(kw.get("compiler_options")) or real(f, **kw))
  f = lambda a: jnp.tanh(a @ a.T).sum(-1)
  a = jnp.asarray(np.random.default_rng(0).normal(size=(8, 5)), jnp.float32)
  plain = compilation.jit(f)(a)
  fused = compilation.jit(f, options=compilation.INDIVIDUAL_DOT)(a)
  monkeypatch.setitem(compilation.COMPILER_OPTIONS, "xla_cpu_experimental_ynn_fusion_type",
                      "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT")
  compilation.jit(static_argnames=())(f)
  assert seen == [None, compilation.INDIVIDUAL_DOT, compilation.INDIVIDUAL_DOT]
  np.testing.assert_allclose(plain, fused, rtol=1e-6)
