"""VQ-VAE and prior workdirs: restoring their newest checkpoints, and which VQ-VAE a prior models.

A prior workdir records the VQ-VAE checkpoint its codes came from
(``PRIOR_SOURCE``: workdir, epoch, step and a fingerprint of the parameters);
``load_prior`` refuses a VQ-VAE that has changed since.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import jax
import numpy as np

from vae_jax import checkpointing
from vae_jax import config as config_lib
from vae_jax.vq import config as vq_config
from vae_jax.vq import state as vq_state

CheckpointError = checkpointing.CheckpointError
PRIOR_SOURCE = "vqvae.json"  # in a prior workdir: which VQ-VAE checkpoint its codes came from


@dataclasses.dataclass(frozen=True)
class Restored:
  workdir: Path
  config: object
  model: object
  params: object
  epoch: int
  step: int


def fingerprint(params) -> str:
  """A short hash of every parameter (names, shapes, bytes): which VQ-VAE a prior was fitted to."""
  digest = hashlib.sha256()
  for path, leaf in jax.tree_util.tree_flatten_with_path(jax.device_get(params))[0]:
    a = np.ascontiguousarray(np.asarray(leaf))
    digest.update(jax.tree_util.keystr(path).encode())
    digest.update(f"{a.dtype}{a.shape}".encode())
    digest.update(a.tobytes())
  return digest.hexdigest()[:16]


def _restore(workdir: Path, config, template):
  ckpt = checkpointing.Checkpointer(workdir / "checkpoints", max_to_keep=config.keep_checkpoints)
  try:
    epoch, state = ckpt.restore_latest(template)
  finally:
    ckpt.close()
  if state is None:
    raise CheckpointError(f"no checkpoint in {workdir / 'checkpoints'}: train first")
  return epoch, jax.device_get(state)  # host arrays: usable with a state on any devices


def _abstract(make_state):
  """The state ``make_state()`` would build, as shapes and dtypes only (nothing is initialized)."""
  return jax.eval_shape(make_state)


def _template_tx(config):
  return config_lib.make_optimizer(config.optimizer, config_lib.make_schedule(config.optimizer, 1, 1))


def load_vqvae(workdir: str | Path) -> Restored:
  """The newest VQ-VAE checkpoint of a ``train_vqvae`` workdir."""
  workdir = Path(workdir)
  config = vq_config.VQVAE_SCHEMA.load(workdir)
  if config.get("model", {}).get("name") != "vqvae":
    raise config_lib.ConfigError(f"{workdir} is not a VQ-VAE workdir (its config.model.name is "
                                 f"{config.get('model', {}).get('name')!r}, not 'vqvae')")
  model = vq_config.make_vqvae(config)
  tx = _template_tx(config)
  template = _abstract(lambda: vq_state.create_train_state(model, jax.random.key(0), tx))
  epoch, state = _restore(workdir, config, template)
  return Restored(workdir, config, model, state.params, epoch, int(state.step))


def prior_source(vq: Restored) -> dict:
  """What a prior workdir records about the VQ-VAE whose codes it models."""
  return dict(vqvae_workdir=str(vq.workdir.absolute()), epoch=vq.epoch, step=vq.step,
              fingerprint=fingerprint(vq.params), num_codes=vq.model.num_codes,
              grid_shape=list(vq.model.grid_shape))


def check_prior_source(recorded: dict, vq: Restored, prior_workdir: Path) -> None:
  """Raises CheckpointError unless the prior in ``prior_workdir`` was fitted to the codes of ``vq``."""
  now = prior_source(vq)
  if (recorded["num_codes"], list(recorded["grid_shape"])) != (now["num_codes"], now["grid_shape"]):
    raise CheckpointError(
        f"the prior in {prior_workdir} models {recorded['grid_shape'][0]}x{recorded['grid_shape'][1]} "
        f"grids of K = {recorded['num_codes']} codes, but the VQ-VAE in {vq.workdir} makes "
        f"{now['grid_shape'][0]}x{now['grid_shape'][1]} grids of K = {now['num_codes']}")
  if recorded["fingerprint"] != now["fingerprint"]:
    raise CheckpointError(
        f"the prior in {prior_workdir} was fitted to the codes of another VQ-VAE checkpoint "
        f"({recorded['vqvae_workdir']}, epoch {recorded['epoch']}, step {recorded['step']}, "
        f"parameters {recorded['fingerprint']}); {vq.workdir} holds epoch {vq.epoch}, step "
        f"{vq.step}, parameters {now['fingerprint']}. Retrain the prior on this VQ-VAE "
        "(vae-jax train-prior --config.vqvae_workdir=...) in a new workdir.")


def load_prior(workdir: str | Path, vqvae_workdir: str | Path | None = None) -> tuple[Restored, Restored]:
  """(prior, VQ-VAE) of a ``train_prior`` workdir, checked to belong together.

  ``vqvae_workdir`` overrides the VQ-VAE workdir recorded in the prior's config.
  """
  workdir = Path(workdir)
  config = vq_config.PRIOR_SCHEMA.load(workdir)
  if config.get("model", {}).get("name") != "gated_pixelcnn":
    raise config_lib.ConfigError(f"{workdir} is not a prior workdir (config.model.name is "
                                 f"{config.get('model', {}).get('name')!r}, not 'gated_pixelcnn')")
  source_path = workdir / PRIOR_SOURCE
  if not source_path.exists():
    raise CheckpointError(f"{source_path} is missing: {workdir} does not say which VQ-VAE it models")
  vq = load_vqvae(vqvae_workdir or config.vqvae_workdir)
  check_prior_source(json.loads(source_path.read_text()), vq, workdir)
  model = vq_config.make_prior(config, vq.model)
  tx = _template_tx(config)
  template = _abstract(lambda: vq_state.new_prior_state(model, jax.random.key(0), tx))
  epoch, state = _restore(workdir, config, template)
  return Restored(workdir, config, model, state.params, epoch, int(state.step)), vq
