"""Reliability of the two VQ trainers: non-finite steps skipped or stopped with a name, debug mode,
crash safety (SIGKILL and restart), damaged checkpoints, bad images.

Reuses the core trainer's reliability machinery (tests/test_reliability.py): its XLA cache fixture
and its kill-and-restart driver.
"""

import functools
from collections import Counter

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from vae_jax.configs.vq import prior_mnist, vqvae_mnist
from tests import test_config as tc
from tests.test_reliability import compile_cache  # noqa: F401  (autouse: the module's XLA cache)
from tests.test_reliability import MARKER, kill_and_restart, leaves, truncate_files
from tests.test_reliability import marked_data as _marked_data
from tests.test_train import read_metrics
from tests.test_vq_numerics import constant_params
from vae_jax import checkpointing
from vae_jax import config as config_lib
from vae_jax import data as data_lib
from vae_jax import loop
from vae_jax import losses
from vae_jax.vq import pixelcnn
from vae_jax import train
from vae_jax.vq import config as vq_config
from vae_jax.vq import train as vq_train
from vae_jax.vq import train_prior as vq_prior
from vae_jax.vq import workdirs as vq_workdirs

pytestmark = pytest.mark.usefixtures("fast_compiling_rng")

N, BATCH = 128, 16


def tiny_config(**overrides):
  """The VQ-VAE config at its smallest: 4 channels, one downsampling, no residual blocks, K = 4 codes of D = 2."""
  cfg = vqvae_mnist.get_config()
  values = {"model.hidden": 4, "model.residual_hidden": 2, "model.num_residual_blocks": 0,
            "model.num_downsamples": 1,
            "model.num_codes": 4, "model.code_dim": 2, "optimizer.schedule": "constant",
            "optimizer.learning_rate": 3e-3, "batch_size": BATCH, "num_epochs": 2, "eval_every_epochs": 2,
            "progress": False, "eval.batch_size": 64, "vq.decay": 0.9, "vq.dead_threshold": 0.1}
  tc.override(cfg, {**values, **overrides})
  vq_config.validate_vqvae(cfg)
  return cfg


def synthetic(n=N, seed=0):
  rng = np.random.default_rng(seed)
  protos = rng.uniform(0.05, 0.95, (4, 28, 28, 1))
  images = (rng.uniform(size=(n, 28, 28, 1)) < protos[rng.integers(0, 4, n)]).astype(np.uint8)
  return {"train": data_lib.Split(images, None), "validation": data_lib.Split(images[:64], None)}


def marked_data():
  return _marked_data(synthetic())


def poisoned_loss(model, params, x, key, **kw):
  """The VQ-VAE objective, times NaN for the all-ones image: NaN loss and gradient in its batch."""
  loss, aux = losses.vqvae_loss(model, params, x, key, beta=0.25, ema=True)
  return loss * jnp.where(jnp.all(x == 1), jnp.nan, 1.0), aux


def marked_batch(epoch, seed=0):
  """The batch index that holds the marked image in ``epoch``."""
  keys = train.RunKeys.from_seed(seed)
  batches = np.asarray(data_lib.epoch_batch_indices(jax.random.fold_in(keys.data, epoch), N, BATCH))
  return int(np.flatnonzero(np.any(batches == MARKER, axis=1))[0])


# -- non-finite steps -------------------------------------------------------------------------------

