"""Evaluate a VQ-VAE, or a VQ-VAE with its prior:

    vae-jax evaluate-vqvae --workdir PRIOR_OR_VQVAE_DIR [--split test] [--vqvae_workdir DIR]

On a prior workdir: the bound -log p(x|z_q) - log p_prior(z_q) in nats and
bits/dim, next to the uniform-prior bound, the reconstruction NLL and the
codebook usage (perplexity, fraction of codes used). On a VQ-VAE workdir: all
but the prior terms. Writes WORKDIR/eval_<split>_n<images>.json, with what computed it
(package versions, git commit, device).
"""

import json
import logging
import time
from pathlib import Path

import jax
from absl import app, flags

from vae_jax import data as data_lib
from vae_jax import provenance
from vae_jax import train
from vae_jax.vq import evaluate as vq_evaluate
from vae_jax.vq import workdirs as vq_workdirs
from vae_jax import cli

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "A train_vqvae or train_prior workdir.", required=True)
flags.DEFINE_string("vqvae_workdir", None, "For a prior: its VQ-VAE workdir (default: the one in its config).")
flags.DEFINE_enum("split", "test", ["train", "validation", "test"], "Which split to evaluate.")
flags.DEFINE_integer("num_images", 0, "Evaluate only the first N images (0 = all).")
flags.DEFINE_integer("batch_size", 500, "Images per device batch.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.getLogger("absl").setLevel(logging.WARNING)
  workdir = Path(FLAGS.workdir)
  if train.load_config(workdir).model.name == "gated_pixelcnn":
    prior, vq = vq_workdirs.load_prior(workdir, FLAGS.vqvae_workdir)
    prior_kw = dict(prior=prior.model, prior_params=prior.params)
  else:
    prior, vq, prior_kw = None, vq_workdirs.load_vqvae(workdir), {}
  split = data_lib.load_split(vq.config.data, FLAGS.split)
  images = split.images[: FLAGS.num_images or None]
  labels = None if split.labels is None else split.labels[: FLAGS.num_images or None]
  t0 = time.perf_counter()
  result = vq_evaluate.evaluate(vq.model, vq.params, images, mode=vq.config.data.mode,
                                key=train.RunKeys.from_seed(vq.config.seed).eval,
                                batch_size=FLAGS.batch_size, labels=labels, **prior_kw)
  result.update(split=FLAGS.split, vqvae_workdir=str(vq.workdir), vqvae_epoch=vq.epoch,
                seconds=time.perf_counter() - t0, device=str(jax.devices()[0].device_kind))
  if prior is not None:
    result.update(prior_epoch=prior.epoch)
  result.update(provenance.provenance())
  out = workdir / f"eval_{FLAGS.split}_n{len(images)}.json"
  out.write_text(json.dumps(result, indent=2))
  print(json.dumps(result, indent=2))


if __name__ == "__main__":
  cli.run(main)
