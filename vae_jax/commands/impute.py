"""Missing-data imputation with a trained VAE: pseudo-Gibbs vs Metropolis-within-Gibbs vs mean fill.

    vae-jax train --config vae_jax/configs/default.py --workdir runs/impute_vae
    vae-jax train-classifier --workdir runs/classifier
    vae-jax impute --vae_workdir runs/impute_vae --classifier_workdir runs/classifier \
        [--num_images 1000] [--num_iters 500] [--out results/imputation]

On the first ``num_images`` images of the static binarized MNIST test split
(labels recovered by matching to MNIST's grey test images), for each mask (top
half, bottom half, the central band of 7 rows, 50% of pixels at random) and
method, writes OUT.json: F1 and accuracy of the imputed pixels per iteration
(for the chain's current sample, the decoder's mode, and the running average
of the decoder probabilities, each thresholded at 1/2), the acceptance rate of
Metropolis-within-Gibbs per iteration, and the classifier's accuracy on the
imputed images; OUT.png (original / masked / mean fill / pseudo-Gibbs /
Metropolis-within-Gibbs rows per mask) and OUT_f1.png (F1 per iteration).
Both chains cost one encoder and one decoder pass per iteration and start from
the same random fill (Bernoulli(training means)) with the same keys, so equal
iterations mean equal cost.
"""

import json
import logging
import time
from pathlib import Path

import jax
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from vae_jax import checkpointing  # noqa: E402
from vae_jax.apps import classifier as clf  # noqa: E402
from vae_jax import config as config_lib  # noqa: E402
from vae_jax import data as data_lib  # noqa: E402
from vae_jax.apps import imputation as imp  # noqa: E402
from vae_jax import train  # noqa: E402
from vae_jax import cli

FLAGS = flags.FLAGS
flags.DEFINE_string("vae_workdir", None, "A trained VAE workdir (Bernoulli, one stochastic layer).")
flags.DEFINE_string("table", None, "Only print the markdown table of an existing OUT.json.")
flags.DEFINE_string("classifier_workdir", "runs/classifier", "From vae_jax.commands.train_classifier.")
flags.DEFINE_integer("num_images", 1000, "First N test images (0 = all 10,000).")
flags.DEFINE_integer("num_iters", 500, "Chain iterations (= decoder passes) per image.")
flags.DEFINE_integer("batch_size", 500, "Chains per device batch.")
flags.DEFINE_integer("seed", 0, "Seed of the random mask and the chains.")
flags.DEFINE_string("out", "results/imputation", "Output prefix: OUT.json, OUT.png, OUT_f1.png.")
flags.DEFINE_integer("num_shown", 10, "Images per mask in the figure.")
flags.DEFINE_float("warmup_fraction", 0.1, "mwg_warm: this fraction of the iterations are pseudo-Gibbs steps.")

MASK_TITLES = {"top": "top half missing", "bottom": "bottom half missing",
               "centre": "central 7 rows missing", "random": "50% of pixels missing at random"}
METHOD_TITLES = {"pseudo_gibbs": "pseudo-Gibbs", "mwg": "MwG", "mwg_warm": "MwG after PG warm-up"}
SHORT_TITLES = {"pseudo_gibbs": "PG", "mwg": "MwG", "mwg_warm": "MwG + warm-up"}


def load_vae(workdir: Path):
  config = train.load_config(workdir)
  model = config_lib.make_model(config)
  imp.check_model(model)
  ckpt = checkpointing.Checkpointer(workdir / "checkpoints", max_to_keep=config.keep_checkpoints)
  template = train.create_train_state(model, jax.random.key(0), config_lib.make_optimizer(
      config.optimizer, config_lib.make_schedule(config.optimizer, 1, 1)))
  epoch, state = ckpt.restore_latest(template)
  if state is None:
    raise FileNotFoundError(f"no checkpoint in {workdir / 'checkpoints'}: train first")
  return config, model, state.params, epoch


def _metrics(counts) -> dict:
  """counts [T, 3, 4] -> {f1: {imputation: [T]}, accuracy: {...}}."""
  f1, acc = imp.f1_accuracy(counts)
  return dict(f1={k: f1[:, i].round(4).tolist() for i, k in enumerate(imp.IMPUTATIONS)},
              accuracy={k: acc[:, i].round(4).tolist() for i, k in enumerate(imp.IMPUTATIONS)})


