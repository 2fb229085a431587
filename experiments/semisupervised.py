"""Semi-supervised MNIST classification (Kingma et al. 2014): M1, M2, M1+M2.

    python -m experiments.semisupervised --config experiments/configs/semisupervised/m2.py \
        --workdir runs/ssl_m2_100_s0 [--config.num_labelled=100 --config.seed=0] [--results FILE]

Writes WORKDIR/results.json (test and validation error, epochs, wall time,
hardware, the command) and, with --results, upserts the same row into FILE
(one row per method / num_labelled / seed). M2 and M1+M2 train in WORKDIR
(checkpoints, metrics.jsonl with the validation error per epoch); rerunning
the same command resumes. M1 and M1+M2 read a trained VAE from
``--config.m1_workdir`` (``experiments/configs/semisupervised/m1_vae.py``).
"""

import json
import logging
import platform
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
from absl import app, flags
from ml_collections import config_flags

from vae_jax import config as config_lib
from vae_jax import data as data_lib
from vae_jax import loop
from vae_jax.apps import semisupervised as ssl
from vae_jax.apps import ssl_config
from vae_jax import train

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", "experiments/configs/semisupervised/m2.py",
                                "Experiment config file.", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and results.", required=True)
flags.DEFINE_string("results", "", "A JSON file collecting one row per (method, num_labelled, seed).")


def run(config, workdir: Path) -> dict:
  ssl_config.validate(config)
  workdir = loop.prepare_workdir(config, workdir, added=ssl_config.SSL_ADDED_FIELDS)
  data_config = ml_collections.ConfigDict(dict(
      name=config.data.name, data_dir=config.data.data_dir, download=config.data.download,
      mode="dynamic", binarize_seed=0))
  splits = {s: data_lib.load_split(data_config, s) for s in ("train", "validation", "test")}
  labels = {s: data_lib.check_labels(splits[s].labels, ssl_config.NUM_CLASSES, what=f"{config.data.name}/{s} labels")
            for s in splits}
  picked = ssl.balanced_subset(labels["train"], config.num_labelled, ssl.subset_key(config.seed),
                               ssl_config.NUM_CLASSES)
  loop.write_config(config, workdir)
  t0 = time.perf_counter()
  row = dict(method=config.method, num_labelled=config.num_labelled, seed=config.seed)

  if config.method in ("m1", "m1_m2"):
    vae, vae_params, vae_config, vae_epoch = ssl.restore_vae(config.m1_workdir)
    with_logvar = config.method == "m1_m2" and config.m1_features == "sample"
    feats = {s: ssl.posterior_means(vae, vae_params, splits[s].images, with_logvar=with_logvar)
             for s in splits}
    keep = ssl.active_dims(feats["train"][:, 0] if with_logvar else feats["train"],
                           config.m1_active_threshold)
    feats = {s: f[..., keep] for s, f in feats.items()}
    row.update(m1_workdir=config.m1_workdir, m1_epochs=vae_epoch, m1_features_kept=int(keep.size))

  if config.method == "m1":
    clf = ssl.fit_softmax_regression(feats["train"][picked], labels["train"][picked],
                                     ssl_config.NUM_CLASSES, l2=config.classifier.l2,
                                     steps=config.classifier.steps,
                                     learning_rate=config.classifier.learning_rate)
    errors = {s: ssl.error_rate(clf.predict(feats[s]), labels[s]) for s in ("validation", "test")}
    row.update(classifier="softmax regression (L2) on M1 posterior means", epochs=0)
  else:
    if config.method == "m2":
      kind, inputs = "dynamic", {s: splits[s].images for s in splits}
      model = ssl.M2(input_shape=data_lib.DATASETS[config.data.name].image_shape,
                     num_classes=ssl_config.NUM_CLASSES, hidden_sizes=tuple(config.m2.hidden_sizes),
                     latent_dim=config.m2.latent_dim, activation=config.m2.activation,
                     likelihood="bernoulli")
    else:
      kind, inputs = config.m1_features, feats
      model = ssl.M2(input_shape=(inputs["train"].shape[-1],), num_classes=ssl_config.NUM_CLASSES,
                     hidden_sizes=tuple(config.m2.hidden_sizes), latent_dim=config.m2.latent_dim,
                     activation=config.m2.activation, likelihood="gaussian")
    keys = train.RunKeys.from_seed(config.seed)
    n_train = len(inputs["train"])
    steps_per_epoch = n_train // config.batch_size
    schedule = config_lib.make_schedule(config.optimizer, steps_per_epoch, config.num_epochs)
    tx = config_lib.make_optimizer(config.optimizer, schedule)
    params = jax.jit(ssl.init_m2, static_argnums=0)(model, keys.init)
    state = train.TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params), tx=tx)
    weights = ssl.objective_weights(config.m2.objective, config.m2.alpha_scale, n_train,
                                    config.num_labelled)
    epoch_fn = ssl.make_m2_epoch(model, kind=kind, weights=weights, batch_size=config.batch_size,
                                 labelled_batch_size=config.m2.labelled_batch_size)
    data = (jnp.asarray(inputs["train"]), jnp.asarray(inputs["train"][picked]),
            jnp.asarray(labels["train"][picked]))

    def validate(state):
      pred = ssl.predict(model, state.params, inputs["validation"], kind=kind,
                         batch_size=config.eval.batch_size)
      return {"error": ssl.error_rate(pred, labels["validation"])}

    state, last = loop.fit(config, workdir, state=state, epoch_fn=epoch_fn, data=data, keys=keys,
                           schedule=schedule, validate=validate, postfix=("train_loss", "val_error"))
    errors = {s: ssl.error_rate(ssl.predict(model, state.params, inputs[s], kind=kind,
                                            batch_size=config.eval.batch_size), labels[s])
              for s in ("validation", "test")}
    metrics = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines() if l.strip()]
    row.update(epochs=int(state.step) // steps_per_epoch, labelled_weight=weights[0],
               classifier_weight=weights[1],
               train_seconds=float(sum(m["seconds"] for m in metrics)),
               val_error_per_epoch=[m.get("val_error") for m in metrics])
  row.update(test_error=errors["test"], validation_error=errors["validation"],
             seconds_this_invocation=time.perf_counter() - t0,
             hardware=f"{platform.machine()} {jax.devices()[0].device_kind}, "
                      f"{len(jax.devices())} device(s), jax {jax.__version__}",
             command="python -m experiments.semisupervised " + " ".join(sys.argv[1:]))
  train._write_atomic(workdir / "results.json", json.dumps(row, indent=2))
  return row


def upsert(results_file: Path, row: dict) -> None:
  """Replace (or add) the row of the same method, num_labelled and seed in a JSON list file."""
  rows = json.loads(results_file.read_text()) if results_file.exists() else []
  key = lambda r: (r["method"], r["num_labelled"], r["seed"])
  rows = [r for r in rows if key(r) != key(row)] + [row]
  rows.sort(key=key)
  results_file.parent.mkdir(parents=True, exist_ok=True)
  train._write_atomic(results_file, json.dumps(rows, indent=2))


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.getLogger("absl").setLevel(logging.WARNING)
  logging.getLogger("vae_jax").setLevel(logging.INFO)
  row = run(FLAGS.config, Path(FLAGS.workdir))
  if FLAGS.results:
    upsert(Path(FLAGS.results), {k: v for k, v in row.items() if k != "val_error_per_epoch"})
  print(json.dumps({k: v for k, v in row.items() if k != "val_error_per_epoch"}, indent=2))


if __name__ == "__main__":
  app.run(main)
