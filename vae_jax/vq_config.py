"""Config checks and factories for the VQ-VAE and its PixelCNN prior.

Like ``config.validate``, ``validate_vqvae`` and ``validate_prior`` run before
any data is read or anything is compiled and raise one ``ConfigError`` naming
the field, its value and what is allowed. Configs are shaped like
``experiments/configs/vqvae_mnist.py`` and ``experiments/configs/prior_mnist.py``.
"""

from __future__ import annotations

from pathlib import Path

from vae_jax import config as config_lib
from vae_jax import data as data_lib
from vae_jax import pixelcnn
from vae_jax import vqvae

ConfigError = config_lib.ConfigError
SCHEDULES = ("constant", "cosine")


def _validate_training(config) -> None:
  """Fields the VQ-VAE and prior configs share: seed, optimizer, loop."""
  config_lib._check_int(config, "seed", 0)
  config_lib._check_choice(config, "optimizer.name", ("adam", "adamw", "sgd"))
  config_lib._check_choice(config, "optimizer.schedule", SCHEDULES)
  config_lib._check_float(config, "optimizer.learning_rate", 0.0, lo_open=True)
  config_lib._check_float(config, "optimizer.b1", 0.0, 1.0)
  config_lib._check_float(config, "optimizer.b2", 0.0, 1.0)
  config_lib._check_float(config, "optimizer.eps", 0.0, lo_open=True)
  config_lib._check_float(config, "optimizer.weight_decay", 0.0)
  config_lib._check_float(config, "optimizer.grad_clip_norm", 0.0)
  for field in ("batch_size", "num_epochs", "eval_every_epochs", "checkpoint_every_epochs",
                "keep_checkpoints", "eval.batch_size"):
    config_lib._check_int(config, field, 1)


def validate_vqvae(config) -> None:
  """Raises ConfigError on the first invalid field of a VQ-VAE config."""
  config_lib._check_choice(config, "model.name", ("vqvae",))
  config_lib._check_choice(config, "data.name", data_lib.DATASETS)
  config_lib._check_choice(config, "data.mode", data_lib.MODES)
  spec = data_lib.DATASETS[config.data.name]
  if spec.is_binary and config.data.mode != "static":
    config_lib._fail("data.mode", config.data.mode, f"{config.data.name} is binary already: use 'static'")
  m = config.model
  config_lib._check_int(config, "model.num_codes", 2)
  config_lib._check_int(config, "model.code_dim", 1)
  config_lib._check_int(config, "model.hidden", 1)
  config_lib._check_int(config, "model.residual_hidden", 1)
  config_lib._check_int(config, "model.num_residual_blocks", 0)
  config_lib._check_int(config, "model.num_downsamples", 1, 6)
  config_lib._check_choice(config, "model.likelihood", vqvae.LIKELIHOODS)
  h, w, _ = spec.image_shape
  scale = 2 ** m.num_downsamples
  if h % scale or w % scale:
    config_lib._fail("model.num_downsamples", m.num_downsamples,
                     f"{m.num_downsamples} stride-2 layers need image sides divisible by {scale} "
                     f"(images are {h}x{w})")
  if m.likelihood == "bernoulli" and config.data.mode == "grey":
    config_lib._fail("model.likelihood", m.likelihood, "grey-level data needs 'categorical' or "
                     "'logistic' (or set data.mode to 'static' or 'dynamic')")
  if m.likelihood != "bernoulli" and config.data.mode != "grey":
    config_lib._fail("model.likelihood", m.likelihood, f"8-bit likelihoods model grey levels: set "
                     f"data.mode='grey' (not {config.data.mode!r}) or use 'bernoulli'")
  config_lib._check_float(config, "vq.beta", 0.0)
  config_lib._check_float(config, "vq.decay", 0.0, 1.0)
  if not config.vq.decay < 1.0:
    config_lib._fail("vq.decay", config.vq.decay, "expected a number in [0, 1)")
  config_lib._check_float(config, "vq.epsilon", 0.0, lo_open=True)
  config_lib._check_float(config, "vq.dead_threshold", 0.0)
  for field in ("ema", "restart"):
    if not isinstance(config.vq[field], bool):
      config_lib._fail(f"vq.{field}", config.vq[field], "expected True or False")
  _validate_training(config)


def validate_prior(config, *, check_workdir: bool = True) -> None:
  """Raises ConfigError on the first invalid field of a prior config.

  With ``check_workdir`` the VQ-VAE workdir must exist (a config file on its
  own names none).
  """
  config_lib._check_choice(config, "model.name", ("gated_pixelcnn",))
  workdir = config.vqvae_workdir
  if check_workdir and (not workdir or not (Path(workdir) / "config.json").exists()):
    config_lib._fail("vqvae_workdir", workdir, "a trained VQ-VAE workdir (one holding config.json "
                     "and checkpoints/), e.g. --config.vqvae_workdir=runs/vqvae_mnist")
  config_lib._check_int(config, "model.features", 1)
  config_lib._check_int(config, "model.num_layers", 1)
  config_lib._check_int(config, "model.kernel_size", 1)
  if config.model.kernel_size % 2 == 0:
    config_lib._fail("model.kernel_size", config.model.kernel_size, "expected an odd size")
  config_lib._check_int(config, "model.output_features", 1)
  config_lib._check_int(config, "model.num_classes", 0)
  _validate_training(config)


def make_vqvae(config) -> vqvae.VQVAE:
  m = config.model
  return vqvae.VQVAE(image_shape=data_lib.DATASETS[config.data.name].image_shape,
                     num_codes=m.num_codes, code_dim=m.code_dim, hidden=m.hidden,
                     residual_hidden=m.residual_hidden, num_residual_blocks=m.num_residual_blocks,
                     num_downsamples=m.num_downsamples, likelihood=m.likelihood)


def make_prior(config, vq_model: vqvae.VQVAE) -> pixelcnn.GatedPixelCNN:
  """The configured prior over the code grids of ``vq_model``."""
  m = config.model
  return pixelcnn.GatedPixelCNN(num_codes=vq_model.num_codes, grid_shape=vq_model.grid_shape,
                                features=m.features, num_layers=m.num_layers,
                                kernel_size=m.kernel_size, output_features=m.output_features,
                                num_classes=m.num_classes)