def test_a_skipped_vq_step_keeps_params_optimizer_and_codebook_statistics():
  cfg = tiny_config()
  model = vq_config.make_vqvae(cfg)
  tx = config_lib.make_optimizer(cfg.optimizer, config_lib.make_schedule(cfg.optimizer, 1, 1))
  state = vq_train.create_train_state(model, jax.random.key(0), tx)
  step = jax.jit(train.guard(  # as the loop runs every trainer's step
      functools.partial(vq_train.train_step, model=model, loss_fn=poisoned_loss, mode="static", ema=True,
                        decay=0.9, epsilon=1e-5, restart=True, dead_threshold=0.5),
      skip_threshold=1e30))  # a NaN gradient norm is not <= any threshold
  images = jnp.asarray(marked_data()["train"].images)
  bad, good = images[MARKER - 2:MARKER + 2], images[8:12]
  for batch, skipped in ((bad, 1), (good, 0)):
    new, metrics = step(state, batch, jax.random.key(1))
    assert int(metrics["skipped_updates"]) == skipped and int(new.step) == 1
    assert np.isfinite(float(metrics["loss"])) != bool(skipped)
    for part in ("params", "opt_state", "codebook_stats"):  # all kept bit for bit, or all moved
      same = [np.array_equal(a, b) for a, b in zip(jax.tree.leaves(getattr(state, part)),
                                                   jax.tree.leaves(getattr(new, part)))]
      assert all(same) if skipped else not all(same), part


def test_a_skipped_prior_step_keeps_params_and_optimizer_state():
  model = pixelcnn.GatedPixelCNN(num_codes=4, grid_shape=(3, 3), features=4, num_layers=1, output_features=4)
  cfg = tiny_config()
  tx = config_lib.make_optimizer(cfg.optimizer, config_lib.make_schedule(cfg.optimizer, 1, 1))
  params = constant_params(model, jnp.zeros((3, 3), jnp.int32))  # no init to compile
  state = train.TrainState(step=jnp.int32(0), params=params, opt_state=tx.init(params), tx=tx)

  def poisoned_nll(model, params, codes, key, **kw):  # NaN for a grid of all 3s
    loss, aux = losses.prior_nll_loss(model, params, codes, key, **kw)
    return loss * jnp.where(jnp.all(codes == 3), jnp.nan, 1.0), aux

  step = jax.jit(train.guard(functools.partial(vq_prior.prior_train_step, model=model, loss_fn=poisoned_nll),
                             skip_nonfinite=True))
  good = jnp.arange(2 * 9, dtype=jnp.int32).reshape(2, 3, 3) % 3
  for codes, skipped in ((good.at[1].set(3), 1), (good, 0)):
    new, metrics = step(state, {"codes": codes}, jax.random.key(1))
    assert int(metrics["skipped_updates"]) == skipped and int(new.step) == 1
    same = [np.array_equal(a, b) for a, b in zip(leaves(state)[1:], leaves(new)[1:])]
    assert all(same) if skipped else not all(same)


def test_vq_trainer_skips_and_counts_non_finite_updates(tmp_path):
  # Skip mode: the marked image's batch is skipped once per epoch; the run finishes, finite.
  state, last = vq_train.train_and_evaluate(tiny_config(skip_nonfinite_updates=True), tmp_path / "skip",
                                            loss_fn=poisoned_loss, datasets=marked_data())
  rows = read_metrics(tmp_path / "skip")
  assert [r["train_skipped_updates"] for r in rows] == [1, 1]
  assert all(np.isfinite(r["train_loss"]) and np.isfinite(r["train_grad_norm"]) for r in rows)
  assert int(state.step) == 2 * N // BATCH and np.isfinite(last["val_recon"])
  assert all(np.all(np.isfinite(l)) for l in leaves(state))


class CountingState(flax.struct.PyTreeNode):
  step: jax.Array


