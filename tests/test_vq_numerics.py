"""Property tests: the VQ-VAE's public functions at extreme but legal inputs.

Encoder outputs and codebooks from 1e-30 to 1e15 in magnitude, identical codes,
EMA steps in which codes get no assignments, 256-way logits and logistic means
up to +-1e4, log-scales at the clamp (-7) and far above it, all-zero and
all-255 images, a batch of one: every value and gradient is finite and equals
an independent float64 (NumPy) or arbitrary-precision (mpmath) computation
where one exists.
"""

import functools

import jax
import jax.numpy as jnp
import mpmath
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp
from scipy.special import logsumexp

from vae_jax import distributions as dist
from vae_jax import losses
from vae_jax.vq import pixelcnn
from vae_jax.vq import quantization as vq
from vae_jax.vq import vqvae

pytestmark = pytest.mark.usefixtures("fast_compiling_rng")

SETTINGS = settings(max_examples=25, deadline=None, database=None)
K, D = 5, 3
EPS32 = float(np.finfo(np.float32).eps)
TINY32 = float(np.finfo(np.float32).tiny)  # XLA:CPU flushes subnormal results (below this) to zero
TRIED = {}  # test name -> hypothesis examples run (printed by the last test of the module)


def count(name):
  TRIED[name] = TRIED.get(name, 0) + 1


@pytest.fixture(scope="module", autouse=True)
def report_cases():
  yield
  print(f"\nVQ numerics: {sum(TRIED.values())} hypothesis cases: {TRIED}")


def assert_finite(tree, what):
  for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
    assert np.all(np.isfinite(np.asarray(leaf))), f"{what}{jax.tree_util.keystr(path)} not finite: {leaf}"


def f64(a):
  return np.asarray(a, np.float64)


def magnitudes():
  """Vectors whose entries are +-10^e, e in [-30, 15], or exactly zero: huge and tiny scales."""
  entry = st.one_of(st.just(0.0), st.builds(lambda s, e, m: s * m * 10.0**e, st.sampled_from([-1.0, 1.0]),
                                            st.integers(-30, 15), st.floats(1.0, 9.99)))
  return entry


def scaled_arrays(shape):
  """One common scale 10^e (e in [-30, 15]) times O(1) entries: all huge or all tiny together."""
  return st.builds(lambda e, a: (a * 10.0**e).astype(np.float32), st.integers(-30, 15),
                   hnp.arrays(np.float64, shape, elements=st.floats(-5, 5)))


def vectors(shape):
  return st.one_of(scaled_arrays(shape),
                   hnp.arrays(np.float64, shape, elements=magnitudes()).map(lambda a: a.astype(np.float32)))


# -- nearest code, straight-through, the two quantizer terms --------------------------------

@jax.jit
def quantize_and_grads(z, codebook):
  def total(z, c):
    q = vq.quantize(z, c)
    return jnp.sum(q["codebook_loss"]) + 0.25 * jnp.sum(q["commitment_loss"]) + jnp.sum(q["z_q"])
  return vq.quantize(z, codebook), jax.grad(total, argnums=(0, 1))(z, codebook)


