"""Denoising autoencoder (Vincent et al. 2008): the autoencoder with masked inputs.

    vae-jax train --config vae_jax/configs/denoising_autoencoder.py --workdir runs/dae
    vae-jax evaluate --workdir runs/dae

As ``autoencoder.py``, but the encoder sees x~ with each pixel set to 0 with
probability 0.25 (masking noise, a fresh draw from each example's key every step)
and the decoder is scored on the clean x. Evaluation encodes clean test images.
Expected: a recon close to the plain autoencoder's and, like it, no usable samples
from N(0, I) codes (docs/priors_and_autoencoders.md has the measured figures).
"""

from vae_jax.configs import autoencoder


def get_config():
  config = autoencoder.get_config()
  config.loss.corruption = "mask"
  config.loss.corruption_level = 0.25
  return config