def test_the_loop_skips_or_stops_naming_the_step_and_term(tmp_path, monkeypatch):
  """``loop.fit`` (every trainer's loop) on scripted per-step metrics: a non-finite applied step stops
  the run naming its global step and the terms; a skipped one is counted and left out of the means."""
  n = 4  # 64 examples / batch 16
  ok = dict(loss=np.ones(n), grad_norm=np.ones(n), perplexity=np.full(n, 2.0),
            dead_codes=np.zeros(n, np.int32), skipped_updates=np.zeros(n, np.int32))

  def fit(metrics, workdir, num_epochs=2):
    def scripted_epoch(step, batch_size, **kw):
      return lambda state, data, epoch, train_key, data_key: (
          state.replace(step=state.step + n), {k: np.asarray(v) for k, v in metrics.items()})
    monkeypatch.setattr(loop, "make_epoch", scripted_epoch)
    trainer = loop.Trainer(state=CountingState(step=jnp.int32(0)), step=None, data=np.zeros((64, 1)),
                           evaluate=lambda state: {"recon": 1.0}, schedule=lambda step: 1e-3,
                           keys=train.RunKeys.from_seed(0))
    return loop.fit(tiny_config(num_epochs=num_epochs), workdir, trainer)

  stops = [(dict(ok, perplexity=np.array([2, 2, np.nan, 2])), r"non-finite aux term 'perplexity' at step 2 "
                                                              r"\(epoch 1, batch 2\)"),
           (dict(ok, loss=np.array([1, np.inf, 1, 1]), grad_norm=np.array([1, np.nan, 1, 1])),
            r"non-finite loss, gradient \(grad_norm\) at step 1 \(epoch 1, batch 1\).*no checkpoint "
            r"has been written yet.*config.skip_nonfinite_updates.*config.debug_nans"),
           (dict(ok, skipped_updates=np.ones(n, np.int32)), r"all 4 updates of epoch 1 were skipped")]
  for i, (metrics, match) in enumerate(stops):
    with pytest.raises(train.NonFiniteError, match=match):
      fit(metrics, tmp_path / f"stop{i}")
  skipped = dict(ok, loss=np.array([1, np.nan, 3, 2]), skipped_updates=np.array([0, 1, 0, 0], np.int32))
  state, last = fit(skipped, tmp_path / "skip")
  assert int(state.step) == 2 * n
  rows = read_metrics(tmp_path / "skip")
  assert [(r["train_skipped_updates"], r["train_loss"]) for r in rows] == [(1, 2.0), (1, 2.0)]
  assert last["val_recon"] == 1.0 and last["train_perplexity"] == 2.0
  # A stop after the first checkpoint names it: it is kept.
  fit(ok, tmp_path / "late")
  with pytest.raises(train.NonFiniteError, match=r"the newest good checkpoint \(epoch 2\) is kept"):
    fit(stops[1][0], tmp_path / "late", num_epochs=3)


def test_vq_debug_nans_raises_at_the_op_with_step_and_epoch(tmp_path):
  def sqrt_of_negative(model, params, x, key, **kw):
    loss, aux = losses.vqvae_loss(model, params, x, key, beta=0.25, ema=True)
    return loss + jnp.sqrt(jnp.where(jnp.all(x == 1), -1.0, 1.0)), aux

  i = marked_batch(1)
  with pytest.raises(train.NonFiniteError,
                     match=rf"(?s)invalid value \(nan\) encountered in sqrt at step {i} in epoch 1 "):
    vq_train.train_and_evaluate(tiny_config(num_epochs=1, debug_nans=True), tmp_path,
                                loss_fn=sqrt_of_negative, datasets=marked_data())
  assert not jax.config.jax_debug_nans  # switched off again after the run


# -- crash safety -----------------------------------------------------------------------------------

VQ_CRASH_RUN = dict(num_epochs=4, eval_every_epochs=4, checkpoint_every_epochs=1, keep_checkpoints=2)