@SETTINGS
@given(z=vectors((4, D)), codebook=vectors((K, D)), identical=st.booleans())
def test_nearest_code_and_quantizer_terms_at_huge_and_tiny_scales(z, codebook, identical):
  if identical:  # every code the same vector: ties everywhere go to code 0
    codebook = np.broadcast_to(codebook[:1], codebook.shape).copy()
  q, (gz, gc) = quantize_and_grads(z, codebook)
  assert_finite((q, gz, gc), "quantize")
  idx = np.asarray(q["indices"])
  # The chosen code is a nearest one in float64, up to the rounding of the one-matmul distance
  # ||z||^2 - 2 z.e + ||e||^2 in float32 (relative to the squared norms involved).
  d = np.sum((f64(z)[:, None] - f64(codebook)[None]) ** 2, axis=-1)
  norms = np.sum(f64(z) ** 2, -1)[:, None] + np.sum(f64(codebook) ** 2, -1)[None]
  tol = 8 * EPS32 * np.max(norms, axis=1) + 1e-36
  chosen = d[np.arange(len(idx)), idx]
  assert np.all(chosen <= d.min(axis=1) + tol), (chosen, d.min(axis=1), tol)
  if identical:
    np.testing.assert_array_equal(idx, 0)
  e = f64(codebook)[idx]
  # The forward value is the code, up to the rounding of z + (e - z).
  assert np.all(np.abs(f64(q["z_q"]) - e) <= 2 * EPS32 * (np.abs(f64(z)) + np.abs(e)) + 2 * TINY32)
  ref = np.sum((f64(z) - e) ** 2, axis=-1)
  np.testing.assert_allclose(q["commitment_loss"], ref, rtol=1e-5, atol=1e-37)
  np.testing.assert_array_equal(q["codebook_loss"], q["commitment_loss"])
  # d/dz: 1 (straight-through) + 0.25 * 2 (z - e); d/dcodebook: 2 (e - z) summed per code.
  np.testing.assert_allclose(gz, 1.0 + 0.5 * (f64(z) - e), rtol=1e-5, atol=1e-6)
  want = np.zeros((K, D))
  np.add.at(want, idx, 2 * (e - f64(z)))
  np.testing.assert_allclose(gc, want, rtol=1e-5, atol=1e-30 + 1e-6 * np.abs(want).max())
  count("nearest_code / quantize")


# -- EMA codebook, usage, restarts, perplexity ------------------------------------------------

@functools.partial(jax.jit, static_argnames=("decay", "eps"))
def ema(stats, z, indices, decay, eps):
  return vq.ema_update(stats, z, indices, decay=decay, eps=eps)


@SETTINGS
@given(count_=hnp.arrays(np.float64, (K,), elements=st.one_of(st.just(0.0), st.floats(1e-6, 1e3))),
       codebook=scaled_arrays((K, D)).filter(lambda c: np.all(np.abs(c) < 1e14)),
       z=vectors((1, 6, D)), indices=hnp.arrays(np.int32, (1, 6), elements=st.integers(0, K - 2)),
       decay=st.sampled_from([0.0, 0.5, 0.99, 0.999]), eps=st.sampled_from([1e-5, 1e-12, 1.0]))
def test_ema_update_with_unassigned_codes_against_a_float64_computation(count_, codebook, z, indices,
                                                                        decay, eps):
  # The last code gets no assignment in this batch; codes with count 0 had none ever.
  stats = vq.CodebookStats(count=jnp.asarray(count_, jnp.float32),
                           embed_sum=jnp.asarray(count_[:, None] * codebook, jnp.float32))
  new, new_codebook = ema(stats, z, indices, decay, eps)
  assert_finite((new, new_codebook), "ema_update")
  onehot = np.eye(K)[indices.ravel()]
  n = decay * f64(stats.count) + (1 - decay) * onehot.sum(0)
  m = decay * f64(stats.embed_sum) + (1 - decay) * onehot.T @ f64(z).reshape(-1, D)
  smoothed = (n + eps) / (n.sum() + K * eps) * n.sum()
  np.testing.assert_allclose(new.count, n, rtol=1e-5, atol=1e-30)
  np.testing.assert_allclose(new.embed_sum, m, rtol=1e-4, atol=1e-4 * np.abs(m).max() + 1e-37)
  want = m / smoothed[:, None]
  # (a sum m_k below TINY32 is flushed to zero: an absolute error of up to TINY32 / N~_k in e_k)
  atol = 1e-4 * np.abs(want).max() + 2 * TINY32 / smoothed.min()
  np.testing.assert_allclose(new_codebook, want, rtol=1e-4, atol=atol)
  # An unassigned code keeps its direction: e_K = decay m_K / N~_K.
  resolved = np.abs(want[-1]) > atol
  assert np.all(np.sign(np.asarray(new_codebook)[-1])[resolved] == np.sign(want[-1])[resolved])
  count("ema_update")


restart_all = jax.jit(functools.partial(vq.restart_dead_codes, threshold=0.5))


