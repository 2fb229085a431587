"""Reliability of the two VQ trainers: non-finite steps skipped or stopped with a name, debug mode,
crash safety (SIGKILL and restart), damaged checkpoints, bad images.

Reuses the core trainer's reliability machinery (tests/test_reliability.py): its XLA cache fixture
and its kill-and-restart driver.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.configs.vq import vqvae_mnist
from tests.test_reliability import compile_cache  # noqa: F401  (autouse: the module's XLA cache)
from tests.test_reliability import kill_and_restart, leaves, truncate_files
from tests.test_train import read_metrics
from vae_jax import checkpointing
from vae_jax import config as config_lib
from vae_jax import data as data_lib
from vae_jax import losses
from vae_jax import train
from vae_jax import vq_config
from vae_jax import vq_evaluate
from vae_jax import vq_train

pytestmark = pytest.mark.usefixtures("fast_compiling_rng")

MARKER = 5  # index of the one all-ones image in marked_data()
N, BATCH = 128, 16


def tiny_config(**overrides):
  """The VQ-VAE config at its smallest: 4 channels, no residual blocks, K = 4 codes of D = 2."""
  cfg = vqvae_mnist.get_config()
  values = {"model.hidden": 4, "model.residual_hidden": 2, "model.num_residual_blocks": 0,
            "model.num_codes": 4, "model.code_dim": 2, "optimizer.schedule": "constant",
            "optimizer.learning_rate": 3e-3, "batch_size": BATCH, "num_epochs": 2, "eval_every_epochs": 2,
            "progress": False, "eval.batch_size": 64, "vq.decay": 0.9, "vq.dead_threshold": 0.1}
  for k, v in {**values, **overrides}.items():
    *path, leaf = k.split(".")
    parent = cfg
    for p in path:
      parent = parent[p]
    parent[leaf] = v
  vq_config.validate_vqvae(cfg)
  return cfg


def synthetic(n=N, seed=0):
  rng = np.random.default_rng(seed)
  protos = rng.uniform(0.05, 0.95, (4, 28, 28, 1))
  images = (rng.uniform(size=(n, 28, 28, 1)) < protos[rng.integers(0, 4, n)]).astype(np.uint8)
  return {"train": data_lib.Split(images, None), "validation": data_lib.Split(images[:64], None)}


def marked_data():
  data = synthetic()
  images = data["train"].images.copy()
  images[MARKER] = 1
  assert np.sum(np.all(images == 1, axis=(1, 2, 3))) == 1
  return dict(data, train=data_lib.Split(images, None))


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
  step = jax.jit(functools.partial(vq_train.train_step, model=model, loss_fn=poisoned_loss, mode="static",
                                   ema=True, decay=0.9, epsilon=1e-5, restart=True, dead_threshold=0.5,
                                   skip_nonfinite=True))
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


def test_vq_trainer_skips_counts_stops_and_debugs_non_finite_steps(tmp_path):
  # Skip mode: the marked image's batch is skipped once per epoch; the run finishes, finite.
  state, last = vq_train.train_and_evaluate(tiny_config(skip_nonfinite_updates=True), tmp_path / "skip",
                                            loss_fn=poisoned_loss, datasets=marked_data())
  rows = read_metrics(tmp_path / "skip")
  assert [r["train_skipped_updates"] for r in rows] == [1, 1]
  assert all(np.isfinite(r["train_loss"]) and np.isfinite(r["train_grad_norm"]) for r in rows)
  assert int(state.step) == 2 * N // BATCH and np.isfinite(last["val_recon"])
  assert all(np.all(np.isfinite(l)) for l in leaves(state))
  # Stop mode (the default): the run stops at the poisoned step, naming it and the terms.
  i = marked_batch(1)
  with pytest.raises(train.NonFiniteError, match=rf"non-finite loss, gradient \(grad_norm\) at step {i} "
                                                 rf"\(epoch 1, batch {i}\).*skip_nonfinite_updates"):
    vq_train.train_and_evaluate(tiny_config(), tmp_path / "stop", loss_fn=poisoned_loss,
                                datasets=marked_data())
  assert not (tmp_path / "stop" / "checkpoints" / "1").exists()
  # A threshold no gradient is under skips every update: the run says it is stuck.
  with pytest.raises(train.NonFiniteError, match=r"all 8 updates of epoch 1 were skipped"):
    vq_train.train_and_evaluate(tiny_config(skip_threshold=1e-30), tmp_path / "stuck", datasets=synthetic())


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
  """SIGKILL the VQ-VAE trainer 3 times (once as a checkpoint is being written), restart it each time:
  no visible checkpoint is ever corrupt or differs from the uninterrupted run's, no checkpointed
  epoch is lost, and the final state (params, optimizer, codebook statistics) and metrics are
  bit-identical to an uninterrupted run's."""
  ref_state, _ = vq_train.train_and_evaluate(tiny_config(**dict(VQ_CRASH_RUN, keep_checkpoints=4)),
                                             tmp_path / "ref", datasets=synthetic())
  kills, mid_write, redone = kill_and_restart(
      tmp_path, imports="import jax\njax.config.update('jax_threefry_partitionable', False)\n"
                        "from tests.test_vq_reliability import synthetic, tiny_config\n"
                        "from vae_jax import vq_train",
      run=f"vq_train.train_and_evaluate(tiny_config(**{VQ_CRASH_RUN!r}), workdir, datasets=synthetic())",
      ref_state=ref_state, ref_dir=tmp_path / "ref", num_epochs=4, keep=2,
      plans=["while_writing", "random", "after_a_save", "finish"], seed=7)
  print(f"\nVQ-VAE: kills survived: {kills} ({mid_write} while a checkpoint was being written); "
        f"checkpointed epochs lost: 0; finished-but-unsaved epochs redone per kill: {redone}")
  assert kills == 3 and mid_write >= 1 and max(redone) <= 1


