"""VQ-VAE: likelihoods, objective, the two training stages, evaluation, workdir checks, CIFAR-10 path."""

import importlib
import json
import math
import shutil
import types
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
import tensorflow_datasets as tfds

from vae_jax.configs.vq import prior_mnist, vqvae_cifar10, vqvae_mnist
from tests import test_config as tc
from vae_jax import checkpointing
from vae_jax import config as config_lib
from vae_jax import data as data_lib
from vae_jax import distributions as dist
from vae_jax import losses
from vae_jax.vq import config as vq_config
from vae_jax.vq import evaluate as vq_evaluate
from vae_jax.vq import train as vq_train
from vae_jax.vq import vqvae
from vae_jax.vq import train_prior as vq_prior
from vae_jax.vq import workdirs as vq_workdirs


pytestmark = pytest.mark.usefixtures("fast_compiling_rng")


def override(cfg, **overrides):
  return tc.override(cfg, overrides)


def tiny_vq_config(**overrides):
  cfg = vqvae_mnist.get_config()
  override(cfg, **{"model.hidden": 8, "model.residual_hidden": 4, "model.num_residual_blocks": 1,
                   "model.num_codes": 8, "model.code_dim": 4, "optimizer.learning_rate": 3e-3,
                   "optimizer.schedule": "constant", "batch_size": 32, "num_epochs": 2,
                   "eval_every_epochs": 1, "progress": False, "eval.batch_size": 64,
                   "vq.decay": 0.9, "vq.dead_threshold": 0.1})
  return override(cfg, **overrides)


def tiny_prior_config(vqvae_workdir, **overrides):
  cfg = prior_mnist.get_config()
  override(cfg, **{"vqvae_workdir": str(vqvae_workdir), "model.features": 8, "model.num_layers": 2,
                   "model.output_features": 8, "model.num_classes": 4, "batch_size": 32,
                   "num_epochs": 2, "eval_every_epochs": 1, "progress": False, "eval.batch_size": 64,
                   "optimizer.learning_rate": 3e-3, "optimizer.schedule": "constant"})
  return override(cfg, **overrides)


def synthetic(n=256, seed=0, shape=(28, 28, 1)):
  """Binary images from 4 prototypes; the prototype is the label."""
  rng = np.random.default_rng(seed)
  protos = rng.uniform(0.05, 0.95, (4,) + shape)
  labels = rng.integers(0, 4, n).astype(np.int32)
  images = (rng.uniform(size=(n,) + shape) < protos[labels]).astype(np.uint8)
  return {"train": data_lib.Split(images, labels), "validation": data_lib.Split(images[:64], labels[:64])}


def read_metrics(workdir):
  return [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]


# -- likelihoods and the objective -----------------------------------------------------------

def test_discrete_likelihoods_are_normalised_and_match_scipy():
  levels = jnp.arange(256)
  mean, log_scale = 0.3, math.log(0.1)
  lp = dist.discretized_logistic_log_prob(levels, jnp.full(256, mean), jnp.full(256, log_scale), 0)
  np.testing.assert_allclose(jax.nn.logsumexp(lp), 0.0, atol=1e-5)
  centre = 2 * np.arange(256) / 255 - 1
  cdf = lambda t: scipy.stats.logistic.cdf(t, loc=mean, scale=0.1)
  expected = cdf(centre + 1 / 255) - cdf(centre - 1 / 255)
  expected[0], expected[-1] = cdf(centre[0] + 1 / 255), 1 - cdf(centre[-1] - 1 / 255)
  np.testing.assert_allclose(np.exp(lp), expected, rtol=1e-3, atol=1e-9)
  # A sharp logistic far in a tail stays finite.
  assert np.isfinite(float(dist.discretized_logistic_log_prob(jnp.asarray(3), jnp.asarray(0.9),
                                                              jnp.asarray(-7.0), 0)))
  logits = jax.random.normal(jax.random.key(0), (2, 3, 256))
  x = jnp.asarray([[0, 17, 255], [128, 1, 254]])
  ref = np.log(scipy.special.softmax(np.asarray(logits, np.float64), -1))
  np.testing.assert_allclose(dist.categorical_log_prob(x, logits, 2),
                             sum(ref[i, j, x[i, j]] for i in range(2) for j in range(3)), rtol=1e-5)


