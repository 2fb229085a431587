"""Why autoencoders are not generative: decode prior-like draws, next to a VAE's samples (one PNG).

    vae-jax ae-samples --workdir AE=runs/ae --workdir DAE=runs/dae \
        --workdir VAE=runs/vae --out results/ae_samples.png

For each trained workdir (``vae_jax.commands.train``): an autoencoder
(model.kind = "autoencoder") gets two rows, its decoder's mean images at
z ~ N(0, I) and at z drawn from a full-covariance Gaussian fitted to the codes of
``--num_fit`` training images; a VAE gets one row, samples from its own prior
p(z). The autoencoder has no prior, so neither draw need land where its decoder
was trained; the VAE's KL term puts its codes where p(z) has its mass. Prints,
per autoencoder, how far its codes are from N(0, I).
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from vae_jax import checkpointing
from vae_jax import config as config_lib
from vae_jax import data as data_lib
from vae_jax import train
from vae_jax import cli

FLAGS = flags.FLAGS
flags.DEFINE_multi_string("workdir", None, "LABEL=DIR of a trained workdir (repeat; rows in this order).",
                          required=True)
flags.DEFINE_string("out", "results/ae_samples.png", "Output PNG.")
flags.DEFINE_integer("num_samples", 16, "Images per row.")
flags.DEFINE_integer("num_fit", 10000, "Training images whose codes the Gaussian is fitted to.")
flags.DEFINE_integer("seed", 0, "Seed of the draws.")


def restore(workdir: str | Path):
  """(config, model, params) of the newest checkpoint in ``workdir``."""
  workdir = Path(workdir)
  config = train.load_config(workdir)
  model = config_lib.make_model(config)
  tx = config_lib.make_optimizer(config.optimizer, config_lib.make_schedule(config.optimizer, 1, 1))
  template = train.create_train_state(model, jax.random.key(0), tx)
  ckpt = checkpointing.Checkpointer(workdir / "checkpoints", max_to_keep=config.keep_checkpoints)
  epoch, state = ckpt.restore_latest(template)
  ckpt.close()
  if state is None:
    raise FileNotFoundError(f"no checkpoint in {workdir / 'checkpoints'}: train first")
  return config, model, state.params, epoch


def codes_of(model, params, images: np.ndarray, key: jax.Array, mode: str, batch: int = 1000) -> np.ndarray:
  """Encoder outputs (the code, or the posterior mean) of uint8 images, [N, D]."""
  enc = jax.jit(lambda x: model.apply({"params": params}, x, method=model.encode)[0])
  out = []
  for i in range(0, len(images), batch):
    x = data_lib.to_model_input(jnp.asarray(images[i:i + batch]), jax.random.fold_in(key, i), mode)
    out.append(np.asarray(enc(x)))
  return np.concatenate(out)


def decode_mean(model, params, z: jax.Array) -> np.ndarray:
  return np.asarray(model.apply({"params": params}, z, method=lambda m, z: m.mean_image(m.decode(z))))


def rows_for(label: str, workdir: str, key: jax.Array) -> tuple[list[tuple[str, np.ndarray]], dict]:
  config, model, params, epoch = restore(workdir)
  n = FLAGS.num_samples
  if not getattr(model, "deterministic", False):
    samples = np.asarray(model.apply({"params": params}, key, n, method=model.generate))
    return [(f"{label} ({epoch} epochs): E[x | z], z ~ p(z) ({config.model.prior} prior)", samples)], {}
  images = data_lib.load_split(config.data, "train").images[:FLAGS.num_fit]
  codes = codes_of(model, params, images, jax.random.fold_in(key, 1), config.data.mode).astype(np.float64)
  mean, cov = codes.mean(0), np.cov(codes, rowvar=False)
  d = codes.shape[1]
  std_key, fit_key = jax.random.split(key)
  z_std = jax.random.normal(std_key, (n, d))
  z_fit = jax.random.multivariate_normal(fit_key, jnp.asarray(mean, jnp.float32),
                                         jnp.asarray(cov, jnp.float32), (n,), method="svd")
  stats = dict(label=label, epochs=epoch, code_dims=d, code_mean_norm=float(np.linalg.norm(mean)),
               code_std_min=float(np.sqrt(np.diag(cov)).min()), code_std_max=float(np.sqrt(np.diag(cov)).max()),
               cov_eigen_max=float(np.linalg.eigvalsh(cov).max()),
               mean_code_norm=float(np.mean(np.linalg.norm(codes, axis=1))),
               expected_norm_of_N01=float(np.sqrt(d)))
  return [(f"{label} ({epoch} epochs): E[x | z], z ~ N(0, I)", decode_mean(model, params, z_std)),
          (f"{label}: E[x | z], z ~ Gaussian fitted to the codes of {len(codes)} training images",
           decode_mean(model, params, z_fit))], stats


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from vae_jax import plotting
  import matplotlib.pyplot as plt

  key = jax.random.key(FLAGS.seed)
  rows, all_stats = [], []
  for i, item in enumerate(FLAGS.workdir):
    if "=" not in item:
      raise app.UsageError(f"--workdir={item!r}: expected LABEL=DIR")
    label, workdir = item.split("=", 1)
    r, stats = rows_for(label, workdir, jax.random.fold_in(key, i))
    rows += r
    if stats:
      all_stats.append(stats)
  fig, axes = plt.subplots(len(rows), 1, figsize=(9, 0.75 * len(rows) + 0.25 * len(rows)))
  for ax, (title, images) in zip(np.atleast_1d(axes), rows):
    mosaic = plotting.tile(images, ncols=len(images))
    ax.imshow(mosaic[..., 0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_title(title, fontsize=8, loc="left")
    ax.axis("off")
  fig.tight_layout()
  out = Path(FLAGS.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(out, dpi=130)
  plt.close(fig)
  print(json.dumps(all_stats, indent=2))
  print(f"wrote {out}")


if __name__ == "__main__":
  cli.run(main)
