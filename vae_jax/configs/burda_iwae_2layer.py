"""IWAE, k = 50, 2 stochastic layers (100 + 50 latents): Burda et al. (2016) Table 3.

    vae-jax train --config vae_jax/configs/burda_iwae_2layer.py --workdir runs/burda_iwae2
    vae-jax evaluate --workdir runs/burda_iwae2 --num_importance_samples 5000

x -> 2 x 200 tanh -> z_1 (100) -> 2 x 100 tanh -> z_2 (50), the generative network
mirrored. Published test NLL (K = 5000): 85.32 nats.
"""

from vae_jax.configs import burda_iwae


def get_config():
  config = burda_iwae.get_config()
  config.model.latent_dims = (100, 50)
  config.model.hidden_sizes = ((200, 200), (100, 100))
  config.loss.analytic_kl = False
  return config
