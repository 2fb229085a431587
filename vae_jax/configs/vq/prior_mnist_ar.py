"""The gated PixelCNN prior of ``prior_mnist.py``, trained 15 epochs, for the codes of ``vqvae_mnist_ar.py``.

    vae-jax train-prior --config vae_jax/configs/vq/prior_mnist_ar.py \
        --config.vqvae_workdir=runs/vqvae_mnist_ar --workdir runs/prior_mnist_ar
    vae-jax evaluate-vqvae --workdir runs/prior_mnist_ar

Same network (8 gated layers of 32 channels); the K = 2 grids are cheap to
model (about 30 s an epoch on 2 CPU cores), so it trains longer. Measured
figures are in docs/vqvae.md.
"""

from vae_jax.configs.vq import prior_mnist


def get_config():
  config = prior_mnist.get_config()
  config.num_epochs = 15
  config.eval_every_epochs = 3
  return config
