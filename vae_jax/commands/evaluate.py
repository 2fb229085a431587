"""Evaluate a trained workdir: vae-jax evaluate --workdir DIR [--num_importance_samples K] [--split test]

Restores the newest checkpoint and writes DIR/eval_<split>_K<K>_n<images>.json
with the ELBO, its terms, the importance-sampled NLL (K samples), bits/dim and
active units, and what computed them (package versions, git commit, device):
a quick check with another K or image count never overwrites a result.
For a class-conditional model (config.model.num_classes > 0) every figure is
given the image's label: ``nll`` is -log p(x | y) (``"conditional": true``).
``--checkpoint best`` evaluates the checkpoint of the epoch with the best
validation NLL instead (DIR/best; the output name ends in _best.json).
"""

import json
import logging
import time
from pathlib import Path

import jax
from absl import app, flags

from vae_jax import data as data_lib
from vae_jax import evaluation as eval_lib
from vae_jax import parallel
from vae_jax import provenance
from vae_jax import train
from vae_jax import cli

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "A training workdir.", required=True)
flags.DEFINE_integer("num_importance_samples", None, "K for the NLL estimate (default: config.eval).")
flags.DEFINE_enum("split", "test", ["train", "validation", "test"], "Which split to evaluate.")
flags.DEFINE_integer("num_images", 0, "Evaluate only the first N images (0 = all).")
flags.DEFINE_integer("batch_size", None, "Images per device batch (default: config.eval).")
flags.DEFINE_enum("checkpoint", "latest", list(train.CHECKPOINTS),
                  "latest: the newest checkpoint; best: the epoch with the best validation NLL "
                  "(what early stopping would keep).")


def output_name(split: str, num_samples: int, num_images: int, checkpoint: str = "latest") -> str:
  """eval_<split>_K<K>_n<images>[_best].json: one file per setting."""
  return f"eval_{split}_K{num_samples}_n{num_images}{'_best' if checkpoint == 'best' else ''}.json"


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.getLogger("absl").setLevel(logging.WARNING)  # orbax logs every save at INFO
  logging.getLogger("vae_jax").setLevel(logging.INFO)
  workdir = Path(FLAGS.workdir)
  if FLAGS.num_importance_samples is not None and FLAGS.num_importance_samples < 1:
    raise app.UsageError(f"--num_importance_samples={FLAGS.num_importance_samples} must be >= 1")
  if FLAGS.batch_size is not None and FLAGS.batch_size < 1:
    raise app.UsageError(f"--batch_size={FLAGS.batch_size} must be >= 1")
  config, model, state, epoch = train.restore_state(workdir, FLAGS.checkpoint)
  k = config.eval.num_importance_samples if FLAGS.num_importance_samples is None else FLAGS.num_importance_samples
  split = data_lib.load_split(config.data, FLAGS.split)
  images = split.images[: FLAGS.num_images or None]
  labels = None
  if model.num_classes:
    labels = data_lib.check_labels(split.labels, model.num_classes, len(split.images),
                                   what=f"{FLAGS.split} labels")[: FLAGS.num_images or None]
  t0 = time.perf_counter()
  result = eval_lib.evaluate(model, state.params, images, labels=labels,
                             key=train.RunKeys.from_seed(config.seed).eval,
                             mode=config.data.mode, num_samples=k,
                             batch_size=FLAGS.batch_size or config.eval.batch_size,
                             chunk_size=config.eval.chunk_size, progress=True,
                             mesh=parallel.make_mesh(config.get("num_devices", 0)))
  result.update(split=FLAGS.split, checkpoint=FLAGS.checkpoint, conditional=bool(model.num_classes),
                epoch=epoch, step=int(state.step),
                seconds=time.perf_counter() - t0, device=str(jax.devices()[0].device_kind))
  result.update(provenance.provenance())
  out = workdir / output_name(FLAGS.split, k, len(images), FLAGS.checkpoint)
  out.write_text(json.dumps(result, indent=2))
  print(json.dumps(result, indent=2))


if __name__ == "__main__":
  cli.run(main)
