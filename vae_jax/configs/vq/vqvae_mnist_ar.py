"""VQ-VAE with an autoregressive decoder on static binarized MNIST: K = 2 codes on the 7x7 grid.

    vae-jax train-vqvae --config vae_jax/configs/vq/vqvae_mnist_ar.py --workdir runs/vqvae_mnist_ar
    vae-jax train-prior --config vae_jax/configs/vq/prior_mnist.py \
        --config.vqvae_workdir=runs/vqvae_mnist_ar --workdir runs/prior_mnist_ar
    vae-jax evaluate-vqvae --workdir runs/prior_mnist_ar
    vae-jax sample --workdir runs/prior_mnist_ar

The bound -log p(x|z_q) - log p(z_q) pays for every nat the codes carry, and
VQ-VAE training sees only the first term. With a plain decoder the codes must
also describe what neighbouring pixels predict (stroke edges, the
binarization noise). Here the decoder ends in a 3-layer gated PixelCNN head
over the pixels (16 channels, 3x3 / 1x3 masked kernels, reach 3 pixels),
conditioned on the decoder's feature map: the pixels' local dependencies go
to the head, and one bit per 7x7 cell (K = 2, at most 49 log 2 = 34 nats)
describes the digit. Measured figures are in docs/vqvae.md.
"""

from vae_jax.configs.vq import vqvae_mnist


def get_config():
  config = vqvae_mnist.get_config()
  config.model.num_codes = 2
  config.model.ar_layers = 3
  config.model.ar_features = 16
  config.model.ar_kernel_size = 3
  config.num_epochs = 20
  config.eval_every_epochs = 2
  return config
