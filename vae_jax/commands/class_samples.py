"""Class-conditional samples of a CVAE workdir: vae-jax class-samples --workdir DIR [--out FILE]

Restores the newest checkpoint of a class-conditional model (config.model.num_classes > 0)
and writes a grid with one row per class y: the decoder means E[x | z, y] of z ~ p(z | y)
(or N(0, I)), drawn from the run's evaluation key (default FILE: DIR/figures/class_samples.png).
"""

import logging
from pathlib import Path

import jax
from absl import app, flags

from vae_jax import plotting
from vae_jax import train
from vae_jax import cli

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "A training workdir of a class-conditional model.", required=True)
flags.DEFINE_string("out", None, "Output PNG (default: WORKDIR/figures/class_samples.png).")
flags.DEFINE_integer("per_class", 10, "Samples per class (columns).")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.getLogger("absl").setLevel(logging.WARNING)
  workdir = Path(FLAGS.workdir)
  config, model, params, epoch = train.restore_workdir(workdir)
  if not model.num_classes:
    raise app.UsageError(f"{workdir} holds an unconditional model (config.model.num_classes=0)")
  key = jax.random.fold_in(train.RunKeys.from_seed(config.seed).eval, 11)
  samples = train.class_samples(model, params, key, FLAGS.per_class)
  out = Path(FLAGS.out) if FLAGS.out else workdir / "figures" / "class_samples.png"
  plotting.save_grid(samples, out, ncols=FLAGS.per_class,
                     title=f"E[x | z, y], z ~ p(z{' | y' if model.prior == 'conditional' else ''}): "
                           f"row y = class y (epoch {epoch})")
  print(out)


if __name__ == "__main__":
  cli.run(main)
