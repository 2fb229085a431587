"""Config checks for semi-supervised classification (``vae_jax.apps.semisupervised``, M1 / M2 / M1+M2).

``validate(config)`` runs before any data is read or anything is compiled and
raises one ``ConfigError`` naming the field, its value and what is allowed.
Configs are shaped like ``vae_jax/configs/semisupervised/m2.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

from vae_jax import schema
from vae_jax.apps import semisupervised

ConfigError = schema.ConfigError
_c = schema
METHODS = ("m1", "m2", "m1_m2")
LABELLED_DATASETS = ("mnist", "fashion_mnist")
NUM_CLASSES = 10
EXAMPLE = "vae_jax/configs/semisupervised/m2.py"

FIELDS = {
    "method": _c.Choice(METHODS),
    "num_labelled": _c.Int(1),
    "data.name": _c.Choice(LABELLED_DATASETS),
    "data.data_dir": _c.Str(resumable=True),
    "data.download": _c.Bool(resumable=True),
    "m1_workdir": _c.Str(),
    "m1_features": _c.Choice(("mean", "sample")),
    "m1_active_threshold": _c.Float(0.0, 1e6, old=0.0),
    "m2.hidden_sizes": _c.Sizes(),
    "m2.latent_dim": _c.Int(1, _c.MAX_WIDTH),
    "m2.activation": _c.Choice(semisupervised.ACTIVATIONS),
    "m2.alpha_scale": _c.Float(0.0, 1e6),
    "m2.objective": _c.Choice(semisupervised.OBJECTIVES, old="equal"),
    "m2.labelled_batch_size": _c.Int(1),
    "classifier.l2": _c.Float(0.0, 1e6),
    "classifier.steps": _c.Int(1),
    "classifier.learning_rate": _c.Float(0.0, 10.0, lo_open=True),
    **_c.training_fields(),
    "optimizer.cycle_epochs": _c.Int(0, old=0),
}


def validate(config, *, check_workdir: bool = True) -> None:
  """Raises ConfigError on the first invalid field or combination.

  With ``check_workdir``, M1 and M1+M2 need ``m1_workdir`` to hold a trained
  VAE (its ``config.json``) of the same dataset.
  """
  v = SCHEMA.validate(config)
  if v["method"] in ("m1", "m1_m2") and check_workdir:
    _check_m1_workdir(v)


def _combinations(v: dict) -> None:
  n = v["num_labelled"]
  if n % NUM_CLASSES:
    _c.fail("num_labelled", n, f"expected a multiple of the {NUM_CLASSES} classes (a balanced "
             "labelled subset), e.g. 100, 600, 1000 or 3000")
  cycle = v["optimizer.cycle_epochs"]
  if cycle and v["optimizer.schedule"] != "cosine":
    _c.fail("optimizer.cycle_epochs", cycle, "restarts are for optimizer.schedule='cosine' "
             f"(it is {v['optimizer.schedule']!r}); use 0")
  if cycle and v["num_epochs"] % cycle:
    _c.fail("optimizer.cycle_epochs", cycle, f"num_epochs={v['num_epochs']} must be a whole "
             "number of cycles")


def _check_m1_workdir(v: dict) -> None:
  workdir = v["m1_workdir"]
  cfg = Path(workdir) / "config.json" if workdir else None
  if cfg is None or not cfg.exists():
    _c.fail("m1_workdir", workdir, f"method {v['method']!r} needs a trained M1 VAE workdir (one "
            "holding config.json and checkpoints/), e.g. --config.m1_workdir=runs/ssl_m1 from "
            "vae_jax/configs/semisupervised/m1_vae.py")
  m1_name = json.loads(cfg.read_text()).get("data", {}).get("name")
  if m1_name != v["data.name"]:
    _c.fail("m1_workdir", workdir, f"its VAE was trained on {m1_name!r}, not data.name="
            f"{v['data.name']!r}")


SCHEMA = schema.Schema(FIELDS, EXAMPLE, _combinations)
