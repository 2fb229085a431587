"""Gated PixelCNN prior on the 7x7 code grids of a trained VQ-VAE (second stage).

    vae-jax train-prior --config vae_jax/configs/vq/prior_mnist.py \
        --config.vqvae_workdir=runs/vqvae_mnist --workdir runs/prior_mnist
    vae-jax evaluate-vqvae --workdir runs/prior_mnist     # bound in nats and bits/dim
    vae-jax sample --workdir runs/prior_mnist             # 64 samples -> PNG, timed

The data (dataset, binarization) and the grid come from the VQ-VAE workdir;
the prior is fitted to the codes of its training split by maximum likelihood
and validated on the codes of its validation split. 8 gated layers of 32
channels, 3x3 vertical and 1x3 horizontal kernels (receptive field: the whole
7x7 grid above and to the left). Set ``model.num_classes=10`` on a dataset with
labels (``mnist``, ``cifar10``) for a class-conditional prior.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.vqvae_workdir = ""              # required: a trained VQ-VAE workdir

  config.model = ml_collections.ConfigDict()
  config.model.name = "gated_pixelcnn"
  config.model.features = 32
  config.model.num_layers = 8
  config.model.kernel_size = 3
  config.model.output_features = 64
  config.model.num_classes = 0           # 0 = unconditional; else condition on the dataset's labels

  config.optimizer = ml_collections.ConfigDict()
  config.optimizer.name = "adam"
  config.optimizer.learning_rate = 1e-3
  config.optimizer.b1 = 0.9
  config.optimizer.b2 = 0.999
  config.optimizer.eps = 1e-8
  config.optimizer.weight_decay = 0.0
  config.optimizer.grad_clip_norm = 0.0
  config.optimizer.schedule = "cosine"

  config.batch_size = 100
  config.num_epochs = 8
  config.eval_every_epochs = 2           # validation -log p(z) of the codes
  config.checkpoint_every_epochs = 1
  config.keep_checkpoints = 2
  config.progress = True
  config.notes = ""                      # free text about the run, recorded in config.json
  config.num_devices = 0                 # data-parallel over this many devices (0 = all)
  config.skip_nonfinite_updates = False  # True: skip updates with a NaN / inf loss or gradient (counted)
  config.skip_threshold = 0.0            # > 0: also skip updates whose gradient norm exceeds it; 0 = off
  config.debug_nans = False              # jax_debug_nans: raise at the first op that makes a NaN (slow)

  config.eval = ml_collections.ConfigDict()
  config.eval.batch_size = 500
  return config
