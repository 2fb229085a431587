"""Class-conditional VAE (CVAE) on dynamically binarized MNIST: q(z | x, y), p(x | z, y), p(z) = N(0, I).

    vae-jax train --config vae_jax/configs/cvae.py --workdir runs/cvae
    vae-jax evaluate --workdir runs/cvae --num_importance_samples 5000

Burda et al.'s 1-layer network (2 x 200 tanh, 50 latents) with the one-hot
digit label appended to the encoder's input and to the decoder's z; a fresh
Bernoulli draw of the grey levels every epoch (Burda et al.'s binarization);
the ELBO with Burda's schedule (3^i epochs at 1e-3 * 10^(-i/7), i < 8: 3280
epochs). ``vae_jax.commands.evaluate`` reports nll = -log p(x | y) (K = 5000).
Published anchor: log p(x | y) = -80.78 nats for a conditional IWAE (k = 50);
for that objective add --config.loss.name=iwae --config.loss.num_samples=50.
A learned class prior p(z | y): --config.model.prior=conditional. The
sample grid ``DIR/figures/samples.png`` has one row per digit.
"""

from vae_jax.configs import default


def get_config():
  config = default.get_config()
  config.data.name = "mnist"
  config.data.mode = "dynamic"
  config.model.num_classes = 10
  config.optimizer.schedule = "burda"
  config.num_epochs = -1
  config.eval_every_epochs = 50
  config.checkpoint_every_epochs = 5
  return config
