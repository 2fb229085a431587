"""The VAE trainer's config: its schema (fields, checks, old-workdir values) and the objects it names.

``validate(config)`` runs before any data is read or anything is compiled,
and raises one ``ConfigError`` naming the field, its value and what is allowed.
The mechanism (field specs, unknown / missing fields, resumable fields, the
values of fields old workdirs lack) is ``vae_jax.schema``'s, shared by every
trainer; this module declares the VAE's fields and their combinations.
"""

from __future__ import annotations

import optax

from vae_jax import data as data_lib
from vae_jax import layers
from vae_jax import losses
from vae_jax import models
from vae_jax import schema
from vae_jax.models import hvae

ConfigError = schema.ConfigError
_fail = schema.fail
MAX_SEED, MAX_WIDTH, MAX_COUNT = schema.MAX_SEED, schema.MAX_WIDTH, schema.MAX_COUNT
PSEUDO_INPUT_INITS = ("noise", "data")

# One entry per config field (vae_jax/configs/default.py). ``validate``
# checks every entry and refuses fields not listed here, so a misspelled
# override fails instead of being ignored: a new config field needs an entry.
# ``old=``: the value a workdir written before the field existed ran with;
# ``resumable=True``: the field may change when a run is resumed.
_S = schema
FIELDS = {
    **_S.training_fields(schedules=("constant", "cosine", "burda")),
    "num_epochs": _S.Int(-1, resumable=True),
    "data.name": _S.Choice(tuple(data_lib.DATASETS)),
    "data.mode": _S.Choice(data_lib.MODES),
    "data.data_dir": _S.Str(resumable=True),
    "data.download": _S.Bool(resumable=True),
    "data.binarize_seed": _S.Int(0, _S.MAX_SEED),
    "model.network": _S.Choice(models.NETWORKS),
    "model.latent_dims": _S.Sizes(),
    "model.hidden_sizes": _S.Sizes(nested=True),
    "model.activation": _S.Choice(tuple(models.ACTIVATIONS)),
    "model.conv_features": _S.Sizes(),
    "model.conv_implementation": _S.Choice(tuple(layers.IMPLEMENTATIONS)),
    "model.likelihood": _S.Choice(tuple(models.LIKELIHOODS)),
    "model.fixed_log_sigma": _S.Float(-10.0, 5.0),
    "model.init_output_bias": _S.Bool(),
    "model.clip_logvar": _S.Bool(old=False),
    "model.matmul_dtype": _S.Choice(models.MATMUL_DTYPES, old="float32"),
    "model.kind": _S.Choice(models.KINDS, old="vae"),
    "model.prior": _S.Choice(tuple(models.PRIORS), old="standard"),
    "model.num_components": _S.Int(1, old=500),
    "model.pseudo_inputs_init": _S.Choice(PSEUDO_INPUT_INITS, old="noise"),
    "model.num_classes": _S.Int(0, _S.MAX_WIDTH, old=0),  # 0: unconditional; C: a CVAE on labels in [0, C)
    "loss.name": _S.Choice(tuple(losses.LOSSES)),
    "loss.num_samples": _S.Int(1, 100_000),
    "loss.analytic_kl": _S.Bool(),
    "loss.beta": _S.Float(0.0, 1e6),
    "loss.warmup_epochs": _S.Float(0.0, 1e6),
    "loss.corruption": _S.Choice(losses.CORRUPTIONS, old="none"),
    "loss.corruption_level": _S.Float(0.0, 1.0, old=0.0),  # a probability (mask, flip) or sigma on [0, 1] data
    "loss.gradient": _S.Choice(losses.GRADIENTS, old="reparam"),  # the estimator (vae_jax.estimators)
    "loss.num_groups": _S.Int(1, 100_000, old=1),  # M of MIWAE / PIWAE (M groups of num_samples)
    "loss.ciwae_beta": _S.Float(0.0, 1.0, old=0.5),  # CIWAE: beta ELBO + (1 - beta) IWAE
    "loss.kwargs": _S.UserFields(old={}),  # the user's own loss fields, passed to the loss as keywords
    "optimizer.burda_stages": _S.Int(1, 12),
    "optimizer.burda_epoch_scale": _S.Float(0.0, 1e3, lo_open=True),
    "eval_num_samples": _S.Int(1, 100_000, resumable=True),
    "eval.num_importance_samples": _S.Int(1, 10**7, resumable=True),
    "eval.chunk_size": _S.Int(1, 100_000, resumable=True),
}


def validate(config) -> None:
  """Raises ConfigError on the first invalid field; returns None otherwise.

  Checks that the config has exactly the fields of ``FIELDS``, each of the
  right type and in range, then the combinations (layer counts, image sizes,
  data mode vs likelihood, schedule length). Pure Python: nothing is compiled
  and no data is read.
  """
  SCHEMA.validate(config)


def _check_combinations(values: dict) -> None:
  """The combinations of fields (run by ``SCHEMA.validate`` once every field passed its check)."""

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
    if not models.PRIORS[prior].allows_labels:
      with_labels = sorted(n for n, p in models.PRIORS.items() if p.allows_labels)
      _fail("model.num_classes", num_classes, f"the {prior!r} prior takes no labels (the VampPrior's "
            f"pseudo-inputs have none): use model.prior in {with_labels} with classes, or num_classes=0")
  if models.PRIORS[prior].needs_labels and not num_classes:
    _fail("model.prior", prior, "p(z | y) needs labels: set model.num_classes to their number")
  closed_form_prior = models.PRIORS[prior].closed_form_kl  # for one layer; more are refused above
  if not closed_form_prior and loss_name == "elbo" and values["loss.analytic_kl"]:
    _fail("loss.analytic_kl", True, f"the closed-form KL needs the standard prior (or, for one "
          f"layer, the conditional prior), not {prior!r}; set it to False for a Monte Carlo KL")
  gradient, groups = values["loss.gradient"], values["loss.num_groups"]
  if gradient == "dreg" and loss_name not in ("iwae", "miwae"):
    _fail("loss.gradient", gradient, f"DReG is derived for the IWAE-type bounds: use loss.name "
          f"'iwae' or 'miwae' (not {loss_name!r}), or gradient 'reparam' / 'stl'")
  if gradient != "reparam" and loss_name in ("piwae", "autoencoder"):
    _fail("loss.gradient", gradient, f"loss.name={loss_name!r} takes the 'reparam' gradient")
  if gradient == "stl" and loss_name == "elbo" and values["loss.analytic_kl"]:
    _fail("loss.analytic_kl", True, "the STL gradient is for the Monte Carlo KL: set it to False")
  if groups != 1 and loss_name not in ("miwae", "piwae"):
    _fail("loss.num_groups", groups, f"groups of draws are for loss.name 'miwae' or 'piwae', not "
          f"{loss_name!r}: use 1")
  corruption = values["loss.corruption"]
  if corruption != "none" and loss_name != "autoencoder":
    _fail("loss.corruption", corruption, "input corruption is for the denoising autoencoder "
          "(loss.name='autoencoder'); use 'none'")


SCHEMA = schema.Schema(FIELDS, "vae_jax/configs/default.py", _check_combinations)


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
