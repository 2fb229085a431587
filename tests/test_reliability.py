"""Reliability: non-finite steps skipped or stopped with a name, crashes, bad checkpoints and data,
determinism of every experiment config.
"""

import functools
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.test_train import params_of, read_metrics, synthetic, tiny_config
from vae_jax import checkpointing
from vae_jax import config as config_lib
from vae_jax import data as data_lib
from vae_jax import losses
from vae_jax import train

MARKER = 5  # index of the one all-ones image in marked_data()


def marked_data():
  data = synthetic()
  images = data["train"].images.copy()
  images[MARKER] = 1
  assert np.sum(np.all(images == 1, axis=(1, 2, 3))) == 1
  return dict(data, train=data_lib.Split(images, None))


def poisoned_loss(model, params, x, key, *, kl_weight):
  """The ELBO, times NaN for the all-ones image: NaN loss and gradient in the one batch holding it."""
  loss, aux = losses.elbo_loss(model, params, x, key, kl_weight=kl_weight)
  return loss * jnp.where(jnp.all(x == 1), jnp.nan, 1.0), aux


# -- non-finite steps ---------------------------------------------------------------------------------

def test_skipping_leaves_state_unchanged_on_exactly_the_bad_steps():
  cfg = tiny_config()
  model = config_lib.make_model(cfg)
  tx = config_lib.make_optimizer(cfg.optimizer, config_lib.make_schedule(cfg.optimizer, 16, 3))
  keys = train.RunKeys.from_seed(0)
  images = jnp.asarray(marked_data()["train"].images)
  threshold = 100.0  # about the median gradient norm of this model at its initialization
  kw = dict(model=model, loss_fn=poisoned_loss, mode="static", skip_nonfinite=True,
            skip_threshold=threshold)
  epoch_fn = train.make_train_epoch(model, poisoned_loss, mode="static", batch_size=16,
                                    skip_nonfinite=True, skip_threshold=threshold)
  state0 = train.create_train_state(model, keys.init, tx)
  scanned, metrics = epoch_fn(jax.tree.map(jnp.copy, state0), images, 1, keys.train, keys.data)

  batches = np.asarray(data_lib.epoch_batch_indices(jax.random.fold_in(keys.data, 1), 256, 16))
  poisoned = np.any(batches == MARKER, axis=1)
  assert poisoned.sum() == 1 and not np.isfinite(metrics["loss"][poisoned]).any()
  expected = poisoned | (metrics["grad_norm"] > threshold)
  np.testing.assert_array_equal(metrics["skipped_updates"], expected.astype(np.int32))
  assert 2 <= expected.sum() <= 14, metrics["grad_norm"]  # the threshold cuts somewhere inside

  # Replay step by step: a skipped step keeps params and optimizer state bit for bit.
  step = jax.jit(functools.partial(train.train_step, **kw))
  state = state0
  for i, idx in enumerate(batches):
    new, m = step(state, images[idx], jax.random.fold_in(keys.train, state.step))
    same = [np.array_equal(a, b) for a, b in zip(jax.tree.leaves((state.params, state.opt_state)),
                                                 jax.tree.leaves((new.params, new.opt_state)))]
    assert all(same) if expected[i] else not all(same), i
    assert int(new.step) == i + 1
    state = new
  jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=1e-4, atol=1e-6),
               params_of(state), params_of(scanned))
  assert all(np.all(np.isfinite(l)) for l in jax.tree.leaves(scanned.params))


def test_skip_mode_finishes_the_run_and_counts_skipped_updates(tmp_path):
  cfg = tiny_config(num_epochs=2, skip_nonfinite_updates=True)
  state, last = train.train_and_evaluate(cfg, tmp_path, loss_fn=poisoned_loss, datasets=marked_data())
  rows = read_metrics(tmp_path)
  assert [r["train_skipped_updates"] for r in rows] == [1, 1]  # the marked image is in one batch per epoch
  assert all(np.isfinite(r["train_loss"]) and np.isfinite(r["train_grad_norm"]) for r in rows)
  assert int(state.step) == 32 and np.isfinite(last["val_elbo"])
  # Without skipping, the same run stops at the first poisoned step and names the terms.
  batches = np.asarray(data_lib.epoch_batch_indices(
      jax.random.fold_in(train.RunKeys.from_seed(0).data, 1), 256, 16))
  b = int(np.argmax(np.any(batches == MARKER, axis=1)))
  with pytest.raises(train.NonFiniteError,
                     match=rf"non-finite loss, gradient \(grad_norm\) at step {b} "
                           rf"\(epoch 1, batch {b}\)"):
    train.train_and_evaluate(tiny_config(num_epochs=2), tmp_path / "stop", loss_fn=poisoned_loss,
                             datasets=marked_data())