# -- damaged checkpoints, mismatched workdirs, bad images -------------------------------------------

def test_damaged_vq_checkpoints_fall_back_to_the_newest_intact_one_and_say_so(tmp_path, caplog):
  data = synthetic()
  full, _ = vq_train.train_and_evaluate(tiny_config(num_epochs=3, keep_checkpoints=3), tmp_path / "full",
                                        datasets=data)
  run = tmp_path / "run"
  vq_train.train_and_evaluate(tiny_config(num_epochs=2, keep_checkpoints=3), run, datasets=data)
  truncate_files(run / "checkpoints" / "2")
  # Loading (evaluation, the prior's stage) falls back to epoch 1 and names the damaged one.
  loaded = vq_evaluate.load_vqvae(run)
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
    vq_evaluate.load_vqvae(run)
  # A VQ-VAE workdir whose config was swapped for another model's: the arrays are named.
  (tmp_path / "full" / "config.json").write_text(tiny_config(**{"model.code_dim": 3}).to_json())
  with pytest.raises(checkpointing.CheckpointError,
                     match=r"(?s)another model's state: .*params\.quantizer\.codebook has shape \(4, 2\) in "
                           r"the checkpoint, \(4, 3\) here"):
    vq_evaluate.load_vqvae(tmp_path / "full")


def test_a_vae_workdir_is_not_a_vqvae_workdir(tmp_path):
  (tmp_path / "config.json").write_text('{"model": {"name": "mlp"}}')
  with pytest.raises(vq_config.ConfigError, match=rf"{tmp_path} is not a VQ-VAE workdir"):
    vq_evaluate.load_vqvae(tmp_path)
  with pytest.raises(vq_config.ConfigError, match=rf"{tmp_path} is not a prior workdir"):
    vq_evaluate.load_prior(tmp_path)
  with pytest.raises(FileNotFoundError, match=rf"{tmp_path / 'nowhere'}.* training workdir"):
    vq_evaluate.load_vqvae(tmp_path / "nowhere")


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