# -- stage 1 and 2 end to end on synthetic data ---------------------------------------------------

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  root = tmp_path_factory.mktemp("vq")
  data = synthetic()
  traces = []

  def counting_loss(*args, **kw):
    traces.append(1)
    return losses.vqvae_loss(*args, beta=0.25, ema=True, **kw)

  vq_state, vq_last = vq_train.train_and_evaluate(tiny_vq_config(), root / "vq", datasets=data,
                                                  loss_fn=counting_loss)
  prior_state, prior_last = vq_prior.train_prior(tiny_prior_config(root / "vq"), root / "prior", datasets=data)
  return types.SimpleNamespace(root=root, data=data, traces=len(traces), vq_state=vq_state,
                               vq_last=vq_last, prior_state=prior_state, prior_last=prior_last)


def test_objective_terms_and_which_parameters_they_move(trained):
  model, params = vq_config.make_vqvae(tiny_vq_config()), trained.vq_state.params
  x = jnp.asarray(trained.data["train"].images[:4], jnp.float32)

  @jax.jit
  def run(params, x):
    t = jax.vmap(lambda xi: model.apply({"params": params}, xi))(x)
    grads = {ema: jax.grad(lambda p: jnp.sum(jax.vmap(lambda xi: losses.vqvae_loss(
        model, p, xi, None, beta=0.25, ema=ema)[0])(x)))(params) for ema in (False, True)}
    loss, aux = jax.vmap(lambda xi: losses.vqvae_loss(model, params, xi, None, beta=0.25))(x)
    return t, grads, loss, aux

  t, grads, loss, aux = run(params, x)
  assert t["z_e"].shape == (4, 7, 7, 4) and t["indices"].shape == (4, 7, 7)
  np.testing.assert_allclose(loss, -t["log_px_z"] + t["codebook_loss"] + 0.25 * t["commitment_loss"],
                             rtol=1e-6)
  np.testing.assert_allclose(aux["codebook_loss"], aux["commitment_loss"], rtol=1e-6)  # same value
  assert np.all(np.asarray(grads[True]["quantizer"]["codebook"]) == 0)  # EMA: no codebook gradient
  assert np.any(np.asarray(grads[False]["quantizer"]["codebook"]) != 0)
  np.testing.assert_allclose(grads[True]["decoder"]["up_1"]["kernel"],
                             grads[False]["decoder"]["up_1"]["kernel"], rtol=1e-5)  # decoder: recon only


def test_vqvae_training_learns_and_updates_the_ema_codebook_in_the_step(trained):
  rows = read_metrics(trained.root / "vq")
  assert [r["epoch"] for r in rows] == [1, 2]
  assert trained.traces == 1  # one trace of the loss for the whole run: no retrace per epoch
  assert rows[-1]["train_recon"] < rows[0]["train_recon"]
  for key in ("train_perplexity", "train_codes_used", "train_dead_codes", "val_perplexity",
              "val_codes_used", "val_recon", "val_uniform_bound"):
    assert np.isfinite(rows[-1][key]), key
  assert 1.0 <= rows[-1]["train_perplexity"] <= 8.0
  # The codebook param is the EMA ratio m / N~ written inside the jitted step.
  state = trained.vq_state
  count, embed_sum = np.asarray(state.codebook_stats.count), np.asarray(state.codebook_stats.embed_sum)
  total = count.sum()
  smoothed = (count + 1e-5) / (total + 8 * 1e-5) * total
  np.testing.assert_allclose(state.params["quantizer"]["codebook"], embed_sum / smoothed[:, None],
                             rtol=1e-4, atol=1e-6)
  assert (trained.root / "vq" / "figures" / "reconstructions.png").stat().st_size > 1000


