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
# # 01 · The ELBO from scratch
#
# A latent-variable model, why its likelihood is intractable, the evidence lower bound (ELBO) and
# the identity that says how loose it is, the closed-form Gaussian KL against Monte Carlo, and the
# reparameterization trick against the score-function gradient estimator.
#
# Every claim is checked numerically on a model whose log-likelihood is exact: the linear-Gaussian
# model (probabilistic PCA) of `vae_jax.linear_gaussian`. Nothing here redefines library code: the
# densities come from `vae_jax.distributions`, the bounds from `vae_jax.losses`.
#
# Runs in about 15 seconds on a 2-core CPU. `FULL_RUN = True` draws 16 times more Monte Carlo samples
# (smoother histograms; about a minute).

# %%
FULL_RUN = False

import os
from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

from vae_jax import distributions as dist
from vae_jax import linear_gaussian as lgm
from vae_jax import losses

NUM_DRAWS = 2**18 if FULL_RUN else 2**14  # single-sample gradient estimates per estimator
FIGURES = Path(os.environ.get("VAE_JAX_FIGURES", "figures"))  # PNGs the README links to
FIGURES.mkdir(parents=True, exist_ok=True)

model_key, data_key, prior_key, kl_key, grad_key, loss_key = jax.random.split(jax.random.key(0), 6)

# %% [markdown]
# ## 1. A latent-variable model
#
# A prior $p(z) = \mathcal N(0, I_d)$ and a decoder $p_\theta(x \mid z)$ define
#
# $$p_\theta(x) = \int p_\theta(x \mid z)\, p(z)\, dz .$$
#
# When the decoder is a neural network this integral has no closed form, and neither has the
# posterior $p_\theta(z \mid x) = p_\theta(x, z) / p_\theta(x)$. The obvious Monte Carlo estimate,
# averaging $p_\theta(x \mid z_k)$ over draws from the prior, is useless in high dimension: almost
# no $z$ drawn from the prior explains a given $x$.
#
# Our running example has a *linear* decoder, $p(x \mid z) = \mathcal N(Wz + b, \sigma^2 I_D)$, so
# that $p(x) = \mathcal N(b, WW^\top + \sigma^2 I)$ and the posterior are exact and every estimate
# below can be compared with the truth.

# %%
lg = lgm.orthogonal(model_key, 16, np.linspace(3.0, 1.0, 8), sigma=0.25)
x = lgm.sample(lg, data_key, 1)[0]
log_px = float(lgm.log_marginal(lg, x))
print(f"exact log p(x) = {log_px:.3f} nats (D = {lg.w.shape[0]}, d = {lg.w.shape[1]})")

# Naive estimate: log (1/K) sum_k p(x | z_k), z_k ~ p(z). `losses.iwae_bound` is this log-mean-exp.
z_prior = jax.random.normal(prior_key, (10**5, lg.w.shape[1]))
log_px_given_z = lgm.log_joint(lg, x, z_prior) - dist.standard_normal_log_prob(z_prior)
for k in (10, 1_000, 100_000):
  print(f"  prior sampling, K = {k:>7,}: {float(losses.iwae_bound(log_px_given_z[:k])):9.3f}")

# %% [markdown]
# Even with $10^5$ prior samples the estimate is several nats below the truth, with only 8 latent
# dimensions (it is a stochastic lower bound, by Jensen's inequality, dominated by rare lucky draws;
# the posterior occupies a tiny fraction of the prior's volume, which shrinks exponentially with $d$).
#
# ## 2. The evidence lower bound
#
# Sample from a distribution $q(z)$ that puts its mass where the posterior is, and reweight:
#
# $$\log p(x) = \log \mathbb E_{q}\Big[\frac{p(x, z)}{q(z)}\Big]
#   \;\ge\; \mathbb E_{q}\big[\log p(x, z) - \log q(z)\big] =: \mathrm{ELBO}(q)
#   = \mathbb E_q[\log p(x \mid z)] - \mathrm{KL}(q \,\|\, p(z)).$$
#
# The inequality is Jensen's. Its gap is exact: writing $p(x, z) = p(x)\, p(z \mid x)$ inside the
# expectation,
#
# $$\log p(x) - \mathrm{ELBO}(q) = \mathbb E_q\big[\log q(z) - \log p(z \mid x)\big]
#   = \mathrm{KL}\big(q \,\|\, p(z \mid x)\big) \;\ge\; 0,$$
#
# so maximising the ELBO over $q$ is the same as fitting $q$ to the posterior, and the bound is
# tight exactly at $q = p(z \mid x)$. A VAE amortises $q$: an encoder maps each $x$ to $q(z \mid x)$.
#
# Check: for diagonal Gaussians $q$ around the exact posterior, the exact ELBO of
# `linear_gaussian.elbo` plus the closed-form $\mathrm{KL}(q \,\|\, p(z \mid x))$ gives back
# $\log p(x)$.

