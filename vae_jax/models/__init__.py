"""The Gaussian VAE family (Flax linen), one concern per module.

  networks     activations, MLP, Gaussian / code heads, convolutional trunks
  priors       p(z_L) by name: ``PRIORS`` ("standard", "mog", "vamp", "conditional")
  likelihoods  p(x | z_1) by name: ``LIKELIHOODS`` ("bernoulli", "gaussian_*")
  vae          ``VAE`` (one or more stochastic layers, the autoencoder) and ``init_params``
  hvae         Tomczak & Welling's two-level ``HVAE``
"""

from vae_jax.models import likelihoods  # noqa: F401
from vae_jax.models import networks  # noqa: F401
from vae_jax.models import priors  # noqa: F401
from vae_jax.models.likelihoods import LIKELIHOODS, MIN_SIGMA  # noqa: F401
from vae_jax.models.networks import (  # noqa: F401
    ACTIVATIONS, GATED, LOGVAR_BOUNDS, MATMUL_DTYPES, MLP, NETWORKS, CodeHead, ConvDecoderTrunk,
    ConvEncoderTrunk, DenseParams, GaussianHead, activate)
from vae_jax.models.priors import (  # noqa: F401
    PRIORS, PSEUDO_INPUT_MEAN, PSEUDO_INPUT_STD, ClassPrior, MixturePrior, pseudo_input_init)
from vae_jax.models.vae import KINDS, VAE, init_params  # noqa: F401
from vae_jax.models import vae  # noqa: F401
from vae_jax.models import hvae  # noqa: F401  (after vae: it subclasses vae.VAE)
