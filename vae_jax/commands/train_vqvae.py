"""Train a VQ-VAE: vae-jax train-vqvae --config vae_jax/configs/vq/vqvae_mnist.py --workdir DIR

Any field can be overridden: --config.num_epochs=5 --config.vq.ema=False.
Rerunning with the same workdir resumes from its newest checkpoint.
"""

import logging

from absl import app, flags
from ml_collections import config_flags

from vae_jax.vq import train as vq_train
from vae_jax.vq import config as vq_config
from vae_jax import cli
from vae_jax import configs

FLAGS = flags.FLAGS
if cli.is_entry(__name__):
  cli.check_argv(vq_config.VQVAE_SCHEMA)  # before the config flag reads the overrides
config_flags.DEFINE_config_file("config", configs.path("vq/vqvae_mnist"), "VQ-VAE config file.",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and figures.", required=True)
cli.define_distributed_flags()


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.getLogger("absl").setLevel(logging.WARNING)  # orbax logs every save at INFO
  logging.getLogger("vae_jax").setLevel(logging.INFO)
  cli.initialize_distributed()
  _, metrics = vq_train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
  print({k: round(v, 4) if isinstance(v, float) else v for k, v in metrics.items()})


if __name__ == "__main__":
  cli.run(main)
