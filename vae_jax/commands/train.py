"""Train a VAE: vae-jax train --config vae_jax/configs/NAME.py --workdir DIR

Any field can be overridden: --config.num_epochs=5 --config.loss.name=iwae.
Rerunning with the same workdir resumes from its newest checkpoint.
"""

import logging

from absl import app, flags
from ml_collections import config_flags

from vae_jax import train
from vae_jax import config as config_lib
from vae_jax import cli
from vae_jax import configs

FLAGS = flags.FLAGS
if cli.is_entry(__name__):
  cli.check_argv(config_lib.SCHEMA)  # before the config flag reads the overrides
config_flags.DEFINE_config_file("config", configs.path("default"), "Experiment config file.",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and figures.", required=True)
cli.define_distributed_flags()


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.getLogger("absl").setLevel(logging.WARNING)  # orbax logs every save at INFO
  logging.getLogger("vae_jax").setLevel(logging.INFO)
  cli.initialize_distributed()
  _, metrics = train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
  print({k: round(v, 4) if isinstance(v, float) else v for k, v in metrics.items()})


if __name__ == "__main__":
  cli.run(main)
