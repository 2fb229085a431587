"""The library's front door: packaged configs, restoring any workdir, sampling from it.

    import jax
    import vae_jax as vj

    run = vj.restore("runs/default")               # config, model, params of the newest checkpoint
    images = vj.sample(run, jax.random.key(0), 16)  # [16, 28, 28, 1] mean images in [0, 1]

``restore`` reads a workdir of any trainer whose model generates images: the
VAE family (VAE, CVAE, HVAE, autoencoder: ``vae-jax train``), the VQ-VAE
(``train-vqvae``) and its PixelCNN prior (``train-prior``; the prior's run holds
its VQ-VAE's). ``sample`` draws from the model's own prior: p(z) or p(z | y)
then E[x | z]; for a prior workdir, codes from the PixelCNN then the VQ-VAE's
decoder.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from vae_jax import configs
from vae_jax import schema
from vae_jax import train
from vae_jax.vq import train_prior
from vae_jax.vq import workdirs as vq_workdirs

KINDS = ("vae", "hvae", "autoencoder", "vqvae", "prior")


@dataclasses.dataclass(frozen=True)
class Run:
  """A restored workdir.

  Attributes:
    workdir: where it was read from.
    kind: one of ``KINDS``.
    config: the config it was trained with (old fields filled in).
    model: the Flax module; ``model.apply({"params": params}, ...)`` runs it.
    params: the parameters of the restored checkpoint (host arrays).
    epoch: the epoch of that checkpoint.
    vqvae: for a prior, the VQ-VAE whose codes it models (a ``Run``); else None.
  """
  workdir: Path
  kind: str
  config: Any
  model: Any
  params: Any
  epoch: int
  vqvae: "Run | None" = None


def get_config(name: str = "default"):
  """The packaged config ``name`` ("default", "burda_iwae", "vq/vqvae_mnist", ...): a ConfigDict,
  the same as ``--config NAME`` on the command line."""
  if name not in configs.names():
    raise schema.ConfigError(f"no packaged config {name!r}; choose one of {configs.names()}")
  return importlib.import_module("vae_jax.configs." + name.replace("/", ".")).get_config()


def workdir_kind(workdir: str | Path) -> str:
  """Which trainer wrote ``workdir`` (one of ``KINDS``), from its ``config.json``."""
  path = Path(workdir) / "config.json"
  if not path.exists():
    raise FileNotFoundError(f"{path} does not exist: is {workdir} a training workdir?")
  model = json.loads(path.read_text()).get("model", {})
  name = model.get("name")
  if name == "vqvae":
    return "vqvae"
  if name == "gated_pixelcnn":
    return "prior"
  if "latent_dims" in model:
    return model.get("kind", "vae")
  raise schema.ConfigError(f"{workdir} holds no generative model restore() knows (its config.model "
                           f"has neither a VAE's latent_dims nor a VQ-VAE or prior name); "
                           f"restore reads workdirs of kinds {KINDS}")


def restore(workdir: str | Path, checkpoint: str = "latest", *,
            vqvae_workdir: str | Path | None = None) -> Run:
  """The model and parameters of ``workdir``'s newest checkpoint (``checkpoint="best"``: the one
  with the best validation score; VAE family only). For a prior, ``vqvae_workdir`` overrides
  the VQ-VAE workdir its config names (checked to be the one it was fitted to)."""
  workdir = Path(workdir)
  kind = workdir_kind(workdir)
  if kind in ("vqvae", "prior") and checkpoint != "latest":
    raise ValueError(f"checkpoint={checkpoint!r}: {kind} workdirs are restored from their newest "
                     "checkpoint (checkpoint='latest')")
  if kind == "vqvae":
    vq = vq_workdirs.load_vqvae(workdir)
    return Run(workdir, kind, vq.config, vq.model, vq.params, vq.epoch)
  if kind == "prior":
    prior, vq = vq_workdirs.load_prior(workdir, vqvae_workdir)
    vq_run = Run(vq.workdir, "vqvae", vq.config, vq.model, vq.params, vq.epoch)
    return Run(workdir, kind, prior.config, prior.model, prior.params, prior.epoch, vq_run)
  config, model, params, epoch = train.restore_workdir(workdir, checkpoint)
  return Run(workdir, kind, config, model, jax.device_get(params), epoch)


def _labels(num_classes: int, num_samples: int, labels) -> jax.Array | None:
  if not num_classes:
    if labels is not None:
      raise ValueError("labels were given, but the model is not class-conditional "
                       "(config.model.num_classes = 0)")
    return None
  if labels is None:
    return jnp.arange(num_samples, dtype=jnp.int32) % num_classes
  labels = jnp.broadcast_to(jnp.asarray(labels, jnp.int32), (num_samples,))
  bad = np.asarray((labels < 0) | (labels >= num_classes))
  if bad.any():
    raise ValueError(f"labels must be in [0, {num_classes}); got {np.asarray(labels)[bad][:5]}")
  return labels


def sample(run: Run, key: jax.Array, num_samples: int, *, labels=None) -> np.ndarray:
  """``num_samples`` images [N, H, W, C] in [0, 1] from ``run``'s model (float32, on the host).

  Args:
    run: a ``Run`` from ``restore`` (of kind vae, hvae, autoencoder or prior).
    key: the sampling key.
    num_samples: how many images.
    labels: class-conditional models only: an int for every sample, or [N] ints (default
      0, 1, 2, ... cycling over the classes).

  A VAE gives E[x | z] with z ~ p(z) (p(z | y) for a CVAE; ancestrally through the layers
  of an HVAE); an autoencoder decodes z ~ N(0, I) (it has no prior: the samples show it);
  a prior workdir draws codes from the PixelCNN and decodes them with its VQ-VAE.
  """
  if not isinstance(num_samples, (int, np.integer)) or num_samples < 1:
    raise ValueError(f"num_samples={num_samples!r}: expected a positive integer")
  num_samples = int(num_samples)
  if run.kind == "vqvae":
    raise ValueError(f"{run.workdir} is a VQ-VAE: its codes need a prior to sample from; train "
                     "one (vae-jax train-prior --config.vqvae_workdir=...) and sample from its workdir")
  if run.kind == "prior":
    y = _labels(run.model.num_classes, num_samples, labels)
    images, _ = train_prior.sample_images(run.vqvae.model, run.vqvae.params, run.model, run.params,
                                          key, num_samples, y)
    return np.asarray(images, np.float32)
  model = run.model
  y = _labels(getattr(model, "num_classes", 0), num_samples, labels)
  if run.kind == "hvae":
    draw = jax.jit(lambda p, k: model.apply({"params": p}, k, num_samples, method=model.generate))
    return np.asarray(draw(run.params, key), np.float32)
  draw = jax.jit(lambda p, k, y: model.apply({"params": p}, k, num_samples, y, method=model.generate))
  return np.asarray(draw(run.params, key, y), np.float32)
