"""Missing-data imputation: masks, chains, acceptance ratio, metrics, bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from vae_jax.apps import imputation as imp
from vae_jax import models

pytestmark = pytest.mark.usefixtures("fast_compiling_rng")

TINY = models.VAE(image_shape=(2, 2, 1), latent_dims=(1,), hidden_sizes=((3,),))


def _sigmoid(a):
  return 1.0 / (1.0 + np.exp(-a))


@pytest.fixture(scope="module")
def tiny_params():
  """A tiny VAE (4 pixels, 3 tanh units, 1 latent) with weights drawn by hand (no init compile):
  the decoder depends strongly on z and the encoder is far from the posterior."""
  rng = np.random.default_rng(2)
  dense = lambda i, o, scale: {"kernel": scale * rng.standard_normal((i, o)).astype(np.float32),
                               "bias": rng.standard_normal(o).astype(np.float32)}
  return {"enc_trunk0": {"dense_0": dense(4, 3, 2.0)},
          "enc_heads_0": {"mean": dense(3, 1, 1.0), "logvar": dense(3, 1, 0.5)},
          "dec_trunk0": {"dense_0": dense(1, 3, 3.0)},
          "dec_out": dense(3, 4, 3.0)}


def _np_encode(p, x):
  h = np.tanh(x.reshape(-1) @ p["enc_trunk0"]["dense_0"]["kernel"] + p["enc_trunk0"]["dense_0"]["bias"])
  head = p["enc_heads_0"]
  return h @ head["mean"]["kernel"] + head["mean"]["bias"], h @ head["logvar"]["kernel"] + head["logvar"]["bias"]


def _np_logits(p, z):
  """Decoder logits for z [..., 1] -> [..., 4] (flattened image)."""
  h = np.tanh(z @ p["dec_trunk0"]["dense_0"]["kernel"] + p["dec_trunk0"]["dense_0"]["bias"])
  return h @ p["dec_out"]["kernel"] + p["dec_out"]["bias"]


def _np_log_px_z(p, x, z):
  pr = _sigmoid(_np_logits(p, z))
  xf = x.reshape(-1)
  return np.sum(xf * np.log(pr) + (1 - xf) * np.log1p(-pr), axis=-1)


# -- masks ------------------------------------------------------------------------------------------

def test_structured_masks_cover_the_rows_they_name():
  top, bottom = imp.make_mask("top", (28, 28, 1)), imp.make_mask("bottom", (28, 28, 1))
  centre = imp.make_mask("centre", (28, 28, 1))
  assert top[:14].all() and not top[14:].any()
  assert bottom[14:].all() and not bottom[:14].any()
  assert np.array_equal(np.flatnonzero(centre[:, 0, 0]), np.arange(10, 17))  # 7 = 28 // 4 rows
  assert np.array_equal(np.flatnonzero(imp.make_mask("centre", (6, 3, 2), band_rows=2)[:, 0, 0]), [2, 3])


def test_random_mask_has_the_fraction_per_image_and_follows_its_key():
  a = imp.make_mask("random", (28, 28, 1), key=jax.random.key(0), num_images=5)
  assert a.shape == (5, 28, 28, 1) and a.dtype == bool
  np.testing.assert_array_equal(a.reshape(5, -1).sum(1), 392)
  assert not np.array_equal(a[0], a[1])  # a fresh mask per image
  np.testing.assert_array_equal(a, imp.make_mask("random", (28, 28, 1), key=jax.random.key(0), num_images=5))
  assert not np.array_equal(a, imp.make_mask("random", (28, 28, 1), key=jax.random.key(1), num_images=5))
  np.testing.assert_array_equal(a[:2], imp.make_mask("random", (28, 28, 1), key=jax.random.key(0), num_images=2))
  rgb = imp.make_mask("random", (4, 4, 3), key=jax.random.key(0), num_images=2, fraction=0.25)
  assert (rgb == rgb[..., :1]).all() and rgb[..., 0].reshape(2, -1).sum(1).tolist() == [4, 4]


@pytest.mark.parametrize("mask, match", [
    (np.ones((28, 28)), "shape"),
    (np.ones((3, 28, 28, 1), bool), "shape"),
    (np.zeros((28, 28, 1), bool), "no missing pixels"),
    (np.full((28, 28, 1), 0.5), "values other than 0 and 1"),
])
def test_bad_masks_are_named(mask, match):
  with pytest.raises(imp.MaskError, match=match):
    imp.check_mask(mask, (2, 28, 28, 1))


def test_bad_mask_requests_and_inputs_are_refused_before_compute():
  with pytest.raises(imp.MaskError, match="unknown"):
    imp.make_mask("left", (28, 28, 1))
  with pytest.raises(imp.MaskError, match="needs a key"):
    imp.make_mask("random", (28, 28, 1))
  with pytest.raises(imp.MaskError, match="band_rows"):
    imp.make_mask("centre", (28, 28, 1), band_rows=29)
  fill = np.full((2, 2, 1), 0.5)
  x = np.zeros((3, 2, 2, 1))
  with pytest.raises(imp.MaskError, match="no missing pixels"):
    imp.impute(TINY, {}, x, np.zeros((2, 2, 1), bool), jax.random.key(0), method="mwg", num_iters=2, fill=fill)
  with pytest.raises(imp.MaskError, match="shape"):
    imp.impute(TINY, {}, x, np.ones((2, 2), bool), jax.random.key(0), method="mwg", num_iters=2, fill=fill)
  with pytest.raises(ValueError, match="binary"):
    imp.impute(TINY, {}, x + 0.5, np.ones((2, 2, 1), bool), jax.random.key(0), method="mwg", num_iters=2,
               fill=fill)
  with pytest.raises(ValueError, match="warmup"):
    imp.impute(TINY, {}, x, np.ones((2, 2, 1), bool), jax.random.key(0), method="mwg", num_iters=2, fill=fill,
               warmup=3)
  with pytest.raises(ValueError, match="method"):
    imp.impute(TINY, {}, x, np.ones((2, 2, 1), bool), jax.random.key(0), method="gibbs", num_iters=2, fill=fill)
  with pytest.raises(imp.ModelError, match="likelihood"):
    imp.check_model(models.VAE(likelihood="gaussian_fixed"))
  with pytest.raises(imp.ModelError, match="latent_dims"):
    imp.check_model(models.VAE(latent_dims=(10, 5), hidden_sizes=((8,), (8,))))


# -- chains -----------------------------------------------------------------------------------------
# One batch for every chain test, so that each method compiles once: image 0 has its left column
# missing, image 1 nothing missing, images 2.. (the "stationary" chains) share the observed top
# row (1, 0) and miss the bottom row.
N_CHAINS, N_ITERS, BURN = 320, 200, 50
FILL = np.full((2, 2, 1), 0.5, np.float32)


def _batch():
  x = np.zeros((N_CHAINS, 2, 2, 1), np.float32)
  x[:, 0, 0] = 1.0
  x[0] = [[[1], [0]], [[0], [1]]]
  x[1] = [[[0], [1]], [[1], [1]]]
  missing = np.zeros(x.shape, bool)
  missing[2:, 1] = True
  missing[0, :, 0] = True
  x[2::2, 1, 1] = 1.0  # some truth at the missing pixels (unused by the chains)
  return x, missing


def _run(params, x, missing, method, warmup=1):
  return jax.device_get(imp.impute_batch(TINY, params, jnp.asarray(x), jnp.asarray(missing), jax.random.key(7),
                                         jnp.asarray(0), method=method, num_iters=N_ITERS,
                                         fill=jnp.asarray(FILL), warmup=jnp.asarray(warmup),
                                         trajectory=True))


@pytest.fixture(scope="module")
def chains(tiny_params):
  x, missing = _batch()
  out = {m: _run(tiny_params, x, missing, m) for m in imp.METHODS}
  flipped = np.where(missing, 1.0 - x, x)
  out["mwg_flipped_truth"] = _run(tiny_params, flipped, missing, "mwg")
  out["mwg_warmup_all"] = _run(tiny_params, x, missing, "mwg", warmup=N_ITERS)
  out["mwg_warmup_half"] = _run(tiny_params, x, missing, "mwg", warmup=N_ITERS // 2)
  return x, missing, flipped, out


@pytest.mark.parametrize("method", imp.METHODS)
def test_observed_pixels_never_change_and_nothing_missing_is_the_identity(chains, method):
  x, missing, _, out = chains
  traj = out[method]["images"]                                 # [N, T, 2, 2, 1]
  obs = np.broadcast_to(~missing[:, None], traj.shape)
  np.testing.assert_array_equal(traj[obs], np.broadcast_to(x[:, None], traj.shape)[obs])
  assert set(np.unique(traj)) <= {0.0, 1.0}
  assert len(np.unique(traj[0, :, :, 0].reshape(N_ITERS, -1), axis=0)) > 1  # the missing pixels do move
  np.testing.assert_array_equal(traj[1], np.broadcast_to(x[1], traj[1].shape))  # nothing missing: identity
  np.testing.assert_array_equal(out[method]["image"][1], x[1])
  np.testing.assert_array_equal(out[method]["average"][1], x[1])
  np.testing.assert_array_equal(out[method]["counts"][1], 0.0)


def test_the_chain_never_reads_the_truth_at_missing_pixels_and_counts_it_right(chains):
  x, missing, flipped, out = chains
  a, b = out["mwg"], out["mwg_flipped_truth"]
  np.testing.assert_array_equal(a["images"], b["images"])
  np.testing.assert_array_equal(a["accepted"], b["accepted"])
  for i in (0, 2, 3):
    for t in (0, 1, N_ITERS - 1):  # the scan's counts against NumPy on the chain's states
      np.testing.assert_array_equal(a["counts"][i, t, 0], imp.confusion(a["images"][i, t], x[i], missing[i]))
      np.testing.assert_array_equal(b["counts"][i, t, 0], imp.confusion(b["images"][i, t], flipped[i], missing[i]))
  assert not np.array_equal(a["counts"], b["counts"])


def test_mwg_first_step_equals_pseudo_gibbs_and_later_steps_reject_sometimes(chains):
  _, _, _, out = chains
  pg, mwg = out["pseudo_gibbs"], out["mwg"]
  np.testing.assert_array_equal(pg["images"][:, 0], mwg["images"][:, 0])
  assert mwg["accepted"][:, 0].all() and 0.05 < mwg["accepted"][2:, 1:].mean() < 0.95
  assert pg["accepted"].all()
  assert not np.array_equal(pg["images"], mwg["images"])


def test_mwg_with_warmup_is_pseudo_gibbs_until_the_warmup_ends(chains):
  _, _, _, out = chains
  pg, all_, half = out["pseudo_gibbs"], out["mwg_warmup_all"], out["mwg_warmup_half"]
  np.testing.assert_array_equal(all_["images"], pg["images"])
  np.testing.assert_array_equal(all_["counts"], pg["counts"])
  np.testing.assert_array_equal(half["images"][:, :N_ITERS // 2], pg["images"][:, :N_ITERS // 2])
  assert half["accepted"][:, :N_ITERS // 2].all() and not half["accepted"][:, N_ITERS // 2:].all()


def test_acceptance_ratio_matches_a_hand_computation(tiny_params):
  p = tiny_params
  x = np.array([[[1.0], [0.0]], [[1.0], [1.0]]], np.float32)
  z_cur, z_prop = np.array([0.7], np.float32), np.array([-1.3], np.float32)
  mean, logvar = _np_encode(p, x)
  sd = np.exp(0.5 * logvar)

  def side(z):  # log p(x | z) + log p(z) - log q(z | x), by hand
    return (_np_log_px_z(p, x, z) + stats.norm.logpdf(z[0])
            - stats.norm.logpdf(z[0], loc=mean[0], scale=sd[0]))

  expected = side(z_prop) - side(z_cur)
  logits = lambda z: jnp.asarray(_np_logits(p, z).reshape(2, 2, 1), jnp.float32)
  got = imp.mwg_log_acceptance(TINY, p, jnp.asarray(x), jnp.asarray(z_cur), logits(z_cur),
                               jnp.asarray(z_prop), logits(z_prop), jnp.asarray(mean, jnp.float32),
                               jnp.asarray(logvar, jnp.float32))
  np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
  assert abs(expected) > 0.1  # a ratio far from 1: the check has something to find


def test_mwg_samples_the_exact_conditional_and_pseudo_gibbs_its_own_stationary_law(tiny_params, chains):
  """Both laws by quadrature over the 1-d latent (8001 points on [-10, 10]).

  MwG targets p(x_m | x_o); pseudo-Gibbs is the Markov chain with kernel
  T(x_m, x_m') = E_{q(z | x_o, x_m)}[p(x_m' | z)], whose stationary law differs.
  """
  p = tiny_params
  z = np.linspace(-10, 10, 8001)[:, None]
  log_prior = stats.norm.logpdf(z[:, 0])
  x_obs = np.array([1.0, 0.0])                      # top row observed; bottom row missing
  configs = [np.array([a, b], float) for a in (0, 1) for b in (0, 1)]
  log_joint = [np.logaddexp.reduce(log_prior + _np_log_px_z(p, np.concatenate([x_obs, c]), z)) for c in configs]
  exact = np.exp(np.array(log_joint) - np.logaddexp.reduce(log_joint))
  p_bottom = _sigmoid(_np_logits(p, z))[:, 2:]       # p(x_m = 1 | z), [Z, 2]
  kernel = np.zeros((4, 4))
  for i, c in enumerate(configs):
    mean, logvar = _np_encode(p, np.concatenate([x_obs, c]))
    w = stats.norm.pdf(z[:, 0], mean[0], np.exp(0.5 * logvar[0]))
    w /= w.sum()
    for j, d in enumerate(configs):
      kernel[i, j] = np.sum(w * np.prod(np.where(d == 1, p_bottom, 1 - p_bottom), axis=-1))
  values, vectors = np.linalg.eig(kernel.T)
  pg_law = np.real(vectors[:, np.argmax(np.real(values))])
  pg_law /= pg_law.sum()
  assert 0.5 * np.abs(pg_law - exact).sum() > 0.15  # the two targets differ: the test can tell

  def law(method):
    traj = chains[3][method]["images"][2:, BURN:, 1, :, 0]
    code = (2 * traj[..., 0] + traj[..., 1]).astype(int).reshape(-1)
    return np.bincount(code, minlength=4) / code.size

  assert 0.5 * np.abs(law("mwg") - exact).sum() < 0.03, (law("mwg"), exact)
  assert 0.5 * np.abs(law("pseudo_gibbs") - pg_law).sum() < 0.03, (law("pseudo_gibbs"), pg_law)


def test_impute_runs_batches_with_offset_keys_and_sums_their_counts(tiny_params, chains):
  x, missing, _, out = chains
  twice = np.concatenate([x, x])
  res = imp.impute(TINY, tiny_params, twice, np.concatenate([missing, missing]), jax.random.key(7),
                   method="mwg", num_iters=N_ITERS, fill=FILL, batch_size=N_CHAINS, trajectory=True)
  np.testing.assert_array_equal(res["images"][:N_CHAINS], out["mwg"]["images"])  # image i: fold_in(key, i)
  assert not np.array_equal(res["images"][N_CHAINS + 2:], out["mwg"]["images"][2:])  # N + i: other keys
  assert res["counts"].shape == (N_ITERS, 3, 4)
  np.testing.assert_array_equal(res["counts"].sum(-1), 2 * missing.sum())
  second = np.array([imp.confusion(res["images"][N_CHAINS:, t], x, missing) for t in (0, N_ITERS - 1)])
  np.testing.assert_array_equal(res["counts"][[0, -1], 0], out["mwg"]["counts"][:, [0, -1], 0].sum(0) + second)


# -- metrics and baseline ----------------------------------------------------------------------------

def test_f1_and_accuracy_from_a_hand_count():
  truth = np.array([1, 0, 1, 0, 1, 1], float)
  pred = np.array([1, 1, 0, 0, 1, 0], float)
  missing = np.array([True, True, True, True, True, False])
  counts = imp.confusion(pred, truth, missing)
  np.testing.assert_array_equal(counts, [2, 1, 1, 1])   # tp fp fn tn; the last pixel is observed
  f1, acc = imp.f1_accuracy(counts)
  np.testing.assert_allclose([f1, acc], [4 / 6, 3 / 5])


def test_mean_fill_fills_only_missing_pixels_with_thresholded_means():
  x = np.array([[[[1], [0]], [[1], [0]]]], np.float32)
  missing = np.array([[[True], [True]], [[False], [False]]])
  out = imp.mean_fill(x, missing, np.array([[[0.2], [0.7]], [[0.9], [0.9]]]))
  np.testing.assert_array_equal(out[0, :, :, 0], [[0, 1], [1, 0]])