def test_prior_training_records_its_vqvae_and_writes_samples(trained):
  rows = read_metrics(trained.root / "prior")
  assert [r["epoch"] for r in rows] == [1, 2]
  assert rows[-1]["val_nll"] < 16 * 7 * 7 * math.log(8)  # far below uniform on these 4 prototypes
  source = json.loads((trained.root / "prior" / "vqvae.json").read_text())
  assert source["num_codes"] == 8 and source["grid_shape"] == [7, 7]
  assert source["fingerprint"] == vq_workdirs.fingerprint(trained.vq_state.params)
  assert (trained.root / "prior" / "figures" / "samples.png").stat().st_size > 1000


def test_bound_is_recon_plus_prior_nll_against_direct_computation(trained):
  prior, vq_run = vq_workdirs.load_prior(trained.root / "prior")
  assert vq_run.epoch == 2 and prior.epoch == 2
  images, labels = trained.data["validation"].images[:40], trained.data["validation"].labels[:40]
  out = vq_evaluate.evaluate(vq_run.model, vq_run.params, images, mode="static", key=jax.random.key(0),
                             batch_size=64, prior=prior.model, prior_params=prior.params, labels=labels)
  x = jnp.asarray(images, jnp.float32)
  t = vq_run.model.apply({"params": vq_run.params}, x)
  log_pz = prior.model.apply({"params": prior.params}, t["indices"], jnp.asarray(labels),
                             method=prior.model.log_prob)
  np.testing.assert_allclose(out["recon"], -np.mean(t["log_px_z"]), rtol=1e-5)
  np.testing.assert_allclose(out["prior_nll"], -np.mean(log_pz), rtol=1e-5)
  assert out["bound"] == pytest.approx(out["recon"] + out["prior_nll"])
  assert out["bits_per_dim"] == pytest.approx(out["bound"] / (784 * math.log(2)))
  assert out["uniform_bound"] == pytest.approx(out["recon"] + 49 * math.log(8))
  assert out["bound"] < out["uniform_bound"]
  counts = np.bincount(np.asarray(t["indices"]).ravel(), minlength=8)
  assert out["num_codes_used"] == int(np.sum(counts > 0)) and out["dead_codes"] == 8 - out["num_codes_used"]
  p = counts[counts > 0] / counts.sum()
  assert out["perplexity"] == pytest.approx(np.exp(-np.sum(p * np.log(p))), rel=1e-5)
  # Batch size does not change the figures.
  again = vq_evaluate.evaluate(vq_run.model, vq_run.params, images, mode="static", key=jax.random.key(0),
                               batch_size=64, prior=prior.model, prior_params=prior.params, labels=labels)
  assert again["bound"] == pytest.approx(out["bound"], rel=1e-6)


def test_sampled_images_decode_sampled_codes(trained):
  prior, vq_run = vq_workdirs.load_prior(trained.root / "prior")
  labels = jnp.arange(6) % 4
  images, codes = vq_prior.sample_images(vq_run.model, vq_run.params, prior.model, prior.params,
                                         jax.random.key(3), 6, labels)
  again, codes2 = vq_prior.sample_images(vq_run.model, vq_run.params, prior.model, prior.params,
                                         jax.random.key(3), 6, labels)
  np.testing.assert_array_equal(codes, codes2)
  assert images.shape == (6, 28, 28, 1) and float(images.min()) >= 0 and float(images.max()) <= 1
  assert codes.shape == (6, 7, 7) and int(codes.min()) >= 0 and int(codes.max()) < 8


