"""Encoders, decoders and the Gaussian VAE family (Flax linen)."""

from vae_jax.models.vae import *  # noqa: F401,F403
from vae_jax.models.vae import LOGVAR_BOUNDS, MIN_SIGMA, PSEUDO_INPUT_MEAN, PSEUDO_INPUT_STD  # noqa: F401
