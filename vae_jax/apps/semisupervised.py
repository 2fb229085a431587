"""Semi-supervised classification with deep generative models (Kingma, Rezende, Mohamed & Welling 2014).

* M1 (``vae_jax.apps.m1``): a VAE trained on all images without labels; its
  posterior means E[z | x] are the features of a classifier fitted to the
  labelled subset.
* M2: the label is a latent variable, observed for the labelled subset.
  p(y) = Cat(1/C), p(z) = N(0, I), p(x | y, z); inference networks
  q(z | x, y) = N(mu(x, y), diag(sigma^2(x, y))) and q(y | x) = Cat(pi(x)).
  Per example (eqs. 6-9 of the paper), with L and U the negative bounds:

      L(x, y) = -E_q(z|x,y)[log p(x | y, z)] - log p(y) + KL(q(z | x, y) || p(z))
      U(x)    = sum_y q(y | x) L(x, y) - H(q(y | x))

  and the classifier also learns from the labels through alpha * -log q(y | x).
* M1+M2: M2 whose data are M1's latent features (50 numbers per image) with a
  Gaussian likelihood p(z1 | y, z2) (learned mean and log-variance per dimension).

Everything here works on ONE example; the training step lifts it with
``jax.vmap``. Keys are explicit: ``unlabelled_loss`` gives class c the key
``jax.random.split(key, C)[c]``, so it is ``labelled_loss`` averaged over
q(y | x) with those keys, exactly.
"""

from __future__ import annotations

import functools
import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from vae_jax import compilation
from vae_jax import data as data_lib
from vae_jax import distributions as dist
from vae_jax import models
from vae_jax.train_state import TrainState, global_norm

LIKELIHOODS = ("bernoulli", "gaussian")
ACTIVATIONS = tuple(a for a in models.ACTIVATIONS if a != models.GATED)
DataError = data_lib.DataError
# log-variance range of the "gaussian" likelihood (M1+M2): a feature with almost no spread
# cannot drive its log-density to +inf.
GAUSSIAN_LOGVAR_BOUNDS = (-8.0, 4.0)


# -- labels and the labelled subset ----------------------------------------------

def subset_key(seed: int) -> jax.Array:
  """The key of the labelled subset: a function of the seed alone, so every method gets the same images."""
  return jax.random.fold_in(jax.random.key(seed), 0x55)


def balanced_subset(labels, num_labelled: int, key: jax.Array, num_classes: int) -> np.ndarray:
  """Indices (sorted) of ``num_labelled`` examples, ``num_labelled / num_classes`` of each class.

  Within each class the examples are the first in the order of
  ``jax.random.permutation(key, N)``: the same key and labels give the same
  subset, and a larger subset from the same key contains the smaller one.

  Raises:
    DataError: labels out of range; ``num_labelled`` not a positive multiple
      of ``num_classes``; more labels requested than the data hold (in all, or
      in one class).
  """
  labels = data_lib.check_labels(labels, num_classes)
  if not isinstance(num_labelled, (int, np.integer)) or num_labelled <= 0 or num_labelled % num_classes:
    raise DataError(f"num_labelled={num_labelled!r} is invalid: expected a positive multiple of the "
                    f"{num_classes} classes (a balanced subset)")
  if num_labelled > labels.size:
    raise DataError(f"num_labelled={num_labelled} is more labels than exist: the data hold "
                    f"{labels.size} labelled examples")
  per_class = num_labelled // num_classes
  counts = np.bincount(labels, minlength=num_classes)
  short = [c for c in range(num_classes) if counts[c] < per_class]
  if short:
    raise DataError(f"num_labelled={num_labelled} is more labels than exist: it needs {per_class} "
                    f"examples of each class, but class {short[0]} has {counts[short[0]]}")
  order = np.asarray(jax.random.permutation(key, labels.size))
  ranked = labels[order]
  picked = np.concatenate([order[ranked == c][:per_class] for c in range(num_classes)])
  return np.sort(picked)


# -- M2 --------------------------------------------------------------------------

class _JointInput(nn.Module):
  """act(W_a a + W_b b + c): a dense layer on [a, b] with b's part computed on its own,
  so the C one-hot labels of one example cost C small matmuls, not C large ones."""
  features: int
  activation: str

  @nn.compact
  def __call__(self, a: jax.Array, b: jax.Array) -> jax.Array:
    h = nn.Dense(self.features, name="a")(a) + nn.Dense(self.features, use_bias=False, name="b")(b)
    return models.ACTIVATIONS[self.activation](h)