def test_a_workdir_written_before_the_autoregressive_decoder_loads_and_resumes_as_before(trained, tmp_path):
  vq_dir = tmp_path / "vq"
  shutil.copytree(trained.root / "vq", vq_dir)
  saved = json.loads((vq_dir / "config.json").read_text())
  for field in ("model.ar_layers", "model.ar_features", "model.ar_kernel_size"):  # added later
    del saved["model"][field.split(".")[1]]
  (vq_dir / "config.json").write_text(json.dumps(saved))
  run = vq_workdirs.load_vqvae(vq_dir)
  assert run.model.ar_layers == 0 and run.epoch == 2
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(run.params),
               jax.device_get(trained.vq_state.params))
  # Resuming with today's config (the new fields at their defaults) is not "another config" ...
  vq_train.train_and_evaluate(tiny_vq_config(num_epochs=3), vq_dir, datasets=trained.data)
  assert [r["epoch"] for r in read_metrics(vq_dir)][-1] == 3
  # ... but an autoregressive decoder is.
  with pytest.raises(config_lib.ConfigError, match="model.ar_layers: .* in the workdir, 2 now"):
    vq_train.train_and_evaluate(tiny_vq_config(num_epochs=4, **{"model.ar_layers": 2}), vq_dir,
                                datasets=trained.data)


def test_an_autoregressive_decoder_trains_evaluates_and_samples_end_to_end(trained, tmp_path):
  cfg = tiny_vq_config(num_epochs=1, **{"model.ar_layers": 1, "model.ar_features": 4})
  vq_train.train_and_evaluate(cfg, tmp_path / "vq", datasets=trained.data)
  assert (tmp_path / "vq" / "figures" / "reconstructions.png").stat().st_size > 1000
  vq_prior.train_prior(tiny_prior_config(tmp_path / "vq", num_epochs=1), tmp_path / "prior",
                       datasets=trained.data)
  prior, vq_run = vq_workdirs.load_prior(tmp_path / "prior")
  assert vq_run.model.ar_layers == 1
  images, codes = vq_prior.sample_images(vq_run.model, vq_run.params, prior.model, prior.params,
                                         jax.random.key(3), 4, jnp.arange(4))
  assert images.shape == (4, 28, 28, 1) and 0 <= float(images.min()) and float(images.max()) <= 1
  # The bound's reconstruction term is the teacher-forced autoregressive likelihood of the image.
  x = jnp.asarray(trained.data["validation"].images[:5], jnp.float32)
  out = vq_evaluate.evaluate(vq_run.model, vq_run.params, trained.data["validation"].images[:5],
                             mode="static", key=jax.random.key(0), batch_size=5)
  codes = vq_run.model.apply({"params": vq_run.params}, x, method=vq_run.model.codes)
  decoded = vq_run.model.apply({"params": vq_run.params}, codes, x, method=vq_run.model.decode_codes)
  direct = -vq_run.model.apply({"params": vq_run.params}, x, decoded, method=vq_run.model.log_likelihood)
  np.testing.assert_allclose(out["recon"], float(jnp.mean(direct)), rtol=1e-5)