def test_vq_training_killed_at_random_moments_resumes_without_losing_finished_epochs(tmp_path):
  """SIGKILL the VQ-VAE trainer twice (once as a checkpoint is being written, once at a random moment
  before its first checkpoint), restart it each time:
  no visible checkpoint is ever corrupt or differs from the uninterrupted run's, no checkpointed
  epoch is lost, and the final state (params, optimizer, codebook statistics) and metrics are
  bit-identical to an uninterrupted run's."""
  ref_state, _ = vq_train.train_and_evaluate(tiny_config(**dict(VQ_CRASH_RUN, keep_checkpoints=4)),
                                             tmp_path / "ref", datasets=synthetic())
  kills, mid_write, redone = kill_and_restart(
      tmp_path, imports="import jax\njax.config.update('jax_threefry_partitionable', False)\n"
                        "from tests.test_vq_reliability import synthetic, tiny_config\n"
                        "from vae_jax.vq import train as vq_train",
      run=f"vq_train.train_and_evaluate(tiny_config(**{VQ_CRASH_RUN!r}), workdir, datasets=synthetic())",
      ref_state=ref_state, ref_dir=tmp_path / "ref", num_epochs=4, keep=2,
      plans=["while_writing", "random", "finish"], seed=7)
  print(f"\nVQ-VAE: kills survived: {kills} ({mid_write} while a checkpoint was being written); "
        f"checkpointed epochs lost: 0; finished-but-unsaved epochs redone per kill: {redone}")
  assert kills == 2 and mid_write >= 1 and max(redone) <= 1


# -- damaged checkpoints, mismatched workdirs, bad images -------------------------------------------

def test_damaged_vq_checkpoints_fall_back_to_the_newest_intact_one_and_say_so(tmp_path, caplog):
  data = synthetic()
  full, _ = vq_train.train_and_evaluate(tiny_config(num_epochs=3, keep_checkpoints=3), tmp_path / "full",
                                        datasets=data)
  run = tmp_path / "run"
  vq_train.train_and_evaluate(tiny_config(num_epochs=2, keep_checkpoints=3), run, datasets=data)
  truncate_files(run / "checkpoints" / "2")
  # Loading (evaluation, the prior's stage) falls back to epoch 1 and names the damaged one.
  loaded = vq_workdirs.load_vqvae(run)
  assert loaded.epoch == 1
  assert f"checkpoint {run / 'checkpoints' / '2'} cannot be restored" in caplog.text
  assert "restored epoch 1" in caplog.text and "skipping unreadable newer checkpoints [2]" in caplog.text
  # Resuming sets it aside, redoes epoch 2 and ends bit-identical to the uninterrupted run.
  resumed, _ = vq_train.train_and_evaluate(tiny_config(num_epochs=3, keep_checkpoints=3), run, datasets=data)
  for a, b in zip(leaves(resumed), leaves(full)):
    np.testing.assert_array_equal(a, b)
  assert [r["epoch"] for r in read_metrics(run)] == [1, 2, 3]
  assert len(list((run / "checkpoints" / "_unreadable").iterdir())) == 1
  # Every checkpoint damaged: a CheckpointError naming the directory, not a traceback from Orbax.
  for e in (1, 2, 3):
    truncate_files(run / "checkpoints" / str(e))
  with pytest.raises(checkpointing.CheckpointError, match=rf"no checkpoint in {run / 'checkpoints'} could"):
    vq_workdirs.load_vqvae(run)
  # A VQ-VAE workdir whose config was swapped for another model's: the arrays are named.
  (tmp_path / "full" / "config.json").write_text(tiny_config(**{"model.code_dim": 3}).to_json())
  with pytest.raises(checkpointing.CheckpointError,
                     match=r"(?s)another model's state: .*params\.quantizer\.codebook has shape \(4, 2\) in "
                           r"the checkpoint, \(4, 3\) here"):
    vq_workdirs.load_vqvae(tmp_path / "full")


def test_a_vae_workdir_is_not_a_vqvae_workdir(tmp_path):
  (tmp_path / "config.json").write_text('{"model": {"name": "mlp"}}')
  with pytest.raises(vq_config.ConfigError, match=rf"{tmp_path} is not a VQ-VAE workdir"):
    vq_workdirs.load_vqvae(tmp_path)
  with pytest.raises(vq_config.ConfigError, match=rf"{tmp_path} is not a prior workdir"):
    vq_workdirs.load_prior(tmp_path)
  with pytest.raises(FileNotFoundError, match=rf"{tmp_path / 'nowhere'}.* training workdir"):
    vq_workdirs.load_vqvae(tmp_path / "nowhere")


