"""Train a PixelCNN prior on a VQ-VAE's codes:

    vae-jax train-prior --config vae_jax/configs/vq/prior_mnist.py \
        --config.vqvae_workdir=runs/vqvae_mnist --workdir DIR

Encodes the VQ-VAE's training and validation images once, fits the prior by
maximum likelihood, writes DIR/vqvae.json (which VQ-VAE checkpoint it models),
metrics, checkpoints and DIR/figures/samples.png. Rerunning resumes.
"""

import logging

from absl import app, flags
from ml_collections import config_flags

from vae_jax.vq import train_prior as vq_prior
from vae_jax.vq import config as vq_config
from vae_jax import cli
from vae_jax import configs

FLAGS = flags.FLAGS
if cli.is_entry(__name__):
  cli.check_argv(vq_config.PRIOR_SCHEMA)  # before the config flag reads the overrides
config_flags.DEFINE_config_file("config", configs.path("vq/prior_mnist"), "Prior config file.",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and figures.", required=True)
cli.define_distributed_flags()


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.getLogger("absl").setLevel(logging.WARNING)
  logging.getLogger("vae_jax").setLevel(logging.INFO)
  cli.initialize_distributed()
  _, metrics = vq_prior.train_prior(FLAGS.config, FLAGS.workdir)
  print({k: round(v, 4) if isinstance(v, float) else v for k, v in metrics.items()})


if __name__ == "__main__":
  cli.run(main)
