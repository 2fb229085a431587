# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: -all
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 02 · Extend a loss without editing the library
#
# The trainer takes any per-example loss with the signature
#
# ```python
# loss_fn(model, params, x, key, *, kl_weight) -> (loss, aux)
# ```
#
# for ONE example `x` (it vmaps over the batch and averages once), where `kl_weight` is the KL
# weight the trainer schedules from `config.loss.beta` and `config.loss.warmup_epochs`, and `aux`
# is a dict of scalars that ends up in `metrics.jsonl`. Here we write two new objectives in the
# notebook and hand them to `vae_jax.train.train_and_evaluate(config, workdir, loss_fn=...)`:
#
# 1. a **beta-VAE with a free-bits KL** on binarized MNIST, against the library's ELBO;
# 2. a **new likelihood**, the Laplace, on grey-level MNIST, against the library's Gaussian.
#
# We compare reconstructions and the KL of each latent unit.
#
# Small default settings (a 10,000-image subset, a few epochs: well under a minute on a 2-core CPU);
# `FULL_RUN = True` trains on the whole training split for 20 epochs (about 5 minutes of CPU time;
# 10 minutes on a busy 2-core machine).

# %%
FULL_RUN = False

import functools
import os
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

from vae_jax.configs import default
from vae_jax import config as config_lib
from vae_jax import data
from vae_jax import distributions as dist
from vae_jax import evaluation as evaluate
from vae_jax import losses
from vae_jax import plotting
from vae_jax import train

NUM_TRAIN = None if FULL_RUN else 10_000  # None: the whole training split
NUM_VALIDATION = 10_000 if FULL_RUN else 1_000
EPOCHS = 20 if FULL_RUN else 6
GREY_LEARNING_RATE = 1e-3 if FULL_RUN else 3e-3  # a larger step lets the learned scale settle in 6 epochs
BETA, FREE_BITS = 2.0, 0.25  # KL weight and the per-unit floor (nats) of the free-bits loss
FIGURES = Path(os.environ.get("VAE_JAX_FIGURES", "figures"))  # PNGs the README links to
FIGURES.mkdir(parents=True, exist_ok=True)
# Checkpoints and metrics of each run: a fresh directory each time (the trainer resumes from a
# workdir it finds, and cannot tell that a loss function changed).
WORKDIR = Path(os.environ.get("VAE_JAX_WORKDIR") or tempfile.mkdtemp(prefix="vae_jax_02_"))


def small_config(**fields):
  """The default config, shortened; ``fields`` are dotted overrides ("loss.beta": 2.0)."""
  config = default.get_config()
  config.num_epochs = config.eval_every_epochs = config.checkpoint_every_epochs = EPOCHS
  config.eval_num_samples = 1  # the trainer's validation pass: the ELBO is enough here
  config.progress = False
  for name, value in fields.items():
    *parents, leaf = name.split(".")
    node = config
    for p in parents:
      node = node[p]
    node[leaf] = value
  return config


def load(config):
  """Training and validation splits of ``config.data`` (subsets in the small setting)."""
  splits = {}
  for split, n in (("train", NUM_TRAIN), ("validation", NUM_VALIDATION)):
    images = data.load_split(config.data, split).images
    splits[split] = data.Split(images[:n], None)
  return splits


# %% [markdown]
# ## 1. A beta-VAE with a free-bits KL
#
# The beta-VAE (Higgins et al. 2017) weights the KL: $-\mathbb E_q[\log p(x \mid z)] +
# \beta\,\mathrm{KL}(q(z \mid x) \,\|\, p(z))$. A large $\beta$ switches latent units off (their
# posterior collapses onto the prior). *Free bits* (Kingma et al. 2016) lets every unit carry
# $\lambda$ nats for free: the KL term becomes $\sum_j \max(\mathrm{KL}_j, \lambda)$, so a unit below
# the floor feels no pull towards the prior. (Kingma et al. floor the KL averaged over a minibatch; a
# per-example loss sees one example, so this floor is per example and per unit.)
#
# The loss reads the per-sample terms the model returns (`model.apply(..., x, key, 1)`: `log_px_z`,
# and the mean and log-variance of $q(z_1 \mid x)$), and the per-unit KL comes from the library's
# closed form with `event_ndim=0` (no sum over units). `kl_weight` is $\beta$, scheduled by the
# trainer from `config.loss.beta`; `aux["elbo"]` is the true, unweighted ELBO.