class M2(nn.Module):
  """Kingma et al.'s M2 for one example x with event shape ``input_shape``.

  Attributes:
    input_shape: e.g. (28, 28, 1) for images, (50,) for M1's latents.
    num_classes: C.
    hidden_sizes: widths of each network's hidden layers (the paper: one of 500).
    latent_dim: size of z (the paper: 50).
    likelihood: "bernoulli" (logits per pixel) or "gaussian" (mean and
      log-variance per dimension, for M1+M2).
  """
  input_shape: Sequence[int] = (28, 28, 1)
  num_classes: int = 10
  hidden_sizes: Sequence[int] = (500,)
  latent_dim: int = 50
  activation: str = "softplus"
  likelihood: str = "bernoulli"

  @property
  def input_dim(self) -> int:
    return int(math.prod(self.input_shape))

  def setup(self):
    first, rest = self.hidden_sizes[0], tuple(self.hidden_sizes[1:])
    self.cls_trunk = models.MLP(tuple(self.hidden_sizes), self.activation)
    self.cls_out = nn.Dense(self.num_classes)
    self.enc_in = _JointInput(first, self.activation)
    self.enc_trunk = models.MLP(rest, self.activation)
    self.enc_head = models.GaussianHead(self.latent_dim)
    dec_sizes = tuple(reversed(self.hidden_sizes))
    self.dec_in = _JointInput(dec_sizes[0], self.activation)
    self.dec_trunk = models.MLP(dec_sizes[1:], self.activation)
    if self.likelihood == "gaussian":
      self.dec_out = models.GaussianHead(self.input_dim, logvar_bounds=GAUSSIAN_LOGVAR_BOUNDS)
    else:
      self.dec_out = nn.Dense(self.input_dim)

  def _flat(self, x):
    return x.reshape(x.shape[: x.ndim - len(self.input_shape)] + (self.input_dim,))

  def classify(self, x: jax.Array) -> jax.Array:
    """Logits of q(y | x), [..., C]."""
    return self.cls_out(self.cls_trunk(self._flat(x)))

  def encode(self, x: jax.Array, y_onehot: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Mean and log-variance of q(z | x, y); y_onehot [..., C] broadcasts against x's features."""
    return self.enc_head(self.enc_trunk(self.enc_in(self._flat(x), y_onehot)))

  def decode(self, y_onehot: jax.Array, z: jax.Array):
    """Parameters of p(x | y, z): logits, or (mean, logvar), each [..., D] (flat)."""
    return self.dec_out(self.dec_trunk(self.dec_in(z, y_onehot)))

  def log_likelihood(self, x: jax.Array, decoded) -> jax.Array:
    """log p(x | y, z), summed over x's dimensions; decoded has leading axes."""
    x = self._flat(x)
    if self.likelihood == "gaussian":
      mean, logvar = decoded
      return dist.gaussian_log_prob(x, mean, logvar)
    return dist.bernoulli_log_prob(x, decoded, event_ndim=1)

  def __call__(self, x: jax.Array, y_onehot: jax.Array, key: jax.Array) -> dict:
    """Terms of the labelled bound for x and one or more labels y_onehot [..., C].

    One reparameterized z ~ q(z | x, y) per label (``key`` gives its noise,
    the same shape as the labels' leading axes plus the latent axis).

    Returns:
      dict of [...] arrays: ``log_px`` = log p(x | y, z), ``kl`` = KL(q(z|x,y) || N(0, I)),
      and ``logits`` [C] of q(y | x).
    """
    mean, logvar = self.encode(x, y_onehot)
    z = dist.gaussian_sample(key, mean, logvar)
    return dict(log_px=self.log_likelihood(x, self.decode(y_onehot, z)),
                kl=dist.kl_gaussian_standard_normal(mean, logvar),
                logits=self.classify(x))


def init_m2(model: M2, key: jax.Array) -> dict:
  """Parameters of ``model`` from an explicit key."""
  x = jnp.zeros(tuple(model.input_shape), jnp.float32)
  y = jnp.zeros((model.num_classes,), jnp.float32)
  param_key, sample_key = jax.random.split(key)
  return model.init({"params": param_key}, x, y, sample_key)["params"]


def class_samples(model: M2, params, key: jax.Array, per_class: int = 10) -> np.ndarray:
  """[C * per_class, *input_shape] pixel probabilities of p(x | y, z), z ~ N(0, I), class by
  class (row y: label y); for the Bernoulli likelihood (images)."""
  labels = jnp.repeat(jnp.arange(model.num_classes), per_class)
  z = jax.random.normal(key, (labels.shape[0], model.latent_dim))
  logits = model.apply({"params": params}, jax.nn.one_hot(labels, model.num_classes), z, method=model.decode)
  return np.asarray(jax.nn.sigmoid(logits)).reshape((-1,) + tuple(model.input_shape))


def labelled_loss(model: M2, params, x: jax.Array, y: jax.Array, key: jax.Array, *,
                  kl_weight=1.0) -> tuple[jax.Array, dict]:
  """L(x, y) = -log p(x | y, z) - log p(y) + kl_weight * KL(q(z | x, y) || p(z)), z ~ q(z | x, y).

  One example; y an integer label. p(y) is uniform. Returns (L, aux) with
  aux = {recon, kl} (nats).
  """
  y_onehot = jax.nn.one_hot(y, model.num_classes)
  t = model.apply({"params": params}, x, y_onehot, key)
  recon = -t["log_px"]
  loss = recon + math.log(model.num_classes) + kl_weight * t["kl"]
  return loss, dict(recon=recon, kl=t["kl"])


def unlabelled_loss(model: M2, params, x: jax.Array, key: jax.Array, *,
                    kl_weight=1.0) -> tuple[jax.Array, dict]:
  """U(x) = sum_y q(y | x) L(x, y) - H(q(y | x)), summing over all C labels.

  Class c uses the key ``jax.random.split(key, C)[c]`` for its z, so U equals
  the q(y|x)-weighted ``labelled_loss`` with those keys minus the entropy.
  Returns (U, aux) with aux = {recon, kl, entropy} (the first two averaged over q(y|x)).
  """
  c = model.num_classes
  eye = jnp.eye(c)
  keys = jax.random.split(key, c)
  noise = jax.vmap(lambda k: jax.random.normal(k, (model.latent_dim,)))(keys)

  def terms(module, x):
    mean, logvar = module.encode(x, eye)                          # [C, D]
    z = mean + jnp.exp(0.5 * logvar) * noise
    return dict(log_px=module.log_likelihood(x, module.decode(eye, z)),
                kl=dist.kl_gaussian_standard_normal(mean, logvar), logits=module.classify(x))

  t = model.apply({"params": params}, x, method=terms)
  log_q = jax.nn.log_softmax(t["logits"])
  q = jnp.exp(log_q)
  per_class = -t["log_px"] + math.log(c) + kl_weight * t["kl"]  # L(x, y) for every y
  entropy = -jnp.sum(q * log_q)
  loss = jnp.sum(q * per_class) - entropy
  return loss, dict(recon=-jnp.sum(q * t["log_px"]), kl=jnp.sum(q * t["kl"]), entropy=entropy)


def classification_loss(model: M2, params, x: jax.Array, y: jax.Array) -> jax.Array:
  """-log q(y | x) for one example."""
  logits = model.apply({"params": params}, x, method=model.classify)
  return optax.softmax_cross_entropy_with_integer_labels(logits, y)


# -- inputs ----------------------------------------------------------------------

FEATURES = ("dynamic", "mean", "sample")


def to_input(raw, key: jax.Array, kind: str) -> jax.Array:
  """A batch of model inputs from stored data (pure, jittable).

  "dynamic": uint8 images -> a Bernoulli draw of x/255 (``data.to_model_input``);
  "mean": M1 features [B, D] used as they are; "sample": [B, 2, D] M1 posterior
  mean and log-variance -> one draw z1 ~ q(z1 | x) per example.
  """
  if kind == "dynamic":
    return data_lib.to_model_input(raw, key, "dynamic")
  if kind == "mean":
    return raw
  if kind == "sample":
    return dist.gaussian_sample(key, raw[:, 0], raw[:, 1])
  raise ValueError(f"input kind {kind!r}: choose one of {FEATURES}")


def eval_input(raw, kind: str) -> jax.Array:
  """Deterministic test-time inputs: grey levels x/255 for images, M1's posterior means for features."""
  if kind == "dynamic":
    return raw.astype(jnp.float32) / 255.0
  if kind == "sample":
    return raw[:, 0]
  return raw


# -- training --------------------------------------------------------------------

OBJECTIVES = ("paper", "equal")


def objective_weights(objective: str, alpha_scale: float, num_train: int,
                      num_labelled: int) -> tuple[float, float]:
  """(w_l, w_c): the step loss is mean_u U + w_l * mean_l L + w_c * mean_l -log q(y|x).

  "paper": the paper's J^alpha = sum_l L + sum_u U + alpha * E_l[-log q(y|x)]
  with alpha = alpha_scale * N, divided by N (the N training images, all
  unlabelled-set members): w_l = N_l / N, w_c = alpha_scale (0.1). Kingma's
  code does the same: each labelled example's -log q(y|x) weighs
  alpha * N / N_l against 1 for an unlabelled example, and each example
  counts once per epoch.
  "equal": our first reading, L and U batch means at equal weight, w_l = 1 and
  w_c = alpha_scale * N / N_l (50 for 100 labels): the labels weigh 500 times
  more than in the paper.
  """
  if objective == "paper":
    return num_labelled / num_train, alpha_scale
  if objective == "equal":
    return 1.0, alpha_scale * num_train / num_labelled
  raise ValueError(f"objective {objective!r}: choose one of {OBJECTIVES}")


def m2_step(state: TrainState, batch, key: jax.Array, *, model: M2, kind: str,
            weights: tuple[float, float], labelled_batch_size: int):
  """One optimizer step: unlabelled batch + a labelled batch drawn (with replacement) from the subset.

  ``batch`` = (unlabelled raw [B, ...], (labelled raw [N_l, ...], labels [N_l])): the loop's
  batch of the unlabelled set with the whole labelled subset (``loop.Trainer.fixed_data``).
  loss = mean_u U(x) + w_l * mean_l L(x, y) + w_c * mean_l -log q(y | x), (w_l, w_c) = ``weights``
  (``objective_weights``).
  Returns (state, metrics) with batch means and the labelled-batch accuracy.
  """
  raw_u, (raw_l, labels) = batch
  pick_key, in_u_key, in_l_key, loss_key = jax.random.split(key, 4)
  idx = jax.random.randint(pick_key, (labelled_batch_size,), 0, labels.shape[0])
  x_l, y_l = to_input(data_lib.take_rows(raw_l, idx), in_l_key, kind), labels[idx]
  x_u = to_input(raw_u, in_u_key, kind)
  keys_l, keys_u = jnp.split(jax.random.split(loss_key, x_l.shape[0] + x_u.shape[0]), [x_l.shape[0]])

  def objective(params):
    lab, lab_aux = jax.vmap(lambda x, y, k: labelled_loss(model, params, x, y, k))(x_l, y_l, keys_l)
    unl, unl_aux = jax.vmap(lambda x, k: unlabelled_loss(model, params, x, k))(x_u, keys_u)
    logits = jax.vmap(lambda x: model.apply({"params": params}, x, method=model.classify))(x_l)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, y_l)
    loss = jnp.mean(unl) + weights[0] * jnp.mean(lab) + weights[1] * jnp.mean(ce)
    return loss, dict(labelled=jnp.mean(lab), unlabelled=jnp.mean(unl), classification=jnp.mean(ce),
                      entropy=jnp.mean(unl_aux["entropy"]), kl=jnp.mean(unl_aux["kl"]),
                      labelled_accuracy=jnp.mean(jnp.argmax(logits, -1) == y_l))

  (loss, aux), grads = jax.value_and_grad(objective, has_aux=True)(state.params)
  return state.apply_gradients(grads), dict(loss=loss, grad_norm=global_norm(grads), **aux)


@functools.partial(compilation.jit, static_argnames=("model", "kind"))
def _predict_batch(params, raw, *, model: M2, kind: str) -> jax.Array:
  x = eval_input(raw, kind)
  logits = jax.vmap(lambda xi: model.apply({"params": params}, xi, method=model.classify))(x)
  return jnp.argmax(logits, -1)


def predict(model: M2, params, inputs, *, kind: str, batch_size: int = 1000) -> np.ndarray:
  """argmax_y q(y | x) for every example of ``inputs`` (host array), in device batches
  (one compile per model, input kind and batch shape)."""
  out = [np.asarray(_predict_batch(params, jnp.asarray(inputs[i:i + batch_size]), model=model, kind=kind))
         for i in range(0, len(inputs), batch_size)]
  return np.concatenate(out)


def error_rate(predictions, labels) -> float:
  """Fraction of wrong predictions."""
  return float(np.mean(np.asarray(predictions) != np.asarray(labels)))
