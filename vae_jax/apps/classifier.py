"""A small digit classifier (MLP) for judging images, e.g. imputed ones; and label matching.

Pure functions: ``train_classifier(model, images, labels, key, ...)`` returns
parameters; ``predict`` / ``accuracy`` take them. An epoch is the training
loop's (``loop.make_epoch``): one jitted ``lax.scan`` over batches gathered on
the device. The classifier keeps no checkpoints: it trains in seconds and its
parameters are saved whole (``save_params``).

``match_labels`` recovers the labels of the static binarized MNIST test split
(Larochelle & Murray's, which TFDS ships without labels): each binary image is
a Bernoulli draw of one grey MNIST test image, so its label is that of the grey
image under which it is most likely.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Sequence

import flax.linen as nn
import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax

from vae_jax import data as data_lib
from vae_jax import loop
from vae_jax.train_state import TrainState, global_norm


class LabelError(data_lib.DataError):
  """Labels that cannot be matched to their images (``match_labels``); the label
  checks themselves raise ``data.DataError`` (``data.check_labels``)."""


class Classifier(nn.Module):
  """Flatten, dense ReLU layers, logits over ``num_classes``; any leading axes."""
  hidden_sizes: Sequence[int] = (512, 512)
  num_classes: int = 10

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    h = x.reshape(x.shape[:-3] + (-1,))
    for i, width in enumerate(self.hidden_sizes):
      h = jax.nn.relu(nn.Dense(width, name=f"dense_{i}")(h))
    return nn.Dense(self.num_classes, name="logits")(h)


def init_params(model: Classifier, key: jax.Array, image_shape) -> dict:
  return model.init(key, jnp.zeros(tuple(image_shape), jnp.float32))["params"]


def cross_entropy(model: Classifier, params, x: jax.Array, label: jax.Array) -> jax.Array:
  """-log softmax(logits)[label] for one example, in nats."""
  logits = model.apply({"params": params}, x)
  return optax.softmax_cross_entropy_with_integer_labels(logits, label)


def classifier_step(state: TrainState, batch, key: jax.Array, *, model: Classifier):
  """One Adam step on the mean cross-entropy of a batch (images [B, H, W, C], labels [B])."""
  images, labels = batch
  x = images.astype(jnp.float32)
  loss, grads = jax.value_and_grad(
      lambda p: jnp.mean(jax.vmap(functools.partial(cross_entropy, model, p))(x, labels)))(state.params)
  return state.apply_gradients(grads), dict(loss=loss, grad_norm=global_norm(grads))


def train_classifier(model: Classifier, images, labels, key: jax.Array, *, num_epochs: int = 5,
                     batch_size: int = 100, learning_rate: float = 1e-3) -> tuple[dict, list[float]]:
  """Adam on the mean cross-entropy; returns (params, mean training loss per epoch).

  ``images`` [N, H, W, C] (binary or in [0, 1]); ``labels`` [N] in [0, num_classes).
  The key splits into (init, data); epoch e shuffles with ``fold_in(data, e)``.
  """
  images = np.asarray(images)
  labels = data_lib.check_labels(labels, model.num_classes, len(images))
  if not 1 <= batch_size <= len(images):
    raise ValueError(f"batch_size={batch_size} must be in [1, {len(images)}] (the number of images)")
  init_key, data_key = jax.random.split(key)
  state = TrainState.create(init_params(model, init_key, images.shape[1:]), optax.adam(learning_rate))
  # The loop's scan epoch (vae_jax.loop): batches from fold_in(data_key, epoch); the step needs no key.
  epoch_fn = loop.make_epoch(jax.tree_util.Partial(classifier_step, model=model), batch_size)
  data = (jnp.asarray(images), jnp.asarray(labels))
  losses = []
  for epoch in range(num_epochs):
    state, metrics = epoch_fn(state, data, epoch, data_key, data_key)
    losses.append(float(jnp.mean(metrics["loss"])))
  return state.params, losses


@functools.partial(jax.jit, static_argnames=("model",))
def _predict_batch(model, params, x):
  return jnp.argmax(model.apply({"params": params}, x.astype(jnp.float32)), axis=-1)


def predict(model: Classifier, params, images, *, batch_size: int = 1000) -> np.ndarray:
  """Predicted labels [N] of images [N, H, W, C]."""
  images = np.asarray(images)
  return np.concatenate([np.asarray(_predict_batch(model, params, jnp.asarray(images[i:i + batch_size])))
                         for i in range(0, len(images), batch_size)])


def accuracy(model: Classifier, params, images, labels, *, batch_size: int = 1000) -> float:
  labels = data_lib.check_labels(labels, model.num_classes, len(images))
  return float(np.mean(predict(model, params, images, batch_size=batch_size) == labels))


def match_labels(binary, grey, grey_labels, *, chunk: int = 1000) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Labels of binary images from the grey images they were drawn from.

  For each binary image b (values {0, 1}), the grey image g (uint8) maximizing
  log Bernoulli(b; clip(g / 255, 1e-3, 1 - 1e-3)), summed over pixels.

  Returns:
    (labels [N], index of the matched grey image [N], margin [N]: the log-likelihood
    gap in nats to the best grey image of another label, +inf if there is none).
  """
  b = np.asarray(binary, np.float32).reshape(len(binary), -1)
  g = np.clip(np.asarray(grey, np.float32).reshape(len(grey), -1) / 255.0, 1e-3, 1 - 1e-3)
  grey_labels = np.asarray(grey_labels)
  if b.shape[1] != g.shape[1] or len(grey_labels) != len(g):
    raise LabelError(f"binary images {np.shape(binary)}, grey images {np.shape(grey)} and grey labels "
                     f"{grey_labels.shape} do not match")
  log_g, log_1mg = np.log(g).T, np.log1p(-g).T
  index, margin = np.empty(len(b), np.int64), np.empty(len(b))
  for s in range(0, len(b), chunk):
    ll = b[s:s + chunk] @ log_g + (1 - b[s:s + chunk]) @ log_1mg  # [chunk, M]
    best = np.argmax(ll, axis=1)
    index[s:s + chunk] = best
    other = np.where(grey_labels[None, :] == grey_labels[best][:, None], -np.inf, ll)
    margin[s:s + chunk] = ll[np.arange(len(best)), best] - other.max(axis=1)
  return grey_labels[index].astype(np.int32), index, margin


