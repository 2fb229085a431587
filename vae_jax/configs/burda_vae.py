"""VAE, 1 stochastic layer (2 x 200 tanh, 50 latents), Burda et al. (2016) Table 3, row "VAE, k=1".

    vae-jax train --config vae_jax/configs/burda_vae.py --workdir runs/burda_vae
    vae-jax evaluate --workdir runs/burda_vae --num_importance_samples 5000

Static binarized MNIST, Adam (eps 1e-4), Burda's schedule: 8 stages of 3^i epochs at
lr 1e-3 * 10^(-i/7), 3280 epochs in all. Published test NLL (K = 5000): 88.71 nats.
Shorter runs: --config.optimizer.burda_epoch_scale=0.5 (1641 epochs). Measured
figures are in docs/results_mnist.md.
"""

from vae_jax.configs import default


def get_config():
  config = default.get_config()
  config.model.latent_dims = (50,)
  config.model.hidden_sizes = ((200, 200),)
  config.model.activation = "tanh"
  config.loss.name = "elbo"
  config.loss.num_samples = 1
  config.optimizer.schedule = "burda"
  config.optimizer.learning_rate = 1e-3
  config.optimizer.eps = 1e-4
  config.num_epochs = -1
  config.batch_size = 100
  config.eval_every_epochs = 50
  config.checkpoint_every_epochs = 10
  return config
