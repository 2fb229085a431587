"""VQ-VAE on CIFAR-10 with the paper's settings (van den Oord et al. 2017, Sec. 4.1): 4.67 bits/dim published.

    vae-jax train-vqvae --config vae_jax/configs/vq/vqvae_cifar10.py --workdir runs/vqvae_cifar10
    vae-jax train-prior --config vae_jax/configs/vq/prior_cifar10.py \
        --config.vqvae_workdir=runs/vqvae_cifar10 --workdir runs/prior_cifar10
    vae-jax evaluate-vqvae --workdir runs/prior_cifar10

32x32x3 -> 8x8 grid, K = 512 codes; encoder and decoder with 256 channels
throughout (2 residual blocks); Adam 2e-4, batch 128, 250k steps (800 epochs
of the 40,000-image training split). Code dimension D = 64 and the likelihood
(a discretized logistic per channel on the 256 levels, so bits/dim is a bound on
the discrete data) are our choices. Needs TFDS ``cifar10`` (downloaded by TFDS
with internet) and a GPU: not run here; its code path is tested with
``tfds.testing.mock_data``.
"""

from vae_jax.configs.vq import vqvae_mnist


def get_config():
  config = vqvae_mnist.get_config()
  config.data.name = "cifar10"
  config.data.mode = "grey"              # 8-bit levels, modelled by a discrete likelihood
  config.model.num_codes = 512
  config.model.code_dim = 64
  config.model.hidden = 256
  config.model.residual_hidden = 256
  config.model.num_residual_blocks = 2
  config.model.num_downsamples = 2       # 32x32 -> 8x8
  config.model.likelihood = "logistic"
  config.optimizer.learning_rate = 2e-4
  config.optimizer.schedule = "constant"
  config.batch_size = 128
  config.num_epochs = 800                # 800 * 312 steps ~ 250k steps
  config.eval_every_epochs = 20
  config.checkpoint_every_epochs = 10
  return config
