"""VAE with a learnable mixture-of-Gaussians prior (the VampPrior config's network and training).

    vae-jax train --config vae_jax/configs/mog_prior.py --workdir runs/mog
    vae-jax evaluate --workdir runs/mog --num_importance_samples 5000

p(z) = sum_k pi_k N(z; mu_k, diag(sigma_k^2)) with K = 500 components whose weights,
means and variances are trained with the rest (means start at N(0, 1) draws); the
KL term is estimated by Monte Carlo. Everything else is ``vampprior.py``: 2 x 300
gated layers, 40 latents, Adam 5e-4, KL warm-up over 100 epochs. Tomczak & Welling
(2018, Table 1) report the mixture prior between the standard prior (~88.6) and the
VampPrior (85.57) on static MNIST. Measured figures are in docs/priors_and_autoencoders.md.
"""

from vae_jax.configs import vampprior


def get_config():
  config = vampprior.get_config()
  config.model.prior = "mog"
  config.model.num_components = 500
  return config
