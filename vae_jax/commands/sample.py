"""Sample images from any trained workdir:

    vae-jax sample --workdir DIR [--num_samples 64] [--label 3] [--seed 0] [--out FILE.png]

DIR is a VAE, CVAE, HVAE or autoencoder workdir (``vae-jax train``): images
E[x | z] with z ~ p(z) (p(z | y) for a CVAE: ``--label`` draws one class, the
default cycles 0, 1, 2, ...), or a PixelCNN prior workdir (``vae-jax
train-prior``): codes drawn ancestrally in one compiled loop, decoded by its
VQ-VAE. Saves a PNG grid (default DIR/figures/samples_seed<seed>.png) and
prints the compile time and the time of a second, compiled draw of the same size.
"""

import json
import time
from pathlib import Path

import jax
from absl import app, flags

from vae_jax import api
from vae_jax import cli
from vae_jax import plotting

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "A training workdir (VAE family or PixelCNN prior).", required=True)
flags.DEFINE_integer("num_samples", 64, "How many images.")
flags.DEFINE_integer("label", None, "Class of every sample (class-conditional models; default: 0, 1, 2, ...).")
flags.DEFINE_integer("seed", 0, "Sampling seed.")
flags.DEFINE_enum("checkpoint", "latest", ["latest", "best"], "VAE family: the newest checkpoint or "
                  "the one with the best validation score.")
flags.DEFINE_string("vqvae_workdir", None, "For a prior: its VQ-VAE workdir (default: the one in its config).")
flags.DEFINE_string("out", None, "PNG path.")

TITLES = {
    "vae": "E[x | z], z ~ p(z)", "hvae": "E[x | z_1, z_2], z_2 ~ p(z_2), z_1 ~ p(z_1 | z_2)",
    "autoencoder": "decoder(z), z ~ N(0, I): an autoencoder has no prior",
    "prior": "codes ~ PixelCNN prior, decoded by the VQ-VAE",
}


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  cli.quiet_logs()
  if FLAGS.num_samples < 1:
    raise app.UsageError(f"--num_samples={FLAGS.num_samples} must be >= 1")
  run = api.restore(FLAGS.workdir, FLAGS.checkpoint, vqvae_workdir=FLAGS.vqvae_workdir)
  n, key = FLAGS.num_samples, jax.random.key(FLAGS.seed)
  try:
    api.sample(run, key, 1, labels=FLAGS.label)  # bad labels / kinds fail before the long draw
  except ValueError as e:
    raise app.UsageError(str(e)) from None

  t0 = time.perf_counter()
  api.sample(run, jax.random.fold_in(key, 1), n, labels=FLAGS.label)  # compiles
  compile_s = time.perf_counter() - t0
  t0 = time.perf_counter()
  images = api.sample(run, key, n, labels=FLAGS.label)
  sample_s = time.perf_counter() - t0
  out = Path(FLAGS.out or Path(FLAGS.workdir) / "figures" / f"samples_seed{FLAGS.seed}.png")
  conditional = getattr(run.model, "num_classes", 0)
  which = (f", class {FLAGS.label}" if FLAGS.label is not None
           else ", classes 0, 1, 2, ..." if conditional else "")
  plotting.save_grid(images, out, title=f"{Path(FLAGS.workdir).name}, epoch {run.epoch}: "
                                        f"{n} samples{which}, {TITLES[run.kind]}")
  print(json.dumps(dict(workdir=str(FLAGS.workdir), kind=run.kind, epoch=run.epoch, num_samples=n,
                        label=FLAGS.label, first_call_s=round(compile_s, 3),
                        seconds_after_compilation=round(sample_s, 3), png=str(out),
                        device=str(jax.devices()[0].device_kind)), indent=2))


if __name__ == "__main__":
  cli.run(main)
