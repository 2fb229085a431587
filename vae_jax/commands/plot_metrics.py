"""Metrics of one or more training workdirs against the epoch, as a PNG (one panel per metric):

    vae-jax plot-metrics --metric val_error --scale 100 --ylabel "validation error (%)" \
        --reference 3.33 --reference_label "published (M1+M2, 100 labels)" \
        --out results/semisupervised_m1m2_100.png runs/ssl_m1m2_100_s0 runs/ssl_m1m2_100_s1
    vae-jax plot-metrics --metric train_loss,val_nll --out curves.png runs/a/seed0 runs/b/seed0

Reads WORKDIR/metrics.jsonl (one JSON row per epoch, written by every trainer);
epochs without a metric (e.g. between validations) are skipped. Curves are keyed
by each workdir's full path, so runs in folders of the same name stay apart; the
legend names each by the part of its path that tells it from the others.
"""

import json
from pathlib import Path

from absl import app, flags

from vae_jax import cli
from vae_jax import plotting

FLAGS = flags.FLAGS
flags.DEFINE_list("metric", None, "Keys of metrics.jsonl to plot, comma-separated (one panel each), "
                  "e.g. val_error or train_loss,val_nll.", required=True)
flags.DEFINE_string("out", None, "PNG to write.", required=True)
flags.DEFINE_float("scale", 1.0, "Multiply every metric by this (100: a fraction in %).")
flags.DEFINE_string("ylabel", "", "y-axis label of a single metric (default: the metric's name).")
flags.DEFINE_string("title", "", "Figure title.")
flags.DEFINE_float("reference", None, "A dashed horizontal line at this value (after scaling), first panel.")
flags.DEFINE_string("reference_label", "reference", "Legend entry of the reference line.")
flags.DEFINE_bool("log_y", False, "Logarithmic y axes.")


def read_curve(workdir: Path, metric: str) -> tuple[list, list]:
  """(epochs, values) of ``metric`` in WORKDIR/metrics.jsonl; ValueError naming what is missing."""
  path = Path(workdir) / "metrics.jsonl"
  if not path.exists():
    raise ValueError(f"{path} does not exist: {workdir} is not a training workdir")
  rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
  rows = [r for r in rows if r.get(metric) is not None]
  if not rows:
    raise ValueError(f"{path} has no {metric!r} values")
  return [r["epoch"] for r in rows], [r[metric] for r in rows]


def labels(workdirs: list[Path]) -> dict[Path, str]:
  """{full path: legend name}: the shortest trailing part of each path that no other shares."""
  full = [Path(w).resolve() for w in workdirs]
  if len(set(full)) < len(full):
    seen = [p for i, p in enumerate(full) if p in full[:i]]
    raise ValueError(f"{seen[0]} is given twice")
  for depth in range(1, max(len(p.parts) for p in full) + 1):
    names = [str(Path(*p.parts[-depth:])) for p in full]
    if len(set(names)) == len(names):
      return dict(zip(full, names))
  return {p: str(p) for p in full}


def panels(workdirs: list[Path], metrics: list[str], scale: float = 1.0) -> dict:
  """{metric: {legend name: (epochs, scaled values)}}, every curve keyed by its workdir's path."""
  names = labels(workdirs)
  out = {}
  for metric in metrics:
    out[metric] = {}
    for path, name in names.items():
      x, y = read_curve(path, metric)
      out[metric][name] = (x, [v * scale for v in y])
  return out


def main(argv):
  workdirs = [Path(a) for a in argv[1:]]
  if not workdirs:
    raise app.UsageError("give one or more workdirs after the flags")
  try:
    curves = panels(workdirs, FLAGS.metric, FLAGS.scale)
  except ValueError as e:
    raise app.UsageError(str(e)) from None
  ylabels = {FLAGS.metric[0]: FLAGS.ylabel} if FLAGS.ylabel and len(FLAGS.metric) == 1 else None
  reference = None if FLAGS.reference is None else (FLAGS.reference, FLAGS.reference_label)
  path = plotting.save_panels(curves, FLAGS.out, ylabels=ylabels, title=FLAGS.title,
                              reference=reference, log_y=FLAGS.log_y)
  print(path)


if __name__ == "__main__":
  cli.run(main)
