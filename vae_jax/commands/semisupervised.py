"""Semi-supervised MNIST classification (Kingma et al. 2014): M1, M2, M1+M2.

    vae-jax semisupervised --config vae_jax/configs/semisupervised/m2.py \
        --workdir runs/ssl_m2_100_s0 [--config.num_labelled=100 --config.seed=0] [--results FILE]

Writes WORKDIR/results.json (test and validation error, epochs, wall time,
hardware, the command) and, with --results, upserts the same row into FILE
(one row per method / num_labelled / seed). M2 and M1+M2 train in WORKDIR
(checkpoints, metrics.jsonl with the validation error per epoch); rerunning
the same command resumes. M1 and M1+M2 read a trained VAE from
``--config.m1_workdir`` (``vae_jax/configs/semisupervised/m1_vae.py``).
"""

import json
import logging
from pathlib import Path

from absl import app, flags
from ml_collections import config_flags

from vae_jax.apps import ssl_train
from vae_jax.apps import ssl_config
from vae_jax import cli
from vae_jax import loop
from vae_jax import configs

FLAGS = flags.FLAGS
if cli.is_entry(__name__):
  cli.check_argv(ssl_config.SCHEMA)  # before the config flag reads the overrides
config_flags.DEFINE_config_file("config", configs.path("semisupervised/m2"),
                                "Experiment config file.", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and results.", required=True)
cli.define_distributed_flags()
flags.DEFINE_string("results", "", "A JSON file collecting one row per (method, num_labelled, seed).")

run, upsert = ssl_train.run, ssl_train.upsert


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.getLogger("absl").setLevel(logging.WARNING)
  logging.getLogger("vae_jax").setLevel(logging.INFO)
  cli.initialize_distributed()
  row = run(FLAGS.config, Path(FLAGS.workdir))
  if FLAGS.results and loop.is_writer():
    upsert(Path(FLAGS.results), {k: v for k, v in row.items() if k != "val_error_per_epoch"})
  print(json.dumps({k: v for k, v in row.items() if k != "val_error_per_epoch"}, indent=2))


if __name__ == "__main__":
  cli.run(main)
