"""``python -m vae_jax COMMAND [flags]``: the same as ``vae-jax COMMAND``."""

from vae_jax.commands import main

if __name__ == "__main__":
  main()
