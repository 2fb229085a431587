"""M2 of Kingma, Rezende, Mohamed & Welling (2014) on dynamically binarized MNIST pixels.

    vae-jax semisupervised --config vae_jax/configs/semisupervised/m2.py \
        --workdir runs/ssl_m2_100_s0 --config.num_labelled=100 --config.seed=0

q(z|x,y), q(y|x), p(x|y,z): one hidden layer of 500 softplus units each, 50
latents, Bernoulli pixels. The labelled subset (``num_labelled`` images,
balanced over the 10 classes) is drawn from ``seed``; all 50,000 training
images are the unlabelled set. Published test error with 100 labels: 11.97%
(+- 1.71). Every field here must be present (``vae_jax.apps.ssl_config.validate``).
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0                        # labelled subset, initialization and training keys
  config.method = "m2"                   # m1 | m2 | m1_m2
  config.num_labelled = 100              # a multiple of 10: 100, 600, 1000, 3000

  config.data = ml_collections.ConfigDict()
  config.data.name = "mnist"             # 50,000 train / 10,000 validation / 10,000 test
  config.data.data_dir = ""              # "" -> $TFDS_DATA_DIR
  config.data.download = True

  config.m1_workdir = ""                 # m1, m1_m2: a workdir of vae_jax/configs/semisupervised/m1_vae.py
  config.m1_features = "mean"            # m1_m2: M2's data are M1's posterior means, or a fresh draw
                                         # z1 ~ q(z1|x) each step ("sample", as in the paper)
  config.m1_active_threshold = 0.1       # m1, m1_m2: keep M1's latent dimensions whose posterior mean
                                         # has std > this over the training images (Kingma's code: 0.1)

  config.m2 = ml_collections.ConfigDict()
  config.m2.hidden_sizes = (500,)
  config.m2.latent_dim = 50
  config.m2.activation = "softplus"
  config.m2.alpha_scale = 0.1            # alpha = alpha_scale * N (the paper: 0.1 N)
  config.m2.objective = "paper"          # paper: J^alpha / N (labels weigh alpha_scale); equal: L and U
                                         # batch means at equal weight (labels weigh 500x more; before)
  config.m2.labelled_batch_size = 100    # labelled examples per step (drawn with replacement)

  config.classifier = ml_collections.ConfigDict()  # m1: the softmax regression on M1's features
  config.classifier.l2 = 1e-2
  config.classifier.steps = 2000
  config.classifier.learning_rate = 0.05

  config.optimizer = ml_collections.ConfigDict()
  config.optimizer.name = "adam"
  config.optimizer.learning_rate = 3e-4
  config.optimizer.b1 = 0.9
  config.optimizer.b2 = 0.999
  config.optimizer.eps = 1e-8
  config.optimizer.weight_decay = 0.0
  config.optimizer.grad_clip_norm = 0.0
  config.optimizer.schedule = "constant"
  config.optimizer.cycle_epochs = 0      # cosine: restart the schedule every this many epochs (0: never)

  config.batch_size = 100                # unlabelled examples per step
  config.num_epochs = 5                  # passes over the unlabelled set (the paper: far more)
  config.eval_every_epochs = 1           # validation error
  config.checkpoint_every_epochs = 1
  config.keep_checkpoints = 2
  config.progress = False
  config.notes = ""                      # free text about the run, recorded in config.json
  config.num_devices = 0                 # data-parallel over this many devices (0 = all)
  config.skip_nonfinite_updates = False  # True: skip updates with a NaN / inf loss or gradient (counted)
  config.skip_threshold = 0.0            # > 0: also skip updates whose gradient norm exceeds it; 0 = off
  config.debug_nans = False              # jax_debug_nans: raise at the first op that makes a NaN (slow)
  config.eval = ml_collections.ConfigDict()
  config.eval.batch_size = 1000
  return config
