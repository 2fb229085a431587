"""One metric of one or more training workdirs against the epoch, as a PNG.

    vae-jax plot-metrics --metric val_error --scale 100 --ylabel "validation error (%)" \
        --reference 3.33 --reference_label "published (M1+M2, 100 labels)" \
        --out results/semisupervised_m1m2_100.png runs/ssl_m1m2_100_s0 runs/ssl_m1m2_100_s1 runs/ssl_m1m2_100_s2

Reads WORKDIR/metrics.jsonl (one JSON row per epoch, written by every trainer
here); epochs without the metric (e.g. between validations) are skipped. The
legend names each curve after its workdir.
"""

import json
from pathlib import Path

from absl import app, flags

from vae_jax import plotting
from vae_jax import cli

FLAGS = flags.FLAGS
flags.DEFINE_string("metric", None, "Key of metrics.jsonl to plot, e.g. val_error or val_elbo.", required=True)
flags.DEFINE_string("out", None, "PNG to write.", required=True)
flags.DEFINE_float("scale", 1.0, "Multiply the metric by this (100: a fraction in %).")
flags.DEFINE_string("ylabel", "", "y-axis label (default: the metric's name).")
flags.DEFINE_string("title", "", "Figure title.")
flags.DEFINE_float("reference", None, "A dashed horizontal line at this value (after scaling).")
flags.DEFINE_string("reference_label", "reference", "Legend entry of the reference line.")
flags.DEFINE_bool("log_y", False, "Logarithmic y axis.")


def read_curve(workdir: Path, metric: str) -> tuple[list, list]:
  """(epochs, values) of ``metric`` in WORKDIR/metrics.jsonl; ValueError naming what is missing."""
  path = workdir / "metrics.jsonl"
  if not path.exists():
    raise ValueError(f"{path} does not exist: {workdir} is not a training workdir")
  rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
  rows = [r for r in rows if r.get(metric) is not None]
  if not rows:
    raise ValueError(f"{path} has no {metric!r} values")
  return [r["epoch"] for r in rows], [r[metric] for r in rows]


def main(argv):
  workdirs = [Path(a) for a in argv[1:]]
  if not workdirs:
    raise app.UsageError("give one or more workdirs after the flags")
  curves = {}
  for w in workdirs:
    x, y = read_curve(w, FLAGS.metric)
    curves[w.name] = (x, [v * FLAGS.scale for v in y])
  reference = None if FLAGS.reference is None else (FLAGS.reference, FLAGS.reference_label)
  path = plotting.save_curves(curves, FLAGS.out, ylabel=FLAGS.ylabel or FLAGS.metric, title=FLAGS.title,
                              reference=reference, log_y=FLAGS.log_y)
  print(path)


if __name__ == "__main__":
  cli.run(main)