def _rgb_masked(images, missing):
  """Grey-scale images with the missing pixels in red."""
  rgb = np.repeat(np.asarray(images, np.float32), 3, axis=-1)
  red = np.array([0.85, 0.1, 0.1], np.float32)
  return np.where(np.broadcast_to(missing, images.shape)[..., :1], red, rgb)


def save_figure(shown: dict, path: Path) -> None:
  """One panel per mask; rows original / masked / mean fill / pseudo-Gibbs / MwG."""
  fig, axes = plt.subplots(len(shown), 1, figsize=(9, 4.6 * len(shown)))
  for ax, (mask_name, rows) in zip(np.atleast_1d(axes), shown.items()):
    grid = [np.concatenate(list(r), axis=1) for r in rows.values()]
    pad = np.ones((2,) + grid[0].shape[1:], np.float32)
    ax.imshow(np.concatenate([np.concatenate([g, pad]) for g in grid]), interpolation="nearest")
    h = grid[0].shape[0] + 2
    ax.set_yticks([h * i + h / 2 - 1 for i in range(len(rows))], list(rows))
    ax.set_xticks([])
    ax.set_title(MASK_TITLES[mask_name], fontsize=10)
  fig.tight_layout()
  fig.subplots_adjust(left=0.2)  # room for the row names
  fig.savefig(path, dpi=110)
  plt.close(fig)


