"""The semi-supervised trainer (Kingma et al. 2014): M1, M2 and M1+M2 on a few labels.

``run(config, workdir)`` picks the balanced labelled subset (a function of the
seed), then for M1 fits the classifier to the M1 VAE's features and for M2 and
M1+M2 trains M2 in the shared loop (``vae_jax.loop``: the unlabelled set in
batches, the labelled subset passed whole to every step), validating the
error rate each epoch. Returns one results row (test and validation error,
epochs, wall time, hardware).
"""

from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path

import jax
import ml_collections

from vae_jax import config as config_lib
from vae_jax import data as data_lib
from vae_jax import lock
from vae_jax import loop
from vae_jax import summaries
from vae_jax import workdir as workdir_lib
from vae_jax.apps import m1 as m1_lib
from vae_jax.apps import semisupervised as ssl
from vae_jax.apps import ssl_config
from vae_jax.train_state import RunKeys, TrainState


def _splits(config) -> dict[str, data_lib.Split]:
  data_config = ml_collections.ConfigDict(dict(
      name=config.data.name, data_dir=config.data.data_dir, download=config.data.download,
      mode="dynamic", binarize_seed=0))
  return {s: data_lib.load_split(data_config, s) for s in ("train", "validation", "test")}


def make_m2(config, input_shape, likelihood: str) -> ssl.M2:
  return ssl.M2(input_shape=tuple(input_shape), num_classes=ssl_config.NUM_CLASSES,
                hidden_sizes=tuple(config.m2.hidden_sizes), latent_dim=config.m2.latent_dim,
                activation=config.m2.activation, likelihood=likelihood)


@lock.scoped
def run(config, workdir: str | Path, *, splits: dict[str, data_lib.Split] | None = None) -> dict:
  """Trains (or resumes) the configured method in ``workdir``; returns its results row.

  ``splits``: ``{"train", "validation", "test"}`` Splits with labels, instead of TFDS.
  """
  ssl_config.validate(config)  # the schema and, for M1 and M1+M2, the M1 VAE workdir
  workdir = loop.open_workdir(config, workdir, ssl_config.SCHEMA)
  splits = _splits(config) if splits is None else splits
  labels = {s: data_lib.check_labels(splits[s].labels, ssl_config.NUM_CLASSES,
                                     what=f"{config.data.name}/{s} labels") for s in splits}
  picked = ssl.balanced_subset(labels["train"], config.num_labelled, ssl.subset_key(config.seed),
                               ssl_config.NUM_CLASSES)
  t0 = time.perf_counter()
  row = dict(method=config.method, num_labelled=config.num_labelled, seed=config.seed)

  if config.method in ("m1", "m1_m2"):
    vae, vae_params, _, vae_epoch = m1_lib.restore_vae(config.m1_workdir)
    with_logvar = config.method == "m1_m2" and config.m1_features == "sample"
    feats = {s: m1_lib.posterior_means(vae, vae_params, splits[s].images, with_logvar=with_logvar)
             for s in splits}
    keep = m1_lib.active_dims(feats["train"][:, 0] if with_logvar else feats["train"],
                              config.m1_active_threshold)
    feats = {s: f[..., keep] for s, f in feats.items()}
    row.update(m1_workdir=config.m1_workdir, m1_epochs=vae_epoch, m1_features_kept=int(keep.size))

  if config.method == "m1":
    if loop.is_writer():
      workdir_lib.write_config(config, workdir)
    clf = m1_lib.fit_softmax_regression(feats["train"][picked], labels["train"][picked],
                                        ssl_config.NUM_CLASSES, l2=config.classifier.l2,
                                        steps=config.classifier.steps,
                                        learning_rate=config.classifier.learning_rate)
    errors = {s: ssl.error_rate(clf.predict(feats[s]), labels[s]) for s in ("validation", "test")}
    row.update(classifier="softmax regression (L2) on M1 posterior means", epochs=0)
  else:
    if config.method == "m2":
      kind, inputs = "dynamic", {s: splits[s].images for s in splits}
      model = make_m2(config, data_lib.DATASETS[config.data.name].image_shape, "bernoulli")
    else:
      kind, inputs = config.m1_features, feats
      model = make_m2(config, (inputs["train"].shape[-1],), "gaussian")
    keys = RunKeys.from_seed(config.seed)
    n_train = len(inputs["train"])
    steps_per_epoch = n_train // config.batch_size
    schedule = config_lib.make_schedule(config.optimizer, steps_per_epoch, config.num_epochs)
    tx = config_lib.make_optimizer(config.optimizer, schedule)
    params = jax.jit(ssl.init_m2, static_argnums=0)(model, keys.init)
    weights = ssl.objective_weights(config.m2.objective, config.m2.alpha_scale, n_train,
                                    config.num_labelled)
    step = jax.tree_util.Partial(ssl.m2_step, model=model, kind=kind, weights=tuple(weights),
                                 labelled_batch_size=config.m2.labelled_batch_size)

    def figures(state):  # M2 on images: class-conditional samples of its generative model
      images = ssl.class_samples(model, state.params, jax.random.fold_in(keys.eval, 1))
      return {"samples": summaries.Figure(images, "samples from p(x|y,z), z ~ N(0, I): one row per "
                                                  "class y", ncols=10)}

    def error(state, split):
      pred = ssl.predict(model, state.params, inputs[split], kind=kind, batch_size=config.eval.batch_size)
      return ssl.error_rate(pred, labels[split])

    trainer = loop.Trainer(
        state=TrainState.create(params, tx), step=step, data=inputs["train"],
        fixed_data=(inputs["train"][picked], labels["train"][picked]),
        evaluate=lambda state: {"error": error(state, "validation")}, schedule=schedule, keys=keys,
        best_metric="error", figures=figures if kind == "dynamic" else None,
        postfix=("train_loss", "val_error"))
    state, _ = loop.fit(config, workdir, trainer)
    errors = {s: error(state, s) for s in ("validation", "test")}
    metrics = workdir_lib.read_metrics(workdir)
    row.update(epochs=int(state.step) // steps_per_epoch, labelled_weight=weights[0],
               classifier_weight=weights[1],
               train_seconds=float(sum(m["seconds"] for m in metrics)),
               val_error_per_epoch=[m.get("val_error") for m in metrics])
  row.update(test_error=errors["test"], validation_error=errors["validation"],
             seconds_this_invocation=time.perf_counter() - t0,
             hardware=f"{platform.machine()} {jax.devices()[0].device_kind}, "
                      f"{len(jax.devices())} device(s), jax {jax.__version__}",
             command="vae-jax semisupervised " + " ".join(sys.argv[1:]))
  if loop.is_writer():
    workdir_lib.write_atomic(workdir / "results.json", json.dumps(row, indent=2))
  return row


def upsert(results_file: Path, row: dict) -> None:
  """Replace (or add) the row of the same method, num_labelled and seed in a JSON list file."""
  rows = json.loads(results_file.read_text()) if results_file.exists() else []
  key = lambda r: (r["method"], r["num_labelled"], r["seed"])
  rows = [r for r in rows if key(r) != key(row)] + [row]
  rows.sort(key=key)
  results_file.parent.mkdir(parents=True, exist_ok=True)
  workdir_lib.write_atomic(results_file, json.dumps(rows, indent=2))