def test_the_stop_message_names_the_offending_term():
  n = 4
  ok = dict(loss=np.ones(n), grad_norm=np.ones(n), kl_weight=np.ones(n), recon=np.ones(n),
            skipped_updates=np.zeros(n, np.int32))
  assert train._first_non_finite(ok) is None
  grad = dict(ok, grad_norm=np.array([1, 1, np.inf, np.nan]))
  assert train._first_non_finite(grad) == (2, ["gradient (grad_norm)"])
  aux = dict(ok, recon=np.array([1, np.nan, 1, 1]))
  assert train._first_non_finite(aux) == (1, ["aux term 'recon'"])
  # A skipped step is not a reason to stop; the next bad one that was applied is.
  skipped = dict(grad, skipped_updates=np.array([0, 0, 1, 0], np.int32))
  assert train._first_non_finite(skipped) == (3, ["gradient (grad_norm)"])


def test_all_updates_skipped_stops_the_run(tmp_path):
  cfg = tiny_config(num_epochs=2, skip_threshold=1e-6)
  with pytest.raises(train.NonFiniteError, match="all 16 updates of epoch 1 were skipped"):
    train.train_and_evaluate(cfg, tmp_path, datasets=synthetic())


def test_debug_nans_raises_at_the_op_with_the_epoch(tmp_path):
  def exploding_loss(model, params, x, key, *, kl_weight):
    loss, aux = losses.elbo_loss(model, params, x, key, kl_weight=1.0)
    return loss + jnp.sqrt(40 / 64 - kl_weight), aux  # sqrt of a negative number from step 41

  cfg = tiny_config(num_epochs=4, debug_nans=True, **{"loss.warmup_epochs": 4.0})
  with pytest.raises(train.NonFiniteError, match=r"(?s)invalid value \(nan\).* in epoch 3 .*epoch 2"):
    train.train_and_evaluate(cfg, tmp_path, loss_fn=exploding_loss, datasets=synthetic())
  assert not jax.config.jax_debug_nans  # switched off again after the run


# -- crash safety ---------------------------------------------------------------------------------------

@pytest.fixture
def compile_cache(tmp_path_factory, monkeypatch):
  """A persistent XLA cache for this test and its subprocesses: a run that compiles the same
  programs again (a restart, a second seed) loads them instead of spending seconds compiling."""
  from jax.experimental.compilation_cache import compilation_cache as cc
  path = str(tmp_path_factory.mktemp("xla_cache"))
  options = {"jax_compilation_cache_dir": path, "jax_persistent_cache_min_compile_time_secs": 0.0,
             "jax_persistent_cache_min_entry_size_bytes": 0}
  old = {k: getattr(jax.config, k) for k in options}
  for k, v in options.items():
    jax.config.update(k, v)
    monkeypatch.setenv(k.upper(), str(v))
  cc.reset_cache()
  yield path
  for k, v in old.items():
    jax.config.update(k, v)
  cc.reset_cache()


CRASH_RUN = dict(num_epochs=6, eval_every_epochs=6, checkpoint_every_epochs=1, keep_checkpoints=3)
CHILD = """
import sys
sys.path.insert(0, sys.argv[1])
from tests.test_train import synthetic, tiny_config
from vae_jax import train
train.train_and_evaluate(tiny_config(**{overrides!r}), sys.argv[2], datasets=synthetic())
"""


def complete_epochs(ckpt_dir):
  return sorted(int(p.name) for p in ckpt_dir.iterdir() if p.name.isdigit()) if ckpt_dir.exists() else []


def being_written(ckpt_dir):
  """Names of the checkpoints Orbax is writing (its temporary directories)."""
  try:
    return {e.name for e in os.scandir(ckpt_dir) if ".orbax-checkpoint-tmp" in e.name}
  except FileNotFoundError:
    return set()


def leaves(state):
  return [np.asarray(x) for x in jax.tree.leaves((state.step, state.params, state.opt_state))]


