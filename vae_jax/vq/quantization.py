"""Vector quantization (van den Oord, Vinyals & Kavukcuoglu 2017): pure functions and a thin module.

Shapes: encoder outputs ``z`` [..., D] with any leading axes (grid positions,
batch), a codebook [K, D], code indices [...] (int32). Nothing here creates a
PRNG key; the dead-code restart takes one.

* ``nearest_code``: argmin_k ||z - e_k||^2 through ||z||^2 - 2 z.e_k + ||e_k||^2,
  one [N, D] x [D, K] matmul (no [N, K, D] tensor); ties go to the lowest index.
* ``straight_through``: z + sg(z_q - z), the quantized value forward, the
  identity backward.
* ``codebook_loss`` ||sg(z) - e||^2 moves the codes, ``commitment_loss``
  ||z - sg(e)||^2 (times beta in the objective) moves the encoder.
* EMA codebook (the paper's App. A.1): N_k <- g N_k + (1 - g) n_k,
  m_k <- g m_k + (1 - g) sum_{i: k_i = k} z_i, e_k = m_k / N~_k with
  Laplace-smoothed counts N~_k = (N_k + eps) / (N + K eps) N, N = sum_k N_k.
* ``restart_dead_codes``: codes whose usage EMA N_k fell below a threshold
  are moved onto encoder outputs of the current batch, chosen by a key.
"""

from __future__ import annotations

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
from jax.scipy.special import xlogy


def check_codebook_size(num_codes: int) -> None:
  if isinstance(num_codes, bool) or not isinstance(num_codes, int) or num_codes < 2:
    raise ValueError(f"codebook size num_codes={num_codes!r} is invalid: a vector quantizer needs "
                     "an integer number of codes >= 2")


def squared_distances(z: jax.Array, codebook: jax.Array) -> jax.Array:
  """||z - e_k||^2 for every code: [..., D], [K, D] -> [..., K], by one matmul."""
  cross = jnp.matmul(z, codebook.T, precision=jax.lax.Precision.HIGHEST)
  return (jnp.sum(jnp.square(z), axis=-1, keepdims=True) - 2.0 * cross
          + jnp.sum(jnp.square(codebook), axis=-1))


def nearest_code(z: jax.Array, codebook: jax.Array) -> jax.Array:
  """Index of the nearest code of every vector: [..., D], [K, D] -> int32 [...] (ties: lowest index)."""
  if z.shape[-1] != codebook.shape[-1]:
    raise ValueError(f"vectors of dimension {z.shape[-1]} cannot be matched to codes of dimension "
                     f"{codebook.shape[-1]} (z {z.shape}, codebook {codebook.shape})")
  return jnp.argmin(squared_distances(z, codebook), axis=-1).astype(jnp.int32)


def lookup(indices: jax.Array, codebook: jax.Array) -> jax.Array:
  """The codes of ``indices``: int [...], [K, D] -> [..., D] (differentiable in the codebook)."""
  return jnp.take(codebook, indices, axis=0)


def straight_through(z: jax.Array, z_q: jax.Array) -> jax.Array:
  """z + sg(z_q - z): equals z_q, with d/dz the identity and no gradient to z_q."""
  return z + jax.lax.stop_gradient(z_q - z)


def codebook_loss(z: jax.Array, z_q: jax.Array) -> jax.Array:
  """||sg(z) - z_q||^2 per vector ([..., D] -> [...]): gradients reach the codes only."""
  return jnp.sum(jnp.square(jax.lax.stop_gradient(z) - z_q), axis=-1)


def commitment_loss(z: jax.Array, z_q: jax.Array) -> jax.Array:
  """||z - sg(z_q)||^2 per vector ([..., D] -> [...]): gradients reach the encoder only."""
  return jnp.sum(jnp.square(z - jax.lax.stop_gradient(z_q)), axis=-1)


def quantize(z: jax.Array, codebook: jax.Array) -> dict:
  """Nearest codes of ``z`` [..., D] with the straight-through output and both loss terms.

  Returns:
    dict with ``z_q`` (straight-through output, [..., D]), ``indices`` (int32
    [...]), ``codebook_loss`` and ``commitment_loss`` (per vector, [...]).
  """
  indices = nearest_code(z, codebook)
  z_q = lookup(indices, codebook)
  return dict(z_q=straight_through(z, z_q), indices=indices,
              codebook_loss=codebook_loss(z, z_q), commitment_loss=commitment_loss(z, z_q))


def code_counts(indices: jax.Array, num_codes: int) -> jax.Array:
  """How many times each code is used in ``indices`` (any shape) -> float32 [K]."""
  return jnp.zeros((num_codes,), jnp.float32).at[indices.reshape(-1)].add(1.0)


def perplexity(counts: jax.Array) -> jax.Array:
  """exp(entropy) of the code frequencies ``counts`` [K]: 1 (one code) to K (uniform use)."""
  p = counts / jnp.maximum(jnp.sum(counts), 1.0)
  return jnp.exp(-jnp.sum(xlogy(p, p)))


