"""Config checks and the objects a config names (model, loss, optimizer).

``validate(config)`` runs before any data is read or anything is compiled,
and raises one ``ConfigError`` naming the field, its value and what is allowed.
"""

from __future__ import annotations

import math

import optax

from vae_jax import data as data_lib
from vae_jax import hvae
from vae_jax import layers
from vae_jax import losses
from vae_jax import models


class ConfigError(ValueError):
  """A config field holds a value the library cannot use."""


def _fail(field, value, allowed):
  raise ConfigError(f"config.{field}={value!r} is invalid: {allowed}")


def _check_int(config, field, lo, hi=None):
  value = config
  for part in field.split("."):
    value = value[part]
  if isinstance(value, bool) or not isinstance(value, int) or value < lo or (hi is not None and value > hi):
    _fail(field, value, f"expected an integer >= {lo}" + (f" and <= {hi}" if hi is not None else ""))


def _check_float(config, field, lo, hi=None, lo_open=False):
  value = config
  for part in field.split("."):
    value = value[part]
  ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
  ok = ok and (value > lo if lo_open else value >= lo) and (hi is None or value <= hi)
  if not ok:
    _fail(field, value, f"expected a finite number {'>' if lo_open else '>='} {lo}"
          + (f" and <= {hi}" if hi is not None else ""))


def _check_choice(config, field, choices):
  value = config
  for part in field.split("."):
    value = value[part]
  if value not in choices:
    _fail(field, value, f"choose one of {sorted(choices)}")


def validate(config) -> None:
  """Raises ConfigError on the first invalid field; returns None otherwise."""
  _check_int(config, "seed", 0)
  _check_int(config, "num_devices", 0)
  _check_choice(config, "data.name", data_lib.DATASETS)
  _check_choice(config, "data.mode", data_lib.MODES)
  if data_lib.DATASETS[config.data.name].is_binary and config.data.mode != "static":
    _fail("data.mode", config.data.mode, f"{config.data.name} is binary already: use 'static'")
  _check_choice(config, "model.network", models.NETWORKS)
  _check_choice(config, "model.conv_implementation", layers.IMPLEMENTATIONS)
  _check_choice(config, "model.activation", models.ACTIVATIONS)
  _check_choice(config, "model.likelihood", models.LIKELIHOODS)
  latent_dims = tuple(config.model.latent_dims)
  if not latent_dims or not all(isinstance(d, int) and d >= 1 for d in latent_dims):
    _fail("model.latent_dims", config.model.latent_dims, "a non-empty tuple of positive integers")
  hidden = tuple(tuple(h) for h in config.model.hidden_sizes)
  if len(hidden) != len(latent_dims) or not all(
      h and all(isinstance(w, int) and w >= 1 for w in h) for h in hidden):
    _fail("model.hidden_sizes", config.model.hidden_sizes,
          f"one non-empty tuple of positive widths per stochastic layer ({len(latent_dims)})")
  if config.model.network == "conv":
    feats = tuple(config.model.conv_features)
    h, w, _ = data_lib.DATASETS[config.data.name].image_shape
    scale = 2 ** len(feats)
    if not feats or h % scale or w % scale:
      _fail("model.conv_features", config.model.conv_features,
            f"{len(feats)} stride-2 layers need image sides divisible by {scale} (images are {h}x{w})")
  if config.model.likelihood == "bernoulli" and config.data.mode == "grey":
    _fail("model.likelihood", "bernoulli", "grey-level data needs a Gaussian likelihood "
          "(or set data.mode to 'static' or 'dynamic')")
  _check_float(config, "model.fixed_log_sigma", -10.0, 5.0)
  _validate_kind_and_prior(config, latent_dims)

  _check_choice(config, "loss.name", losses.LOSSES)
  _check_int(config, "loss.num_samples", 1)
  _check_float(config, "loss.beta", 0.0)
  _check_float(config, "loss.warmup_epochs", 0.0)
  if config.loss.name == "elbo" and config.loss.analytic_kl and len(latent_dims) > 1:
    _fail("loss.analytic_kl", True, "the closed-form KL needs one stochastic layer; "
          "set it to False for a Monte Carlo KL")

  _check_choice(config, "optimizer.name", ("adam", "adamw", "sgd"))
  _check_choice(config, "optimizer.schedule", ("constant", "cosine", "burda"))
  _check_float(config, "optimizer.learning_rate", 0.0, lo_open=True)
  _check_float(config, "optimizer.b1", 0.0, 1.0)
  _check_float(config, "optimizer.b2", 0.0, 1.0)
  _check_float(config, "optimizer.eps", 0.0, lo_open=True)
  _check_float(config, "optimizer.weight_decay", 0.0)
  _check_float(config, "optimizer.grad_clip_norm", 0.0)
  _check_int(config, "optimizer.burda_stages", 1, 12)
  _check_float(config, "optimizer.burda_epoch_scale", 0.0, lo_open=True)

  _check_int(config, "batch_size", 1)
  if config.optimizer.schedule == "burda":
    if config.num_epochs not in (-1, burda_num_epochs(config.optimizer)):
      _fail("num_epochs", config.num_epochs,
            f"-1 or {burda_num_epochs(config.optimizer)} (the length of the burda schedule)")
  else:
    _check_int(config, "num_epochs", 1)
  _check_int(config, "eval_every_epochs", 1)
  _check_int(config, "eval_num_samples", 1)
  _check_int(config, "checkpoint_every_epochs", 1)
  _check_int(config, "keep_checkpoints", 1)
  _check_int(config, "eval.num_importance_samples", 1)
  _check_int(config, "eval.batch_size", 1)
  _check_int(config, "eval.chunk_size", 1)


