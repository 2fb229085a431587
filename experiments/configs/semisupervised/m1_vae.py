"""M1 of Kingma, Rezende, Mohamed & Welling (2014): the VAE whose posterior means are the features.

    python -m experiments.train --config experiments/configs/semisupervised/m1_vae.py --workdir runs/ssl_m1

Two hidden layers of 600 softplus units, 50 latents, Bernoulli decoder on
dynamically binarized ``mnist`` (50,000 train / 10,000 validation images, the
labels unused). The paper trains far longer than the 60 epochs here; rerunning
with a larger ``--config.num_epochs`` resumes. ``experiments.semisupervised``
reads this workdir for the M1 and M1+M2 classifiers.
"""

from experiments.configs import default


def get_config():
  config = default.get_config()
  config.data.name = "mnist"
  config.data.mode = "dynamic"
  config.model.latent_dims = (50,)
  config.model.hidden_sizes = ((600, 600),)
  config.model.activation = "softplus"
  config.optimizer.learning_rate = 1e-3
  config.batch_size = 100
  config.num_epochs = 60
  config.eval_every_epochs = 20
  config.eval_num_samples = 1
  config.checkpoint_every_epochs = 2
  config.progress = False
  return config
