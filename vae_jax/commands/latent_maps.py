"""Latent maps of a trained workdir: vae-jax latent-maps --workdir DIR [--out DIR2]

Encodes the test split (posterior means E_q[z_1 | x], given y for a
class-conditional model) and writes to ``--out`` (default DIR/figures):

* 2-D latent: ``latent_scatter.png`` (the means coloured by label) and
  ``manifold.png``, decoder means E[x | z] over the grid z = Phi^-1(u) for u on
  an even grid of [0.05, 0.95]^2 (Kingma & Welling 2014, Fig. 4; for a
  conditional model, given ``--label``);
* more latents: ``latent_pca.png``, the means projected on their first two
  principal components;
* always ``interpolation.png``: decoder means along the straight line between
  the posterior means of two test images (``--pair``; a conditional model
  decodes with the first image's label), originals at both ends;
* ``latent_maps.json``: what was drawn (images, latent size, PCA variance).

The binarization of the test images is drawn from the run's evaluation key,
so the figures are reproducible.
"""

import json
import logging
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from vae_jax import data as data_lib
from vae_jax import plotting
from vae_jax import train
from vae_jax import cli

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "A training workdir.", required=True)
flags.DEFINE_string("out", None, "Output folder (default: WORKDIR/figures).")
flags.DEFINE_enum("split", "test", ["train", "validation", "test"], "Which split to encode.")
flags.DEFINE_integer("num_images", 0, "Encode only the first N images (0 = all).")
flags.DEFINE_integer("grid", 20, "Manifold: grid side (grid x grid decoded images).")
flags.DEFINE_list("pair", ["0", "1"], "Interpolation: indices of the two test images.")
flags.DEFINE_integer("steps", 12, "Interpolation: decoded points between (and at) the two ends.")
flags.DEFINE_integer("label", 0, "Conditional models: the label the manifold is decoded with.")
flags.DEFINE_integer("batch_size", 1000, "Images encoded per compiled batch.")


def posterior_means(model, params, images, labels, key, mode, batch_size):
  """E_q[z_1 | x (, y)] [N, D1] and the model inputs x [N, H, W, C], batch by batch."""
  @jax.jit
  def encode(raw, y, key):
    x = data_lib.to_model_input(raw, key, mode)
    kw = {} if y is None else {"label": y}
    return jax.vmap(lambda xi, **k: model.apply({"params": params}, xi, method=model.encode, **k)[0])(
        x, **kw), x

  means, inputs = [], []
  for b, start in enumerate(range(0, len(images), batch_size)):
    y = None if labels is None else jnp.asarray(labels[start:start + batch_size])
    m, x = encode(jnp.asarray(images[start:start + batch_size]), y, jax.random.fold_in(key, b))
    means.append(np.asarray(m))
    inputs.append(np.asarray(x))
  return np.concatenate(means), np.concatenate(inputs)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.getLogger("absl").setLevel(logging.WARNING)
  workdir = Path(FLAGS.workdir)
  out = Path(FLAGS.out) if FLAGS.out else workdir / "figures"
  config, model, params, epoch = train.restore_workdir(workdir)
  if getattr(model, "kind", "vae") == "hvae":
    raise app.UsageError("latent maps draw z_1 of models.VAE; model.kind='hvae' is not supported")
  split = data_lib.load_split(config.data, FLAGS.split)
  n = FLAGS.num_images or len(split.images)
  images = split.images[:n]
  labels = None if split.labels is None else np.asarray(split.labels[:n])
  if model.num_classes:
    labels = data_lib.check_labels(labels, model.num_classes, n, what=f"{FLAGS.split} labels")
    if not 0 <= FLAGS.label < model.num_classes:
      raise app.UsageError(f"--label={FLAGS.label}: expected a class in [0, {model.num_classes})")
  pair = [int(i) for i in FLAGS.pair]
  if len(pair) != 2 or not all(0 <= i < n for i in pair):
    raise app.UsageError(f"--pair={FLAGS.pair}: expected two image indices in [0, {n})")
  key = jax.random.fold_in(train.RunKeys.from_seed(config.seed).eval, 7)
  cond_labels = labels if model.num_classes else None
  means, inputs = posterior_means(model, params, images, cond_labels, key, config.data.mode,
                                  FLAGS.batch_size)
  dim = means.shape[1]

  def decode(z, label):
    kw = {} if not model.num_classes else {"label": jnp.full(z.shape[:1], label, jnp.int32)}
    decoded = model.apply({"params": params}, jnp.asarray(z), method=model.decode, **kw)
    return np.asarray(model.apply({"params": params}, decoded, method=model.mean_image))

  def given(label):
    return f", y = {label}" if model.num_classes else ""

  info = dict(workdir=str(workdir), epoch=epoch, split=FLAGS.split, num_images=n, latent_dim=dim,
              conditional=bool(model.num_classes), files=[])
  if dim == 2:
    plotting.save_scatter(means, labels, out / "latent_scatter.png",
                          title=f"posterior means E[z | x{', y' if model.num_classes else ''}] of "
                                f"{n} {FLAGS.split} images, coloured by label")
    z = plotting.manifold_latents(FLAGS.grid)
    grid_images = decode(z.reshape(-1, 2), FLAGS.label)
    title = (f"decoder means E[x | z{given(FLAGS.label)}] on z = Phi^-1(u), u in [0.05, 0.95]^2 "
             f"({FLAGS.grid} x {FLAGS.grid})")
    plotting.save_grid(grid_images, out / "manifold.png", ncols=FLAGS.grid, title=title)
    info["files"] += ["latent_scatter.png", "manifold.png"]
  else:
    projected, ratio = plotting.pca_2d(means)
    plotting.save_scatter(projected, labels, out / "latent_pca.png",
                          title=f"PCA of the {dim}-d posterior means of {n} {FLAGS.split} images "
                                f"({100 * ratio.sum():.0f}% of their variance)",
                          xlabel=f"PC 1 ({100 * ratio[0]:.0f}%)", ylabel=f"PC 2 ({100 * ratio[1]:.0f}%)")
    info["files"].append("latent_pca.png")
    info["pca_explained_variance"] = [float(r) for r in ratio]
  a, b = pair
  line = plotting.interpolate(means[a], means[b], FLAGS.steps)
  strip_label = 0 if labels is None else int(labels[a])
  strip = decode(line, strip_label)
  strip = np.concatenate([inputs[a][None], strip, inputs[b][None]])
  plotting.save_grid(strip, out / "interpolation.png", ncols=len(strip),
                     title=f"test images {a}, {b} (ends); E[x | z{given(strip_label)}] between their posterior means")
  info["files"].append("interpolation.png")
  info["pair"] = pair
  (out / "latent_maps.json").write_text(json.dumps(info, indent=2))
  print(json.dumps(info, indent=2))


if __name__ == "__main__":
  cli.run(main)