PARAMS_FILE = "params.msgpack"


def save_params(params, workdir) -> Path:
  path = Path(workdir) / PARAMS_FILE
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_bytes(flax.serialization.to_bytes(params))
  return path


def load_params(model: Classifier, workdir, image_shape=(28, 28, 1)) -> dict:
  path = Path(workdir) / PARAMS_FILE
  if not path.exists():
    raise FileNotFoundError(f"{path} does not exist: run vae_jax.commands.train_classifier first")
  template = init_params(model, jax.random.key(0), image_shape)
  return flax.serialization.from_bytes(template, path.read_bytes())


def with_dataset(data_config, name: str, mode: str = "static"):
  """A copy of ``config.data`` reading ``name`` in ``mode``."""
  cfg = data_config.copy_and_resolve_references()
  cfg.name, cfg.mode = name, mode
  return cfg


def binarized_mnist_test_with_labels(data_config) -> tuple[np.ndarray, np.ndarray, dict]:
  """Static binarized MNIST test images [N, 28, 28, 1], labels matched from MNIST's grey test
  images (``match_labels``), and the matching's statistics."""
  binary = data_lib.load_split(with_dataset(data_config, "binarized_mnist"), "test").images
  grey = data_lib.load_split(with_dataset(data_config, "mnist", "grey"), "test")
  labels, index, margin = match_labels(binary, grey.images, grey.labels)
  stats = dict(distinct_matches=int(len(np.unique(index))), min_margin_nats=float(margin.min()),
               below_10_nats=int(np.sum(margin < 10.0)))
  return binary, labels, stats
