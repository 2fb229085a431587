"""Per-example VAE objectives: ``loss_fn(model, params, x, key, *, kl_weight) -> (loss, aux)``.

Each loss is written for ONE example and returns a scalar to minimise plus a
dict of scalar diagnostics (all in nats). The trainer lifts it over the batch
with ``jax.vmap`` and averages once. Bind hyperparameters with
``functools.partial``; any function with this signature can be handed to
``vae_jax.train.train_and_evaluate(..., loss_fn=...)``.

A class-conditional model (``model.num_classes > 0``) is trained with the
example's label as a keyword, ``loss_fn(..., kl_weight=w, label=y)``: the ELBO
and IWAE losses below then bound log p(x | y).
"""

from __future__ import annotations

import functools
import inspect
import math
import typing
from typing import Callable, Mapping

import jax
import jax.numpy as jnp

from vae_jax import estimators
from vae_jax.schema import ConfigError

LossFn = Callable[..., tuple[jax.Array, dict]]


def _terms(model, params, x, key, num_samples, label=None):
  if label is None:
    return model.apply({"params": params}, x, key, num_samples)
  return model.apply({"params": params}, x, key, num_samples, label)


def elbo_loss(model, params, x: jax.Array, key: jax.Array, *, kl_weight=1.0,
              num_samples: int = 1, analytic_kl: bool = True, label: jax.Array | None = None,
              gradient: str = "reparam"):
  """Negative (beta-)ELBO for one example.

  loss = -E_q[log p(x|z)] + kl_weight * KL(q(z|x) || p(z)),
  with the expectation over ``num_samples`` reparameterized draws and the KL in
  closed form (one Gaussian stochastic layer, ``analytic_kl=True``) or by Monte
  Carlo, E_q[log q(z|x) - log p(z)], otherwise (Kingma & Welling 2014, eqs. 7, 10).

  ``label`` (int, conditional models only): the bound is then on log p(x | y),
  with q(z | x, y), p(x | z, y) and p(z) or p(z | y).

  ``gradient="stl"``: the Monte Carlo KL with the "sticking the landing"
  gradient (``vae_jax.estimators``; needs ``analytic_kl=False``).

  Returns:
    (loss, aux) with aux = {elbo, recon, kl}, all scalars in nats; ``elbo`` is the
    unweighted bound (kl_weight = 1) whatever the weight used for the loss.
  """
  if gradient != "reparam":
    if analytic_kl or gradient != "stl":
      raise ValueError(f"gradient={gradient!r} with analytic_kl={analytic_kl}: the ELBO takes the "
                       "STL gradient with a Monte Carlo KL (analytic_kl=False, gradient='stl')")
    return estimators.elbo_stl_loss(model, params, x, key, kl_weight=kl_weight,
                                    num_samples=num_samples, label=label)
  t = _terms(model, params, x, key, num_samples, label)
  recon = -jnp.mean(t["log_px_z"])
  if analytic_kl and "kl" in t:
    kl = t["kl"]
  else:
    kl = jnp.mean(t["log_qz"] - t["log_pz"])
  loss = recon + kl_weight * kl
  return loss, dict(elbo=-(recon + kl), recon=recon, kl=kl)


iwae_bound = estimators.iwae_bound  # log (1/K) sum_k exp(log_weights[k]), [..., K] -> [...]


def iwae_loss(model, params, x: jax.Array, key: jax.Array, *, kl_weight=1.0,
              num_samples: int = 50, label: jax.Array | None = None, gradient: str = "reparam"):
  """Negative importance-weighted bound L_K for one example (Burda et al. 2016, eq. 8).

  L_K = log 1/K sum_k p(x, z_k) / q(z_k | x), z_k ~ q(z | x). With K = 1 it is the
  ELBO with a Monte Carlo KL. ``kl_weight`` scales log p(z) - log q(z|x) inside
  each weight (1 gives the true bound). With a ``label`` (conditional models) it
  bounds log p(x | y).

  ``gradient``: "reparam" (the bound's own), "dreg" (doubly reparameterized
  encoder gradient) or "stl" (``vae_jax.estimators``); the value is the same.

  Returns:
    (loss, aux) with aux = {iwae, elbo, recon, kl}: the bound, the ELBO estimated
    from the same samples, and its two terms.
  """
  if gradient != "reparam":
    return estimators.iwae_estimator_loss(model, params, x, key, kl_weight=kl_weight,
                                          num_samples=num_samples, gradient=gradient, label=label)
  t = _terms(model, params, x, key, num_samples, label)
  log_ratio = t["log_pz"] - t["log_qz"]
  bound = iwae_bound(t["log_px_z"] + kl_weight * log_ratio)
  recon = -jnp.mean(t["log_px_z"])
  kl = -jnp.mean(log_ratio)
  return -bound, dict(iwae=bound, elbo=-(recon + kl), recon=recon, kl=kl)