@settings(max_examples=10, deadline=None, database=None)
@given(z=vectors((1, D)), seed=st.integers(0, 2**31))
def test_restarting_every_code_from_a_batch_of_one_gives_identical_usable_codes(z, seed):
  codebook = jnp.zeros((K, D))
  stats = vq.CodebookStats(count=jnp.zeros(K), embed_sum=jnp.zeros((K, D)))
  new, new_stats, dead = restart_all(jax.random.key(seed), codebook, stats, z)
  assert np.all(dead) and np.all(np.asarray(new) == z)  # all K codes on the one vector
  np.testing.assert_array_equal(new_stats.count, 1.0)
  np.testing.assert_array_equal(vq.nearest_code(z, new), [0])  # identical codes: the lowest index
  s2, c2 = ema(new_stats, z, jnp.zeros((1,), jnp.int32), 0.99, 1e-5)
  assert_finite((s2, c2), "ema after restart")
  count("restart_dead_codes")


@SETTINGS
@given(counts=hnp.arrays(np.float64, (K,), elements=st.one_of(st.just(0.0), st.integers(1, 10**6))))
def test_perplexity_of_any_counts_against_numpy(counts):
  got = vq.perplexity(jnp.asarray(counts, jnp.float32))
  if counts.sum() == 0:
    assert float(got) == 1.0
  else:
    p = counts[counts > 0] / counts.sum()
    np.testing.assert_allclose(got, np.exp(-np.sum(p * np.log(p))), rtol=1e-5)
  assert 1.0 - 1e-6 <= float(got) <= K * (1 + 1e-6)
  count("perplexity")


# -- the two 8-bit likelihoods ------------------------------------------------------------------

PIXELS = (2, 2, 1)


def levels_images():
  """All 0, all 255, or random levels (including both ends)."""
  return st.one_of(st.just(np.zeros(PIXELS, np.int32)), st.just(np.full(PIXELS, 255, np.int32)),
                   hnp.arrays(np.int32, PIXELS, elements=st.one_of(st.sampled_from([0, 1, 254, 255]),
                                                                   st.integers(0, 255))))


@functools.partial(jax.jit, static_argnums=0)
def value_and_grads(fn, *args):
  return fn(*args), jax.grad(lambda *a: jnp.sum(fn(*a)), argnums=tuple(range(1, len(args))))(*args)


@SETTINGS
@given(levels=levels_images(), logits=st.one_of(
    hnp.arrays(np.float32, PIXELS + (256,), elements=st.floats(-1e4, 1e4, width=32)),
    st.builds(lambda v, i: np.where(np.arange(256) == i, v, -v).astype(np.float32) * np.ones(PIXELS + (1,),
                                                                                              np.float32),
              st.sampled_from([1e4, -1e4, 0.0]), st.integers(0, 255))))
def test_categorical_256_at_logits_up_to_1e4(levels, logits):
  lp, (g,) = value_and_grads(dist.categorical_log_prob, levels, logits)
  assert_finite((lp, g), "categorical_log_prob")
  logp = f64(logits) - logsumexp(f64(logits), axis=-1, keepdims=True)
  ref = np.take_along_axis(logp, levels[..., None], -1).sum()
  np.testing.assert_allclose(lp, ref, rtol=1e-6, atol=1e-2)  # |logits| 1e4 in float32: ulp 1e-3
  softmax = np.exp(logp)
  np.testing.assert_allclose(g, np.eye(256)[levels] - softmax, atol=1e-5)
  assert float(lp) <= 1e-3
  count("categorical_log_prob")


def logistic_truth(level, mean, log_scale):
  """log P(level) of the discretized logistic in 60-digit arithmetic, from its definition.

  The bin's mass as a difference of CDFs, or of survival functions right of the
  mean: both sides tiny, so no cancellation even 1e7 scale units out.
  """
  with mpmath.workdps(60 + int(abs(float(log_scale)) / 2)):  # a bin of width e^-log_scale, exactly
    m, s = mpmath.mpf(float(mean)), mpmath.exp(mpmath.mpf(float(log_scale)))
    c = mpmath.mpf(2 * int(level)) / 255 - 1
    cdf = lambda t: 1 / (1 + mpmath.exp(-(t - m) / s)) if t is not None else mpmath.mpf(0)
    sf = lambda t: 1 / (1 + mpmath.exp((t - m) / s)) if t is not None else mpmath.mpf(0)
    hi = None if level == 255 else c + mpmath.mpf(1) / 255
    lo = None if level == 0 else c - mpmath.mpf(1) / 255
    if c > m:
      mass = (sf(lo) if lo is not None else 1) - sf(hi)
    else:
      mass = (cdf(hi) if hi is not None else 1) - cdf(lo)
    return float(mpmath.log(mass))


