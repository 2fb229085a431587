"""convHVAE with the VampPrior on the top layer (Tomczak & Welling 2018, static MNIST).

    vae-jax train --config vae_jax/configs/convhvae_vampprior.py --workdir runs/convhvae
    vae-jax evaluate --workdir runs/convhvae --num_importance_samples 5000

Two stochastic layers of 40 units, q(z_2 | x) q(z_1 | x, z_2) and
p(z_2) p(z_1 | z_2) p(x | z_1, z_2) (``vae_jax/models/hvae.py``): gated convolutions
32, 32, 64, 64, 6 channels (strides 1, 2, 1, 2, 1) to 7 x 7 x 6 features for each
encoder, 300-unit gated dense layers, a decoder that maps (z_1, z_2) to a 28 x 28
map refined by four 3 x 3 gated convolutions of 64 channels; the VampPrior with
K = 500 pseudo-inputs on z_2; Adam 5e-4, batch 100, KL warm-up over 100 epochs.
Published test NLL (K = 5000): 81.09 nats. The same paper-vs-here differences as
``vampprior.py`` (no early stopping, plain Adam, a fixed 1000 epochs).

Cost: the four full-size 64-channel convolutions dominate (~0.3 GFLOP forward per
image): an epoch takes minutes on a GPU and hours on a 2-core CPU. Measured
figures (a reduced CPU run) are in docs/priors_and_autoencoders.md.
"""

from vae_jax.configs import vampprior


def get_config():
  config = vampprior.get_config()
  config.model.kind = "hvae"
  config.model.network = "conv"
  config.model.conv_features = (32, 64)
  config.model.latent_dims = (40, 40)          # (z_1, z_2), bottom first
  config.model.hidden_sizes = ((300,), (300, 300))  # x-side widths; p(z_1 | z_2)
  config.model.activation = "gated"
  config.model.prior = "vamp"
  config.model.num_components = 500
  return config
