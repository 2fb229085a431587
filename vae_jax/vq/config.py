"""Config checks and factories for the VQ-VAE and its PixelCNN prior.

Like ``config.validate``, ``validate_vqvae`` and ``validate_prior`` run before
any data is read or anything is compiled and raise one ``ConfigError`` naming
the field, its value and what is allowed. Configs are shaped like
``vae_jax/configs/vq/vqvae_mnist.py`` and ``vae_jax/configs/vq/prior_mnist.py``.
"""

from __future__ import annotations

from pathlib import Path

from vae_jax import data as data_lib
from vae_jax import schema
from vae_jax.vq import pixelcnn
from vae_jax.vq import vqvae

ConfigError = schema.ConfigError
_S = schema
_fail = schema.fail

# Every field of vae_jax/configs/vq/vqvae_mnist.py; unknown and missing fields are refused.
VQVAE_FIELDS = {
    "data.name": _S.Choice(tuple(data_lib.DATASETS)),
    "data.mode": _S.Choice(data_lib.MODES),
    "data.data_dir": _S.Str(resumable=True),
    "data.download": _S.Bool(resumable=True),
    "data.binarize_seed": _S.Int(0, _S.MAX_SEED),
    "model.name": _S.Choice(("vqvae",)),
    "model.num_codes": _S.Int(2, _S.MAX_WIDTH),
    "model.code_dim": _S.Int(1, _S.MAX_WIDTH),
    "model.hidden": _S.Int(1, _S.MAX_WIDTH),
    "model.residual_hidden": _S.Int(1, _S.MAX_WIDTH),
    "model.num_residual_blocks": _S.Int(0, 64),
    "model.num_downsamples": _S.Int(1, 6),
    "model.likelihood": _S.Choice(vqvae.LIKELIHOODS),
    "model.ar_layers": _S.Int(0, 64, old=0),
    "model.ar_features": _S.Int(1, _S.MAX_WIDTH, old=16),
    "model.ar_kernel_size": _S.Int(1, 63, old=3),
    "vq.beta": _S.Float(0.0, 1e6),
    "vq.ema": _S.Bool(),
    "vq.decay": _S.Float(0.0, 1.0, hi_open=True),
    "vq.epsilon": _S.Float(0.0, 1.0, lo_open=True),
    "vq.restart": _S.Bool(),
    "vq.dead_threshold": _S.Float(0.0, 1e9),
    **_S.training_fields(),
}

# Every field of vae_jax/configs/vq/prior_mnist.py.
PRIOR_FIELDS = {
    "vqvae_workdir": _S.Str(),
    "model.name": _S.Choice(("gated_pixelcnn",)),
    "model.features": _S.Int(1, _S.MAX_WIDTH),
    "model.num_layers": _S.Int(1, 256),
    "model.kernel_size": _S.Int(1, 63),
    "model.output_features": _S.Int(1, _S.MAX_WIDTH),
    "model.num_classes": _S.Int(0, _S.MAX_WIDTH),
    **_S.training_fields(),
}


def validate_vqvae(config) -> None:
  """Raises ConfigError on the first invalid field or combination of a VQ-VAE config."""
  VQVAE_SCHEMA.validate(config)


def _vqvae_combinations(v: dict) -> None:
  spec = data_lib.DATASETS[v["data.name"]]
  mode, likelihood = v["data.mode"], v["model.likelihood"]
  if spec.is_binary and mode != "static":
    _fail("data.mode", mode, f"{v['data.name']} is binary already: use 'static'")
  h, w, _ = spec.image_shape
  scale = 2 ** v["model.num_downsamples"]
  if h % scale or w % scale:
    _fail("model.num_downsamples", v["model.num_downsamples"],
             f"{v['model.num_downsamples']} stride-2 layers need image sides divisible by {scale} "
             f"(images are {h}x{w})")
  if likelihood == "bernoulli" and mode == "grey":
    _fail("model.likelihood", likelihood, "grey-level data needs 'categorical' or 'logistic' "
             "(or set data.mode to 'static' or 'dynamic')")
  if likelihood != "bernoulli" and mode != "grey":
    _fail("model.likelihood", likelihood, f"8-bit likelihoods model grey levels: set "
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
  v = PRIOR_SCHEMA.validate(config)
  workdir = v["vqvae_workdir"]
  if check_workdir and (not workdir or not (Path(workdir) / "config.json").exists()):
    _fail("vqvae_workdir", workdir, "a trained VQ-VAE workdir (one holding config.json "
             "and checkpoints/), e.g. --config.vqvae_workdir=runs/vqvae_mnist")


def _prior_combinations(v: dict) -> None:
  if v["model.kernel_size"] % 2 == 0:
    _fail("model.kernel_size", v["model.kernel_size"], "expected an odd size")


VQVAE_SCHEMA = schema.Schema(VQVAE_FIELDS, "vae_jax/configs/vq/vqvae_mnist.py", _vqvae_combinations)
PRIOR_SCHEMA = schema.Schema(PRIOR_FIELDS, "vae_jax/configs/vq/prior_mnist.py", _prior_combinations)


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
