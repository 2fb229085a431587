"""Deterministic autoencoder baseline: the default VAE's networks, no sampling, no KL.

    vae-jax train --config vae_jax/configs/autoencoder.py --workdir runs/ae
    vae-jax evaluate --workdir runs/ae

x -> 2 x 200 tanh -> 50-d code z = f(x) -> 2 x 200 tanh -> Bernoulli logits, on static
binarized MNIST, trained on the reconstruction term -log p(x | f(x)) alone (the KL is
exactly 0). Evaluation reports the test reconstruction error (``recon``, nats) and
active units; there is no likelihood to estimate. Expected: a far lower recon than the
VAE's (about 30-40 nats against the VAE's ~60+ after a short run; docs/priors_and_autoencoders.md's results
table has the measured figures), and samples that are not digits
(``vae-jax ae-samples``).
"""

from vae_jax.configs import default


def get_config():
  config = default.get_config()
  config.model.kind = "autoencoder"
  config.model.latent_dims = (50,)
  config.model.hidden_sizes = ((200, 200),)
  config.model.activation = "tanh"
  config.loss.name = "autoencoder"
  config.num_epochs = 100
  return config
