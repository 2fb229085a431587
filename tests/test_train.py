import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vae_jax.configs import default
from tests.conftest import requires_binarized_mnist
from vae_jax import checkpointing
from vae_jax import config as config_lib
from vae_jax import data as data_lib
from vae_jax import evaluation as eval_lib
from vae_jax import losses
from vae_jax import train
from vae_jax import workdir as workdir_lib


def tiny_config(**overrides):
  cfg = default.get_config()
  cfg.model.hidden_sizes = ((16,),)
  cfg.model.latent_dims = (4,)
  cfg.batch_size = 16
  cfg.num_epochs = 3
  cfg.eval_every_epochs = 1
  cfg.eval_num_samples = 2
  cfg.checkpoint_every_epochs = 1
  cfg.keep_checkpoints = 5
  cfg.eval.batch_size = 32
  cfg.eval.chunk_size = 2
  cfg.progress = False
  for k, v in overrides.items():
    parent = cfg
    *path, leaf = k.split(".")
    for p in path:
      parent = parent[p]
    parent[leaf] = v
  return cfg


def synthetic(n=256, seed=0, shape=(28, 28, 1)):
  """Binary images drawn from 4 prototypes: something a VAE can learn in a few steps."""
  rng = np.random.default_rng(seed)
  protos = rng.uniform(0.05, 0.95, (4,) + shape)
  idx = rng.integers(0, 4, n)
  images = (rng.uniform(size=(n,) + shape) < protos[idx]).astype(np.uint8)
  return {"train": data_lib.Split(images, None), "validation": data_lib.Split(images[:64], None)}


def read_metrics(workdir):
  return [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]


def params_of(state):
  return jax.tree.map(np.asarray, state.params)


