"""vae_jax: variational autoencoders in JAX/Flax with pure losses and explicit keys."""

__version__ = "0.1.0"