# %%
post_mean, post_cov = lgm.posterior(lg, x)
post_logvar = jnp.log(jnp.diag(post_cov))  # W has orthogonal columns: the posterior is diagonal
post_std = jnp.exp(0.5 * post_logvar)


def kl_diagonal(m1, lv1, m2, lv2):
  """KL(N(m1, e^lv1) || N(m2, e^lv2)) for diagonal Gaussians, summed over dimensions."""
  return 0.5 * jnp.sum(lv2 - lv1 + (jnp.exp(lv1) + (m1 - m2) ** 2) / jnp.exp(lv2) - 1.0)


print(f"{'shift of q (mean / std, logvar)':>31} {'ELBO':>9} {'KL(q||post)':>12} {'sum':>9}",
      f" log p(x) = {log_px:.4f}")
for dm, dlv in ((0.0, 0.0), (0.3, 0.0), (0.0, 1.0), (-0.5, -1.0), (1.0, 0.5)):
  q_mean, q_logvar = post_mean + dm * post_std, post_logvar + dlv
  bound = float(lgm.elbo(lg, x, q_mean, q_logvar))
  gap = float(kl_diagonal(q_mean, q_logvar, post_mean, post_logvar))
  print(f"{f'({dm:+.1f}, {dlv:+.1f})':>31} {bound:9.4f} {gap:12.4f} {bound + gap:9.4f}")
  assert abs(bound + gap - log_px) < 1e-3 and bound <= log_px + 1e-4

# %% [markdown]
# The same picture as a curve: slide the mean of $q$ along every latent axis at once, in units of
# the posterior's standard deviations (and widen it).
# The ELBO touches $\log p(x)$ only at the posterior; the distance is the KL to the posterior.

# %%
shifts = jnp.linspace(-1.5, 1.5, 121)
fig, ax = plt.subplots(figsize=(6, 3.6))
ax.axhline(log_px, color="k", lw=1.5, label=r"$\log p(x)$ (exact)")
for dlv, style in ((0.0, "-"), (1.0, "--")):
  curve = jax.vmap(lambda s: lgm.elbo(lg, x, post_mean + s * post_std, post_logvar + dlv))(shifts)
  ax.plot(shifts, curve, style, color="C0", label=rf"ELBO, $\log\sigma_q^2$ = posterior + {dlv:g}")
ax.set_xlabel("shift of the mean of q, in posterior standard deviations")
ax.set_ylabel("nats")
ax.set_ylim(log_px - 12, log_px + 1)
ax.legend(loc="lower center", fontsize=8)
ax.set_title(r"$\log p(x) = \mathrm{ELBO}(q) + \mathrm{KL}(q\,\|\,p(z|x))$")
fig.tight_layout()
fig.savefig(FIGURES / "01_elbo_gap.png", dpi=110)
plt.show()

# %% [markdown]
# ## 3. The Gaussian KL: closed form against Monte Carlo
#
# For $q = \mathcal N(\mu, \mathrm{diag}\,\sigma^2)$ and $p(z) = \mathcal N(0, I)$,
# $\mathrm{KL}(q \,\|\, p) = \tfrac12 \sum_j (\mu_j^2 + \sigma_j^2 - 1 - \log \sigma_j^2)$
# (`distributions.kl_gaussian_standard_normal`). The Monte Carlo estimate
# $\frac1N \sum_n \log q(z_n) - \log p(z_n)$ agrees within its standard error, which shrinks as
# $1/\sqrt N$; the closed form has no noise at all, which is why the library uses it when it can.

