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
# # 03 · Importance sampling: estimating log p(x) with the encoder as proposal
#
# The ELBO is a bound; the number we report for a VAE is the log-likelihood itself, estimated by
# importance sampling with the encoder $q(z \mid x)$ as the proposal. This notebook derives the
# estimator, shows its bias and spread as the number of samples $K$ grows on real test images
# (these are the IWAE bounds of Burda et al. 2016), and measures its gap to the exact
# log-likelihood on the linear-Gaussian model, where the truth is known.
#
# Small default settings (a VAE trained for a few epochs on a 10,000-image subset, 100 test images,
# $K \le 1000$: well under a minute on a 2-core CPU); `FULL_RUN = True` trains on the whole training
# split for 30 epochs and uses 1,000 test images with $K \le 5000$ (about 4 minutes of CPU time;
# 13 minutes on a busy 2-core machine).

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
from vae_jax import evaluation as evaluate
from vae_jax import linear_gaussian as lgm
from vae_jax import losses
from vae_jax import train

NUM_TRAIN = None if FULL_RUN else 10_000  # None: the whole training split
EPOCHS = 30 if FULL_RUN else 8
NUM_TEST = 1_000 if FULL_RUN else 100
K_MAX = 5_000 if FULL_RUN else 1_000  # importance samples per test image
FIGURES = Path(os.environ.get("VAE_JAX_FIGURES", "figures"))  # PNGs the README links to
FIGURES.mkdir(parents=True, exist_ok=True)
WORKDIR = Path(os.environ.get("VAE_JAX_WORKDIR") or tempfile.mkdtemp(prefix="vae_jax_03_"))

sample_key, eval_key, lg_key, lg_data_key, lg_sample_key = jax.random.split(jax.random.key(0), 5)

# %% [markdown]
# ## 1. The estimator
#
# For any proposal $q(z \mid x)$ that covers the posterior,
#
# $$p(x) = \mathbb E_{q}\big[w(z)\big], \qquad w(z) = \frac{p(x, z)}{q(z \mid x)}
#   = \frac{p(x \mid z)\, p(z)}{q(z \mid x)},$$
#
# so $\hat p_K = \frac1K \sum_{k=1}^K w(z_k)$ with $z_k \sim q(z \mid x)$ is an unbiased estimate of
# $p(x)$. Its logarithm is what we can average in log space,
#
# $$\mathcal L_K = \log \frac1K \sum_{k=1}^K w(z_k) \quad(\texttt{losses.iwae\_bound}),$$
#
# and by Jensen's inequality it is biased low: $\mathbb E[\mathcal L_K] \le \log p(x)$.
# $\mathcal L_1$ is the ELBO; $\mathbb E[\mathcal L_K]$ never decreases with $K$ (Burda et al.
# 2016, Theorem 1) and tends to $\log p(x)$ when the weights are bounded. A second-order expansion
# of the logarithm around $p(x)$ gives the size of the gap for large $K$:
#
# $$\log p(x) - \mathbb E[\mathcal L_K] \approx \frac{\mathrm{Var}_q[w]}{2K\, p(x)^2},$$
#
# small when $q$ is close to the posterior (the weights then vary little), and zero when $q$ is the
# posterior (every weight equals $p(x)$).
#
# ## 2. On real test images
#
# A VAE with the default architecture (2 x 200 tanh units, 50 latent units, Bernoulli likelihood),
# trained by the library on static binarized MNIST.

# %%
config = default.get_config()
config.num_epochs = config.eval_every_epochs = config.checkpoint_every_epochs = EPOCHS
config.progress = False
splits = {s: data.load_split(config.data, s) for s in ("train", "validation", "test")}
datasets = {"train": data.Split(splits["train"].images[:NUM_TRAIN], None),
            "validation": data.Split(splits["validation"].images[:1_000], None)}
state, last = train.train_and_evaluate(config, WORKDIR / "vae", datasets=datasets)
model = config_lib.make_model(config)
print(f"after {EPOCHS} epochs: validation ELBO {last['val_elbo']:.2f}, "
      f"IWAE (K = {config.eval_num_samples}) {-last['val_nll']:.2f} nats")

# %% [markdown]
# The model returns the three log-densities of each sample, so the log-weights of $K$ samples are
# one call. We draw `K_MAX` samples per test image once and cut them into disjoint groups of $K$:
# each group gives one independent $\mathcal L_K$, so for every $K$ we see both the average bound
# and the spread of a single estimate.

# %%
test_images = jnp.asarray(splits["test"].images[:NUM_TEST], jnp.float32)