def test_prior_resume_is_exact_and_a_changed_vqvae_is_refused(trained, tmp_path):
  vq_dir = tmp_path / "vq"  # a copy of the trained VQ-VAE, changed below
  shutil.copytree(trained.root / "vq", vq_dir)
  cfg = tiny_prior_config(vq_dir, num_epochs=1)  # stopped after epoch 1 of the fixture's 2 ...
  vq_prior.train_prior(cfg, tmp_path / "resumed", datasets=trained.data)
  resumed, _ = vq_prior.train_prior(override(cfg, num_epochs=2), tmp_path / "resumed", datasets=trained.data)
  # ... and resumed: bit-identical to the fixture's uninterrupted run (same codes, seed and config).
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(resumed.params),
               jax.device_get(trained.prior_state.params))
  assert [r["epoch"] for r in read_metrics(tmp_path / "resumed")] == [1, 2]

  # The VQ-VAE workdir gets a newer checkpoint (one code moved): its codes are not the prior's.
  state = trained.vq_state
  codebook = state.params["quantizer"]["codebook"]
  ckpt = checkpointing.Checkpointer(vq_dir / "checkpoints")
  ckpt.save(3, state.replace(params=vq_train._with_codebook(state.params, codebook.at[0, 0].add(1.0))))
  ckpt.close()
  with pytest.raises(checkpointing.CheckpointError, match="another VQ-VAE checkpoint.*epoch 2.*epoch 3"):
    vq_workdirs.load_prior(tmp_path / "resumed")
  with pytest.raises(checkpointing.CheckpointError, match="another VQ-VAE checkpoint"):
    vq_workdirs.load_prior(trained.root / "prior", vqvae_workdir=vq_dir)
  with pytest.raises(checkpointing.CheckpointError, match="another VQ-VAE checkpoint"):
    vq_prior.train_prior(override(cfg, num_epochs=3), tmp_path / "resumed", datasets=trained.data)


def test_prior_on_a_vqvae_with_another_grid_is_refused(trained, tmp_path):
  # A VQ-VAE with one downsampling (14x14 grid), saved untrained.
  cfg = tiny_vq_config(**{"model.num_downsamples": 1})
  (tmp_path / "vq14").mkdir()
  (tmp_path / "vq14" / "config.json").write_text(cfg.to_json())
  model = vq_config.make_vqvae(cfg)
  tx = config_lib.make_optimizer(cfg.optimizer, config_lib.make_schedule(cfg.optimizer, 1, 1))
  ckpt = checkpointing.Checkpointer(tmp_path / "vq14" / "checkpoints")
  abstract = jax.eval_shape(lambda: vq_train.create_train_state(model, jax.random.key(0), tx))
  ckpt.save(1, jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), abstract))  # values do not matter
  ckpt.close()
  with pytest.raises(checkpointing.CheckpointError, match="7x7 grids of K = 8.*14x14 grids of K = 8"):
    vq_workdirs.load_prior(trained.root / "prior", vqvae_workdir=tmp_path / "vq14")
  prior, _ = vq_workdirs.load_prior(trained.root / "prior")
  with pytest.raises(data_lib.DataError, match=r"shape \(3, 14, 14\)"):
    vq_evaluate.prior_log_prob(prior.model, prior.params, np.zeros((3, 14, 14), np.int32),
                               np.zeros(3, np.int32))


# -- configs ----------------------------------------------------------------------------------

VQ_CONFIGS = sorted(p.stem for p in Path(__file__).resolve().parents[1].glob("vae_jax/configs/vq/*.py")
                    if p.stem != "__init__")


@pytest.mark.parametrize("name", VQ_CONFIGS)
def test_every_vq_config_is_valid(name):
  cfg = importlib.import_module(f"vae_jax.configs.vq.{name}").get_config()
  if cfg.model.name == "vqvae":
    vq_config.validate_vqvae(cfg)
    assert vq_config.make_vqvae(cfg).grid_shape in ((7, 7), (8, 8))
  else:
    vq_config.validate_prior(cfg, check_workdir=False)


def test_unknown_and_missing_fields_are_refused(tmp_path):
  cfg = tiny_vq_config()
  cfg.vq.restart_treshold = 0.1  # misspelled
  with pytest.raises(config_lib.ConfigError, match="vq.restart_treshold is not a known field; did you "
                                                   "mean config.vq.dead_threshold|restart_treshold"):
    vq_train.train_and_evaluate(cfg, tmp_path, datasets=synthetic(8))
  cfg = tiny_vq_config()
  del cfg.vq["beta"]
  with pytest.raises(config_lib.ConfigError, match="config.vq.beta is missing"):
    vq_config.validate_vqvae(cfg)


