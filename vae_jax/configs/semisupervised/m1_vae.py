"""M1 of Kingma, Rezende, Mohamed & Welling (2014): the VAE whose posterior means are the features.

    vae-jax train --config vae_jax/configs/semisupervised/m1_vae.py --workdir runs/ssl_m1

Two hidden layers of 500 softplus units, 50 latents, Bernoulli decoder on
dynamically binarized ``mnist`` (50,000 train / 10,000 validation images, the
labels unused): the M1 of Kingma's M1+M2 code (``mnist_z_x_50-500-500_longrun``;
the paper's table lists 600-600 for M1 alone). 400 epochs of Adam with a cosine
decay from 1e-3 (about 25 min on 2 CPU cores); the reference model trained far
longer. ``vae_jax.commands.semisupervised`` reads this workdir for the M1 and M1+M2
classifiers.
"""

from vae_jax.configs import default


def get_config():
  config = default.get_config()
  config.data.name = "mnist"
  config.data.mode = "dynamic"
  config.model.latent_dims = (50,)
  config.model.hidden_sizes = ((500, 500),)
  config.model.activation = "softplus"
  config.optimizer.learning_rate = 1e-3
  config.optimizer.schedule = "cosine"
  config.batch_size = 100
  config.num_epochs = 400
  config.eval_every_epochs = 50
  config.eval_num_samples = 1
  config.checkpoint_every_epochs = 10
  config.progress = False
  return config
