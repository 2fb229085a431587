"""Class-conditional gated PixelCNN prior on the 8x8 codes (K = 512) of ``vqvae_cifar10.py``.

    vae-jax train-prior --config vae_jax/configs/vq/prior_cifar10.py \
        --config.vqvae_workdir=runs/vqvae_cifar10 --workdir runs/prior_cifar10
    vae-jax sample --workdir runs/prior_cifar10 --label 3

12 gated layers of 128 channels, 5x5 / 1x5 kernels. Not run here (needs the
dataset and a GPU). Set ``model.num_classes=0`` for an unconditional prior,
which is what the bits/dim bound of the paper compares with.
"""

from vae_jax.configs.vq import prior_mnist


def get_config():
  config = prior_mnist.get_config()
  config.model.features = 128
  config.model.num_layers = 12
  config.model.kernel_size = 5
  config.model.output_features = 256
  config.model.num_classes = 10
  config.optimizer.learning_rate = 3e-4
  config.batch_size = 128
  config.num_epochs = 100
  config.eval_every_epochs = 5
  return config