@pytest.mark.parametrize("overrides,match", [
    ({"model.num_codes": 1}, "model.num_codes=1"),
    ({"model.num_codes": 0}, "model.num_codes=0"),
    ({"model.likelihood": "gaussian"}, "model.likelihood"),
    ({"model.likelihood": "categorical"}, "data.mode='grey'"),
    ({"data.name": "mnist", "data.mode": "grey"}, "grey-level data needs"),
    ({"model.num_downsamples": 3}, "divisible by 8"),
    ({"vq.decay": 1.0}, "vq.decay"),
    ({"optimizer.schedule": "burda"}, "optimizer.schedule"),
])
def test_bad_vqvae_configs_are_named_before_any_work(tmp_path, overrides, match):
  with pytest.raises(config_lib.ConfigError, match=match):
    vq_train.train_and_evaluate(tiny_vq_config(**overrides), tmp_path, datasets=synthetic(8))
  assert not (tmp_path / "config.json").exists()


def test_bad_prior_configs_are_named(tmp_path):
  with pytest.raises(config_lib.ConfigError, match="vqvae_workdir"):
    vq_prior.train_prior(tiny_prior_config(""), tmp_path / "p")
  with pytest.raises(config_lib.ConfigError, match="vqvae_workdir"):
    vq_prior.train_prior(tiny_prior_config(tmp_path / "missing"), tmp_path / "p")
  (tmp_path / "vq").mkdir()
  (tmp_path / "vq" / "config.json").write_text("{}")
  with pytest.raises(config_lib.ConfigError, match="kernel_size"):
    vq_prior.train_prior(tiny_prior_config(tmp_path / "vq", **{"model.kernel_size": 4}), tmp_path / "p")


# -- the CIFAR-10 configuration's code path (mock data) -----------------------------------------

def test_cifar10_config_trains_on_mock_data_with_a_discrete_likelihood(tmp_path):
  cfg = vqvae_cifar10.get_config()
  assert (cfg.model.num_codes, cfg.batch_size, cfg.optimizer.learning_rate) == (512, 128, 2e-4)
  assert vq_config.make_vqvae(cfg).grid_shape == (8, 8)
  override(cfg, **{"model.hidden": 8, "model.residual_hidden": 4, "model.num_residual_blocks": 1,
                   "model.num_codes": 8, "model.code_dim": 4, "batch_size": 8, "num_epochs": 1,
                   "progress": False, "eval.batch_size": 8, "data.download": False,
                   "vq.ema": False, "vq.restart": False})  # also the codebook-loss path
  with tfds.testing.mock_data(num_examples=24, policy=tfds.testing.MockPolicy.USE_CODE):
    data_lib._decode_tfds_split.cache_clear()
    state, last = vq_train.train_and_evaluate(cfg, tmp_path)
  data_lib._decode_tfds_split.cache_clear()
  init = vqvae.init_params(vq_config.make_vqvae(cfg), jax.random.split(jax.random.key(0), 4)[0])
  assert not np.allclose(state.params["quantizer"]["codebook"], init["quantizer"]["codebook"])
  np.testing.assert_array_equal(state.codebook_stats.embed_sum, init["quantizer"]["codebook"])  # unused
  assert np.isfinite(last["val_recon"]) and last["val_uniform_bits_per_dim"] > 0
  assert last["val_uniform_bound"] == pytest.approx(last["val_recon"] + 64 * math.log(8))


