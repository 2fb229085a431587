"""Default: a 1-stochastic-layer Gaussian VAE on static binarized MNIST (Burda et al.'s architecture).

    vae-jax train --config vae_jax/configs/default.py --workdir runs/default

Trains 2 x 200 tanh / 50 latents with the ELBO for 100 epochs at a constant
learning rate: about 100 s of training on a 2-core CPU (the trainer runs this
architecture at about 53,000 examples/s there), plus a validation IWAE (K = 50)
every 10 epochs. Every experiment config starts from this one.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0

  config.data = ml_collections.ConfigDict()
  config.data.name = "binarized_mnist"   # binarized_mnist | mnist | fashion_mnist | cifar10
  config.data.mode = "static"            # static | dynamic | grey
  config.data.data_dir = ""              # "" -> $TFDS_DATA_DIR or TFDS's default
  config.data.download = True            # let TFDS download and prepare when missing
  config.data.binarize_seed = 0          # the one fixed binarization of a grey dataset in "static" mode

  config.model = ml_collections.ConfigDict()
  config.model.network = "mlp"           # mlp | conv (x <-> z_1 networks)
  config.model.latent_dims = (50,)       # one entry per stochastic layer, bottom first
  config.model.hidden_sizes = ((200, 200),)  # deterministic widths per stochastic layer
  config.model.activation = "tanh"
  config.model.conv_features = (32, 64)
  config.model.conv_implementation = "auto"  # auto | patches | xla (vae_jax/layers.py)
  config.model.likelihood = "bernoulli"  # bernoulli | gaussian_fixed | gaussian_shared | gaussian_pixel
  config.model.fixed_log_sigma = 0.0
  config.model.init_output_bias = True   # decoder bias = logit of the mean training image (Burda et al.)
  config.model.clip_logvar = False       # True: log-variances clipped to [-6, 2] (Tomczak & Welling)
  config.model.matmul_dtype = "float32"  # float32 | bfloat16 (MLP networks computed in bf16)
  config.model.kind = "vae"              # vae | hvae (Tomczak & Welling's 2-level) | autoencoder (no KL)
  config.model.prior = "standard"        # standard N(0, I) | mog (learnable mixture) | vamp (VampPrior)
  config.model.num_components = 500      # mog / vamp: mixture components = pseudo-inputs
  config.model.pseudo_inputs_init = "noise"  # vamp: noise (N(0.05, 0.01^2)) | data (training images)
  config.model.num_classes = 0           # > 0: class-conditional VAE on labels in [0, num_classes)

  config.loss = ml_collections.ConfigDict()
  config.loss.name = "elbo"              # elbo | iwae | miwae | ciwae | piwae | autoencoder
  config.loss.num_samples = 1            # L for the ELBO, K for the IWAE bound
  config.loss.gradient = "reparam"       # reparam | stl | dreg (vae_jax.estimators)
  config.loss.num_groups = 1             # M of MIWAE / PIWAE: M groups of num_samples draws
  config.loss.ciwae_beta = 0.5           # CIWAE: beta ELBO + (1 - beta) IWAE
  config.loss.analytic_kl = True
  config.loss.beta = 1.0                 # KL weight (beta-VAE)
  config.loss.warmup_epochs = 0.0        # linear KL warm-up from 0 to beta
  config.loss.corruption = "none"        # autoencoder loss: none | mask | flip | gaussian (denoising)
  config.loss.corruption_level = 0.0     # probability (mask, flip) or noise sigma (gaussian)
  config.loss.kwargs = ml_collections.ConfigDict()  # your loss's own fields, passed to it as keywords

  config.optimizer = ml_collections.ConfigDict()
  config.optimizer.name = "adam"         # adam | adamw | sgd
  config.optimizer.learning_rate = 1e-3
  config.optimizer.b1 = 0.9
  config.optimizer.b2 = 0.999
  config.optimizer.eps = 1e-4
  config.optimizer.weight_decay = 0.0
  config.optimizer.grad_clip_norm = 0.0  # 0 = off
  config.optimizer.schedule = "constant"  # constant | cosine | burda
  config.optimizer.burda_stages = 8      # burda: stage i lasts 3^i epochs at lr * 10^(-i/7)
  config.optimizer.burda_epoch_scale = 1.0  # burda: multiply every stage's length

  config.batch_size = 100
  config.num_epochs = 100                # -1: as long as the schedule (burda)
  config.eval_every_epochs = 10          # validation ELBO / IWAE during training
  config.eval_num_samples = 50           # K for the validation IWAE during training
  config.checkpoint_every_epochs = 10
  config.keep_checkpoints = 2
  config.progress = True                 # progress bar with ETA
  config.notes = ""                      # free text about the run, recorded in config.json
  config.num_devices = 0                 # data-parallel over this many devices (0 = all)
  # Non-finite numbers: by default a NaN / inf loss or gradient stops the run (step and term named).
  config.skip_nonfinite_updates = False  # True: skip such updates instead (counted in train_skipped_updates)
  config.skip_threshold = 0.0            # > 0: also skip updates whose gradient norm exceeds it (VDVAE); 0 = off
  config.debug_nans = False              # jax_debug_nans: raise at the first op that makes a NaN (slow)

  # vae_jax.commands.evaluate defaults
  config.eval = ml_collections.ConfigDict()
  config.eval.num_importance_samples = 5000
  config.eval.batch_size = 100           # images per device batch
  config.eval.chunk_size = 250           # importance samples per image per chunk
  return config
