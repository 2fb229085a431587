"""The Gaussian VAE (Flax linen), built from ``networks``, ``priors`` and ``likelihoods``.

The VAE works on ONE example (no batch axis); the trainer lifts it over the
batch with ``jax.vmap``. Latent samples carry a leading sample axis ``K`` and
every layer maps over leading axes, so K importance samples cost one matmul
per layer, not K.

Stochastic layers are numbered from the data up: z_1 is next to x, z_L is the
top, with prior N(0, I). The inference network is q(z_1|x) q(z_2|z_1) ...,
the generative one p(z_L) p(z_{L-1}|z_L) ... p(x|z_1) (Burda et al. 2016).

The prior p(z_L) is N(0, I) ("standard"), a learnable Gaussian mixture
("mog") or the VampPrior ("vamp", Tomczak & Welling 2018): the mixture of the
encoder's posteriors at K learnable pseudo-inputs; each is a class in
``vae_jax.models.priors``, found by name in ``priors.PRIORS``, as the
likelihood p(x | z_1) is in ``likelihoods.LIKELIHOODS``. Only the standard prior
has a closed-form KL. ``kind="autoencoder"`` makes the code deterministic
(z = the encoder's output, no prior, KL exactly 0): the non-generative
baseline. Tomczak & Welling's two-level HVAE is ``vae_jax.models.hvae.HVAE``.

``num_classes > 0`` makes the VAE class-conditional (a CVAE, Sohn et al. 2015;
Kingma et al. 2014): the one-hot label y enters q(z_1 | x, y) (appended to the
flattened image, or to the convolutional features) and p(x | z_1, y)
(appended to z_1); upper stochastic layers see y through z_1. The prior is
N(0, I) or, with ``prior="conditional"``, a learned Gaussian p(z_L | y) =
N(mu_y, diag(exp(logvar_y))) per class (closed-form KL for one layer). Every
method then takes ``label`` (int, one per example); the unconditional model
(``num_classes = 0``) takes none and computes exactly what it did before.
"""

from __future__ import annotations

import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from vae_jax import distributions as dist
from vae_jax.models import likelihoods
from vae_jax.models import networks
from vae_jax.models import priors

KINDS = ("vae", "hvae", "autoencoder")  # hvae: vae_jax.models.hvae.HVAE