def test_training_killed_at_random_moments_resumes_without_losing_finished_epochs(tmp_path, compile_cache):
  """SIGKILL a training subprocess 4 times (twice as a checkpoint is being written), restart it
  each time: every checkpoint ever visible is complete and equals the uninterrupted run's at that
  epoch, no checkpointed epoch is lost, and the final parameters and metrics are bit-identical."""
  data = synthetic()
  ref_state, _ = train.train_and_evaluate(tiny_config(**dict(CRASH_RUN, keep_checkpoints=6)),
                                          tmp_path / "ref", datasets=data)  # also fills the cache
  ref_ckpt = checkpointing.Checkpointer(tmp_path / "ref" / "checkpoints", max_to_keep=6)
  ref = {e: leaves(ref_ckpt.restore(e, ref_state)) for e in range(1, 7)}
  ref_ckpt.close()

  script = tmp_path / "child.py"
  script.write_text(CHILD.format(overrides=CRASH_RUN))
  run_dir, root = tmp_path / "run", str(Path(__file__).resolve().parents[1])
  ckpt_dir = run_dir / "checkpoints"
  rng = random.Random(6)
  kills, mid_write, newest, redone, first_write_s = 0, 0, 0, [], 3.0
  for plan in ["while_writing", "random", "after_a_save", "while_writing", "finish"]:
    stale, saved_before = being_written(ckpt_dir), max(complete_epochs(ckpt_dir), default=0)
    log_path = tmp_path / f"child{kills}.log"
    with log_path.open("w") as log_file:
      proc = subprocess.Popen([sys.executable, str(script), root, str(run_dir)], stdout=log_file,
                              stderr=subprocess.STDOUT, env=dict(os.environ, JAX_PLATFORMS="cpu"))
      start, saved_at = time.monotonic(), None
      # "random": any moment before the run would reach its first checkpoint (start-up, restore,
      # compile, training); "after_a_save": 0-100 ms after a checkpoint (training, the next save).
      delay = rng.uniform(0.0, first_write_s) if plan == "random" else rng.uniform(0.0, 0.1)
      while proc.poll() is None:
        now = time.monotonic() - start
        if now > 120:
          proc.kill()
          pytest.fail(f"the training subprocess hangs: {log_path.read_text()[-2000:]}")
        if saved_at is None and max(complete_epochs(ckpt_dir), default=0) > saved_before:
          saved_at = now
        writing = being_written(ckpt_dir)
        stale &= writing  # a leftover of the last kill counts again once the restart removed it
        fire = {"while_writing": bool(writing - stale), "random": now > delay,
                "after_a_save": saved_at is not None and now > saved_at + delay, "finish": False}[plan]
        if fire:
          proc.send_signal(signal.SIGKILL)
          if plan == "while_writing" and kills == 0:
            first_write_s = now
          break
        time.sleep(0.0005)
      code = proc.wait()
    if plan == "finish":
      assert code == 0, log_path.read_text()[-3000:]
      break
    assert code == -signal.SIGKILL, (plan, code, log_path.read_text()[-3000:])
    kills += 1
    mid_write += bool(being_written(ckpt_dir) - stale)  # it died leaving a half-written checkpoint
    epochs = complete_epochs(ckpt_dir)
    # Nothing finished is lost: the newest checkpoint never goes back; the kept ones are consecutive.
    assert (epochs[-1] if epochs else 0) >= newest, (epochs, newest)
    assert epochs == list(range(epochs[0], epochs[-1] + 1)) if epochs else True
    assert len(epochs) >= min(3, newest)
    newest = epochs[-1] if epochs else 0
    # Every visible checkpoint is complete and equals the uninterrupted run's at that epoch.
    ckpt = checkpointing.Checkpointer(ckpt_dir, max_to_keep=3)
    for e in epochs:
      for a, b in zip(leaves(ckpt.restore(e, ref_state)), ref[e]):
        np.testing.assert_array_equal(a, b)
    ckpt.close()
    # Work lost to this kill: epochs with a metrics row but no checkpoint (redone on restart).
    rows = read_metrics(run_dir) if (run_dir / "metrics.jsonl").exists() else []
    redone.append(len({r["epoch"] for r in rows if r["epoch"] > newest}))
  print(f"\nkills survived: {kills} ({mid_write} while a checkpoint was being written); "
        f"checkpointed epochs lost: 0; finished-but-unsaved epochs redone per kill: {redone}")
  assert kills == 4 and mid_write >= 1 and max(redone) <= 1

  assert complete_epochs(ckpt_dir) == [4, 5, 6]
  final = checkpointing.Checkpointer(ckpt_dir).restore_latest(ref_state)[1]
  for a, b in zip(leaves(final), ref[6]):
    np.testing.assert_array_equal(a, b)
  rows, ref_rows = read_metrics(run_dir), read_metrics(tmp_path / "ref")
  assert [r["epoch"] for r in rows] == [1, 2, 3, 4, 5, 6]
  assert [r["train_loss"] for r in rows] == [r["train_loss"] for r in ref_rows]
  assert rows[-1]["val_elbo"] == ref_rows[-1]["val_elbo"]