def save_f1_figure(results: dict, path: Path) -> None:
  fig, axes = plt.subplots(1, len(results), figsize=(4 * len(results), 3.4), sharey=False)
  for ax, (mask_name, r) in zip(np.atleast_1d(axes), results.items()):
    for method, colour in zip(r["methods"], ("tab:blue", "tab:red", "tab:green")):
      for kind, style in (("average", "-"), ("sample", ":")):
        f1 = r["methods"][method]["f1"][kind]
        ax.plot(np.arange(1, len(f1) + 1), f1, style, color=colour,
                label=f"{METHOD_TITLES[method]}, {kind}")
    ax.axhline(r["mean_fill"]["f1"], color="grey", lw=1, label="mean fill")
    ax.set_xscale("log")
    ax.set_xlabel("iteration (= decoder passes)")
    ax.set_title(MASK_TITLES[mask_name], fontsize=9)
  np.atleast_1d(axes)[0].set_ylabel("F1 of imputed pixels")
  np.atleast_1d(axes)[0].legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def markdown_table(summary: dict) -> str:
  """F1 of the imputed pixels (running-average imputation) at a few equal-cost budgets (iterations =
  decoder passes), and at the last: F1 of the chain's sample, pixel accuracy, the classifier's accuracy."""
  t_max = summary["num_iters"]
  budgets = [t for t in (1, 10, 100, 1000, 10000) if t < t_max] + [t_max]
  head = ("| mask | method | " + " | ".join(f"F1 @ {t}" for t in budgets)
          + f" | F1 sample @ {t_max} | pixel accuracy | classifier accuracy | acceptance |")
  lines = [head, "|" + "---|" * (head.count("|") - 1)]
  for mask_name, r in summary["masks"].items():
    base = r["mean_fill"]
    lines.append(f"| {mask_name} | mean fill | " + " | ".join(f"{base['f1']:.3f}" for _ in budgets)
                 + f" | | {base['accuracy']:.3f} | {base['classifier_accuracy']:.3f} | |")
    for method, m in r["methods"].items():
      warmup = m.get("warmup", 1)
      accept = f"{np.mean(m['acceptance'][warmup:]):.3f}" if method != "pseudo_gibbs" else ""
      lines.append(f"| {mask_name} | {METHOD_TITLES[method]} | "
                   + " | ".join(f"{m['f1']['average'][t - 1]:.3f}" for t in budgets)
                   + f" | {m['f1']['sample'][-1]:.3f} | {m['accuracy']['average'][-1]:.3f} | "
                   f"{m['classifier_accuracy']['average']:.3f} | {accept} |")
  return "\n".join(lines)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if FLAGS.table:
    print(markdown_table(json.loads(Path(FLAGS.table).read_text())))
    return
  if not FLAGS.vae_workdir:
    raise app.UsageError("--vae_workdir is required (or --table OUT.json)")
  logging.getLogger("absl").setLevel(logging.WARNING)
  t_start = time.perf_counter()
  vae_dir = Path(FLAGS.vae_workdir)
  config, model, params, epoch = load_vae(vae_dir)
  if config.data.name != "binarized_mnist":
    raise app.UsageError(f"{vae_dir} was trained on {config.data.name!r}; this experiment uses the static "
                         "binarized MNIST test split and needs a VAE trained on 'binarized_mnist'")
  classifier = clf.Classifier()
  classifier_params = clf.load_params(classifier, FLAGS.classifier_workdir)
  pixel_means = data_lib.load_split(config.data, "train").images.astype(np.float32).mean(0)
  images, labels, match = clf.binarized_mnist_test_with_labels(config.data)
  n = FLAGS.num_images or len(images)
  images, labels = images[:n].astype(np.float32), labels[:n]
  classify = lambda x: clf.accuracy(classifier, classifier_params, x, labels)

  mask_key, chain_root = jax.random.split(jax.random.key(FLAGS.seed))
  show = slice(0, FLAGS.num_shown)
  results, shown = {}, {}
  for m, mask_name in enumerate(imp.MASKS):
    missing = imp.check_mask(imp.make_mask(mask_name, model.image_shape, key=mask_key, num_images=n),
                             images.shape)
    baseline = imp.mean_fill(images, missing, pixel_means)
    f1, acc = imp.f1_accuracy(imp.confusion(baseline, images, missing))
    masked = np.where(missing, 0.0, images)
    r = dict(missing_fraction=float(missing.mean()),
             classifier_accuracy_original=classify(images),
             classifier_accuracy_masked_zero=classify(masked),
             mean_fill=dict(f1=float(f1), accuracy=float(acc), classifier_accuracy=classify(baseline)),
             methods={})
    shown[mask_name] = {"original": np.repeat(images[show], 3, -1),
                        "masked": _rgb_masked(images[show], missing[show]),
                        "mean fill": np.repeat(baseline[show], 3, -1)}
    chain_key = jax.random.fold_in(chain_root, m)  # the same chains' keys for both methods
    warm = max(1, int(FLAGS.warmup_fraction * FLAGS.num_iters))
    for method, kind, warmup in (("pseudo_gibbs", "pseudo_gibbs", 1), ("mwg", "mwg", 1),
                                 ("mwg_warm", "mwg", warm)):
      t0 = time.perf_counter()
      out = imp.impute(model, params, images, missing, chain_key, method=kind, num_iters=FLAGS.num_iters,
                       fill=pixel_means, warmup=warmup, batch_size=FLAGS.batch_size)
      seconds = time.perf_counter() - t0
      average = (out["average"] >= 0.5).astype(np.float32)
      r["methods"][method] = dict(
          **_metrics(out["counts"]), warmup=warmup, acceptance=out["acceptance"].round(4).tolist(),
          seconds=seconds,
          classifier_accuracy=dict(sample=classify(out["image"]), average=classify(average)))
      shown[mask_name][SHORT_TITLES[method] + " (avg)"] = np.repeat(average[show], 3, -1)
      last = {k: r["methods"][method]["f1"][k][-1] for k in imp.IMPUTATIONS}
      print(f"{mask_name:7s} {method:12s} F1 last {last} acc(avg) "
            f"{r['methods'][method]['accuracy']['average'][-1]:.4f} clf {r['methods'][method]['classifier_accuracy']} "
            f"accept {np.mean(out['acceptance'][warmup:]) if warmup < FLAGS.num_iters else 1:.3f} "
            f"({seconds:.0f} s)", flush=True)
    results[mask_name] = r

  out_path = Path(FLAGS.out)
  out_path.parent.mkdir(parents=True, exist_ok=True)
  summary = dict(vae_workdir=str(vae_dir), vae_epoch=epoch, classifier_workdir=FLAGS.classifier_workdir,
                 num_images=n, num_iters=FLAGS.num_iters, seed=FLAGS.seed, label_matching=match,
                 device=str(jax.devices()[0].device_kind), wall_seconds=time.perf_counter() - t_start,
                 masks=results)
  out_path.with_suffix(".json").write_text(json.dumps(summary, separators=(",", ":")))
  save_figure(shown, out_path.with_suffix(".png"))
  save_f1_figure(results, out_path.parent / (out_path.name + "_f1.png"))
  print(markdown_table(summary))
  print(f"wrote {out_path.with_suffix('.json')}, {out_path.with_suffix('.png')} in "
        f"{summary['wall_seconds']:.0f} s")


if __name__ == "__main__":
  cli.run(main)