def usage_metrics(counts: jax.Array) -> dict:
  """perplexity, codes_used (fraction of the K codes used at least once) from counts [K]."""
  return dict(perplexity=perplexity(counts), codes_used=jnp.mean((counts > 0).astype(jnp.float32)))


class CodebookStats(flax.struct.PyTreeNode):
  """Running statistics of a codebook, kept in the train state.

  count: [K] EMA of the number of vectors assigned to each code per step (N_k);
    the usage signal for dead-code restarts, with or without the EMA codebook.
  embed_sum: [K, D] EMA of the sum of the vectors assigned to each code (m_k);
    read only by the EMA codebook.
  """
  count: jax.Array
  embed_sum: jax.Array


def init_stats(codebook: jax.Array) -> CodebookStats:
  """One pseudo-observation per code at its initial value: N_k = 1, m_k = e_k (so e_k = m_k / N_k)."""
  return CodebookStats(count=jnp.ones(codebook.shape[:1], jnp.float32),
                       embed_sum=jnp.array(codebook, jnp.float32, copy=True))


def update_usage(stats: CodebookStats, counts: jax.Array, *, decay: float) -> CodebookStats:
  """N_k <- decay N_k + (1 - decay) n_k only (the codebook learned by gradients)."""
  return stats.replace(count=decay * stats.count + (1.0 - decay) * counts)


def ema_update(stats: CodebookStats, z: jax.Array, indices: jax.Array, *, decay: float,
               eps: float = 1e-5) -> tuple[CodebookStats, jax.Array]:
  """One EMA codebook step from a batch of vectors and their nearest codes.

  Args:
    stats: the running N_k [K] and m_k [K, D].
    z: encoder outputs [..., D]; indices: their codes [...].
    decay: gamma (0.99 in the paper).
    eps: Laplace smoothing of the counts, so no code divides by zero.

  Returns:
    (new stats, new codebook [K, D]) with e_k = m_k / N~_k,
    N~_k = (N_k + eps) / (sum N + K eps) * sum N.
  """
  num_codes, dim = stats.embed_sum.shape
  flat_z = z.reshape(-1, dim).astype(jnp.float32)
  onehot = jax.nn.one_hot(indices.reshape(-1), num_codes, dtype=jnp.float32)
  counts = jnp.sum(onehot, axis=0)
  sums = jnp.matmul(onehot.T, flat_z, precision=jax.lax.Precision.HIGHEST)
  count = decay * stats.count + (1.0 - decay) * counts
  embed_sum = decay * stats.embed_sum + (1.0 - decay) * sums
  total = jnp.sum(count)
  smoothed = (count + eps) / (total + num_codes * eps) * total
  return CodebookStats(count=count, embed_sum=embed_sum), embed_sum / smoothed[:, None]


def restart_dead_codes(key: jax.Array, codebook: jax.Array, stats: CodebookStats, z: jax.Array,
                       *, threshold: float) -> tuple[jax.Array, CodebookStats, jax.Array]:
  """Moves every code with usage N_k < threshold onto an encoder output of this batch.

  Each dead code gets a different vector of ``z`` [..., D] (drawn without
  replacement when the batch holds at least K vectors), and its statistics
  restart at one observation of it (N_k = 1, m_k = z). Live codes and their
  statistics are returned unchanged.

  Returns:
    (codebook [K, D], stats, dead [K] bool: the codes that were moved).
  """
  num_codes, dim = codebook.shape
  flat_z = jax.lax.stop_gradient(z).reshape(-1, dim).astype(codebook.dtype)
  n = flat_z.shape[0]
  if n >= num_codes:
    pick = jax.random.permutation(key, n)[:num_codes]
  else:
    pick = jax.random.randint(key, (num_codes,), 0, n)
  candidates = flat_z[pick]
  dead = stats.count < threshold
  codebook = jnp.where(dead[:, None], candidates, codebook)
  stats = CodebookStats(count=jnp.where(dead, 1.0, stats.count),
                        embed_sum=jnp.where(dead[:, None], candidates, stats.embed_sum))
  return codebook, stats, dead


def uniform_init(num_codes: int):
  """Codebook initializer U(-1/K, 1/K), the common VQ-VAE choice."""
  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -1.0 / num_codes, 1.0 / num_codes)
  return init


class VectorQuantizer(nn.Module):
  """Holds the codebook [K, D] (param ``codebook``) and applies ``quantize`` to z [..., D].

  With an EMA codebook the trainer overwrites this param from
  ``CodebookStats`` after every step; the objective then leaves the
  codebook term out, so the optimizer sees a zero gradient for it.
  """
  num_codes: int
  code_dim: int

  def setup(self):
    check_codebook_size(self.num_codes)
    self.codebook = self.param("codebook", uniform_init(self.num_codes), (self.num_codes, self.code_dim))

  def __call__(self, z: jax.Array) -> dict:
    return quantize(z, self.codebook)

  def lookup(self, indices: jax.Array) -> jax.Array:
    return lookup(indices, self.codebook)
