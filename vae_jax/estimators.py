"""The importance-weighted family, per example: bounds and their gradient estimators.

With K draws z_k ~ q(z | x) and log-weights log w_k = log p(x, z_k) - log q(z_k | x):

    ELBO           mean_k log w_k
    IWAE_K         log (1/K) sum_k w_k                               (Burda et al. 2016)
    MIWAE_{M,K}    (1/M) sum_m IWAE_K over M groups of K draws        (Rainforth et al. 2018)
    CIWAE_beta     beta ELBO + (1 - beta) IWAE_K                     (Rainforth et al. 2018)
    PIWAE_{M,K}    the encoder trained on MIWAE_{M,K}, the decoder on IWAE_{MK}

The gradient estimator is separate from the bound (``GRADIENTS``); the value
reported is the bound's whatever the estimator:

* "reparam": the reparameterization gradient of the bound itself;
* "stl" ("sticking the landing", Roeder et al. 2017): log q is evaluated with
  the variational parameters held fixed, so the encoder's gradient flows only
  through z. The score term it drops has mean zero for the ELBO, so STL is
  unbiased for the ELBO (and exactly zero at the exact posterior); for IWAE
  with K > 1 it is biased (Tucker et al. 2019);
* "dreg" (doubly reparameterized, Tucker et al. 2019): for IWAE and MIWAE,
  the encoder gets sum_k w~_k^2 d log w_k / dz_k dz_k / dphi (w~ the normalized
  weights of the draw's group) and the decoder the plain IWAE gradient
  sum_k w~_k d log w_k / dtheta. Unbiased for the IWAE gradient; its
  signal-to-noise ratio does not fall with K as the plain encoder gradient's
  does (Rainforth et al. 2018).

STL and DReG cost no extra decoder pass: the encoder runs twice (once with the
parameters held fixed, for log q), the decoder once. DReG's squared weights
come from ``dreg_probe``: an identity on the draws whose backward pass scales
each draw's cotangent by its normalized weight, read from the cotangent of a
zero added to the log-weights. PIWAE runs the decoder twice (its two bounds
take different parameters' gradients).

Every loss has the library's signature ``loss(model, params, x, key, *,
kl_weight, ...) -> (loss, aux)``; ``kl_weight`` scales log p(z) - log q(z | x)
inside each weight (1: the true bound).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

GRADIENTS = ("reparam", "stl", "dreg")


def iwae_bound(log_weights: jax.Array) -> jax.Array:
  """log (1/K) sum_k exp(log_weights[k]), stable in log space. [..., K] -> [...]."""
  return jax.nn.logsumexp(log_weights, axis=-1) - math.log(log_weights.shape[-1])


_iwae = iwae_bound


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def dreg_probe(zs: tuple, num_groups: int = 1) -> tuple[tuple, jax.Array]:
  """(zs, zeros [K]): add the zeros to the log-weights; the backward pass then multiplies the
  cotangent of draw k by its weight normalized within its group of K / num_groups draws."""
  return zs, jnp.zeros(zs[0].shape[:1], zs[0].dtype)


def _probe_fwd(zs, num_groups):
  return dreg_probe(zs, num_groups), None


def _probe_bwd(num_groups, _, cotangents):
  g_zs, g_zero = cotangents
  # The bound's cotangent on a log-weight is (outer factor) x w~_k, the same factor for
  # every draw of a group: normalizing within the group leaves w~_k.
  g = g_zero.reshape(num_groups, -1)
  total = jnp.sum(g, axis=-1, keepdims=True)
  w = jnp.where(total != 0, g / jnp.where(total != 0, total, 1.0), 0.0).reshape(-1)
  return (tuple(gz * w.reshape((-1,) + (1,) * (gz.ndim - 1)) for gz in g_zs),)


dreg_probe.defvjp(_probe_fwd, _probe_bwd)


def _apply(model, params, *args, label=None, method):
  args = args + ((label,) if label is not None else ())
  return model.apply({"params": params}, *args, method=method)


def log_weights(model, params, x: jax.Array, key: jax.Array, num_samples: int, *,
                gradient: str = "reparam", kl_weight=1.0, num_groups: int = 1,
                label: jax.Array | None = None) -> tuple[jax.Array, jax.Array, jax.Array]:
  """(log w [K], log p(x | z) [K], log p(z) - log q(z | x) [K]) of K = num_samples draws, the
  gradient routed as ``gradient`` asks (``num_groups``: DReG's weight groups)."""
  if gradient not in GRADIENTS:
    raise ValueError(f"gradient={gradient!r}: choose one of {GRADIENTS}")
  zs = _apply(model, params, x, key, num_samples, label=label, method=model.sample_posterior)
  zero = 0.0
  if gradient == "dreg":
    zs, zero = dreg_probe(zs, num_groups)
  q_params = params if gradient == "reparam" else jax.lax.stop_gradient(params)
  log_q = _apply(model, q_params, x, zs, label=label, method=model.log_posterior)
  log_px_z, log_pz = _apply(model, params, x, zs, label=label, method=model.log_joint)
  log_ratio = log_pz - log_q
  return log_px_z + kl_weight * log_ratio + zero, log_px_z, log_ratio


def _aux(log_px_z, log_ratio, **bounds):
  recon, kl = -jnp.mean(log_px_z), -jnp.mean(log_ratio)
  return dict(bounds, elbo=-(recon + kl), recon=recon, kl=kl)


def elbo_stl_loss(model, params, x, key, *, kl_weight=1.0, num_samples: int = 1, label=None):
  """Negative Monte Carlo ELBO with the STL gradient (Roeder et al. 2017)."""
  log_w, log_px_z, log_ratio = log_weights(model, params, x, key, num_samples, gradient="stl",
                                           kl_weight=kl_weight, label=label)
  return -jnp.mean(log_w), _aux(log_px_z, log_ratio)


def iwae_estimator_loss(model, params, x, key, *, kl_weight=1.0, num_samples: int = 50,
                        gradient: str = "dreg", label=None):
  """Negative IWAE_K bound with the ``gradient`` estimator ("reparam", "stl" or "dreg")."""
  log_w, log_px_z, log_ratio = log_weights(model, params, x, key, num_samples, gradient=gradient,
                                           kl_weight=kl_weight, label=label)
  bound = _iwae(log_w)
  return -bound, _aux(log_px_z, log_ratio, iwae=bound)


def miwae_loss(model, params, x, key, *, kl_weight=1.0, num_samples: int = 8, num_groups: int = 8,
               gradient: str = "reparam", label=None):
  """Negative MIWAE_{M,K}: the mean of M = ``num_groups`` IWAE bounds of K = ``num_samples``
  draws each (M K draws in all). aux ``iwae`` is IWAE_{MK} of the same draws."""
  log_w, log_px_z, log_ratio = log_weights(model, params, x, key, num_samples * num_groups,
                                           gradient=gradient, kl_weight=kl_weight,
                                           num_groups=num_groups, label=label)
  bound = jnp.mean(_iwae(log_w.reshape(num_groups, num_samples)))
  return -bound, _aux(log_px_z, log_ratio, miwae=bound, iwae=_iwae(log_w))


def ciwae_loss(model, params, x, key, *, kl_weight=1.0, num_samples: int = 50, beta: float = 0.5,
               gradient: str = "reparam", label=None):
  """Negative CIWAE_beta = beta ELBO + (1 - beta) IWAE_K on the same K draws."""
  if gradient == "dreg":
    raise ValueError("DReG is derived for IWAE-type bounds (iwae, miwae); CIWAE takes "
                     "gradient='reparam' or 'stl'")
  log_w, log_px_z, log_ratio = log_weights(model, params, x, key, num_samples, gradient=gradient,
                                           kl_weight=kl_weight, label=label)
  iwae = _iwae(log_w)
  bound = beta * jnp.mean(log_w) + (1.0 - beta) * iwae
  return -bound, _aux(log_px_z, log_ratio, ciwae=bound, iwae=iwae)


def piwae_loss(model, params, x, key, *, kl_weight=1.0, num_samples: int = 8, num_groups: int = 8,
               label=None):
  """PIWAE_{M,K}: the encoder's gradient is MIWAE_{M,K}'s, the decoder's IWAE_{MK}'s, from the
  same M K draws. The loss value is -IWAE_{MK}; aux holds both bounds.

  The decoder's term sees the draws and log q held fixed; the encoder's sees the
  generative parameters held fixed. (A prior that runs the encoder, the
  VampPrior, gets that gradient from the IWAE_{MK} term.)
  """
  n = num_samples * num_groups
  zs = _apply(model, params, x, key, n, label=label, method=model.sample_posterior)
  log_q = _apply(model, params, x, zs, label=label, method=model.log_posterior)
  fixed = jax.lax.stop_gradient
  log_px_z, log_pz = _apply(model, params, x, fixed(zs), label=label, method=model.log_joint)
  decoder_w = log_px_z + kl_weight * (log_pz - fixed(log_q))
  enc_px_z, enc_pz = _apply(model, fixed(params), x, zs, label=label, method=model.log_joint)
  encoder_w = (enc_px_z + kl_weight * (enc_pz - log_q)).reshape(num_groups, num_samples)
  miwae = jnp.mean(_iwae(encoder_w))
  iwae = _iwae(decoder_w)
  surrogate = iwae + miwae - fixed(miwae)  # the value of IWAE_{MK}, the two gradients
  return -surrogate, _aux(log_px_z, log_pz - log_q, iwae=iwae, miwae=fixed(miwae))
