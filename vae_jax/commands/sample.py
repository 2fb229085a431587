"""Sample images from a VQ-VAE and its PixelCNN prior:

    vae-jax sample --workdir PRIOR_DIR [--num_samples 64] [--label 3] [--seed 0] [--out FILE.png]

Draws code grids ancestrally (one compiled loop over positions), decodes them
(an autoregressive decoder draws the pixels in a second compiled loop) and saves a grid (default PRIOR_DIR/figures/samples_seed<seed>.png). Prints the
compile time and the time of a second, compiled draw of the same size.
"""

import json
import logging
import time
from pathlib import Path

import jax
import jax.numpy as jnp
from absl import app, flags

from vae_jax import plotting
from vae_jax.vq import train_prior as vq_prior
from vae_jax.vq import workdirs as vq_workdirs
from vae_jax import cli

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "A train_prior workdir.", required=True)
flags.DEFINE_string("vqvae_workdir", None, "Its VQ-VAE workdir (default: the one in its config).")
flags.DEFINE_integer("num_samples", 64, "How many images.")
flags.DEFINE_integer("label", None, "Class of every sample (class-conditional priors; default: 0, 1, 2, ...).")
flags.DEFINE_integer("seed", 0, "Sampling seed.")
flags.DEFINE_string("out", None, "PNG path.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.getLogger("absl").setLevel(logging.WARNING)
  prior, vq = vq_workdirs.load_prior(FLAGS.workdir, FLAGS.vqvae_workdir)
  n = FLAGS.num_samples
  labels = None
  if prior.model.num_classes:
    labels = (jnp.full((n,), FLAGS.label, jnp.int32) if FLAGS.label is not None
              else jnp.arange(n, dtype=jnp.int32) % prior.model.num_classes)
  elif FLAGS.label is not None:
    raise app.UsageError("--label needs a class-conditional prior (config.model.num_classes > 0)")
  key = jax.random.key(FLAGS.seed)

  def draw(k):
    images, codes = vq_prior.sample_images(vq.model, vq.params, prior.model, prior.params, k, n, labels)
    return jax.block_until_ready(images), codes

  t0 = time.perf_counter()
  draw(jax.random.fold_in(key, 1))  # compiles
  compile_s = time.perf_counter() - t0
  t0 = time.perf_counter()
  images, codes = draw(key)
  sample_s = time.perf_counter() - t0
  out = Path(FLAGS.out or Path(FLAGS.workdir) / "figures" / f"samples_seed{FLAGS.seed}.png")
  shown = "means of x ~ p(x | codes)" if vq.model.ar_layers else "E[x | codes]"
  plotting.save_grid(jax.device_get(images), out, title=f"{n} samples: codes ~ PixelCNN prior, {shown}")
  print(json.dumps(dict(num_samples=n, first_call_s=round(compile_s, 3), seconds_after_compilation=round(sample_s, 3),
                        png=str(out), device=str(jax.devices()[0].device_kind)), indent=2))


if __name__ == "__main__":
  cli.run(main)