def test_short_run_learns_and_writes_metrics_checkpoints_figures(tmp_path):
  state, last = train.train_and_evaluate(tiny_config(num_epochs=4), tmp_path, datasets=synthetic())
  rows = read_metrics(tmp_path)
  assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
  assert rows[-1]["train_loss"] < rows[0]["train_loss"] - 5
  assert rows[-1]["val_elbo"] > rows[0]["val_elbo"]
  assert all(np.isfinite(v) for r in rows for v in r.values() if isinstance(v, float))
  assert int(state.step) == 4 * (256 // 16)
  assert (tmp_path / "figures" / "samples.png").stat().st_size > 1000
  assert (tmp_path / "figures" / "reconstructions.png").exists()
  assert json.loads((tmp_path / "config.json").read_text())["model"]["latent_dims"] == [4]


def test_epoch_is_compiled_once_and_jit_matches_eager():
  cfg = tiny_config()
  model = config_lib.make_model(cfg)
  tx = config_lib.make_optimizer(cfg.optimizer, config_lib.make_schedule(cfg.optimizer, 16, 3))
  keys = train.RunKeys.from_seed(0)
  images = jnp.asarray(synthetic()["train"].images)
  epoch_fn = train.make_train_epoch(model, losses.make_loss(cfg.loss), mode="static", batch_size=16)
  state = train.create_train_state(model, keys.init, tx)
  for epoch in range(1, 4):
    state, metrics = epoch_fn(state, images, epoch, keys.train, keys.data)
  assert epoch_fn._cache_size() == 1  # no retrace after the first epoch
  assert metrics["loss"].shape == (16,)

  state0 = train.create_train_state(model, keys.init, tx)
  step_kw = dict(model=model, loss_fn=losses.make_loss(cfg.loss), mode="static")
  batch = images[:16]
  jitted = jax.jit(lambda s, b, k: train.train_step(s, b, k, **step_kw))
  s_jit, m_jit = jitted(state0, batch, keys.train)
  s_eager, m_eager = train.train_step(state0, batch, keys.train, **step_kw)
  np.testing.assert_allclose(m_jit["loss"], m_eager["loss"], rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
               s_jit.params, s_eager.params)


def test_same_seed_identical_different_seed_differs(tmp_path):
  data = synthetic()
  a, _ = train.train_and_evaluate(tiny_config(num_epochs=2), tmp_path / "a", datasets=data)
  b, _ = train.train_and_evaluate(tiny_config(num_epochs=2), tmp_path / "b", datasets=data)
  c, _ = train.train_and_evaluate(tiny_config(num_epochs=2, seed=1), tmp_path / "c", datasets=data)
  jax.tree.map(np.testing.assert_array_equal, params_of(a), params_of(b))
  assert read_metrics(tmp_path / "a") == [dict(r, seconds=x["seconds"], examples_per_s=x["examples_per_s"])
                                         for r, x in zip(read_metrics(tmp_path / "b"), read_metrics(tmp_path / "a"))]
  assert not np.array_equal(params_of(a)["dec_out"]["kernel"], params_of(c)["dec_out"]["kernel"])


def test_resumed_run_ends_identical_to_uninterrupted(tmp_path):
  data = synthetic()
  cfg = tiny_config(num_epochs=4, checkpoint_every_epochs=2, **{"loss.warmup_epochs": 2.0})
  full, _ = train.train_and_evaluate(cfg, tmp_path / "full", datasets=data)
  train.train_and_evaluate(tiny_config(num_epochs=3, checkpoint_every_epochs=2,
                                       **{"loss.warmup_epochs": 2.0}), tmp_path / "resumed", datasets=data)
  # The "stopped" run saved epochs 2 and 3; drop 3 to stop it between checkpoints.
  ckpt = checkpointing.Checkpointer(tmp_path / "resumed" / "checkpoints")
  assert ckpt.epochs() == [2, 3]
  ckpt._manager.delete(3)
  ckpt.close()
  resumed, _ = train.train_and_evaluate(cfg, tmp_path / "resumed", datasets=data)
  jax.tree.map(np.testing.assert_array_equal, params_of(full), params_of(resumed))
  assert int(resumed.step) == int(full.step)
  assert [r["epoch"] for r in read_metrics(tmp_path / "resumed")] == [1, 2, 3, 4]
  assert read_metrics(tmp_path / "resumed")[-1]["train_loss"] == read_metrics(tmp_path / "full")[-1]["train_loss"]
  # The stopped run's best checkpoint of epoch 3 was newer than the resumed epoch 2: rewritten, same choice.
  best = [checkpointing.Checkpointer(tmp_path / run / train.BEST_DIR).epochs() for run in ("full", "resumed")]
  assert best[0] == best[1] == [min(read_metrics(tmp_path / "full"), key=lambda r: r["val_nll"])["epoch"]]


def test_resume_with_another_config_is_refused(tmp_path):
  train.train_and_evaluate(tiny_config(num_epochs=1), tmp_path, datasets=synthetic())
  with pytest.raises(config_lib.ConfigError, match="model.latent_dims"):
    train.train_and_evaluate(tiny_config(num_epochs=2, **{"model.latent_dims": (5,)}), tmp_path,
                             datasets=synthetic())


@pytest.mark.parametrize("overrides,datasets,error,match", [
    ({}, "wrong_shape", data_lib.DataError, "shape"),
    ({}, "nan", data_lib.DataError, "non-finite"),
    ({"data.name": "imagenet"}, None, config_lib.ConfigError, "data.name"),
    ({"model.network": "resnet"}, None, config_lib.ConfigError, "model.network"),
    ({"loss.beta": -0.5}, None, config_lib.ConfigError, "loss.beta"),
    ({"loss.num_samples": 0}, None, config_lib.ConfigError, "loss.num_samples"),
    ({"batch_size": 1000}, None, config_lib.ConfigError, "batch_size"),
])
def test_bad_input_fails_before_training(tmp_path, overrides, datasets, error, match):
  data = synthetic()
  if datasets == "wrong_shape":
    data = synthetic(shape=(32, 32, 1))
  elif datasets == "nan":
    bad = data["train"].images.astype(np.float32)
    bad[3, 5, 5, 0] = np.nan
    data = dict(data, train=data_lib.Split(bad, None))
  with pytest.raises(error, match=match):
    train.train_and_evaluate(tiny_config(**overrides), tmp_path, datasets=data)
  assert not (tmp_path / "checkpoints").exists() and not (tmp_path / "metrics.jsonl").exists()


def test_nan_loss_stops_with_step_and_keeps_last_good_checkpoint(tmp_path):
  def exploding_loss(model, params, x, key, *, kl_weight):
    loss, aux = losses.elbo_loss(model, params, x, key, kl_weight=1.0)
    # kl_weight ramps 0 -> 1 over 4 epochs (16 steps each): NaN from step 40, in epoch 3.
    return loss + jnp.where(kl_weight >= 40 / 64, jnp.nan, 0.0), aux

  cfg = tiny_config(num_epochs=5, **{"loss.warmup_epochs": 4.0})
  with pytest.raises(train.NonFiniteError, match=r"non-finite .*loss.* at step 40 \(epoch 3, batch 8\)"):
    train.train_and_evaluate(cfg, tmp_path, loss_fn=exploding_loss, datasets=synthetic())
  ckpt = checkpointing.Checkpointer(tmp_path / "checkpoints")
  assert ckpt.epochs() == [1, 2]
  model = config_lib.make_model(cfg)
  tx = config_lib.make_optimizer(cfg.optimizer, config_lib.make_schedule(cfg.optimizer, 16, 5))
  epoch, state = ckpt.restore_latest(train.create_train_state(model, jax.random.key(0), tx))
  assert epoch == 2 and int(state.step) == 32
  assert all(np.all(np.isfinite(l)) for l in jax.tree.leaves(state.params))


def test_user_loss_function_is_used_without_editing_the_library(tmp_path):
  calls = []

  def free_bits_loss(model, params, x, key, *, kl_weight):
    calls.append(1)  # traced once
    t = model.apply({"params": params}, x, key, 1)
    kl_per_unit = 0.5 * (t["mean"] ** 2 + jnp.exp(t["logvar"]) - 1 - t["logvar"])
    loss = -t["log_px_z"][0] + jnp.sum(jnp.maximum(kl_per_unit, 0.5))
    return loss, dict(free_bits_kl=jnp.sum(jnp.maximum(kl_per_unit, 0.5)))

  _, last = train.train_and_evaluate(tiny_config(num_epochs=2), tmp_path, loss_fn=free_bits_loss,
                                     datasets=synthetic())
  assert calls and "train_free_bits_kl" in last and last["train_free_bits_kl"] >= 4 * 0.5


def test_kl_warmup_weight():
  w = [float(train.kl_weight(jnp.asarray(s), beta=2.0, warmup_steps=10)) for s in (0, 5, 10, 50)]
  assert w == [0.0, 1.0, 2.0, 2.0]
  assert float(train.kl_weight(jnp.asarray(0), beta=0.5, warmup_steps=0)) == 0.5


@requires_binarized_mnist
def test_short_run_on_binarized_mnist_improves_validation_elbo(tmp_path):
  cfg = tiny_config(num_epochs=1, batch_size=100, eval_num_samples=1,
                    **{"model.hidden_sizes": ((200, 200),), "model.latent_dims": (50,)})
  datasets = train.load_datasets(cfg)
  val = datasets["validation"].images[:2000]
  datasets["validation"] = data_lib.Split(val, None)
  model = config_lib.make_model(cfg)
  init = models_init(cfg, model, datasets)
  before = eval_lib.evaluate(model, init, val, key=jax.random.key(0), mode="static", num_samples=1)
  state, last = train.train_and_evaluate(cfg, tmp_path, datasets=datasets)
  after = eval_lib.evaluate(model, state.params, val, key=jax.random.key(0), mode="static", num_samples=1)
  assert after["elbo"] > before["elbo"] + 20, (before["elbo"], after["elbo"])
  assert after["elbo"] > -140  # one epoch of the Burda architecture reaches about -125


def models_init(cfg, model, datasets):
  tx = config_lib.make_optimizer(cfg.optimizer, config_lib.make_schedule(cfg.optimizer, 1, 1))
  p = np.clip(datasets["train"].images.mean(0), 1e-3, 1 - 1e-3)
  return train.create_train_state(model, train.RunKeys.from_seed(cfg.seed).init, tx,
                                  output_bias=np.log(p) - np.log1p(-p)).params


def test_best_checkpoint_is_the_epoch_with_the_lowest_validation_nll_across_a_resume(tmp_path):
  data = synthetic()
  train.train_and_evaluate(tiny_config(num_epochs=2), tmp_path, datasets=data)
  train.train_and_evaluate(tiny_config(num_epochs=5), tmp_path, datasets=data)  # resumes at epoch 2
  rows = read_metrics(tmp_path)
  assert [r["epoch"] for r in rows] == [1, 2, 3, 4, 5]
  best_epoch = min(rows, key=lambda r: r["val_nll"])["epoch"]
  assert checkpointing.Checkpointer(tmp_path / train.BEST_DIR).epochs() == [best_epoch]
  config, model, best_params, epoch = train.restore_workdir(tmp_path, checkpoint="best")
  assert epoch == best_epoch and train.restore_workdir(tmp_path)[3] == 5
  # The same parameters as the regular checkpoint of that epoch (all five are kept here).
  template = train.create_train_state(model, jax.random.key(0), config_lib.make_optimizer(
      config.optimizer, config_lib.make_schedule(config.optimizer, 1, 1)))
  regular = checkpointing.Checkpointer(tmp_path / "checkpoints").restore(best_epoch, template)
  jax.tree.map(np.testing.assert_array_equal, params_of(regular), jax.tree.map(np.asarray, best_params))
  assert workdir_lib.best_score(tmp_path / "metrics.jsonl", [best_epoch], "val_nll") == min(r["val_nll"] for r in rows)
  assert workdir_lib.best_score(tmp_path / "metrics.jsonl", [], "val_nll") is None
  with pytest.raises(ValueError, match="checkpoint='worst'"):
    train.restore_workdir(tmp_path, checkpoint="worst")
