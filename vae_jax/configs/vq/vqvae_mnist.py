"""VQ-VAE on static binarized MNIST: 7x7 grid of K = 64 codes (D = 16), EMA codebook with dead-code restarts.

    vae-jax train-vqvae --config vae_jax/configs/vq/vqvae_mnist.py --workdir runs/vqvae_mnist
    vae-jax train-prior --config vae_jax/configs/vq/prior_mnist.py \
        --config.vqvae_workdir=runs/vqvae_mnist --workdir runs/prior_mnist
    vae-jax evaluate-vqvae --workdir runs/prior_mnist
    vae-jax sample --workdir runs/prior_mnist

The paper's encoder/decoder (stride-2 4x4 convolutions, residual blocks
ReLU-3x3-ReLU-1x1) at MNIST size: 64 channels, 2 residual blocks of 32, two
downsamplings 28 -> 14 -> 7. Bernoulli likelihood, beta = 0.25, EMA decay 0.99,
codes restarted when their usage EMA falls below 0.03 assignments per step.
Measured results (test bound with the PixelCNN prior, codebook usage, wall
time on a 2-core CPU) are in docs/vqvae.md. Every VQ-VAE config starts
from this one.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0

  config.data = ml_collections.ConfigDict()
  config.data.name = "binarized_mnist"   # binarized_mnist | mnist | fashion_mnist | cifar10
  config.data.mode = "static"            # static | dynamic (bernoulli); grey (categorical, logistic)
  config.data.data_dir = ""              # "" -> $TFDS_DATA_DIR or TFDS's default
  config.data.download = True
  config.data.binarize_seed = 0

  config.model = ml_collections.ConfigDict()
  config.model.name = "vqvae"
  config.model.num_codes = 64            # K
  config.model.code_dim = 16             # D
  config.model.hidden = 64               # channels of encoder and decoder
  config.model.residual_hidden = 32      # channels inside a residual block
  config.model.num_residual_blocks = 2
  config.model.num_downsamples = 2       # stride-2 layers: 28x28 -> 7x7
  config.model.likelihood = "bernoulli"  # bernoulli | categorical | logistic
  config.model.ar_layers = 0             # > 0: autoregressive decoder, a gated PixelCNN head of this depth
  config.model.ar_features = 16          # its width (and that of the decoder's feature map)
  config.model.ar_kernel_size = 3        # its masked kernels (odd)

  config.vq = ml_collections.ConfigDict()
  config.vq.beta = 0.25                  # commitment weight
  config.vq.ema = True                   # EMA codebook (else learned by the codebook loss)
  config.vq.decay = 0.99                 # EMA decay of the codebook and of the usage counts
  config.vq.epsilon = 1e-5               # Laplace smoothing of the EMA counts
  config.vq.restart = True               # move dead codes onto encoder outputs of the batch
  config.vq.dead_threshold = 0.03        # a code is dead when its usage EMA is below this (per step)

  config.optimizer = ml_collections.ConfigDict()
  config.optimizer.name = "adam"         # adam | adamw | sgd
  config.optimizer.learning_rate = 1e-3
  config.optimizer.b1 = 0.9
  config.optimizer.b2 = 0.999
  config.optimizer.eps = 1e-8
  config.optimizer.weight_decay = 0.0
  config.optimizer.grad_clip_norm = 0.0  # 0 = off
  config.optimizer.schedule = "cosine"   # constant | cosine

  config.batch_size = 100
  config.num_epochs = 15
  config.eval_every_epochs = 5           # validation reconstruction, perplexity, usage
  config.checkpoint_every_epochs = 1
  config.keep_checkpoints = 2
  config.progress = True
  config.notes = ""                      # free text about the run, recorded in config.json
  config.num_devices = 0                 # data-parallel over this many devices (0 = all)
  config.skip_nonfinite_updates = False  # True: skip updates with a NaN / inf loss or gradient (counted)
  config.skip_threshold = 0.0            # > 0: also skip updates whose gradient norm exceeds it; 0 = off
  config.debug_nans = False              # jax_debug_nans: raise at the first op that makes a NaN (slow)

  config.eval = ml_collections.ConfigDict()
  config.eval.batch_size = 500           # images per device batch in evaluation
  return config
