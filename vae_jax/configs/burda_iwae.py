"""IWAE, k = 50, 1 stochastic layer (2 x 200 tanh, 50 latents): Burda et al. (2016) Table 3.

    vae-jax train --config vae_jax/configs/burda_iwae.py --workdir runs/burda_iwae
    vae-jax evaluate --workdir runs/burda_iwae --num_importance_samples 5000

Same as burda_vae.py with the K = 50 importance-weighted bound as the objective.
Published test NLL (K = 5000): 87.10 nats. Each step decodes 50 samples per image,
about 25x the VAE's cost: see docs/results_mnist.md for what fits on a CPU.
"""

from vae_jax.configs import burda_vae


def get_config():
  config = burda_vae.get_config()
  config.loss.name = "iwae"
  config.loss.num_samples = 50
  config.eval_every_epochs = 10
  config.checkpoint_every_epochs = 2
  return config