# %%
q_mean, q_logvar = post_mean + 0.4, post_logvar + 0.5
kl_exact = float(dist.kl_gaussian_standard_normal(q_mean, q_logvar))
z = dist.gaussian_sample(kl_key, q_mean, q_logvar, (10**5,))
log_ratio = np.asarray(dist.gaussian_log_prob(z, q_mean, q_logvar) - dist.standard_normal_log_prob(z))
print(f"closed form: {kl_exact:.4f} nats")
for n in (10, 100, 1_000, 10_000, 100_000):
  est, se = log_ratio[:n].mean(), log_ratio[:n].std(ddof=1) / np.sqrt(n)
  print(f"  N = {n:>7,}: {est:8.4f} +- {se:.4f}   (error = {abs(est - kl_exact) / se:.1f} standard errors)")
assert abs(log_ratio.mean() - kl_exact) < 4 * log_ratio.std() / np.sqrt(log_ratio.size)

# %% [markdown]
# ## 4. Gradients: the reparameterization trick against the score function
#
# Training needs $\nabla_\phi \mathrm{ELBO}(q_\phi)$ with $\phi = (\mu, \log\sigma^2)$, the gradient
# of an expectation under a distribution that itself depends on $\phi$. Two unbiased estimators:
#
# * **Score function** (REINFORCE): $\nabla_\phi \mathbb E_{q_\phi}[f_\phi(z)] =
#   \mathbb E_{q_\phi}\big[f_\phi(z)\, \nabla_\phi \log q_\phi(z)\big]$ for
#   $f_\phi = \log p(x, z) - \log q_\phi(z)$ (the term $\mathbb E[\nabla_\phi f_\phi]$ is
#   $-\mathbb E[\nabla_\phi \log q_\phi] = 0$). It needs only evaluations of $f$.
# * **Reparameterization**: write $z = \mu + \sigma \odot \varepsilon$ with
#   $\varepsilon \sim \mathcal N(0, I)$ independent of $\phi$, so that
#   $\nabla_\phi \mathbb E_\varepsilon[f_\phi(z(\varepsilon))] =
#   \mathbb E_\varepsilon[\nabla_\phi f_\phi(z(\varepsilon))]$: the gradient flows through the
#   sample (`distributions.gaussian_sample`) into $\log p(x, z)$.
#
# The exact gradient comes from differentiating the closed-form ELBO. We draw many single-sample
# estimates of each kind at the same $q$ and compare their means (both unbiased) and spreads.
# A constant baseline $c$, $(f - c)\nabla\log q$, is the simplest variance reduction for the score
# function; we give it the best constant there is, the true ELBO.

# %%
phi = dict(mean=post_mean + 0.5 * post_std, logvar=post_logvar + 0.5)  # a q that is not the posterior
true_grad = jax.grad(lambda p: lgm.elbo(lg, x, p["mean"], p["logvar"]))(phi)
elbo_value = lgm.elbo(lg, x, phi["mean"], phi["logvar"])


def log_w(p, z):
  """f_phi(z) = log p(x, z) - log q_phi(z)."""
  return lgm.log_joint(lg, x, z) - dist.gaussian_log_prob(z, p["mean"], p["logvar"])


def reparam_grad(key):
  return jax.grad(lambda p: log_w(p, dist.gaussian_sample(key, p["mean"], p["logvar"])))(phi)


def score_grad(key, baseline=0.0):
  z = dist.gaussian_sample(key, phi["mean"], phi["logvar"])  # no gradient through the sample
  score = jax.grad(lambda p: dist.gaussian_log_prob(z, p["mean"], p["logvar"]))(phi)
  return jax.tree.map(lambda s: (log_w(phi, z) - baseline) * s, score)


def flat(g):  # dict of [d] arrays -> [..., 2d]: (d mean, d logvar)
  return jnp.concatenate([g["mean"], g["logvar"]], axis=-1)


keys = jax.random.split(grad_key, NUM_DRAWS)
estimates = {
    "reparameterization": flat(jax.jit(jax.vmap(reparam_grad))(keys)),
    "score function": flat(jax.jit(jax.vmap(score_grad))(keys)),
    "score function, baseline": flat(jax.jit(jax.vmap(lambda k: score_grad(k, elbo_value)))(keys)),
}
truth = np.asarray(flat(true_grad))
print("exact gradient (d mean, d logvar):", np.round(truth, 3))
for name, g in estimates.items():
  g = np.asarray(g, np.float64)
  mean, se = g.mean(0), g.std(0, ddof=1) / np.sqrt(len(g))
  print(f"{name:>25}: mean error / s.e. max {np.max(np.abs(mean - truth) / se):.1f}, "
        f"total variance {g.var(0).sum():10.2f}")
  assert np.all(np.abs(mean - truth) < 5 * se), name  # unbiased
