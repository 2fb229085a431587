"""Config checks and factories for the VQ-VAE and its PixelCNN prior.

Like ``config.validate``, ``validate_vqvae`` and ``validate_prior`` run before
any data is read or anything is compiled and raise one ``ConfigError`` naming
the field, its value and what is allowed. Configs are shaped like
``experiments/configs/vq/vqvae_mnist.py`` and ``experiments/configs/vq/prior_mnist.py``.
"""

from __future__ import annotations

import difflib
from pathlib import Path

from vae_jax import config as config_lib
from vae_jax import data as data_lib
from vae_jax.vq import pixelcnn
from vae_jax.vq import vqvae

ConfigError = config_lib.ConfigError
_c = config_lib  # the field types (Int, Float, Bool, Str, Choice) and the error format are the core's

_TRAINING_FIELDS = {
    "seed": _c.Int(0, _c.MAX_SEED),
    "optimizer.name": _c.Choice(("adam", "adamw", "sgd")),
    "optimizer.learning_rate": _c.Float(0.0, 10.0, lo_open=True),
    "optimizer.b1": _c.Float(0.0, 1.0, hi_open=True),
    "optimizer.b2": _c.Float(0.0, 1.0, hi_open=True),
    "optimizer.eps": _c.Float(0.0, 1.0, lo_open=True),
    "optimizer.weight_decay": _c.Float(0.0, 1e3),
    "optimizer.grad_clip_norm": _c.Float(0.0, 1e12),
    "optimizer.schedule": _c.Choice(("constant", "cosine")),
    "batch_size": _c.Int(1),
    "num_epochs": _c.Int(1),
    "eval_every_epochs": _c.Int(1),
    "checkpoint_every_epochs": _c.Int(1),
    "keep_checkpoints": _c.Int(1, 1000),
    "progress": _c.Bool(),
    "eval.batch_size": _c.Int(1),
}

# Non-finite handling of the VQ-VAE and prior trainers (see README, Reliability): as the core config.
_NONFINITE_FIELDS = {
    "skip_nonfinite_updates": _c.Bool(),
    "skip_threshold": _c.Float(0.0, 1e30),
    "debug_nans": _c.Bool(),
}

# Every field of experiments/configs/vq/vqvae_mnist.py; unknown and missing fields are refused.
VQVAE_FIELDS = {
    "data.name": _c.Choice(tuple(data_lib.DATASETS)),
    "data.mode": _c.Choice(data_lib.MODES),
    "data.data_dir": _c.Str(),
    "data.download": _c.Bool(),
    "data.binarize_seed": _c.Int(0, _c.MAX_SEED),
    "model.name": _c.Choice(("vqvae",)),
    "model.num_codes": _c.Int(2, _c.MAX_WIDTH),
    "model.code_dim": _c.Int(1, _c.MAX_WIDTH),
    "model.hidden": _c.Int(1, _c.MAX_WIDTH),
    "model.residual_hidden": _c.Int(1, _c.MAX_WIDTH),
    "model.num_residual_blocks": _c.Int(0, 64),
    "model.num_downsamples": _c.Int(1, 6),
    "model.likelihood": _c.Choice(vqvae.LIKELIHOODS),
    "model.ar_layers": _c.Int(0, 64),
    "model.ar_features": _c.Int(1, _c.MAX_WIDTH),
    "model.ar_kernel_size": _c.Int(1, 63),
    "vq.beta": _c.Float(0.0, 1e6),
    "vq.ema": _c.Bool(),
    "vq.decay": _c.Float(0.0, 1.0, hi_open=True),
    "vq.epsilon": _c.Float(0.0, 1.0, lo_open=True),
    "vq.restart": _c.Bool(),
    "vq.dead_threshold": _c.Float(0.0, 1e9),
    **_TRAINING_FIELDS,
    **_NONFINITE_FIELDS,
}

# Fields added after VQ-VAE workdirs were first written, with the value that reproduces the old runs.
VQVAE_ADDED_FIELDS = {"model.ar_layers": 0, "model.ar_features": 16, "model.ar_kernel_size": 3}

# Every field of experiments/configs/vq/prior_mnist.py.
PRIOR_FIELDS = {
    "vqvae_workdir": _c.Str(),
    "model.name": _c.Choice(("gated_pixelcnn",)),
    "model.features": _c.Int(1, _c.MAX_WIDTH),
    "model.num_layers": _c.Int(1, 256),
    "model.kernel_size": _c.Int(1, 63),
    "model.output_features": _c.Int(1, _c.MAX_WIDTH),
    "model.num_classes": _c.Int(0, _c.MAX_WIDTH),
    **_TRAINING_FIELDS,
    **_NONFINITE_FIELDS,
}


