"""The importance-weighted family side by side: SNR against K, and a short MNIST comparison.

    python -m benchmarks.estimators [--epochs 10] [--num_draws 8] [--num_test 1000]
                                    [--workdir runs/estimators] [--out docs/estimators]

1. The Rainforth et al. (2018) figure on the exact linear-Gaussian model (the
   tests' model: 6 pixels, 3 latents, q near the posterior): the signal-to-noise
   ratio |E g| / std g of the encoder gradient against K, for the plain IWAE
   gradient and DReG, over 4000 draws per point (OUT_snr.png).
2. Every estimator trains the same network (``default``: 784-200-200-50 tanh,
   Bernoulli, static binarized MNIST, batch 100, Adam 1e-3) for the same
   number of epochs with the same number of draws per example (MIWAE and
   PIWAE: 2 groups of num_draws / 2). Then, on the first ``num_test`` test
   images: the ELBO and the importance-sampled NLL (K = 5000), and the
   median over encoder parameters of the SNR of the batch gradient (100 test
   images, 64 keys). Workdirs resume: rerunning skips what is done.

Writes OUT.json and OUT_snr.png and prints the markdown table.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import vae_jax as vj
from vae_jax import evaluation
from vae_jax import linear_gaussian as lg_lib
from vae_jax import provenance
from vae_jax import train

# name -> loss fields (num_samples is set from --num_draws)
ESTIMATORS = {
    "ELBO": dict(name="elbo", analytic_kl=False, gradient="reparam"),
    "ELBO-STL": dict(name="elbo", analytic_kl=False, gradient="stl"),
    "IWAE": dict(name="iwae", gradient="reparam"),
    "IWAE-STL": dict(name="iwae", gradient="stl"),
    "IWAE-DReG": dict(name="iwae", gradient="dreg"),
    "MIWAE": dict(name="miwae", gradient="reparam", num_groups=2),
    "CIWAE": dict(name="ciwae", gradient="reparam", ciwae_beta=0.5),
    "PIWAE": dict(name="piwae", gradient="reparam", num_groups=2),
}


def snr_against_k(ks=(1, 3, 10, 30, 100, 300), draws=4000) -> dict:
  lg = lg_lib.orthogonal(jax.random.key(0), 6, [1.5, 0.8, 0.4], sigma=0.5)
  model = lg_lib.vae(lg)
  x = lg_lib.sample(lg, jax.random.key(1), 1)[0].reshape(6, 1, 1)
  params = lg_lib.vae_params(lg, mean_shift=0.1 * jnp.array([1.0, -0.75, 0.5]),
                             logvar_shift=0.1 * jnp.array([-1.25, 0.75, 1.0]))
  keys = jax.random.split(jax.random.key(5), draws)
  out = {}
  for gradient in ("reparam", "dreg"):
    out[gradient] = []
    for k in ks:
      loss = functools.partial(vj.iwae_loss, num_samples=k, gradient=gradient)
      g = jax.jit(jax.vmap(jax.grad(lambda p, key: loss(model, p, x, key)[0]), in_axes=(None, 0)))(params, keys)
      head = g["enc_heads_0"]
      flat = np.asarray(jnp.concatenate([head["mean"]["bias"], head["logvar"]["bias"]], axis=-1))
      out[gradient].append(float(np.mean(np.abs(flat.mean(0)) / flat.std(0))))
  return dict(k=list(ks), **out)


def plot_snr(curves: dict, path: Path) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(5.2, 3.6))
  ax.loglog(curves["k"], curves["reparam"], "o-", label="IWAE (reparameterization)")
  ax.loglog(curves["k"], curves["dreg"], "s-", label="IWAE-DReG")
  ax.set_xlabel("K (draws per example)")
  ax.set_ylabel("SNR of the encoder gradient")
  ax.set_title("linear-Gaussian model, q near the posterior", fontsize=10)
  ax.grid(True, which="both", alpha=0.3)
  ax.legend(frameon=False, fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def config_for(fields: dict, num_draws: int, epochs: int):
  config = vj.get_config("default")
  config.num_epochs = epochs
  config.eval_every_epochs = epochs
  config.checkpoint_every_epochs = epochs
  config.eval_num_samples = 50
  config.progress = False
  groups = fields.get("num_groups", 1)
  config.loss.num_samples = num_draws // groups
  for k, v in fields.items():
    config.loss[k] = v
  return config


def encoder_snr(model, params, loss_fn, images, repeats=64) -> float:
  """Median over the encoder's parameters of |mean| / std of the batch-mean gradient
  (``images``: binary uint8, static binarization)."""
  x = jnp.asarray(images, jnp.float32)

  @jax.jit
  def batch_grad(p, key):
    keys = jax.random.split(key, x.shape[0])
    per_example = jax.vmap(lambda q, xi, ki: loss_fn(model, q, xi, ki, kl_weight=1.0)[0],
                           in_axes=(None, 0, 0))
    return jax.grad(lambda q: jnp.mean(per_example(q, x, keys)))(p)

  flat = []
  for key in jax.random.split(jax.random.key(11), repeats):
    g = batch_grad(params, key)
    flat.append(np.concatenate([np.ravel(leaf) for name, sub in g.items() if name.startswith("enc_")
                                for leaf in jax.tree.leaves(sub)]))
  flat = np.stack(flat)
  return float(np.median(np.abs(flat.mean(0)) / (flat.std(0) + 1e-30)))


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--epochs", type=int, default=10)
  parser.add_argument("--num_draws", type=int, default=8)
  parser.add_argument("--num_test", type=int, default=1000)
  parser.add_argument("--only", default="", help="comma-separated estimator names (default: all)")
  parser.add_argument("--workdir", default="runs/estimators")
  parser.add_argument("--out", default="docs/estimators")
  args = parser.parse_args()
  out = Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  print(f"load average {os.getloadavg()[0]:.2f}")

  curves = snr_against_k()
  plot_snr(curves, out.with_name(out.name + "_snr.png"))
  print("SNR against K:", json.dumps(curves))

  test = vj.data.load_split(vj.get_config("default").data, "test").images[: args.num_test]
  names = [n for n in ESTIMATORS if not args.only or n in args.only.split(",")]
  rows = {}
  for name in names:
    config = config_for(ESTIMATORS[name], args.num_draws, args.epochs)
    workdir = Path(args.workdir) / name.lower()
    t0 = time.perf_counter()
    vj.train_and_evaluate(config, workdir)
    train_s = time.perf_counter() - t0
    run = vj.restore(workdir)
    result = evaluation.evaluate(run.model, run.params, test, key=train.RunKeys.from_seed(0).eval,
                                 mode="static", num_samples=5000, batch_size=100, chunk_size=250)
    snr = encoder_snr(run.model, run.params, vj.make_loss(config.loss), test[:100])
    rows[name] = dict(nll=result["nll"], elbo=result["elbo"], encoder_snr=snr, train_seconds=train_s,
                      loss=config.loss.to_dict())
    print(name, json.dumps(rows[name]))

  report = dict(snr_against_k=curves, estimators=rows, epochs=args.epochs, num_draws=args.num_draws,
                num_test=args.num_test, **provenance.provenance())
  out.with_suffix(".json").write_text(json.dumps(report, indent=2))
  print(f"\n| estimator | test NLL (K = 5000) | test ELBO | encoder SNR (median) |\n|---|---|---|---|")
  for name, r in rows.items():
    print(f"| {name} | {r['nll']:.2f} | {r['elbo']:.2f} | {r['encoder_snr']:.3f} |")


if __name__ == "__main__":
  main()
