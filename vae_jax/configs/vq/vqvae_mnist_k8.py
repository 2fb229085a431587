"""A low-rate VQ-VAE on static binarized MNIST: the same network with K = 8 codes on the 7x7 grid.

    vae-jax train-vqvae --config vae_jax/configs/vq/vqvae_mnist_k8.py --workdir runs/vqvae_mnist_k8
    vae-jax train-prior --config vae_jax/configs/vq/prior_mnist.py \
        --config.vqvae_workdir=runs/vqvae_mnist_k8 --workdir runs/prior_mnist_k8
    vae-jax evaluate-vqvae --workdir runs/prior_mnist_k8

The likelihood bound -log p(x|z_q) - log p(z_q) trades reconstruction against
the information in the codes, and VQ-VAE training sees only the first term:
with K = 64 the codes also describe the binarization noise, which costs the
prior more nats than it saves in reconstruction. Fewer codes lower the rate.
Measured figures are in docs/vqvae.md.
"""

from vae_jax.configs.vq import vqvae_mnist


def get_config():
  config = vqvae_mnist.get_config()
  config.model.num_codes = 8
  config.num_epochs = 3
  config.eval_every_epochs = 1
  return config