def test_vqvae_runs_are_bit_identical_for_a_seed_and_differ_across_seeds(trained, tmp_path):
  """Issue 6's determinism, for the VQ-VAE stage (EMA codebook and restarts in the step)."""
  timing = ("seconds", "examples_per_s")
  untimed = lambda rows: [{k: v for k, v in r.items() if k not in timing} for r in rows]
  again, _ = vq_train.train_and_evaluate(tiny_vq_config(), tmp_path / "same", datasets=trained.data)
  for a, b in zip(jax.tree.leaves(trained.vq_state), jax.tree.leaves(again)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert untimed(read_metrics(tmp_path / "same")) == untimed(read_metrics(trained.root / "vq"))
  other, _ = vq_train.train_and_evaluate(tiny_vq_config(seed=1), tmp_path / "other", datasets=trained.data)
  assert any(not np.array_equal(np.asarray(a), np.asarray(b))
             for a, b in zip(jax.tree.leaves(trained.vq_state.params), jax.tree.leaves(other.params)))


def _vq_small_form(name, seed, vqvae_workdir=None):
  """A VQ config file shrunk (8 channels, one residual block, <= 8 codes of dimension 4, 2 epochs of
  batch 32; a 2-layer prior of 8 features), keeping its codebook kind, likelihood, data and schedule."""
  cfg = importlib.import_module(f"vae_jax.configs.vq.{name}").get_config()
  cfg.seed = seed
  common = {"batch_size": 32, "num_epochs": 2, "eval_every_epochs": 2, "progress": False,
            "eval.batch_size": 64}
  if cfg.model.name == "vqvae":
    return override(cfg, **common, **{
        "model.hidden": 8, "model.residual_hidden": 4, "model.num_residual_blocks": 1,
        "model.num_codes": min(cfg.model.num_codes, 8), "model.code_dim": 4,
        "model.ar_features": min(cfg.model.ar_features, 4)})
  return override(cfg, **common, **{"vqvae_workdir": str(vqvae_workdir), "model.features": 8,
                                    "model.num_layers": 2, "model.output_features": 8})


def _small_vq_data(cfg, shape):
  rng = np.random.default_rng(0)
  high = 2 if cfg.data.mode == "static" else 256
  images = rng.integers(0, high, (96,) + shape).astype(np.uint8)
  labels = rng.integers(0, 10, 96).astype(np.int32)
  return {"train": data_lib.Split(images[:64], labels[:64]),
          "validation": data_lib.Split(images[64:], labels[64:])}


@pytest.mark.parametrize("name", VQ_CONFIGS)
def test_every_vq_config_in_small_form_is_bit_identical_for_a_seed(name, tmp_path):
  """Issue 6's determinism on each file of vae_jax/configs/vq (a prior on a small VQ-VAE of its
  dataset); that another seed differs is checked once, above and in test_vq_reliability."""
  cfg = importlib.import_module(f"vae_jax.configs.vq.{name}").get_config()
  vq_workdir, data_cfg = None, cfg
  if cfg.model.name != "vqvae":  # a prior needs its stage-1 model: the small form of its dataset's VQ-VAE
    data_cfg = _vq_small_form("vqvae_cifar10" if "cifar10" in name else "vqvae_mnist", 0)
    vq_workdir = tmp_path / "vq"
  data = _small_vq_data(data_cfg, data_lib.DATASETS[data_cfg.data.name].image_shape)
  if vq_workdir is not None:
    vq_train.train_and_evaluate(data_cfg, vq_workdir, datasets=data)
  runs = {}
  for run, seed in (("a", 0), ("b", 0)):
    small = _vq_small_form(name, seed, vq_workdir)
    fit = vq_train.train_and_evaluate if small.model.name == "vqvae" else vq_prior.train_prior
    state, _ = fit(small, tmp_path / run, datasets=data)
    rows = [{k: v for k, v in r.items() if k not in ("seconds", "examples_per_s")}
            for r in read_metrics(tmp_path / run)]
    runs[run] = [np.asarray(x) for x in jax.tree.leaves(state)], rows
  assert len(runs["a"][1]) == 2 and any(k.startswith("val_") for k in runs["a"][1][-1])  # evaluated too
  for x, y in zip(runs["a"][0], runs["b"][0]):
    np.testing.assert_array_equal(x, y)
  assert runs["a"][1] == runs["b"][1]  # every metric, train and validation, to the last bit