CORRUPTIONS = ("none", "mask", "flip", "gaussian")


def corrupt(key: jax.Array, x: jax.Array, corruption: str, level: float) -> jax.Array:
  """A corrupted copy of x for a denoising autoencoder; the same key gives the same copy.

  "mask": each pixel set to 0 with probability ``level`` (Vincent et al. 2008);
  "flip": each pixel replaced by 1 - x with probability ``level`` (salt and
  pepper on binary images); "gaussian": x + level * N(0, 1); "none": x.
  """
  if corruption == "none":
    return x
  if corruption == "mask":
    return jnp.where(jax.random.bernoulli(key, level, x.shape), jnp.zeros_like(x), x)
  if corruption == "flip":
    return jnp.where(jax.random.bernoulli(key, level, x.shape), 1.0 - x, x)
  if corruption == "gaussian":
    return x + level * jax.random.normal(key, x.shape, x.dtype)
  raise ValueError(f"corruption={corruption!r}: choose one of {CORRUPTIONS}")


def _reconstruction_log_prob(module, x_in, x):
  code, _ = module.encode(x_in)
  return module.log_likelihood(x, module.decode(code))


def autoencoder_loss(model, params, x: jax.Array, key: jax.Array, *, kl_weight=1.0,
                     corruption: str = "none", corruption_level: float = 0.0):
  """Reconstruction loss of a (denoising) autoencoder for one example: -log p(x | z = f(x~)).

  The code z = f(x~) is the encoder's deterministic output (``model.kind =
  "autoencoder"``) at x~ = ``corrupt(key, x, corruption, corruption_level)``;
  the decoder's likelihood scores the clean x. There is no prior and no KL
  (``kl`` is exactly 0 and ``kl_weight`` has nothing to weigh); without
  corruption the key is not used.

  Returns:
    (loss, aux) with aux = {recon, kl}.
  """
  x_in = corrupt(key, x, corruption, corruption_level)
  recon = -model.apply({"params": params}, x_in, x, method=_reconstruction_log_prob)
  return recon, dict(recon=recon, kl=jnp.zeros_like(recon))


LOSSES = {"elbo": elbo_loss, "iwae": iwae_loss, "miwae": estimators.miwae_loss,
          "ciwae": estimators.ciwae_loss, "piwae": estimators.piwae_loss,
          "autoencoder": autoencoder_loss}
GRADIENTS = estimators.GRADIENTS


def make_loss(loss_config) -> LossFn:
  """The configured loss with its hyperparameters bound (``config.loss``)."""
  name, gradient = loss_config.name, loss_config.get("gradient", "reparam")
  k, groups = loss_config.num_samples, loss_config.get("num_groups", 1)
  if name == "elbo":
    return functools.partial(elbo_loss, num_samples=k, analytic_kl=loss_config.analytic_kl,
                             gradient=gradient)
  if name == "iwae":
    return functools.partial(iwae_loss, num_samples=k, gradient=gradient)
  if name == "miwae":
    return functools.partial(estimators.miwae_loss, num_samples=k, num_groups=groups, gradient=gradient)
  if name == "ciwae":
    return functools.partial(estimators.ciwae_loss, num_samples=k, gradient=gradient,
                             beta=loss_config.get("ciwae_beta", 0.5))
  if name == "piwae":
    return functools.partial(estimators.piwae_loss, num_samples=k, num_groups=groups)
  if loss_config.name == "autoencoder":
    return functools.partial(autoencoder_loss, corruption=loss_config.get("corruption", "none"),
                             corruption_level=float(loss_config.get("corruption_level", 0.0)))
  raise ValueError(f"config.loss.name={loss_config.name!r} is not a known loss; "
                   f"choose one of {sorted(LOSSES)}")


