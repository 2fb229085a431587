import importlib
from pathlib import Path

import pytest

from experiments.configs import default
from vae_jax import config as config_lib
from vae_jax import vq_config

CONFIGS = sorted(p.stem for p in Path(__file__).resolve().parents[1].glob("experiments/configs/*.py")
                 if p.stem != "__init__")


@pytest.mark.parametrize("name", CONFIGS)
def test_every_experiment_config_is_valid(name):
  cfg = importlib.import_module(f"experiments.configs.{name}").get_config()
  kind = cfg.model.get("name", "vae")
  if kind == "vqvae":  # VQ-VAE and prior configs (tests/test_vqvae.py) have validators of their own
    vq_config.validate_vqvae(cfg)
    vq_config.make_vqvae(cfg)
    return
  if kind == "gated_pixelcnn":
    vq_config.validate_prior(cfg, check_workdir=False)
    return
  config_lib.validate(cfg)
  assert config_lib.num_epochs(cfg) >= 1
  config_lib.make_model(cfg)


@pytest.mark.parametrize("field,value,match", [
    ("data.name", "imagenet", "data.name='imagenet'"),
    ("data.mode", "fuzzy", "data.mode"),
    ("model.network", "transformer", "model.network='transformer'"),
    ("model.activation", "swishy", "model.activation"),
    ("model.likelihood", "poisson", "model.likelihood"),
    ("model.latent_dims", (0,), "model.latent_dims"),
    ("model.hidden_sizes", ((200,), (100,)), "model.hidden_sizes"),
    ("loss.name", "wgan", "loss.name"),
    ("loss.beta", -1.0, "loss.beta=-1.0"),
    ("loss.num_samples", 0, "loss.num_samples=0"),
    ("optimizer.learning_rate", 0.0, "optimizer.learning_rate"),
    ("batch_size", 0, "batch_size=0"),
    ("num_epochs", 0, "num_epochs=0"),
    ("eval.num_importance_samples", 0, "eval.num_importance_samples"),
])
def test_invalid_fields_are_named(field, value, match):
  cfg = default.get_config()
  parent = cfg
  *path, leaf = field.split(".")
  for p in path:
    parent = parent[p]
  parent[leaf] = value
  with pytest.raises(config_lib.ConfigError, match=match.replace("(", r"\(").replace(")", r"\)")):
    config_lib.validate(cfg)


def test_impossible_combinations_are_named():
  cfg = default.get_config()
  cfg.data.mode = "dynamic"  # binarized_mnist is binary already
  with pytest.raises(config_lib.ConfigError, match="binary already"):
    config_lib.validate(cfg)
  cfg = default.get_config()
  cfg.model.latent_dims, cfg.model.hidden_sizes = (100, 50), ((200, 200), (100, 100))
  with pytest.raises(config_lib.ConfigError, match="analytic_kl"):
    config_lib.validate(cfg)
  cfg = default.get_config()
  cfg.data.name, cfg.data.mode = "mnist", "grey"
  with pytest.raises(config_lib.ConfigError, match="Gaussian likelihood"):
    config_lib.validate(cfg)


def test_burda_schedule_lengths_and_rates():
  cfg = importlib.import_module("experiments.configs.burda_vae").get_config()
  assert config_lib.burda_stage_epochs(cfg.optimizer) == [1, 3, 9, 27, 81, 243, 729, 2187]
  assert config_lib.num_epochs(cfg) == 3280
  sched = config_lib.make_schedule(cfg.optimizer, steps_per_epoch=10, total_epochs=3280)
  for stage, first_epoch in enumerate([0, 1, 4, 13, 40, 121, 364, 1093]):
    assert float(sched(first_epoch * 10)) == pytest.approx(1e-3 * 10 ** (-stage / 7), rel=1e-5)
  cfg.num_epochs = 10
  with pytest.raises(config_lib.ConfigError, match="num_epochs=10"):
    config_lib.validate(cfg)