BAD_IMAGES = [
    (np.zeros((64, 28, 28)), {}, r"train images have shape \(64, 28, 28\); expected \[N, 28, 28, 1\]"),
    (np.zeros((64, 32, 32, 3), np.uint8), {}, r"train images have shape \(64, 32, 32, 3\)"),
    (np.full((64, 28, 28, 1), 255, np.uint8), {}, r"mode='static' needs binary images"),
    (np.full((64, 28, 28, 1), 256, np.int32), {"data.name": "mnist", "data.mode": "grey",
                                               "model.likelihood": "categorical"}, r"values in \[256"),
    (np.full((64, 28, 28, 1), 0.5, np.float32), {"data.name": "mnist", "data.mode": "grey",
                                                 "model.likelihood": "logistic"}, r"non-integer values"),
    (np.full((64, 28, 28, 1), np.nan), {"data.name": "mnist", "data.mode": "dynamic"}, r"non-finite"),
    (np.zeros((0, 28, 28, 1), np.uint8), {}, r"train images are empty"),
]


@pytest.mark.parametrize("images,overrides,match", BAD_IMAGES)
def test_vq_images_of_the_wrong_shape_or_range_are_named_before_training(tmp_path, images, overrides, match):
  data = dict(synthetic(), train=data_lib.Split(images, None))
  with pytest.raises(data_lib.DataError, match=match):
    vq_train.train_and_evaluate(tiny_config(**overrides), tmp_path, datasets=data)
  assert not (tmp_path / "checkpoints").exists()


# -- random invalid VQ-VAE and prior configs ---------------------------------------------------------
# What vae_jax/configs/vq/{vqvae_mnist,prior_mnist}.py promise, written down here independently of
# vae_jax.vq_config's field tables (the strategies for bad values are test_config's).
M = 2**24
TRAINING_INTS = {"seed": (0, 2**32 - 1), "batch_size": (1, M), "num_epochs": (1, M),
                 "eval_every_epochs": (1, M), "checkpoint_every_epochs": (1, M), "keep_checkpoints": (1, 1000),
                 "eval.batch_size": (1, M), "num_devices": (0, 2**16)}
TRAINING_FLOATS = {"optimizer.learning_rate": (0, True, 10, False), "optimizer.b1": (0, False, 1, True),
                   "optimizer.b2": (0, False, 1, True), "optimizer.eps": (0, True, 1, False),
                   "optimizer.weight_decay": (0, False, 1e3, False),
                   "optimizer.grad_clip_norm": (0, False, 1e12, False), "skip_threshold": (0, False, 1e30, False)}
TRAINING_CHOICES = {"optimizer.name": ("adam", "adamw", "sgd"), "optimizer.schedule": ("constant", "cosine")}
TRAINING_BOOLS = ("progress", "skip_nonfinite_updates", "debug_nans")
VQ_SPEC = dict(
    ints={**TRAINING_INTS, "data.binarize_seed": (0, 2**32 - 1), "model.num_codes": (2, 2**16),
          "model.code_dim": (1, 2**16), "model.hidden": (1, 2**16), "model.residual_hidden": (1, 2**16),
          "model.num_residual_blocks": (0, 64), "model.num_downsamples": (1, 2),  # 28 = 7 * 2^2
          "model.ar_layers": (0, 64), "model.ar_features": (1, 2**16), "model.ar_kernel_size": (1, 63)},
    floats={**TRAINING_FLOATS, "vq.beta": (0, False, 1e6, False), "vq.decay": (0, False, 1, True),
            "vq.epsilon": (0, True, 1, False), "vq.dead_threshold": (0, False, 1e9, False)},
    choices={**TRAINING_CHOICES, "data.name": ("binarized_mnist", "mnist", "fashion_mnist", "cifar10"),
             "data.mode": ("static", "dynamic", "grey"), "model.name": ("vqvae",),
             "model.likelihood": ("bernoulli", "categorical", "logistic")},
    bools=TRAINING_BOOLS + ("data.download", "vq.ema", "vq.restart"), strs=("data.data_dir", "notes"))