@SETTINGS
@given(levels=levels_images(), mean=st.one_of(st.sampled_from([-1e4, -1.0, 0.0, 1.0, 1e4]),
                                               st.floats(-1e4, 1e4, width=32)),
       log_scale=st.one_of(st.sampled_from([vqvae.MIN_LOG_SCALE, 0.0, 30.0, 100.0, 1e4]),
                           st.floats(vqvae.MIN_LOG_SCALE, 1e4, width=32)))
def test_discretized_logistic_at_extreme_means_and_log_scales(levels, mean, log_scale):
  means, scales = np.full(PIXELS, mean, np.float32), np.full(PIXELS, log_scale, np.float32)
  lp, grads = value_and_grads(dist.discretized_logistic_log_prob, levels, means, scales)
  assert_finite((lp, grads), "discretized_logistic_log_prob")
  ref = sum(logistic_truth(v, mean, log_scale) for v in levels.ravel())
  # float32 inputs: the standardized bin edges carry a relative error of a few ulp
  np.testing.assert_allclose(lp, ref, rtol=1e-4, atol=1e-3)
  count("discretized_logistic_log_prob")


# -- the VQ-VAE objective at extreme encoder and decoder outputs, a batch of one ------------------

IMAGE = (4, 4, 1)
EIGHT_BIT = ("categorical", "logistic")  # Bernoulli logits at +-1e4: tests/test_numerics.py
MODELS = {lik: vqvae.VQVAE(image_shape=IMAGE, num_codes=K, code_dim=D, hidden=4, residual_hidden=2,
                           num_residual_blocks=0, num_downsamples=1, likelihood=lik)
          for lik in EIGHT_BIT}


def constant_params(model, *args):
  """Parameters of ``model`` filled with a deterministic ramp (no init to compile: only shapes are traced)."""
  shapes = jax.eval_shape(lambda: model.init({"params": jax.random.key(0)}, *args)["params"])
  return jax.tree.map(lambda s: jnp.asarray(np.linspace(-0.5, 0.5, int(np.prod(s.shape))).reshape(s.shape),
                                            s.dtype), shapes)


@functools.lru_cache(maxsize=None)
def compiled(likelihood):
  model = MODELS[likelihood]

  def batch_loss(params, x_b):  # a batch of one, lifted and reduced as the trainer does
    loss, aux = jax.vmap(lambda x: losses.vqvae_loss(model, params, x, None, beta=0.25))(x_b)
    aux = {k: v for k, v in aux.items() if k not in ("z_e", "indices")}
    return jnp.mean(loss), jax.tree.map(jnp.mean, aux)

  return (constant_params(model, jnp.zeros(IMAGE)),
          jax.jit(jax.value_and_grad(batch_loss, has_aux=True)))


def with_outputs(params, z_bias, codebook, out_bias):
  """Zero kernels on the encoder's and decoder's last layers: z_e = z_bias at every grid position and
  the decoder's output (logits, or mean and log-scale) = out_bias at every pixel."""
  p = jax.tree.map(lambda a: a, params)
  enc, dec = p["encoder"]["to_codes"], p["decoder"]["up_0"]
  p["encoder"]["to_codes"] = {"kernel": jnp.zeros_like(enc["kernel"]), "bias": jnp.asarray(z_bias)}
  p["decoder"]["up_0"] = {"kernel": jnp.zeros_like(dec["kernel"]), "bias": jnp.asarray(out_bias)}
  p["quantizer"] = {"codebook": jnp.asarray(codebook)}
  return p


