"""A 2-D latent space to look at: 784-256-2 tanh VAE on dynamically binarized MNIST.

    vae-jax train --config vae_jax/configs/latent_2d.py --workdir runs/latent_2d
    vae-jax latent-maps --workdir runs/latent_2d --out results/latent_2d

The classic tutorials' model (one hidden layer of 256 tanh units, 2 latents,
Bernoulli decoder), 30 epochs of Adam at 1e-3 with the ELBO: a few minutes on
a 2-core CPU. ``latent_maps`` draws the test set's posterior means coloured
by digit and the decoded manifold (Kingma & Welling 2014, Fig. 4).
"""

from vae_jax.configs import default


def get_config():
  config = default.get_config()
  config.data.name = "mnist"
  config.data.mode = "dynamic"
  config.model.latent_dims = (2,)
  config.model.hidden_sizes = ((256,),)
  config.model.activation = "tanh"
  config.num_epochs = 30
  config.eval_every_epochs = 10
  return config
