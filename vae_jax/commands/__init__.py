"""The commands: ``vae-jax COMMAND [flags]`` (or ``python -m vae_jax COMMAND``).

Every command is also ``python -m vae_jax.commands.MODULE``. ``vae-jax`` alone lists them;
``vae-jax COMMAND --help`` shows a command's flags.
"""

from __future__ import annotations

import importlib
import sys

# command -> (module, one line)
COMMANDS = {
    "train": ("train", "train a VAE / CVAE / HVAE / autoencoder (resumes a workdir)"),
    "evaluate": ("evaluate", "ELBO, importance-sampled NLL, bits/dim of a VAE workdir"),
    "sample": ("sample", "sample images from any workdir (VAE, CVAE, HVAE, VQ-VAE prior)"),
    "plot-metrics": ("plot_metrics", "metrics.jsonl curves of several workdirs, as a PNG"),
    "latent-maps": ("latent_maps", "2-D latent scatter and decoded manifold"),
    "impute": ("impute", "missing-data imputation with a trained VAE"),
    "ae-samples": ("ae_samples", "autoencoder vs VAE samples side by side"),
    "class-samples": ("class_samples", "CVAE samples, one row per class"),
    "train-vqvae": ("train_vqvae", "train a VQ-VAE"),
    "train-prior": ("train_prior", "train a PixelCNN prior over a VQ-VAE's codes"),
    "evaluate-vqvae": ("evaluate_vqvae", "reconstruction, perplexity and NLL bound of a VQ-VAE"),
    "semisupervised": ("semisupervised", "M2 / M1+M2 semi-supervised classification"),
    "train-classifier": ("train_classifier", "the MLP digit classifier that judges imputed images"),
}


def usage() -> str:
  width = max(map(len, COMMANDS))
  lines = ["usage: vae-jax COMMAND [flags]   (vae-jax COMMAND --help for its flags)", "", "commands:"]
  lines += [f"  {name:<{width}}  {text}" for name, (_, text) in COMMANDS.items()]
  return "\n".join(lines)


def main() -> None:
  from vae_jax import cli
  if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help", "help"):
    print(usage())
    sys.exit(0 if len(sys.argv) >= 2 else 2)
  name = sys.argv[1]
  if name not in COMMANDS:
    print(f"error: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
    sys.exit(2)
  module_name = f"vae_jax.commands.{COMMANDS[name][0]}"
  sys.argv = [f"vae-jax {name}"] + sys.argv[2:]
  cli.ENTRY = module_name  # the module checks argv and defines its flags as if run as __main__
  module = importlib.import_module(module_name)
  cli.run(module.main)