PRIOR_SPEC = dict(
    ints={**TRAINING_INTS, "model.features": (1, 2**16), "model.num_layers": (1, 256),
          "model.output_features": (1, 2**16), "model.num_classes": (0, 2**16)},
    floats=TRAINING_FLOATS, choices={**TRAINING_CHOICES, "model.name": ("gated_pixelcnn",)},
    bools=TRAINING_BOOLS, strs=("notes",))


def vq_leaf_names(cfg, prefix=""):
  for k, v in cfg.items():
    if isinstance(v, dict):
      yield from vq_leaf_names(v, f"{prefix}{k}.")
    else:
      yield f"{prefix}{k}"


def spec_fields(spec, prior):
  names = set(spec["ints"]) | set(spec["floats"]) | set(spec["choices"]) | set(spec["bools"]) | set(spec["strs"])
  return names | ({"vqvae_workdir", "model.kernel_size"} if prior else set())


@st.composite
def invalid_vq_configs(draw, vq_dir):
  """(config dict, kind, is_prior, fields the error may name): one thing wrong in a VQ config."""
  prior = draw(st.booleans())
  cfg = (prior_mnist if prior else vqvae_mnist).get_config().to_dict()
  if prior:
    cfg["vqvae_workdir"] = str(vq_dir)
  spec = PRIOR_SPEC if prior else VQ_SPEC
  kind = draw(st.sampled_from(["int", "float", "choice", "bool", "str", "unknown", "missing", "combination"]))

  def put(field, value):
    return tc.set_field(cfg, field, value)

  if kind == "int":
    field = draw(st.sampled_from(sorted(spec["ints"])))
    return cfg, kind, prior, {put(field, draw(tc.bad_int(*spec["ints"][field])))}
  if kind == "float":
    field = draw(st.sampled_from(sorted(spec["floats"])))
    return cfg, kind, prior, {put(field, draw(tc.bad_float(*spec["floats"][field])))}
  if kind == "choice":
    field = draw(st.sampled_from(sorted(spec["choices"])))
    allowed = spec["choices"][field]
    value = draw(st.one_of(st.text(max_size=12).filter(lambda s: s not in allowed), tc.ODD_OBJECTS,
                           st.integers(), st.sampled_from([o.upper() for o in allowed])))
    return cfg, kind, prior, {put(field, value)}
  if kind == "bool":
    field = draw(st.sampled_from(spec["bools"]))
    return cfg, kind, prior, {put(field, draw(st.one_of(st.integers(0, 1), st.text(max_size=5), tc.ODD_OBJECTS)))}
  if kind == "str":
    field = "vqvae_workdir" if prior else "data.data_dir"
    return cfg, kind, prior, {put(field, draw(st.one_of(st.integers(), st.booleans(), st.none())))}
  if kind == "unknown":
    section = draw(st.sampled_from([None, "model", "optimizer", "eval"] + ([] if prior else ["data", "vq"])))
    leaf = draw(st.from_regex(r"[a-z][a-z_0-9]{0,12}", fullmatch=True))
    field = leaf if section is None else f"{section}.{leaf}"
    if field in spec_fields(spec, prior) or (section is None and leaf in cfg):
      field += "_x"
    put(field, draw(st.one_of(st.integers(), st.text(max_size=3), st.booleans())))
    return cfg, kind, prior, {field}
  if kind == "missing":
    field = draw(st.sampled_from(sorted(spec_fields(spec, prior))))
    tc.del_field(cfg, field)
    return cfg, kind, prior, {field}
  if prior:  # combination: an even kernel, or a VQ-VAE workdir that holds no run
    if draw(st.booleans()):
      return cfg, kind, prior, {put("model.kernel_size", draw(st.integers(1, 31)) * 2)}
    return cfg, kind, prior, {put("vqvae_workdir", str(vq_dir / draw(st.sampled_from(["none", "x/y"]))))}
  combo = draw(st.sampled_from(["grey_bernoulli", "binary_not_static", "8bit_binary", "downsamples",
                                "ar_even_kernel", "ar_logistic", "ar_colour"]))
  if combo.startswith("ar_"):  # an autoregressive decoder it cannot build
    put("model.ar_layers", draw(st.integers(1, 64)))
    if combo == "ar_even_kernel":
      return cfg, kind, prior, {put("model.ar_kernel_size", draw(st.integers(1, 31)) * 2), "model.ar_layers"}
    put("data.name", "cifar10" if combo == "ar_colour" else draw(st.sampled_from(["mnist", "fashion_mnist"])))
    put("data.mode", "grey")
    return cfg, kind, prior, {put("model.likelihood", "categorical" if combo == "ar_colour" else "logistic"),
                              "model.ar_layers"}
  if combo == "grey_bernoulli":
    put("data.name", draw(st.sampled_from(["mnist", "fashion_mnist"])))
    put("model.likelihood", "bernoulli")
    return cfg, kind, prior, {put("data.mode", "grey"), "model.likelihood"}
  if combo == "binary_not_static":
    return cfg, kind, prior, {put("data.mode", draw(st.sampled_from(["dynamic", "grey"]))), "model.likelihood"}
  if combo == "8bit_binary":
    put("data.mode", "static")
    return cfg, kind, prior, {put("model.likelihood", draw(st.sampled_from(["categorical", "logistic"]))),
                              "data.mode"}
  return cfg, kind, prior, {put("model.num_downsamples", draw(st.integers(3, 6)))}


