"""Vector quantization against independent NumPy computations and hand-computed EMA steps."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vae_jax.vq import quantization as vq


pytestmark = pytest.mark.usefixtures("fast_compiling_rng")


def numpy_nearest(z, codebook):
  """Brute force over an explicit [N, K, D] difference tensor; ties to the lowest index."""
  flat = z.reshape(-1, z.shape[-1]).astype(np.float64)
  d = np.sum((flat[:, None, :] - codebook[None].astype(np.float64)) ** 2, axis=-1)
  return np.argmin(d, axis=-1).reshape(z.shape[:-1])


@pytest.mark.parametrize("lead", [(), (5,), (3, 4), (2, 7, 7)])
def test_nearest_code_matches_numpy_for_any_batch_shape(lead):
  rng = np.random.default_rng(len(lead))
  codebook = rng.normal(size=(11, 3)).astype(np.float32)
  z = rng.normal(size=lead + (3,)).astype(np.float32)
  got = jax.jit(vq.nearest_code)(z, codebook)
  assert got.shape == lead and got.dtype == jnp.int32
  np.testing.assert_array_equal(got, numpy_nearest(z, codebook))


def test_ties_go_to_the_lowest_index():
  # Integer coordinates: every distance is exact in float32.
  codebook = np.array([[2, 0], [0, 0], [0, 2], [0, 0], [-2, 0]], np.float32)  # codes 1 and 3 coincide
  z = np.array([[0, 0],    # exactly on codes 1 and 3 -> 1
                [1, 0],    # equidistant from codes 0, 1, 3 -> 0
                [0, 1],    # equidistant from 1, 2, 3 -> 1
                [-1, 0],   # equidistant from 1, 3, 4 -> 1
                [1, 1]],   # equidistant from 0, 1, 2, 3 -> 0
               np.float32)
  np.testing.assert_array_equal(vq.nearest_code(z, codebook), [1, 0, 1, 1, 0])
  np.testing.assert_array_equal(numpy_nearest(z, codebook), [1, 0, 1, 1, 0])


def test_distances_use_one_matmul_and_equal_brute_force():
  rng = np.random.default_rng(0)
  codebook, z = rng.normal(size=(7, 4)), rng.normal(size=(6, 4))
  brute = np.sum((z[:, None] - codebook[None]) ** 2, -1)
  np.testing.assert_allclose(vq.squared_distances(jnp.asarray(z, jnp.float32),
                                                  jnp.asarray(codebook, jnp.float32)), brute, atol=1e-5)
  jaxpr = str(jax.make_jaxpr(vq.squared_distances)(jnp.zeros((6, 4)), jnp.zeros((7, 4))))
  assert jaxpr.count("dot_general") == 1


def test_dimension_mismatch_and_small_codebook_are_named():
  with pytest.raises(ValueError, match="dimension 3 .* dimension 4"):
    vq.nearest_code(jnp.zeros((2, 3)), jnp.zeros((5, 4)))
  for bad in (1, 0, 2.5):
    with pytest.raises(ValueError, match=f"num_codes={bad!r}.*>= 2"):
      vq.VectorQuantizer(bad, 4).init(jax.random.key(0), jnp.zeros((3, 4)))


def test_straight_through_gradient_is_the_identity():
  rng = np.random.default_rng(1)
  codebook = jnp.asarray(rng.normal(size=(5, 3)), jnp.float32)
  z = jnp.asarray(rng.normal(size=(4, 3)), jnp.float32)
  out = vq.quantize(z, codebook)
  np.testing.assert_allclose(out["z_q"], codebook[numpy_nearest(np.asarray(z), np.asarray(codebook))],
                             atol=1e-6)  # the forward value is the code
  jac = jax.jacobian(lambda z: vq.quantize(z, codebook)["z_q"])(z)  # [4, 3, 4, 3]
  np.testing.assert_allclose(jac.reshape(12, 12), np.eye(12))
  # ... and the codebook gets nothing through it.
  g = jax.grad(lambda c: jnp.sum(vq.quantize(z, c)["z_q"] ** 2))(codebook)
  np.testing.assert_array_equal(g, 0.0)


def test_commitment_moves_only_the_encoder_and_codebook_term_only_the_codes():
  rng = np.random.default_rng(2)
  codebook = jnp.asarray(rng.normal(size=(5, 3)), jnp.float32)
  z = jnp.asarray(rng.normal(size=(4, 3)), jnp.float32)

  def term(name):
    return lambda z, c: jnp.sum(vq.quantize(z, c)[name])

  gz, gc = jax.grad(term("commitment_loss"), argnums=(0, 1))(z, codebook)
  np.testing.assert_array_equal(gc, 0.0)
  idx = numpy_nearest(np.asarray(z), np.asarray(codebook))
  np.testing.assert_allclose(gz, 2 * (z - codebook[idx]), rtol=1e-5)
  gz, gc = jax.grad(term("codebook_loss"), argnums=(0, 1))(z, codebook)
  np.testing.assert_array_equal(gz, 0.0)
  expected = np.zeros((5, 3), np.float32)
  np.add.at(expected, idx, 2 * (np.asarray(codebook)[idx] - np.asarray(z)))
  np.testing.assert_allclose(gc, expected, rtol=1e-5, atol=1e-6)


def test_ema_update_against_a_hand_computation():
  # Two codes in 1-D, decay 0.5, no smoothing to speak of (eps tiny).
  stats = vq.CodebookStats(count=jnp.array([1.0, 1.0]), embed_sum=jnp.array([[0.0], [10.0]]))
  z = jnp.array([[1.0], [3.0], [2.0]])
  indices = jnp.array([0, 0, 0])  # code 1 unused this step
  new, codebook = vq.ema_update(stats, z, indices, decay=0.5, eps=1e-12)
  # N = 0.5 * [1, 1] + 0.5 * [3, 0] = [2, 0.5]; m = 0.5 * [0, 10] + 0.5 * [6, 0] = [3, 5]
  np.testing.assert_allclose(new.count, [2.0, 0.5])
  np.testing.assert_allclose(new.embed_sum, [[3.0], [5.0]])
  np.testing.assert_allclose(codebook, [[1.5], [10.0]], rtol=1e-6)
  # Laplace smoothing: N~ = (N + eps) / (n + K eps) * n with n = 2.5.
  _, smoothed = vq.ema_update(stats, z, indices, decay=0.5, eps=0.5)
  n_tilde = (np.array([2.0, 0.5]) + 0.5) / (2.5 + 2 * 0.5) * 2.5
  np.testing.assert_allclose(smoothed[:, 0], np.array([3.0, 5.0]) / n_tilde, rtol=1e-6)
  # The usage-only update (codebook learned by gradients) moves N the same way.
  np.testing.assert_allclose(vq.update_usage(stats, vq.code_counts(indices, 2), decay=0.5).count, [2.0, 0.5])


def test_ema_converges_to_the_cluster_means():
  rng = np.random.default_rng(3)
  centres = np.array([[-4.0, 0.0], [4.0, 0.0], [0.0, 4.0]])
  codebook = jnp.asarray(centres + 0.5, jnp.float32)
  stats = vq.init_stats(codebook)
  update = jax.jit(lambda s, c, z: vq.ema_update(s, z, vq.nearest_code(z, c), decay=0.9))
  for _ in range(200):
    z = jnp.asarray(centres[rng.integers(0, 3, 300)] + 0.3 * rng.normal(size=(300, 2)), jnp.float32)
    stats, codebook = update(stats, codebook, z)
  np.testing.assert_allclose(codebook, centres, atol=0.05)


def test_restart_moves_only_dead_codes_onto_batch_vectors():
  rng = np.random.default_rng(4)
  codebook = jnp.asarray(rng.normal(size=(6, 3)), jnp.float32)
  stats = vq.CodebookStats(count=jnp.array([5.0, 0.001, 2.0, 0.0, 0.5, 0.02]),
                           embed_sum=codebook * 2.0)
  z = jnp.asarray(rng.normal(size=(4, 5, 3)) + 10.0, jnp.float32)  # far from every code
  new_codebook, new_stats, dead = vq.restart_dead_codes(jax.random.key(0), codebook, stats, z,
                                                        threshold=0.03)
  np.testing.assert_array_equal(dead, [False, True, False, True, False, True])
  live = ~np.asarray(dead)
  np.testing.assert_array_equal(np.asarray(new_codebook)[live], np.asarray(codebook)[live])
  np.testing.assert_array_equal(np.asarray(new_stats.count)[live], np.asarray(stats.count)[live])
  np.testing.assert_array_equal(np.asarray(new_stats.embed_sum)[live], np.asarray(stats.embed_sum)[live])
  flat = np.asarray(z).reshape(-1, 3)
  moved = np.asarray(new_codebook)[~live]
  rows = [int(np.flatnonzero(np.all(flat == m, axis=1))[0]) for m in moved]  # each is a batch vector
  assert len(set(rows)) == 3  # ... and a different one for each code
  np.testing.assert_array_equal(np.asarray(new_stats.count)[~live], 1.0)
  np.testing.assert_array_equal(np.asarray(new_stats.embed_sum)[~live], moved)
  # Reproducible from the key, different with another key.
  again, _, _ = vq.restart_dead_codes(jax.random.key(0), codebook, stats, z, threshold=0.03)
  other, _, _ = vq.restart_dead_codes(jax.random.key(1), codebook, stats, z, threshold=0.03)
  np.testing.assert_array_equal(again, new_codebook)
  assert not np.array_equal(other, new_codebook)


def test_perplexity_and_usage():
  np.testing.assert_allclose(vq.perplexity(jnp.array([5.0, 5.0, 5.0, 5.0])), 4.0, rtol=1e-6)
  np.testing.assert_allclose(vq.perplexity(jnp.array([7.0, 0.0, 0.0])), 1.0)
  p = np.array([0.5, 0.25, 0.25, 0.0])
  np.testing.assert_allclose(vq.perplexity(jnp.asarray(p * 8)), np.exp(-np.sum(p[:3] * np.log(p[:3]))),
                             rtol=1e-6)
  counts = vq.code_counts(jnp.array([[0, 2], [2, 2]]), 4)
  np.testing.assert_array_equal(counts, [1, 0, 3, 0])
  assert float(vq.usage_metrics(counts)["codes_used"]) == 0.5
