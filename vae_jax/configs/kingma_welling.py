"""Kingma & Welling (2014) MNIST VAE: 500 tanh hidden units, 20 latents, Bernoulli decoder.

    vae-jax train --config vae_jax/configs/kingma_welling.py --workdir runs/kw

Dynamically binarized MNIST (a fresh Bernoulli draw of the grey levels every
epoch), 100 epochs of Adam at 1e-3; test NLL about 90 nats or lower (the paper
reports the training lower bound, about -100 after 10^7 examples with Adagrad).
"""

from vae_jax.configs import default


def get_config():
  config = default.get_config()
  config.data.name = "mnist"
  config.data.mode = "dynamic"
  config.model.latent_dims = (20,)
  config.model.hidden_sizes = ((500,),)
  config.model.activation = "tanh"
  config.num_epochs = 100
  return config