@jax.jit
def log_weights(params, x, key):
  """log w = log p(x|z) + log p(z) - log q(z|x) for K_MAX draws z ~ q(z|x), per image: [N, K_MAX]."""
  def one(x, key):
    t = model.apply({"params": params}, x, key, K_MAX)
    return t["log_px_z"] + t["log_pz"] - t["log_qz"]
  return jax.vmap(one)(x, jax.random.split(key, x.shape[0]))


@functools.partial(jax.jit, static_argnames="ks")
def bounds_by_k(log_w, ks):
  """For each K in ks: L_K of every disjoint group of K log-weights, [N, K_MAX // K]."""
  n, total = log_w.shape
  return [losses.iwae_bound(log_w[:, : total // k * k].reshape(n, total // k, k)) for k in ks]


chunk = 10  # images per call: memory is chunk * K_MAX decoder outputs
log_w = np.concatenate([
    np.asarray(log_weights(state.params, test_images[i:i + chunk], jax.random.fold_in(sample_key, i)))
    for i in range(0, NUM_TEST, chunk)])  # [NUM_TEST, K_MAX]

ks = [k for k in (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000) if k <= K_MAX]
bound_mean, bound_std = [], []
for l_k in bounds_by_k(jnp.asarray(log_w), tuple(ks)):
  l_k = np.asarray(l_k)  # [NUM_TEST, K_MAX // K]
  bound_mean.append(l_k.mean())  # E[L_K], averaged over images
  # The spread of one estimate: the standard deviation across groups, pooled over images.
  bound_std.append(np.sqrt(l_k.var(axis=1, ddof=1).mean()) if l_k.shape[1] > 1 else np.nan)
for k, m, s in zip(ks, bound_mean, bound_std):
  print(f"K = {k:5d}: E[L_K] = {m:8.3f} nats, spread of one estimate {s:.3f}")
assert np.all(np.diff(bound_mean) > -0.05), bound_mean  # non-decreasing in K, up to noise

# %% [markdown]
# `evaluate.evaluate` computes the same estimate in chunks with its own keys (it is what
# `vae_jax.commands.evaluate` reports as `nll`), and the ELBO with the KL in closed form. The largest-$K$
# bound above and its `nll` agree up to Monte Carlo noise.

# %%
metrics = evaluate.evaluate(model, state.params, np.asarray(splits["test"].images[:NUM_TEST]), key=eval_key,
                            mode="static", num_samples=K_MAX)
print(f"evaluate: ELBO {metrics['elbo']:.3f}, log p(x) estimate (K = {K_MAX}) {-metrics['nll']:.3f}, "
      f"{metrics['bits_per_dim']:.4f} bits/dim")
print(f"gain of K = {K_MAX} over the ELBO: {-metrics['nll'] - metrics['elbo']:.2f} nats per image")
assert abs(-metrics["nll"] - bound_mean[-1]) < 0.5
assert metrics["elbo"] < -metrics["nll"]

# %% [markdown]
# ## 3. The gap to the exact log-likelihood (linear-Gaussian model)
#
# On MNIST we never see $\log p(x)$. On the linear-Gaussian model of `vae_jax.linear_gaussian` we do,
# and the library's `VAE` can hold it exactly (linear layers, fixed-$\sigma$ Gaussian likelihood).
# We set its encoder to the exact posterior moved by $\delta$ posterior standard deviations in every
# latent dimension (and widened by $e^{0.5}$ in variance), draw many samples per data point, and
# compare $\mathbb E[\mathcal L_K]$ with the exact $\log p(x)$. The dotted lines are the asymptotic
# gap $\mathrm{Var}[w] / (2K p(x)^2)$ with the ratio $\mathrm{Var}[w]/p(x)^2 = \mathbb E[w^2]/p(x)^2
# - 1$ estimated from the same weights.

# %%
lg = lgm.orthogonal(lg_key, 16, np.linspace(3.0, 1.0, 8), sigma=0.25)
lg_model = lgm.vae(lg)
x_lg = lgm.sample(lg, lg_data_key, 10)
log_px = np.asarray(lgm.log_marginal(lg, x_lg), np.float64)  # exact, [10]
post_std = jnp.sqrt(jnp.diag(lgm.posterior(lg, x_lg)[1]))
num_draws = 2**20 if FULL_RUN else 2**17  # samples per data point, cut into groups of K


@jax.jit
def lg_log_weights(params, key):
  def one(x, key):
    t = lg_model.apply({"params": params}, x.reshape(lg_model.image_shape), key, num_draws)
    return t["log_px_z"] + t["log_pz"] - t["log_qz"]
  return jax.vmap(one)(x_lg, jax.random.split(key, x_lg.shape[0]))


exact_q = lgm.vae_params(lg)
lw_exact = np.asarray(lg_log_weights(exact_q, lg_sample_key)[:, :100])
print("exact posterior: max |log w - log p(x)| =", float(np.abs(lw_exact - log_px[:, None]).max()))
assert np.abs(lw_exact - log_px[:, None]).max() < 1e-3  # every weight is p(x): every L_K is exact

lg_ks = [k for k in (1, 3, 10, 30, 100, 300, 1000, 3000, 10000) if k <= num_draws // 128]
gaps = {}
for delta in (0.5, 1.0):
  params = lgm.vae_params(lg, mean_shift=delta * post_std, logvar_shift=0.5)
  lw = np.asarray(lg_log_weights(params, jax.random.fold_in(lg_sample_key, int(10 * delta))), np.float64)
  rel = lw - log_px[:, None]  # log (w / p(x))
  var_ratio = np.mean(np.exp(2 * rel)) - 1.0  # Var[w] / p(x)^2, pooled over data points
  rows = []
  for k, l_k in zip(lg_ks, bounds_by_k(jnp.asarray(rel, jnp.float32), tuple(lg_ks))):
    l_k = np.asarray(l_k, np.float64)
    gap = -l_k.mean()
    se = l_k.std() / np.sqrt(l_k.size)
    rows.append((k, gap, se))
  gaps[delta] = (np.array(rows), var_ratio)
  print(f"delta = {delta}: KL(q || posterior) = gap at K = 1 = {rows[0][1]:.3f} nats, "
        f"Var[w]/p(x)^2 = {var_ratio:.1f}")
  for k, gap, se in rows:
    print(f"   K = {k:5d}: log p(x) - E[L_K] = {gap:.4f} +- {se:.4f}   (asymptote {var_ratio / (2 * k):.4f})")
  gap_values = np.array(rows)[:, 1]
  assert np.all(gap_values > -3 * np.array(rows)[:, 2]) and np.all(np.diff(gap_values) < 0.01)

# %% [markdown]
# The bound closes like $1/K$ once $K$ is well above $\mathrm{Var}[w]/p(x)^2$; before that, the
# gap shrinks more slowly than the asymptote promises. A poorer proposal (larger $\delta$) has a much
# larger weight variance and needs many more samples for the same gap. On the MNIST model the
# spread of one estimate also shrinks far more slowly than $1/\sqrt K$: its weights are
# heavy-tailed, and a few samples dominate each sum. Hence the thousands of samples behind reported
# likelihoods (K = 5000 in `vae_jax.commands.evaluate`), and the value of a better encoder: it buys a
# tighter estimate for the same $K$.

# %%
fig, axes = plt.subplots(1, 3, figsize=(15, 4))
ax = axes[0]
ax.semilogx(ks, bound_mean, "o-", label=r"$\mathbb{E}[\mathcal{L}_K]$ (mean over test images)")
band = np.array(bound_std)  # NaN at K = K_MAX (one group per image): no band there
ax.fill_between(ks, np.array(bound_mean) - band, np.array(bound_mean) + band, alpha=0.25,
                label="$\\pm$ spread of one estimate (per image)")
ax.axhline(metrics["elbo"], color="C3", ls="--", lw=1, label="ELBO (closed-form KL)")
ax.set_xlabel("K (importance samples)")
ax.set_ylabel("nats per image")
ax.set_title(f"IWAE bound on {NUM_TEST} binarized MNIST test images")
ax.legend(fontsize=8)
ax = axes[1]
ax.loglog(ks[:-1], bound_std[:-1], "o-", label="spread (std) of $\\mathcal{L}_K$ per image")
ax.loglog(ks[:-1], bound_std[0] / np.sqrt(np.array(ks[:-1])), "k:", label=r"$\propto 1/\sqrt{K}$")
ax.set_xlabel("K")
ax.set_ylabel("nats")
ax.set_title("spread of one estimate")
ax.legend(fontsize=8)
ax = axes[2]
for i, (delta, (rows, var_ratio)) in enumerate(gaps.items()):
  k, gap, se = rows.T
  shown = gap > 2 * se
  ax.errorbar(k[shown], gap[shown], yerr=se[shown], fmt="o-", color=f"C{i}",
              label=rf"$\delta$ = {delta}: $\log p(x) - \mathbb{{E}}[\mathcal{{L}}_K]$")
  ax.loglog(k, var_ratio / (2 * k), ":", color=f"C{i}", label=rf"$\delta$ = {delta}: Var$[w]/(2Kp^2)$")
ax.set_xscale("log"), ax.set_yscale("log")
ax.set_ylim(1e-4, None)
ax.set_xlabel("K")
ax.set_ylabel("nats")
ax.set_title("linear-Gaussian model: gap to the exact log p(x)")
ax.legend(fontsize=7)
fig.tight_layout()
fig.savefig(FIGURES / "03_iwae_bounds.png", dpi=110)
plt.show()