# %%
def free_bits_elbo(model, params, x, key, *, kl_weight, free_bits):
  """Negative beta-ELBO with a per-unit KL floor: recon + kl_weight * sum_j max(KL_j, free_bits)."""
  t = model.apply({"params": params}, x, key, 1)
  kl_units = dist.kl_gaussian_standard_normal(t["mean"], t["logvar"], event_ndim=0)  # [D]
  recon, kl = -jnp.mean(t["log_px_z"]), jnp.sum(kl_units)
  loss = recon + kl_weight * jnp.sum(jnp.maximum(kl_units, free_bits))
  return loss, dict(elbo=-(recon + kl), recon=recon, kl=kl)


binary_config = small_config()
binary_data = load(binary_config)
runs = {  # name -> (config, loss_fn); loss_fn None is the library's loss from config.loss
    "ELBO (library)": (binary_config, None),
    f"beta = {BETA:g} (library)": (small_config(**{"loss.beta": BETA}), None),
    f"beta = {BETA:g}, free bits {FREE_BITS:g}": (small_config(**{"loss.beta": BETA}),
                                                 functools.partial(free_bits_elbo, free_bits=FREE_BITS)),
}
states = {}
for i, (name, (config, loss_fn)) in enumerate(runs.items()):
  states[name], last = train.train_and_evaluate(config, WORKDIR / f"binary_{i}", loss_fn=loss_fn,
                                                datasets=binary_data)
  print(f"{name:>28}: train loss {last['train_loss']:7.2f}, validation ELBO {last['val_elbo']:7.2f}, "
        f"{last['examples_per_s']:,.0f} examples/s")

# %% [markdown]
# The library's evaluation works for every model trained on the same likelihood, whatever its
# training loss: the ELBO and the importance-sampled log-likelihood on validation images, and the
# number of active units (units whose posterior mean varies across images, Burda et al. 2016).

# %%
model = config_lib.make_model(binary_config)
eval_key = jax.random.key(1)
val_images = binary_data["validation"].images
print(f"{'':>28} {'ELBO':>8} {'KL':>6} {'NLL (K=100)':>11} {'active':>6}")
kl_per_unit = {}
for name, state in states.items():
  m = evaluate.evaluate(model, state.params, val_images, key=eval_key, mode="static", num_samples=100)
  print(f"{name:>28} {m['elbo']:8.2f} {m['kl']:6.2f} {m['nll']:11.2f} {m['active_units']:6d}")
  mean, logvar = jax.vmap(lambda x: model.apply({"params": state.params}, x, method=model.encode))(
      jnp.asarray(val_images, jnp.float32))
  kl_per_unit[name] = np.asarray(jnp.mean(dist.kl_gaussian_standard_normal(mean, logvar, event_ndim=0), 0))
fb_name = list(runs)[2]
assert kl_per_unit[fb_name].min() > 0.5 * FREE_BITS  # the floor keeps every unit in use

# %% [markdown]
# The KL of each latent unit, $\mathrm{KL}(q(z_j \mid x) \,\|\, \mathcal N(0, 1))$ averaged over
# validation images, for each of the 50 units, sorted. In the full run (the figure in the README) the
# ELBO uses about half of the units and leaves the others at the prior (KL near 0); $\beta = 2$
# switches off more of them; the free-bits floor keeps every unit at about $\lambda$ nats. A few
# epochs on the subset (the small setting) show the same order, less sharply: collapse takes time.

# %%
fig, ax = plt.subplots(figsize=(7, 3.8))
for name, kl in kl_per_unit.items():
  ax.plot(np.sort(kl)[::-1], marker="o", ms=3, label=f"{name} (total {kl.sum():.1f} nats)")
ax.axhline(FREE_BITS, color="k", lw=0.8, ls=":", label=f"free-bits floor {FREE_BITS:g}")
ax.set_yscale("log")
ax.set_ylim(1e-3, None)
ax.set_xlabel("latent unit (sorted by KL)")
ax.set_ylabel("mean KL per unit (nats)")
ax.legend(fontsize=7)
fig.tight_layout()
fig.savefig(FIGURES / "02_kl_per_unit.png", dpi=110)
plt.show()