def _check_fields(config, fields: dict, example: str) -> dict:
  """Every field present, none unknown, each of its type and range; returns {name: value}."""
  if not hasattr(config, "items"):
    raise ConfigError(f"config={config!r} is invalid: expected an ml_collections.ConfigDict (see {example})")
  values = dict(_c._leaves(config))
  for name in values:
    if name not in fields:
      close = difflib.get_close_matches(name, fields, n=1)
      raise ConfigError(f"config.{name} is not a known field"
                        + (f"; did you mean config.{close[0]}?" if close else "") + f" (see {example})")
  for name, spec in fields.items():
    if name not in values:
      raise ConfigError(f"config.{name} is missing; every field of {example} must be present")
    problem = spec.problem(values[name])
    if problem:
      _c._fail(name, values[name], problem)
  return values


def validate_vqvae(config) -> None:
  """Raises ConfigError on the first invalid field or combination of a VQ-VAE config."""
  v = _check_fields(config, VQVAE_FIELDS, "experiments/configs/vq/vqvae_mnist.py")
  spec = data_lib.DATASETS[v["data.name"]]
  mode, likelihood = v["data.mode"], v["model.likelihood"]
  if spec.is_binary and mode != "static":
    _c._fail("data.mode", mode, f"{v['data.name']} is binary already: use 'static'")
  h, w, _ = spec.image_shape
  scale = 2 ** v["model.num_downsamples"]
  if h % scale or w % scale:
    _c._fail("model.num_downsamples", v["model.num_downsamples"],
             f"{v['model.num_downsamples']} stride-2 layers need image sides divisible by {scale} "
             f"(images are {h}x{w})")
  if likelihood == "bernoulli" and mode == "grey":
    _c._fail("model.likelihood", likelihood, "grey-level data needs 'categorical' or 'logistic' "
             "(or set data.mode to 'static' or 'dynamic')")
  if likelihood != "bernoulli" and mode != "grey":
    _c._fail("model.likelihood", likelihood, f"8-bit likelihoods model grey levels: set "
             f"data.mode='grey' (not {mode!r}) or use 'bernoulli'")
  try:
    vqvae.check_autoregressive(v["model.ar_layers"], v["model.ar_kernel_size"], likelihood, spec.image_shape)
  except ValueError as e:
    raise ConfigError(f"config.model.ar_layers={v['model.ar_layers']} on {v['data.name']}: {e}") from None


def validate_prior(config, *, check_workdir: bool = True) -> None:
  """Raises ConfigError on the first invalid field of a prior config.

  With ``check_workdir`` the VQ-VAE workdir must exist (a config file on its
  own names none).
  """
  v = _check_fields(config, PRIOR_FIELDS, "experiments/configs/vq/prior_mnist.py")
  workdir = v["vqvae_workdir"]
  if check_workdir and (not workdir or not (Path(workdir) / "config.json").exists()):
    _c._fail("vqvae_workdir", workdir, "a trained VQ-VAE workdir (one holding config.json "
             "and checkpoints/), e.g. --config.vqvae_workdir=runs/vqvae_mnist")
  if v["model.kernel_size"] % 2 == 0:
    _c._fail("model.kernel_size", v["model.kernel_size"], "expected an odd size")


def make_vqvae(config) -> vqvae.VQVAE:
  m = config.model
  return vqvae.VQVAE(image_shape=data_lib.DATASETS[config.data.name].image_shape,
                     num_codes=m.num_codes, code_dim=m.code_dim, hidden=m.hidden,
                     residual_hidden=m.residual_hidden, num_residual_blocks=m.num_residual_blocks,
                     num_downsamples=m.num_downsamples, likelihood=m.likelihood,
                     ar_layers=m.ar_layers, ar_features=m.ar_features, ar_kernel_size=m.ar_kernel_size)


def make_prior(config, vq_model: vqvae.VQVAE) -> pixelcnn.GatedPixelCNN:
  """The configured prior over the code grids of ``vq_model``."""
  m = config.model
  return pixelcnn.GatedPixelCNN(num_codes=vq_model.num_codes, grid_shape=vq_model.grid_shape,
                                features=m.features, num_layers=m.num_layers,
                                kernel_size=m.kernel_size, output_features=m.output_features,
                                num_classes=m.num_classes)