PSEUDO_INPUT_INITS = ("noise", "data")


def _validate_kind_and_prior(config, latent_dims) -> None:
  """model.kind / prior / num_components / pseudo_inputs_init and the loss fields they need."""
  _check_choice(config, "model.kind", models.KINDS)
  _check_choice(config, "model.prior", models.PRIORS)
  _check_int(config, "model.num_components", 1)
  _check_choice(config, "model.pseudo_inputs_init", PSEUDO_INPUT_INITS)
  _check_choice(config, "loss.corruption", losses.CORRUPTIONS)
  kind, prior, loss = config.model.kind, config.model.prior, config.loss
  if kind == "autoencoder":
    if len(latent_dims) != 1:
      _fail("model.latent_dims", config.model.latent_dims, "the autoencoder has one code layer")
    if prior != "standard":
      _fail("model.prior", prior, "the autoencoder has no prior: use 'standard' (ignored)")
    if loss.name != "autoencoder":
      _fail("loss.name", loss.name, "model.kind='autoencoder' trains with loss.name='autoencoder'")
  elif loss.name == "autoencoder":
    _fail("loss.name", loss.name, f"the reconstruction-only loss needs model.kind='autoencoder', "
          f"not {kind!r}")
  if kind == "hvae" and len(latent_dims) != 2:
    _fail("model.latent_dims", config.model.latent_dims, "model.kind='hvae' has two stochastic "
          "layers (z_1, z_2)")
  if prior != "standard" and loss.name == "elbo" and loss.analytic_kl:
    _fail("loss.analytic_kl", True, f"the closed-form KL needs the standard prior, not {prior!r}; "
          "set it to False for a Monte Carlo KL")
  if loss.corruption == "none":
    return
  if loss.name != "autoencoder":
    _fail("loss.corruption", loss.corruption, "input corruption is for the denoising autoencoder "
          "(loss.name='autoencoder'); use 'none'")
  if loss.corruption in ("mask", "flip"):
    _check_float(config, "loss.corruption_level", 0.0, 1.0)
  else:
    _check_float(config, "loss.corruption_level", 0.0)


def burda_stage_epochs(opt_config) -> list[int]:
  """Epochs in each stage of Burda et al.'s schedule: 3^i (times the scale), at least 1."""
  return [max(1, round(3**i * opt_config.burda_epoch_scale)) for i in range(opt_config.burda_stages)]


def burda_num_epochs(opt_config) -> int:
  return sum(burda_stage_epochs(opt_config))


def num_epochs(config) -> int:
  if config.optimizer.schedule == "burda" and config.num_epochs == -1:
    return burda_num_epochs(config.optimizer)
  return int(config.num_epochs)


def make_model(config) -> models.VAE:
  """The configured model: ``models.VAE`` or, for model.kind='hvae', ``hvae.HVAE``."""
  m = config.model
  kind = m.get("kind", "vae")
  cls = hvae.HVAE if kind == "hvae" else models.VAE
  return cls(
      image_shape=data_lib.DATASETS[config.data.name].image_shape,
      latent_dims=tuple(m.latent_dims),
      hidden_sizes=tuple(tuple(h) for h in m.hidden_sizes),
      activation=m.activation, network=m.network, conv_features=tuple(m.conv_features),
      conv_implementation=m.get("conv_implementation", "auto"),
      likelihood=m.likelihood, fixed_log_sigma=float(m.fixed_log_sigma),
      kind=kind, prior=m.get("prior", "standard"), num_components=int(m.get("num_components", 500)))


def make_schedule(opt_config, steps_per_epoch: int, total_epochs: int) -> optax.Schedule:
  lr = opt_config.learning_rate
  if opt_config.schedule == "constant":
    return optax.constant_schedule(lr)
  if opt_config.schedule == "cosine":
    return optax.cosine_decay_schedule(lr, decay_steps=max(1, total_epochs * steps_per_epoch))
  # Burda et al. (2016), Sec. 5: stage i has 3^i epochs at lr 1e-3 * 10^(-i/7).
  boundaries, epoch = {}, 0
  for length in burda_stage_epochs(opt_config)[:-1]:
    epoch += length
    boundaries[epoch * steps_per_epoch] = 10.0 ** (-1.0 / 7.0)
  return optax.piecewise_constant_schedule(lr, boundaries)


def make_optimizer(opt_config, schedule: optax.Schedule) -> optax.GradientTransformation:
  """The configured optimizer following ``schedule`` (see ``make_schedule``)."""
  if opt_config.name == "adam":
    tx = optax.adam(schedule, b1=opt_config.b1, b2=opt_config.b2, eps=opt_config.eps)
  elif opt_config.name == "adamw":
    tx = optax.adamw(schedule, b1=opt_config.b1, b2=opt_config.b2, eps=opt_config.eps,
                     weight_decay=opt_config.weight_decay)
  else:
    tx = optax.sgd(schedule)
  if opt_config.grad_clip_norm > 0:
    tx = optax.chain(optax.clip_by_global_norm(opt_config.grad_clip_norm), tx)
  return tx