# %% [markdown]
# ## 2. A new likelihood: Laplace
#
# On grey-level images (`data.mode = "grey"`: dequantized pixels in $[0, 1)$) the library offers
# Gaussian likelihoods; the squared error they imply makes reconstructions blurry, because the
# Gaussian's optimum is the *mean* of what the decoder is unsure about. A Laplace likelihood,
#
# $$\log p(x \mid z) = \sum_i -\frac{|x_i - \mu_i(z)|}{b} - \log 2b,$$
#
# has its optimum at the *median* (an L1 loss with a meaning for its scale $b$). It needs the
# decoder's raw output, so the loss composes the model's pieces (`encode`, `decode`) with the
# library's sampler and closed-form KL instead of calling `model(...)`. For the scale it reuses the
# one learned positive scalar that `likelihood = "gaussian_shared"` gives the model
# (`model.log_sigma()`, read here as $\log b$): the config picks the architecture, the loss the
# meaning. Both are densities on the same continuous data, so their ELBOs compare directly
# (and `data.bits_per_dim` turns them into bits per pixel of the 8-bit images).

# %%
def laplace_elbo(model, params, x, key, *, kl_weight):
  """Negative ELBO with p(x | z) = Laplace(decoder(z), b), b = exp(model.log_sigma()) learned."""
  mean, logvar = model.apply({"params": params}, x, method=model.encode)
  z = dist.gaussian_sample(key, mean, logvar)
  loc = model.apply({"params": params}, z, method=model.decode)
  log_b = model.apply({"params": params}, method=model.log_sigma)
  recon = jnp.sum(jnp.abs(x - loc) * jnp.exp(-log_b) + log_b + jnp.log(2.0))
  kl = dist.kl_gaussian_standard_normal(mean, logvar)
  return recon + kl_weight * kl, dict(elbo=-(recon + kl), recon=recon, kl=kl)


grey_config = small_config(**{"data.name": "mnist", "data.mode": "grey",
                               "model.likelihood": "gaussian_shared",
                               "optimizer.learning_rate": GREY_LEARNING_RATE})
grey_data = load(grey_config)
grey_model = config_lib.make_model(grey_config)
x_grey = data.to_model_input(jnp.asarray(grey_data["validation"].images), jax.random.key(2), "grey")
num_pixels = grey_model.num_pixels
grey_states = {}
for i, (name, loss_fn) in enumerate({"Gaussian (library)": None, "Laplace": laplace_elbo}.items()):
  grey_states[name], _ = train.train_and_evaluate(grey_config, WORKDIR / f"grey_{i}", loss_fn=loss_fn,
                                                  datasets=grey_data)
  loss_fn = loss_fn or losses.make_loss(grey_config.loss)
  keys = jax.random.split(jax.random.key(3), x_grey.shape[0])
  _, aux = jax.jit(jax.vmap(lambda x, k: loss_fn(grey_model, grey_states[name].params, x, k, kl_weight=1.0)))(
      x_grey, keys)
  elbo, scale = float(aux["elbo"].mean()), float(jnp.exp(grey_model.apply(
      {"params": grey_states[name].params}, method=grey_model.log_sigma)))
  print(f"{name:>18}: validation ELBO {elbo:8.1f} nats = {data.bits_per_dim(-elbo, num_pixels, 'grey'):.3f} "
        f"bits/pixel, KL {float(aux['kl'].mean()):5.1f}, learned scale {scale:.3f}")

# %% [markdown]
# The Laplace likelihood gives the higher ELBO (in the full run 6.18 against 6.76 bits per pixel,
# both learning a scale: b = 0.046, sigma = 0.091). Below, reconstructions (the decoder at the
# posterior mean): the Gaussian model's mean and the Laplace model's location, a median, which
# keeps strokes a little sharper.

# %%
def reconstruct(model, params, images):
  return jax.vmap(lambda x: model.apply({"params": params}, x, method=model.reconstruct))(images)


n_show = 12
x_binary = jnp.asarray(val_images[:n_show], jnp.float32)
rows = {"binarized MNIST": x_binary}
rows.update({name: reconstruct(model, s.params, x_binary) for name, s in states.items()})
rows["grey MNIST"] = x_grey[:n_show]
rows.update({name: reconstruct(grey_model, s.params, x_grey[:n_show]) for name, s in grey_states.items()})

fig, axes = plt.subplots(len(rows), 1, figsize=(8, 0.75 * len(rows)))
for ax, (label, images) in zip(axes, rows.items()):
  ax.imshow(plotting.tile(np.asarray(images), ncols=n_show)[..., 0], cmap="gray", vmin=0, vmax=1)
  ax.set_xticks([]), ax.set_yticks([])
  ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
fig.suptitle("validation images and reconstructions (decoder at the posterior mean)", fontsize=10)
fig.tight_layout()
fig.savefig(FIGURES / "02_reconstructions.png", dpi=110)
plt.show()
