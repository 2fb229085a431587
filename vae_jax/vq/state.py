"""The train states of the VQ-VAE (with its codebook statistics) and of the PixelCNN prior."""

from __future__ import annotations

import jax
import optax

from vae_jax.train_state import TrainState
from vae_jax.vq import pixelcnn
from vae_jax.vq import quantization as vq
from vae_jax.vq import vqvae


class VQTrainState(TrainState):
  """The core state plus the codebook statistics (usage counts, EMA sums) that the step updates."""
  codebook_stats: vq.CodebookStats


def create_train_state(model: vqvae.VQVAE, key: jax.Array, tx: optax.GradientTransformation) -> VQTrainState:
  params = vqvae.init_params(model, key)
  return VQTrainState.create(params, tx, codebook_stats=vq.init_stats(params["quantizer"]["codebook"]))


def new_prior_state(model: pixelcnn.GatedPixelCNN, key: jax.Array, tx) -> TrainState:
  return TrainState.create(pixelcnn.init_params(model, key), tx)