def loss_name(loss_fn: LossFn) -> str:
  """"module:qualname" of a loss function, seen through ``functools.partial``: the identity a
  workdir records (``vae_jax.workdir.check_loss``)."""
  while isinstance(loss_fn, functools.partial):
    loss_fn = loss_fn.func
  qualname = getattr(loss_fn, "__qualname__", type(loss_fn).__qualname__)
  return f"{getattr(loss_fn, '__module__', None) or '?'}:{qualname}"


_ANNOTATED = {float: ((int, float), "a number"), int: ((int,), "an integer"),
              bool: ((bool,), "True or False"), str: ((str,), "a string")}


def bind_kwargs(loss_fn: LossFn, kwargs: Mapping, *, where: str = "config.loss.kwargs") -> LossFn:
  """``loss_fn`` with the user's fields ``kwargs`` bound as keywords.

  Raises ConfigError (before anything is compiled) for a name the function does not take, or a
  value that does not match the parameter's annotation (float, int, bool, str)."""
  kwargs = dict(kwargs or {})
  if not kwargs:
    return loss_fn
  params = inspect.signature(loss_fn).parameters
  takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
  base = loss_fn
  while isinstance(base, functools.partial):
    base = base.func
  try:
    hints = typing.get_type_hints(base)
  except Exception:  # noqa: BLE001 (unresolvable annotations are not checked)
    hints = {}
  for name, value in kwargs.items():
    p = params.get(name)
    if p is None or p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.VAR_POSITIONAL):
      if not takes_any:
        keywords = [n for n, q in params.items() if q.kind is inspect.Parameter.KEYWORD_ONLY]
        raise ConfigError(f"{where}.{name}={value!r} is invalid: the loss {loss_name(loss_fn)} "
                          f"takes no keyword {name!r} (its keywords: {', '.join(keywords) or 'none'})")
      continue
    types, what = _ANNOTATED.get(hints.get(name), (None, None))
    if types and (not isinstance(value, types) or (bool not in types and isinstance(value, bool))):
      raise ConfigError(f"{where}.{name}={value!r} is invalid: {loss_name(loss_fn)} declares "
                        f"{name} as {what}")
  return functools.partial(loss_fn, **kwargs)


# -- VQ-VAE (van den Oord et al. 2017) ------------------------------------------

def vqvae_loss(model, params, x: jax.Array, key: jax.Array, *, kl_weight=1.0, beta: float = 0.25,
               ema: bool = False):
  """VQ-VAE objective for one example (van den Oord et al. 2017, eq. 3).

  loss = -log p(x | z_q(x)) + ||sg(z_e(x)) - e||^2 + beta ||z_e(x) - sg(e)||^2,
  the two quantizer terms summed over the latent grid and code dimensions.
  With an EMA codebook (``ema=True``) the codebook term is left out: the codes
  follow the EMA update instead. The encoder is deterministic, so ``key`` is
  unused and ``kl_weight`` has no role; both keep the common signature.

  Returns:
    (loss, aux): aux holds the scalars ``recon`` (-log p(x|z_q), nats),
    ``codebook_loss``, ``commitment_loss`` (unweighted), and the arrays the
    trainer needs for the codebook update: ``z_e`` [h, w, D], ``indices`` [h, w].
  """
  del key, kl_weight
  t = model.apply({"params": params}, x)
  recon = -t["log_px_z"]
  loss = recon + beta * t["commitment_loss"]
  if not ema:
    loss = loss + t["codebook_loss"]
  return loss, dict(recon=recon, codebook_loss=t["codebook_loss"],
                    commitment_loss=t["commitment_loss"], z_e=t["z_e"], indices=t["indices"])


def prior_nll_loss(model, params, codes: jax.Array, key: jax.Array, *, kl_weight=1.0,
                   label: jax.Array | None = None):
  """-log p(codes) of one code grid [h, w] under an autoregressive prior, in nats.

  Returns:
    (loss, aux) with aux = {nll, nats_per_code}.
  """
  del key, kl_weight
  log_p = model.apply({"params": params}, codes, label, method=model.log_prob)
  return -log_p, dict(nll=-log_p, nats_per_code=-log_p / codes.size)
