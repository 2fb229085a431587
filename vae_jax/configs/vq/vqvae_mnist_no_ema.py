"""The same VQ-VAE with the codebook learned by the codebook loss and no dead-code restarts (the ablation).

    vae-jax train-vqvae --config vae_jax/configs/vq/vqvae_mnist_no_ema.py \
        --workdir runs/vqvae_mnist_no_ema
    vae-jax evaluate-vqvae --workdir runs/vqvae_mnist_no_ema

The plain VQ-VAE of the paper's eq. 3. Its test-set codebook usage and
perplexity, next to those of ``vqvae_mnist.py``, are in docs/vqvae.md:
what EMA and restarts fix.
"""

from vae_jax.configs.vq import vqvae_mnist


def get_config():
  config = vqvae_mnist.get_config()
  config.vq.ema = False
  config.vq.restart = False
  return config
