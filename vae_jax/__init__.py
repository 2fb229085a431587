"""vae_jax: variational autoencoders in JAX/Flax with pure losses and explicit keys.

    import jax
    import vae_jax as vj

    config = vj.get_config("default")              # a packaged config (vae_jax/configs)
    state, metrics = vj.train_and_evaluate(config, "runs/default")
    run = vj.restore("runs/default")               # Run(config, model, params, ...)
    images = vj.sample(run, jax.random.key(0), 16)

What is here:

* models: ``VAE`` (1 or more stochastic layers, CVAE with ``num_classes``,
  the autoencoder), ``HVAE``, ``VQVAE``, ``GatedPixelCNN``; registries
  ``PRIORS`` and ``LIKELIHOODS``;
* losses, per example ``(model, params, x, key, *, kl_weight) -> (loss, aux)``:
  ``elbo_loss``, ``iwae_loss``, ``autoencoder_loss``, ``vqvae_loss``,
  ``prior_nll_loss``; ``iwae_bound`` on log-weights;
* training: ``train_and_evaluate`` (the VAE family), ``train_vqvae``,
  ``train_prior``; the low-level ``create_train_state`` and ``train_step``;
* evaluation: ``evaluate`` (ELBO, importance-sampled NLL, bits/dim);
* workdirs: ``restore``, ``sample``, ``Run``, ``get_config``;
* the named errors every check raises.

The modules (``vj.losses``, ``vj.models``, ``vj.data``, ``vj.distributions``,
``vj.plotting``, ...) hold the rest.
"""

__version__ = "0.1.0"

from vae_jax import configs, data, distributions, losses, models, plotting  # noqa: F401
from vae_jax.api import Run, get_config, restore, sample, workdir_kind  # noqa: F401
from vae_jax.checkpointing import CheckpointError  # noqa: F401
from vae_jax.data import DataError  # noqa: F401
from vae_jax.evaluation import evaluate  # noqa: F401  (the module is vae_jax.evaluation)
from vae_jax.loop import NonFiniteError  # noqa: F401
from vae_jax.losses import (  # noqa: F401
    LOSSES, autoencoder_loss, elbo_loss, iwae_bound, iwae_loss, make_loss, prior_nll_loss, vqvae_loss)
from vae_jax.models import LIKELIHOODS, PRIORS, VAE, init_params  # noqa: F401
from vae_jax.models.hvae import HVAE  # noqa: F401
from vae_jax.schema import ConfigError  # noqa: F401
from vae_jax.train import create_train_state, train_and_evaluate, train_step  # noqa: F401
from vae_jax.vq.pixelcnn import GatedPixelCNN  # noqa: F401
from vae_jax.vq.train import train_and_evaluate as train_vqvae  # noqa: F401
from vae_jax.vq.train_prior import train_prior  # noqa: F401
from vae_jax.vq.vqvae import VQVAE  # noqa: F401
from vae_jax.workdir import WorkdirError  # noqa: F401