def out_bias(likelihood):
  if likelihood == "categorical":
    return hnp.arrays(np.float32, (256,), elements=st.floats(-1e4, 1e4, width=32))
  return st.tuples(st.floats(-1e4, 1e4, width=32),
                   st.one_of(st.just(vqvae.MIN_LOG_SCALE), st.floats(-30, 1e4, width=32))).map(
                       lambda t: np.array(t, np.float32))


@st.composite
def model_cases(draw):
  likelihood = draw(st.sampled_from(EIGHT_BIT))
  raw = draw(st.sampled_from([0, 255]))
  z = draw(scaled_arrays((D,)).filter(lambda a: np.all(np.abs(a) < 1e15)))
  codebook = draw(scaled_arrays((K, D)).filter(lambda a: np.all(np.abs(a) < 1e15)))
  return likelihood, np.full(IMAGE, raw, np.uint8), z, codebook, draw(out_bias(likelihood))


@settings(max_examples=30, deadline=None, database=None)
@given(case=model_cases())
def test_vqvae_loss_and_gradients_at_extreme_outputs_all_zero_and_all_max_images(case):
  likelihood, raw, z, codebook, bias = case
  params, loss_and_grad = compiled(likelihood)
  params = with_outputs(params, z, codebook, bias)
  x = vqvae.model_input(jnp.asarray(raw)[None], None, "static", likelihood)
  (loss, aux), grads = loss_and_grad(params, x)
  assert_finite((loss, aux, grads), f"{likelihood}: ")
  n = int(np.prod(IMAGE))
  v = int(raw.ravel()[0])
  if likelihood == "categorical":
    recon = -n * (f64(bias[v]) - logsumexp(f64(bias)))
  else:
    recon = -n * logistic_truth(v, bias[0], max(float(bias[1]), vqvae.MIN_LOG_SCALE))
  np.testing.assert_allclose(aux["recon"], recon, rtol=1e-4, atol=1e-2)
  d = np.sum((f64(z)[None] - f64(codebook)) ** 2, axis=-1)
  grid = 4  # 2 x 2 positions, each z_e = z
  tol = 8 * EPS32 * (np.sum(f64(z) ** 2) + np.sum(f64(codebook) ** 2, -1).max()) + 1e-36
  assert d.min() * grid * (1 - 1e-5) - grid * D * TINY32 <= aux["commitment_loss"] <= (d.min() + tol) * grid * (1 + 1e-5) + 1e-37
  count(f"vqvae_loss ({likelihood})")


# -- the PixelCNN prior at extreme logits ----------------------------------------------------------------

@settings(max_examples=15, deadline=None, database=None)
@given(bias=hnp.arrays(np.float32, (3,), elements=st.floats(-1e4, 1e4, width=32)),
       code=st.integers(0, 2), scale=st.sampled_from([1.0, 1e4]))
def test_prior_log_prob_at_extreme_logits_a_grid_of_one_code(bias, code, scale):
  model = pixelcnn.GatedPixelCNN(num_codes=3, grid_shape=(2, 2), features=4, num_layers=1, output_features=4)
  params = _prior_params(model)
  params = {**jax.tree.map(lambda w: scale * w, params),  # large trained-looking weights elsewhere
            "out_logits": {"kernel": jnp.zeros_like(params["out_logits"]["kernel"]), "bias": jnp.asarray(bias)}}
  codes = jnp.full((1, 2, 2), code, jnp.int32)
  lp, grads = _prior_value_and_grad(model, params, codes)
  assert_finite((lp, grads), "prior log_prob")
  ref = 4 * (f64(bias[code]) - logsumexp(f64(bias)))
  np.testing.assert_allclose(lp, [ref], rtol=1e-6, atol=1e-2)
  count("pixelcnn log_prob")


@functools.lru_cache(maxsize=None)
def _prior_params(model):
  return constant_params(model, jnp.zeros((2, 2), jnp.int32))


@functools.partial(jax.jit, static_argnums=0)
def _prior_value_and_grad(model, params, codes):
  f = lambda p: model.apply({"params": p}, codes, method=model.log_prob)
  return f(params), jax.grad(lambda p: jnp.sum(f(p)))(params)
