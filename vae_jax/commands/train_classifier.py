"""Train the digit classifier that judges imputed images.

    vae-jax train-classifier --workdir runs/classifier [--num_epochs 5] [--seed 0]

An MLP (784-512-512-10, ReLU) trained with Adam on MNIST's training split
binarized once (``data.mode = "static"``, binarize seed 0, the repository's
50,000-image training cut), the images a VAE on static binarized MNIST sees.
Writes DIR/params.msgpack and DIR/classifier.json with the clean accuracies on
the MNIST validation and test splits (binarized the same way) and on the static
binarized MNIST test split (Larochelle & Murray's images, labels recovered by
``classifier.match_labels``).
"""

import json
import time
from pathlib import Path

import jax
from absl import app, flags

from vae_jax.configs import default
from vae_jax.apps import classifier as clf
from vae_jax import data as data_lib
from vae_jax import cli

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Where to write the classifier.", required=True)
flags.DEFINE_integer("num_epochs", 5, "Training epochs.")
flags.DEFINE_integer("seed", 0, "Seed of the initialization and batch order.")
flags.DEFINE_float("learning_rate", 1e-3, "Adam learning rate.")

MODEL = clf.Classifier()


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  workdir = Path(FLAGS.workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  data_config = default.get_config().data
  splits = {s: data_lib.load_split(clf.with_dataset(data_config, "mnist"), s)
            for s in ("train", "validation", "test")}
  t0 = time.perf_counter()
  params, losses = clf.train_classifier(MODEL, splits["train"].images, splits["train"].labels,
                                        jax.random.key(FLAGS.seed), num_epochs=FLAGS.num_epochs,
                                        learning_rate=FLAGS.learning_rate)
  train_s = time.perf_counter() - t0
  clf.save_params(params, workdir)
  binary, labels, match = clf.binarized_mnist_test_with_labels(data_config)
  result = dict(
      model="MLP 784-512-512-10 ReLU", num_epochs=FLAGS.num_epochs, seed=FLAGS.seed, train_loss=losses,
      train_seconds=train_s, device=str(jax.devices()[0].device_kind),
      accuracy_mnist_static_validation=clf.accuracy(MODEL, params, splits["validation"].images,
                                                    splits["validation"].labels),
      accuracy_mnist_static_test=clf.accuracy(MODEL, params, splits["test"].images, splits["test"].labels),
      accuracy_binarized_mnist_test=clf.accuracy(MODEL, params, binary, labels),
      binarized_mnist_label_matching=match)
  (workdir / "classifier.json").write_text(json.dumps(result, indent=2))
  print(json.dumps(result, indent=2))


if __name__ == "__main__":
  cli.run(main)