class VAE(nn.Module):
  """Gaussian VAE with one or more stochastic layers.

  Attributes:
    image_shape: (H, W, C) of one example.
    latent_dims: size of each stochastic layer, bottom (next to x) first.
    hidden_sizes: widths of the deterministic layers in each stochastic
      layer's networks, one tuple per stochastic layer. The encoder of layer l
      uses them in order, the decoder in reverse (Burda et al. 2016, App. C).
    network: "mlp" or "conv" for the x <-> z_1 networks (upper layers are MLPs).
    conv_features: channels of the stride-2 convolutions ("conv" only).
    conv_implementation: "auto" (patches + matmul on CPU, XLA's convolution
      elsewhere), "patches" or "xla"; see ``vae_jax.layers``.
    likelihood: a name in ``likelihoods.LIKELIHOODS``.
    fixed_log_sigma: log sigma of the "gaussian_fixed" likelihood.
    kind: "vae", or "autoencoder": z_1 = the encoder's output, deterministic
      (the sampling key is ignored), log p(z) = log q(z|x) = KL = 0 exactly;
      one stochastic layer only.
    prior: p(z_L), a name in ``priors.PRIORS``: "standard" N(0, I), "mog" a learnable
      mixture of ``num_components`` diagonal Gaussians, "vamp" the VampPrior
      (1/K) sum_k q(z_L | u_k) with K = ``num_components`` learnable
      pseudo-inputs u_k (param ``pseudo_inputs`` [K, H, W, C]), "conditional"
      the per-class Gaussian p(z_L | y) (``priors.ClassPrior``; needs ``num_classes``).
    num_classes: 0 for an unconditional VAE, else the number of classes C of
      the labels y in [0, C) that condition encoder, decoder (and prior).
    clip_logvar: clip every Gaussian head's log-variance to ``LOGVAR_BOUNDS``
      ([-6, 2], Tomczak & Welling's Hardtanh); ``hvae.HVAE`` always does.
    matmul_dtype: one of ``networks.MATMUL_DTYPES``. "bfloat16" computes the MLP networks
      (dense layers, activations, Gaussian heads' matmuls) in bf16 from float32
      parameters; the heads' outputs and the decoder's output are cast to float32
      before sampling, densities and the likelihood. MLP networks only.
  """
  image_shape: Sequence[int] = (28, 28, 1)
  latent_dims: Sequence[int] = (50,)
  hidden_sizes: Sequence[Sequence[int]] = ((200, 200),)
  activation: str = "tanh"
  network: str = "mlp"
  conv_features: Sequence[int] = (32, 64)
  conv_implementation: str = "auto"
  likelihood: str = "bernoulli"
  fixed_log_sigma: float = 0.0
  kind: str = "vae"
  prior: str = "standard"
  num_components: int = 500
  num_classes: int = 0
  clip_logvar: bool = False
  matmul_dtype: str = "float32"

  @property
  def num_pixels(self) -> int:
    return int(math.prod(self.image_shape))

  @property
  def deterministic(self) -> bool:
    """True for the autoencoder: no sampling, no prior, no likelihood bound."""
    return self.kind == "autoencoder"

  @property
  def closed_form_kl(self) -> bool:
    """Whether ``__call__`` returns the exact KL (one layer, a prior with ``closed_form_kl``; 0 for
    the autoencoder)."""
    return self.deterministic or (len(self.latent_dims) == 1
                                  and priors.get(self.prior).closed_form_kl)

  @property
  def compute_dtype(self):
    """None (float32) or jnp.bfloat16: the dtype of the MLP networks' computation."""
    if self.matmul_dtype not in networks.MATMUL_DTYPES:
      raise ValueError(f"matmul_dtype={self.matmul_dtype!r}: choose one of {networks.MATMUL_DTYPES}")
    if self.matmul_dtype == "float32":
      return None
    if self.network != "mlp":
      raise ValueError(f"matmul_dtype={self.matmul_dtype!r} is for network='mlp'")
    return jnp.bfloat16

  def setup(self):
    n_layers = len(self.latent_dims)
    dtype = self.compute_dtype
    if self.network == "conv":
      self.enc_trunk0 = networks.ConvEncoderTrunk(self.conv_features, self.activation,
                                                  self.conv_implementation)
      self.dec_trunk0 = networks.ConvDecoderTrunk(self.conv_features, tuple(self.image_shape),
                                                  self.image_shape[-1], self.activation,
                                                  self.conv_implementation)
    else:
      self.enc_trunk0 = networks.MLP(tuple(self.hidden_sizes[0]), self.activation, dtype)
      self.dec_trunk0 = networks.MLP(tuple(reversed(self.hidden_sizes[0])), self.activation, dtype)
      self.dec_out = nn.Dense(self.num_pixels, dtype=dtype)
    bounds = networks.LOGVAR_BOUNDS if self.clip_logvar else None
    self.enc_heads = ([networks.CodeHead(self.latent_dims[0])] if self.deterministic
                      else [networks.GaussianHead(d, bounds, dtype) for d in self.latent_dims])
    self.enc_trunks = [networks.MLP(tuple(self.hidden_sizes[l]), self.activation, dtype)
                       for l in range(1, n_layers)]
    # p(z_l | z_{l+1}) for l = 1 .. L-1 (index l-1).
    self.dec_trunks = [networks.MLP(tuple(reversed(self.hidden_sizes[l])), self.activation, dtype)
                       for l in range(1, n_layers)]
    self.dec_heads = [networks.GaussianHead(self.latent_dims[l - 1], bounds, dtype)
                      for l in range(1, n_layers)]
    self._setup_likelihood_and_prior()

  def _setup_likelihood_and_prior(self):
    """Parameters of the prior, then of the likelihood (shared with ``hvae.HVAE``).

    The prior and the likelihood declare them under the names checkpoints have:
    params["mixture"], ["class_prior"], ["pseudo_inputs"], ["sigma_raw"].
    """
    prior = priors.get(self.prior)
    if prior.needs_labels and not self.num_classes:
      raise ValueError(f"prior={self.prior!r} is p(z | y): it needs num_classes > 0")
    if self.num_classes and not prior.allows_labels:
      raise ValueError(f"prior={self.prior!r} takes no labels: it needs num_classes=0, "
                       f"got {self.num_classes}")
    prior.setup(self)
    likelihoods.get(self.likelihood).setup(self)

  # -- pieces ---------------------------------------------------------------
  def with_label(self, h: jax.Array, label: jax.Array | None) -> jax.Array:
    """h [..., F] with the one-hot label appended ([..., F + C]); h itself when unconditional.

    ``label``: integer, shape () or h.shape[:-1] (one label per example or sample).
    A label for an unconditional model, none for a conditional one, a float or
    a mis-shaped label raise ValueError when traced. Values outside [0, C) give
    an all-zero one-hot inside jit: the host entry points check them first
    (``vae_jax.data.check_labels``).
    """
    if not self.num_classes:
      if label is not None:
        raise ValueError("a label was given to an unconditional model (num_classes=0)")
      return h
    return jnp.concatenate([h, self.onehot(label, h.shape[:-1])], axis=-1)

  def onehot(self, label: jax.Array | None, lead: tuple[int, ...]) -> jax.Array:
    """One-hot label [*lead, C] of a conditional model (see ``with_label`` for the checks)."""
    if label is None:
      raise ValueError(f"this VAE is class-conditional (num_classes={self.num_classes}): pass a "
                       "label (int in [0, num_classes)) with every example")
    label = jnp.asarray(label)
    if not jnp.issubdtype(label.dtype, jnp.integer):
      raise ValueError(f"label has dtype {label.dtype}; expected integers in [0, {self.num_classes})")
    try:
      shape = jnp.broadcast_shapes(label.shape, tuple(lead))
    except ValueError:
      shape = None
    if shape != tuple(lead):
      raise ValueError(f"label has shape {label.shape}; expected one label per example: shape "
                       f"{tuple(lead)} or ()")
    return jnp.broadcast_to(jax.nn.one_hot(label, self.num_classes), tuple(lead) + (self.num_classes,))

  def encode(self, x: jax.Array, label: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """Mean and log-variance of q(z_1 | x[, y]). x: [..., H, W, C] -> ([..., D1], [..., D1])."""
    if self.network == "conv":
      h = self.with_label(self.enc_trunk0(x), label)
    else:
      h = self.enc_trunk0(self.with_label(x.reshape(x.shape[:-3] + (-1,)), label))
    return self.enc_heads[0](h)

  def decode(self, z1: jax.Array, label: jax.Array | None = None) -> jax.Array:
    """Parameters of p(x | z_1[, y]): logits (Bernoulli) or mean (Gaussian), [..., H, W, C]."""
    lead = z1.shape[:-1]
    z1 = self.with_label(z1, label)
    if self.network == "conv":
      return self.dec_trunk0(z1)
    h = self.dec_out(self.dec_trunk0(z1)).astype(jnp.float32)
    return h.reshape(lead + tuple(self.image_shape))

  def log_sigma(self) -> jax.Array:
    """log sigma of a Gaussian likelihood (scalar, or [H, W, C] for "gaussian_pixel")."""
    return likelihoods.get(self.likelihood).log_sigma(self)

  def log_likelihood(self, x: jax.Array, decoded: jax.Array) -> jax.Array:
    """log p(x | z_1) summed over pixels; decoded has leading sample axes."""
    return likelihoods.get(self.likelihood).log_prob(self, x, decoded)

  def mean_image(self, decoded: jax.Array) -> jax.Array:
    """E[x | z_1] from the decoder output."""
    return likelihoods.get(self.likelihood).mean(self, decoded)

  # -- the prior on the top layer ---------------------------------------------
  def encode_top(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """q(z_L | x) as a Gaussian: for L > 1 through the encoder's means (z_l = E[z_l]).

    The VampPrior's components are this at the pseudo-inputs; for L = 1 they
    are exactly the posteriors q(z_1 | u_k).
    """
    mean, logvar = self.encode(x)
    for l in range(1, len(self.latent_dims)):
      mean, logvar = self.enc_heads[l](self.enc_trunks[l - 1](mean))
    return mean, logvar

  def prior_components(self) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(log_weights [K], means [K, D_L], logvars [K, D_L]) of a mixture prior ("mog", "vamp")."""
    return priors.get(self.prior).components(self)

  def prior_gaussian(self, label: jax.Array, lead: tuple[int, ...] = ()) -> tuple[jax.Array, jax.Array]:
    """(mean, logvar) [*lead, D_L] of the class prior p(z_L | y) (``prior="conditional"``)."""
    return priors.get(self.prior).gaussian(self, label, lead)

  def prior_log_prob(self, z: jax.Array, label: jax.Array | None = None) -> jax.Array:
    """log p(z_L[ | y]) for z [..., D_L] -> [...]."""
    return priors.get(self.prior).log_prob(self, z, label)

  def prior_sample(self, key: jax.Array, num_samples: int, label: jax.Array | None = None) -> jax.Array:
    """z_L ~ p(z_L[ | y]), [num_samples, D_L]; ``label`` () or [num_samples]."""
    return priors.get(self.prior).sample(self, key, num_samples, label)

  # -- what losses and evaluation use ----------------------------------------
  def __call__(self, x: jax.Array, key: jax.Array, num_samples: int = 1,
               label: jax.Array | None = None) -> dict:
    """Per-sample log-density terms for one example x [H, W, C] (and its label, int (), if conditional).

    Draws ``num_samples`` z ~ q(z | x) (one key split per stochastic layer).
    A conditional model's terms are log p(x | z, y), log p(z[ | y]), log q(z | x, y).

    Returns:
      dict with ``log_px_z``, ``log_pz``, ``log_qz`` (each [K]) and, for one
      stochastic layer with the standard prior, ``kl`` (scalar): KL(q(z|x) ||
      N(0, I)) in closed form; also ``mean`` and ``logvar`` of q(z_1 | x) ([D1]).
      The autoencoder returns its code as ``mean``, zeros for ``log_pz``,
      ``log_qz`` and ``kl``, and ignores ``key``.
    """
    if self.deterministic:
      code, _ = self.encode(x, label)
      log_px_z = jnp.broadcast_to(self.log_likelihood(x, self.decode(code, label)), (num_samples,))
      zeros = jnp.zeros((num_samples,), log_px_z.dtype)
      return dict(log_px_z=log_px_z, log_pz=zeros, log_qz=zeros, kl=jnp.zeros((), log_px_z.dtype),
                  mean=code)
    n_layers = len(self.latent_dims)
    keys = jax.random.split(key, n_layers)
    mean1, logvar1 = self.encode(x, label)
    # One sample is drawn without the sample axis, which is added back to the
    # per-sample terms below: the same draw (the normals of shape [D] are those
    # of [1, D]), but XLA:CPU compiles the batched step without a size-1 axis
    # faster (``benchmarks/throughput.py``, MLP at batch 1024: 62,153 -> about
    # 76,000 ex/s with this change alone).
    sample_shape = () if num_samples == 1 else (num_samples,)
    z = dist.gaussian_sample(keys[0], mean1, logvar1, sample_shape)
    log_qz = dist.gaussian_log_prob(z, mean1, logvar1)
    zs = [z]
    for l in range(1, n_layers):
      mean, logvar = self.enc_heads[l](self.enc_trunks[l - 1](zs[-1]))
      z = dist.gaussian_sample(keys[l], mean, logvar)
      log_qz = log_qz + dist.gaussian_log_prob(z, mean, logvar)
      zs.append(z)
    log_pz = self.prior_log_prob(zs[-1], label)
    for l in range(n_layers - 1, 0, -1):
      mean, logvar = self.dec_heads[l - 1](self.dec_trunks[l - 1](zs[l]))
      log_pz = log_pz + dist.gaussian_log_prob(zs[l - 1], mean, logvar)
    log_px_z = self.log_likelihood(x, self.decode(zs[0], label))
    per_sample = lambda t: t if sample_shape else t[None]
    out = dict(log_px_z=per_sample(log_px_z), log_pz=per_sample(log_pz), log_qz=per_sample(log_qz),
               mean=mean1, logvar=logvar1)
    if self.closed_form_kl:
      out["kl"] = self.kl_to_prior(mean1, logvar1, label)
    return out

  # -- the pieces of log w = log p(x, z) - log q(z | x), for gradient estimators
  # (``vae_jax.estimators``): the draws, log q and log p can then be taken with
  # different parameters (held fixed or not) while the decoder runs once.
  def sample_posterior(self, x: jax.Array, key: jax.Array, num_samples: int,
                       label: jax.Array | None = None) -> tuple[jax.Array, ...]:
    """(z_1, ..., z_L), each [K, D_l], z ~ q(z | x[, y]): the draws ``__call__`` makes with ``key``."""
    keys = jax.random.split(key, len(self.latent_dims))
    mean, logvar = self.encode(x, label)
    zs = [dist.gaussian_sample(keys[0], mean, logvar, (num_samples,))]
    for l in range(1, len(self.latent_dims)):
      mean, logvar = self.enc_heads[l](self.enc_trunks[l - 1](zs[-1]))
      zs.append(dist.gaussian_sample(keys[l], mean, logvar))
    return tuple(zs)

  def log_posterior(self, x: jax.Array, zs: tuple[jax.Array, ...],
                    label: jax.Array | None = None) -> jax.Array:
    """log q(z_1, ..., z_L | x[, y]) of ``sample_posterior``'s draws, [K]."""
    mean, logvar = self.encode(x, label)
    log_q = dist.gaussian_log_prob(zs[0], mean, logvar)
    for l in range(1, len(self.latent_dims)):
      mean, logvar = self.enc_heads[l](self.enc_trunks[l - 1](zs[l - 1]))
      log_q = log_q + dist.gaussian_log_prob(zs[l], mean, logvar)
    return log_q

  def log_joint(self, x: jax.Array, zs: tuple[jax.Array, ...],
                label: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """(log p(x | z_1[, y]), log p(z_1, ..., z_L[ | y])) of the draws ``zs``, each [K]."""
    log_pz = self.prior_log_prob(zs[-1], label)
    for l in range(len(self.latent_dims) - 1, 0, -1):
      mean, logvar = self.dec_heads[l - 1](self.dec_trunks[l - 1](zs[l]))
      log_pz = log_pz + dist.gaussian_log_prob(zs[l - 1], mean, logvar)
    return self.log_likelihood(x, self.decode(zs[0], label)), log_pz

  def kl_to_prior(self, mean: jax.Array, logvar: jax.Array, label: jax.Array | None = None) -> jax.Array:
    """Closed-form KL(N(mean, exp(logvar)) || p(z_1[ | y])) for one layer: N(0, I) or the class prior."""
    return priors.get(self.prior).kl(self, mean, logvar, label)

  def generate(self, key: jax.Array, num_samples: int, label: jax.Array | None = None) -> jax.Array:
    """Ancestral samples: z_L ~ p(z_L[ | y]), z_l ~ p(z_l | z_{l+1}); returns E[x | z_1[, y]].

    ``label`` (conditional models): int, () or [num_samples]. The autoencoder
    has no prior: it decodes z ~ N(0, I), which is what shows that it is not a
    generative model.
    """
    n_layers = len(self.latent_dims)
    keys = jax.random.split(key, n_layers)
    z = self.prior_sample(keys[0], num_samples, label)
    for l in range(n_layers - 1, 0, -1):
      mean, logvar = self.dec_heads[l - 1](self.dec_trunks[l - 1](z))
      z = dist.gaussian_sample(keys[l], mean, logvar)
    return self.mean_image(self.decode(z, label))

  def reconstruct(self, x: jax.Array, label: jax.Array | None = None) -> jax.Array:
    """E[x | z_1 = posterior mean[, y]]: a deterministic reconstruction (single layer path)."""
    mean, _ = self.encode(x, label)
    return self.mean_image(self.decode(mean, label))


def init_params(model: VAE, key: jax.Array) -> dict:
  """Parameters of ``model`` from an explicit key (traces one example, with label 0 if conditional)."""
  x = jnp.zeros(tuple(model.image_shape), jnp.float32)
  param_key, sample_key = jax.random.split(key)
  if getattr(model, "num_classes", 0):
    return model.init({"params": param_key}, x, sample_key, 1, jnp.zeros((), jnp.int32))["params"]
  return model.init({"params": param_key}, x, sample_key)["params"]