def test_random_invalid_vq_configs_get_one_named_error_before_any_compute(tmp_path, monkeypatch):
  """Every random invalid VQ-VAE or prior config -> ConfigError naming the field, before any data,
  model, compile or workdir."""
  def no_work(*a, **k):
    raise AssertionError("work was done for an invalid config")

  monkeypatch.setattr(data_lib, "load_split", no_work)
  monkeypatch.setattr(vq_config, "make_vqvae", no_work)
  monkeypatch.setattr(vq_workdirs, "load_vqvae", no_work)
  vq_dir = tmp_path / "vq"
  vq_dir.mkdir()
  (vq_dir / "config.json").write_text("{}")
  workdir = tmp_path / "run"
  tried = Counter()

  @settings(max_examples=300, deadline=None, database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
  @given(invalid_vq_configs(vq_dir))
  def check(case):
    cfg, kind, prior, fields = case
    with pytest.raises(vq_config.ConfigError) as err:
      (vq_prior.train_prior if prior else vq_train.train_and_evaluate)(ml_collections.ConfigDict(cfg), workdir)
    assert any(f"config.{f}" in str(err.value) for f in fields), (kind, fields, str(err.value))
    assert not workdir.exists()
    tried[("prior " if prior else "vqvae ") + kind] += 1

  check()
  total = sum(tried.values())
  print(f"\n{total} random invalid VQ configs, {total} named ConfigErrors: {dict(sorted(tried.items()))}")
  assert total >= 250 and len(tried) == 16, tried


def test_the_vq_property_test_covers_every_field():
  assert set(vq_leaf_names(vqvae_mnist.get_config().to_dict())) == spec_fields(VQ_SPEC, False)
  assert set(vq_leaf_names(prior_mnist.get_config().to_dict())) == spec_fields(PRIOR_SPEC, True)
  assert set(vq_config.VQVAE_FIELDS) == spec_fields(VQ_SPEC, False)
