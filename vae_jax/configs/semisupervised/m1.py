"""M1 (Kingma et al. 2014): a softmax regression on a trained VAE's posterior means (the paper: a TSVM).

    vae-jax semisupervised --config vae_jax/configs/semisupervised/m1.py \
        --config.m1_workdir=runs/ssl_m1 --workdir runs/ssl_m1_100_s0 --config.num_labelled=100

Published test error (M1 + TSVM) with 100 labels: 11.82%.
"""

from vae_jax.configs.semisupervised import m2


def get_config():
  config = m2.get_config()
  config.method = "m1"
  return config