variance = {name: float(np.asarray(g).var(0).sum()) for name, g in estimates.items()}
print("variance / reparameterization variance:",
      {name: round(v / variance["reparameterization"], 1) for name, v in variance.items()})
assert variance["reparameterization"] < variance["score function, baseline"] < variance["score function"]

# %% [markdown]
# Both estimators are unbiased. On this problem the plain score function's variance is about a
# hundred times that of the reparameterization estimator; the baseline removes most of the
# difference but not all of it (and the best constant needed the answer). The score function only
# sees $f$ through its value, the reparameterization estimator through its gradient in $z$.
# Averaging $L$ single-sample estimates divides the variance by $L$; the root-mean-square error
# against the exact gradient shows what each estimator costs for a given accuracy.

# %%
fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(11, 3.8))
lo, hi = np.percentile(np.asarray(estimates["score function"][:, 0]), [1, 99])
bins = np.linspace(lo, hi, 80)
for name, g in estimates.items():
  ax0.hist(np.asarray(g[:, 0]), bins=bins, histtype="step", density=True, label=name)
ax0.axvline(truth[0], color="k", lw=1, label="exact")
ax0.set_xlabel(r"single-sample estimate of $\partial\,\mathrm{ELBO} / \partial \mu_1$")
ax0.set_ylabel("density")
ax0.set_yscale("log")
ax0.legend(fontsize=8, loc="upper left")
sizes = [1, 4, 16, 64, 256, 1024]
for name, g in estimates.items():
  g = np.asarray(g, np.float64)
  rms = [np.sqrt(np.mean(np.sum((g[: len(g) // s * s].reshape(-1, s, g.shape[1]).mean(1) - truth) ** 2, -1)))
         for s in sizes]
  ax1.loglog(sizes, rms, "o-", label=name)
ax1.set_xlabel("samples L averaged per gradient")
ax1.set_ylabel("RMS error of the gradient (all 2d coordinates)")
ax1.legend(fontsize=8)
fig.suptitle("Gradient of the ELBO: reparameterization against score function (same q, same x)")
fig.tight_layout()
fig.savefig(FIGURES / "01_gradient_variance.png", dpi=110)
plt.show()

# %% [markdown]
# ## 5. The same quantities in the library
#
# `vae_jax.linear_gaussian.vae` builds the library's `VAE` for this model (linear layers, a
# fixed-$\sigma$ Gaussian likelihood) and `vae_params` sets its encoder to the posterior, shifted
# here as above. The library's per-example losses are the negative ELBO and IWAE bound: averaged
# over keys, `losses.elbo_loss` gives back the exact ELBO, and its gradient with respect to the
# encoder is the reparameterization estimator of section 4.

# %%
model = lgm.vae(lg)
params = lgm.vae_params(lg, mean_shift=0.5 * post_std, logvar_shift=0.5)
x_image = x.reshape(model.image_shape)
loss_keys = jax.random.split(loss_key, 4096)
loss, aux = jax.jit(jax.vmap(lambda k: losses.elbo_loss(model, params, x_image, k)))(loss_keys)
print(f"exact ELBO             {float(elbo_value):.3f}")
standard_error = float(loss.std() / np.sqrt(len(loss)))
print(f"-elbo_loss, mean of {len(loss_keys)}  {float(-loss.mean()):.3f} +- {standard_error:.3f}")
assert abs(float(-loss.mean() - elbo_value)) < 5 * standard_error
iwae_keys = loss_keys[:256]
iwae = jax.jit(jax.vmap(lambda k: losses.iwae_loss(model, params, x_image, k, num_samples=64)[0]))(iwae_keys)
print(f"-iwae_loss, K = 64      {float(-iwae.mean()):.3f}   (between the ELBO and log p(x) = {log_px:.3f})")
assert float(elbo_value) < float(-iwae.mean()) < log_px + 0.05
