"""Config checks and the objects a config names (model, loss, optimizer).

``validate(config)`` runs before any data is read or anything is compiled,
and raises one ``ConfigError`` naming the field, its value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import difflib
import math

import numpy as np
import optax

from vae_jax import data as data_lib
from vae_jax.models import hvae
from vae_jax import layers
from vae_jax import losses
from vae_jax import models


class ConfigError(ValueError):
  """A config field holds a value the library cannot use."""


def _fail(field, value, allowed):
  shown = repr(value)
  if len(shown) > 200:
    shown = shown[:200] + "..."
  raise ConfigError(f"config.{field}={shown} is invalid: {allowed}")


# -- what each field may hold -------------------------------------------------
# One entry per config field (experiments/configs/default.py). ``validate``
# checks every entry and refuses fields not listed here, so a misspelled
# override fails instead of being ignored: a new config field needs an entry.

_INT_TYPES = (int, np.integer)
_FLOAT_TYPES = (int, float, np.integer, np.floating)
_BOOL_TYPES = (bool, np.bool_)
MAX_SEED = 2**32 - 1    # jax.random.key keeps 32 bits: larger seeds alias smaller ones
MAX_WIDTH = 2**16       # units in a layer, latents, channels
MAX_COUNT = 2**24       # epochs, samples, batch sizes, checkpoints


def _is_int(v) -> bool:
  return isinstance(v, _INT_TYPES) and not isinstance(v, _BOOL_TYPES)


def _is_number(v) -> bool:
  return isinstance(v, _FLOAT_TYPES) and not isinstance(v, _BOOL_TYPES)


def _finite(v) -> bool:
  try:
    return math.isfinite(v)
  except OverflowError:  # an int too large for a float
    return False


@dataclasses.dataclass(frozen=True)
class Int:
  lo: int
  hi: int = MAX_COUNT

  def problem(self, v):
    if not _is_int(v) or not self.lo <= v <= self.hi:
      return f"expected an integer in [{self.lo}, {self.hi}]"


@dataclasses.dataclass(frozen=True)
class Float:
  lo: float
  hi: float = math.inf
  lo_open: bool = False
  hi_open: bool = False

  def problem(self, v):
    ok = _is_number(v) and _finite(v)
    ok = ok and (v > self.lo if self.lo_open else v >= self.lo)
    ok = ok and (v < self.hi if self.hi_open else v <= self.hi)
    if not ok:
      return (f"expected a finite number in {'(' if self.lo_open else '['}{self.lo}, {self.hi}"
              f"{')' if self.hi_open or self.hi == math.inf else ']'}")


@dataclasses.dataclass(frozen=True)
class Bool:
  def problem(self, v):
    if not isinstance(v, _BOOL_TYPES):
      return "expected True or False"


@dataclasses.dataclass(frozen=True)
class Str:
  def problem(self, v):
    if not isinstance(v, str):
      return "expected a string"


@dataclasses.dataclass(frozen=True)
class Choice:
  options: tuple

  def problem(self, v):
    if not isinstance(v, str) or v not in self.options:
      return f"choose one of {sorted(self.options)}"


@dataclasses.dataclass(frozen=True)
class Sizes:
  """A tuple of positive integers (layer widths); ``nested``: a tuple of such tuples."""
  nested: bool = False

  def problem(self, v):
    def sizes_ok(t):
      return (isinstance(t, (tuple, list)) and 1 <= len(t) <= 64
              and all(_is_int(w) and 1 <= w <= MAX_WIDTH for w in t))
    ok = (isinstance(v, (tuple, list)) and 1 <= len(v) <= 64 and all(map(sizes_ok, v))) \
        if self.nested else sizes_ok(v)
    if not ok:
      inner = f"a non-empty tuple of integers in [1, {MAX_WIDTH}]"
      return f"expected a non-empty tuple of such tuples ({inner})" if self.nested else f"expected {inner}"


PSEUDO_INPUT_INITS = ("noise", "data")

FIELDS = {
    "seed": Int(0, MAX_SEED),
    "num_devices": Int(0, 2**16),  # 0 = all
    "data.name": Choice(tuple(data_lib.DATASETS)),
    "data.mode": Choice(data_lib.MODES),
    "data.data_dir": Str(),
    "data.download": Bool(),
    "data.binarize_seed": Int(0, MAX_SEED),
    "model.network": Choice(models.NETWORKS),
    "model.latent_dims": Sizes(),
    "model.hidden_sizes": Sizes(nested=True),
    "model.activation": Choice(tuple(models.ACTIVATIONS)),
    "model.conv_features": Sizes(),
    "model.conv_implementation": Choice(tuple(layers.IMPLEMENTATIONS)),
    "model.likelihood": Choice(models.LIKELIHOODS),
    "model.fixed_log_sigma": Float(-10.0, 5.0),
    "model.init_output_bias": Bool(),
    "model.clip_logvar": Bool(),
    "model.matmul_dtype": Choice(models.MATMUL_DTYPES),
    "model.kind": Choice(models.KINDS),
    "model.prior": Choice(models.PRIORS),
    "model.num_components": Int(1),
    "model.pseudo_inputs_init": Choice(PSEUDO_INPUT_INITS),
    "model.num_classes": Int(0, MAX_WIDTH),  # 0: unconditional; C: a CVAE on labels in [0, C)
    "loss.name": Choice(tuple(losses.LOSSES)),
    "loss.num_samples": Int(1, 100_000),
    "loss.analytic_kl": Bool(),
    "loss.beta": Float(0.0, 1e6),
    "loss.warmup_epochs": Float(0.0, 1e6),
    "loss.corruption": Choice(losses.CORRUPTIONS),
    "loss.corruption_level": Float(0.0, 1.0),  # a probability (mask, flip) or sigma on [0, 1] data
    "optimizer.name": Choice(("adam", "adamw", "sgd")),
    "optimizer.learning_rate": Float(0.0, 10.0, lo_open=True),
    "optimizer.b1": Float(0.0, 1.0, hi_open=True),   # 1 would divide by 0 in Adam's bias correction
    "optimizer.b2": Float(0.0, 1.0, hi_open=True),
    "optimizer.eps": Float(0.0, 1.0, lo_open=True),
    "optimizer.weight_decay": Float(0.0, 1e3),
    "optimizer.grad_clip_norm": Float(0.0, 1e12),
    "optimizer.schedule": Choice(("constant", "cosine", "burda")),
    "optimizer.burda_stages": Int(1, 12),
    "optimizer.burda_epoch_scale": Float(0.0, 1e3, lo_open=True),
    "batch_size": Int(1),
    "num_epochs": Int(-1),
    "eval_every_epochs": Int(1),
    "eval_num_samples": Int(1, 100_000),
    "checkpoint_every_epochs": Int(1),
    "keep_checkpoints": Int(1, 1000),
    "progress": Bool(),
    "skip_nonfinite_updates": Bool(),
    "skip_threshold": Float(0.0, 1e30),
    "debug_nans": Bool(),
    "eval.num_importance_samples": Int(1, 10**7),
    "eval.batch_size": Int(1),
    "eval.chunk_size": Int(1, 100_000),
}


def _leaves(config, prefix=""):
  """(dotted name, value) of every leaf; sections are anything with ``items``."""
  for k, v in config.items():
    name = f"{prefix}{k}"
    if hasattr(v, "items") and not isinstance(v, str):
      yield from _leaves(v, name + ".")
    else:
      yield name, v


def _check_structure(config) -> dict:
  if not hasattr(config, "items"):
    raise ConfigError(f"config={config!r} is invalid: expected an ml_collections.ConfigDict "
                      "(see experiments/configs/default.py)")
  values = dict(_leaves(config))
  sections = {f.rsplit(".", 1)[0] for f in FIELDS if "." in f}
  for name in values:
    if name in FIELDS:
      continue
    if name in sections:
      _fail(name, values[name], "expected a section of fields (a ConfigDict)")
    close = difflib.get_close_matches(name, FIELDS, n=1)
    raise ConfigError(f"config.{name} is not a known field"
                      + (f"; did you mean config.{close[0]}?" if close else "")
                      + " (new fields need an entry in vae_jax.config.FIELDS)")
  for name in FIELDS:
    if name not in values:
      raise ConfigError(f"config.{name} is missing; every field of "
                        "experiments/configs/default.py must be present")
  return values


def validate(config) -> None:
  """Raises ConfigError on the first invalid field; returns None otherwise.

  Checks that the config has exactly the fields of ``FIELDS``, each of the
  right type and in range, then the combinations (layer counts, image sizes,
  data mode vs likelihood, schedule length). Pure Python: nothing is compiled
  and no data is read.
  """
  values = _check_structure(config)
  for name, spec in FIELDS.items():
    problem = spec.problem(values[name])
    if problem:
      _fail(name, values[name], problem)

  data_name, mode = values["data.name"], values["data.mode"]
  if data_lib.DATASETS[data_name].is_binary and mode != "static":
    _fail("data.mode", mode, f"{data_name} is binary already: use 'static'")
  latent_dims = tuple(values["model.latent_dims"])
  hidden = values["model.hidden_sizes"]
  if len(hidden) != len(latent_dims):
    _fail("model.hidden_sizes", hidden,
          f"one non-empty tuple of positive widths per stochastic layer ({len(latent_dims)})")
  if values["model.network"] == "conv":
    feats = tuple(values["model.conv_features"])
    h, w, _ = data_lib.DATASETS[data_name].image_shape
    scale = 2 ** len(feats)
    if h % scale or w % scale:
      _fail("model.conv_features", values["model.conv_features"],
            f"{len(feats)} stride-2 layers need image sides divisible by {scale} (images are {h}x{w})")
  if values["model.matmul_dtype"] != "float32" and (values["model.network"] != "mlp"
                                                     or values["model.kind"] == "hvae"):
    _fail("model.matmul_dtype", values["model.matmul_dtype"],
          "bf16 matmuls are built for the MLP VAE (model.network='mlp', model.kind not 'hvae')")
  if values["model.likelihood"] == "bernoulli" and mode == "grey":
    _fail("model.likelihood", "bernoulli", "grey-level data needs a Gaussian likelihood "
          "(or set data.mode to 'static' or 'dynamic')")
  if values["loss.name"] == "elbo" and values["loss.analytic_kl"] and len(latent_dims) > 1:
    _fail("loss.analytic_kl", True, "the closed-form KL needs one stochastic layer; "
          "set it to False for a Monte Carlo KL")
  _validate_kind_and_prior(values)
  num_epochs = values["num_epochs"]
  if values["optimizer.schedule"] == "burda":
    burda_epochs = sum(max(1, round(3**i * values["optimizer.burda_epoch_scale"]))
                       for i in range(values["optimizer.burda_stages"]))
    if num_epochs not in (-1, burda_epochs):
      _fail("num_epochs", num_epochs, f"-1 or {burda_epochs} (the length of the burda schedule)")
  elif num_epochs < 1:
    _fail("num_epochs", num_epochs, f"expected an integer in [1, {MAX_COUNT}] "
          "(-1, the schedule's length, only with optimizer.schedule='burda')")


def _validate_kind_and_prior(values: dict) -> None:
  """The combinations of model.kind / prior and the loss fields they need."""
  kind, prior, loss_name = values["model.kind"], values["model.prior"], values["loss.name"]
  latent_dims = values["model.latent_dims"]
  if kind == "autoencoder":
    if len(latent_dims) != 1:
      _fail("model.latent_dims", latent_dims, "the autoencoder has one code layer")
    if prior != "standard":
      _fail("model.prior", prior, "the autoencoder has no prior: use 'standard' (ignored)")
    if loss_name != "autoencoder":
      _fail("loss.name", loss_name, "model.kind='autoencoder' trains with loss.name='autoencoder'")
  elif loss_name == "autoencoder":
    _fail("loss.name", loss_name, f"the reconstruction-only loss needs model.kind='autoencoder', "
          f"not {kind!r}")
  if kind == "hvae" and len(latent_dims) != 2:
    _fail("model.latent_dims", latent_dims, "model.kind='hvae' has two stochastic layers (z_1, z_2)")
  num_classes = values["model.num_classes"]
  if num_classes:
    data_name = values["data.name"]
    if not data_lib.DATASETS[data_name].num_classes:
      _fail("model.num_classes", num_classes, f"{data_name} has no labels to condition on: use 0, "
            "or a labelled dataset (mnist, fashion_mnist, cifar10)")
    if kind != "vae":
      _fail("model.num_classes", num_classes, f"class conditioning is built for model.kind='vae', "
            f"not {kind!r}: use 0")
    if prior == "vamp":
      _fail("model.num_classes", num_classes, "the VampPrior's pseudo-inputs have no labels: use "
            "model.prior 'standard', 'mog' or 'conditional' with classes, or num_classes=0")
  if prior == "conditional" and not num_classes:
    _fail("model.prior", prior, "p(z | y) needs labels: set model.num_classes to their number")
  closed_form_prior = prior == "standard" or (prior == "conditional" and len(latent_dims) == 1)
  if not closed_form_prior and loss_name == "elbo" and values["loss.analytic_kl"]:
    _fail("loss.analytic_kl", True, f"the closed-form KL needs the standard prior (or, for one "
          f"layer, the conditional prior), not {prior!r}; set it to False for a Monte Carlo KL")
  corruption = values["loss.corruption"]
  if corruption != "none" and loss_name != "autoencoder":
    _fail("loss.corruption", corruption, "input corruption is for the denoising autoencoder "
          "(loss.name='autoencoder'); use 'none'")


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
      kind=kind, prior=m.get("prior", "standard"), num_components=int(m.get("num_components", 500)),
      num_classes=int(m.get("num_classes", 0)), clip_logvar=bool(m.get("clip_logvar", False)),
      matmul_dtype=m.get("matmul_dtype", "float32"))


def make_schedule(opt_config, steps_per_epoch: int, total_epochs: int) -> optax.Schedule:
  lr = opt_config.learning_rate
  if opt_config.schedule == "constant":
    return optax.constant_schedule(lr)
  if opt_config.schedule == "cosine":
    # optimizer.cycle_epochs > 0 (semi-supervised configs): cosine with warm restarts (Loshchilov &
    # Hutter, 2017), equal cycles; the first cycle is the plain cosine schedule of that many epochs.
    cycle = int(opt_config.get("cycle_epochs", 0)) or total_epochs
    if total_epochs % cycle:
      raise ConfigError(f"num_epochs={total_epochs} is not a whole number of "
                        f"optimizer.cycle_epochs={cycle} cycles")
    decay = optax.cosine_decay_schedule(lr, decay_steps=max(1, cycle * steps_per_epoch))
    if cycle == total_epochs:
      return decay
    n = total_epochs // cycle
    return optax.join_schedules([decay] * n, [k * cycle * steps_per_epoch for k in range(1, n)])
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
