"""Reliability: non-finite steps skipped or stopped with a name, crashes, bad checkpoints and data,
determinism of every experiment config.
"""

import functools
import importlib
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
from vae_jax import loop
from vae_jax import losses
from vae_jax import train
from vae_jax import workdir as workdir_lib

MARKER = 5  # index of the one all-ones image in marked_data()


@pytest.fixture(scope="module", autouse=True)
def compile_cache(tmp_path_factory):
  """A persistent XLA cache for this module's tests and their subprocesses: a run that compiles
  the same programs again (a restart, a second seed, the same tiny config) loads them instead of
  spending seconds compiling. Switched off again after the module."""
  from jax.experimental.compilation_cache import compilation_cache as cc
  path = str(tmp_path_factory.mktemp("xla_cache"))
  options = {"jax_compilation_cache_dir": path, "jax_persistent_cache_min_compile_time_secs": 0.0,
             "jax_persistent_cache_min_entry_size_bytes": 0}
  old = {k: getattr(jax.config, k) for k in options}
  old_env = {k.upper(): os.environ.get(k.upper()) for k in options}
  for k, v in options.items():
    jax.config.update(k, v)
    os.environ[k.upper()] = str(v)
  cc.reset_cache()
  yield path
  for k, v in old.items():
    jax.config.update(k, v)
  for k, v in old_env.items():
    if v is None:
      os.environ.pop(k, None)
    else:
      os.environ[k] = v
  cc.reset_cache()


def marked_data(data=None):
  """``data`` (default: synthetic()) with training image MARKER made all ones, the only such image."""
  data = data or synthetic()
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
  kw = dict(model=model, loss_fn=poisoned_loss, mode="static")
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
  step = jax.jit(train.guard(functools.partial(train.train_step, **kw), skip_nonfinite=True,
                             skip_threshold=threshold))
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
  # When every batch holds a bad image, nothing is learnt: the run stops and says so.
  all_bad = dict(marked_data(), train=data_lib.Split(np.ones((256, 28, 28, 1), np.uint8), None))
  with pytest.raises(train.NonFiniteError, match="all 16 updates of epoch 1 were skipped"):
    train.train_and_evaluate(cfg, tmp_path / "stuck", loss_fn=poisoned_loss, datasets=all_bad)


def test_the_stop_message_names_the_offending_term():
  n = 4
  ok = dict(loss=np.ones(n), grad_norm=np.ones(n), kl_weight=np.ones(n), recon=np.ones(n),
            skipped_updates=np.zeros(n, np.int32))
  assert loop.first_non_finite(ok) is None
  grad = dict(ok, grad_norm=np.array([1, 1, np.inf, np.nan]))
  assert loop.first_non_finite(grad) == (2, ["gradient (grad_norm)"])
  aux = dict(ok, recon=np.array([1, np.nan, 1, 1]))
  assert loop.first_non_finite(aux) == (1, ["aux term 'recon'"])
  # A skipped step is not a reason to stop; the next bad one that was applied is.
  skipped = dict(grad, skipped_updates=np.array([0, 0, 1, 0], np.int32))
  assert loop.first_non_finite(skipped) == (3, ["gradient (grad_norm)"])


def test_debug_nans_raises_at_the_op_with_the_epoch(tmp_path):
  def exploding_loss(model, params, x, key, *, kl_weight):
    loss, aux = losses.elbo_loss(model, params, x, key, kl_weight=1.0)
    return loss + jnp.sqrt(20 / 64 - kl_weight), aux  # sqrt of a negative number from step 21

  cfg = tiny_config(num_epochs=2, debug_nans=True, **{"loss.warmup_epochs": 4.0})
  with pytest.raises(train.NonFiniteError,
                     match=r"(?s)invalid value \(nan\) encountered in sqrt at step 21 in epoch 2 .*\(epoch 1\)"):
    train.train_and_evaluate(cfg, tmp_path, loss_fn=exploding_loss, datasets=synthetic())
  assert not jax.config.jax_debug_nans  # switched off again after the run


# -- crash safety ---------------------------------------------------------------------------------------



CHILD = """
import os, signal, sys, threading, time
from pathlib import Path
root, workdir, kill_after_s = sys.argv[1], Path(sys.argv[2]), float(sys.argv[3])
sys.path.insert(0, root)
{imports}


def kill_while_writing():  # SIGKILL this process kill_after_s after Orbax starts writing a checkpoint
  def writing():
    try:
      return {{p.name for p in (workdir / "checkpoints").iterdir() if ".orbax-checkpoint-tmp" in p.name}}
    except FileNotFoundError:
      return set()
  stale = writing()  # left by the last kill: counts again once this run has removed it
  while True:
    now = writing()
    stale &= now
    if now - stale:
      time.sleep(kill_after_s)
      os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(0.0002)


if kill_after_s >= 0:
  threading.Thread(target=kill_while_writing, daemon=True).start()
{run}
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
  return [np.asarray(x) for x in jax.tree.leaves(state)]  # step, params, opt_state (and any statistics)


def kill_and_restart(tmp_path, *, imports, run, ref_state, ref_dir, num_epochs, keep, plans, seed=6):
  """Runs ``run`` (a Python statement that trains into the workdir ``workdir``) in a subprocess once per
  plan, SIGKILLing it as the plan says, until the "finish" plan completes; checks after every kill
  that every visible checkpoint is complete and equal to the uninterrupted run's (``ref_dir``, which
  kept all ``num_epochs``) at that epoch and that no checkpointed epoch was lost; at the end that the
  kept checkpoints and the final state equal the uninterrupted run's.

  Plans: "while_writing": the run kills itself (a watcher thread that sees Orbax's temporary
  directory, timed in the run's own CPU time, whatever the load on the machine) 0-30 ms into a
  checkpoint write; "random": any moment before the run would reach its first checkpoint (start-up,
  restore, compile, training); "after_a_save": 0-100 ms after a checkpoint (training, saving).
  Returns (kills, kills while a checkpoint was being written, finished-but-unsaved epochs redone per kill).
  """
  ref_ckpt = checkpointing.Checkpointer(ref_dir / "checkpoints", max_to_keep=num_epochs)
  ref = {e: leaves(ref_ckpt.restore(e, ref_state)) for e in range(1, num_epochs + 1)}
  ref_ckpt.close()
  script = tmp_path / "child.py"
  script.write_text(CHILD.format(imports=imports, run=run))
  run_dir, root = tmp_path / "run", str(Path(__file__).resolve().parents[1])
  ckpt_dir = run_dir / "checkpoints"
  rng = random.Random(seed)
  kills, mid_write, newest, redone, first_write_s = 0, 0, 0, [], 3.0
  for plan in plans:
    saved_before, spawned = max(complete_epochs(ckpt_dir), default=0), time.time()
    delay = {"while_writing": 0.0 if kills == 0 else rng.uniform(0.0, 0.03), "finish": -1.0,
             "random": rng.uniform(0.0, 0.7 * first_write_s), "after_a_save": rng.uniform(0.0, 0.1)}[plan]
    log_path = tmp_path / f"child{kills}.log"
    with log_path.open("w") as log_file:
      proc = subprocess.Popen(
          [sys.executable, str(script), root, str(run_dir), str(delay if plan == "while_writing" else -1)],
          stdout=log_file, stderr=subprocess.STDOUT, env=dict(os.environ, JAX_PLATFORMS="cpu"))
      start, saved_at = time.monotonic(), None
      while proc.poll() is None:
        now = time.monotonic() - start
        if now > 180:
          proc.kill()
          pytest.fail(f"the training subprocess hangs: {log_path.read_text()[-2000:]}")
        if saved_at is None and max(complete_epochs(ckpt_dir), default=0) > saved_before:
          saved_at = now
        if (plan == "random" and now > delay
            or plan == "after_a_save" and saved_at is not None and now > saved_at + delay):
          proc.send_signal(signal.SIGKILL)
          break
        time.sleep(0.001)
      code = proc.wait()
    if plan == "finish":
      assert code == 0, log_path.read_text()[-3000:]
      break
    assert code == -signal.SIGKILL, (plan, code, log_path.read_text()[-3000:])
    if kills == 0:
      first_write_s = time.monotonic() - start
    kills += 1
    mid_write += any((ckpt_dir / n).stat().st_mtime >= spawned - 0.01  # it died leaving a checkpoint
                     for n in being_written(ckpt_dir))                   # it had begun to write
    epochs = complete_epochs(ckpt_dir)
    # Nothing finished is lost: the newest checkpoint never goes back; the kept ones are consecutive.
    assert (epochs[-1] if epochs else 0) >= newest, (epochs, newest)
    assert epochs == list(range(epochs[0], epochs[-1] + 1)) if epochs else True
    assert len(epochs) >= min(keep, newest)
    newest = epochs[-1] if epochs else 0
    # Every visible checkpoint is complete and equals the uninterrupted run's at that epoch.
    ckpt = checkpointing.Checkpointer(ckpt_dir, max_to_keep=keep)
    for e in epochs:
      for a, b in zip(leaves(ckpt.restore(e, ref_state)), ref[e]):
        np.testing.assert_array_equal(a, b)
    ckpt.close()
    # Work lost to this kill: epochs with a metrics row but no checkpoint (redone on restart).
    rows = read_metrics(run_dir) if (run_dir / "metrics.jsonl").exists() else []
    redone.append(len({r["epoch"] for r in rows if r["epoch"] > newest}))

  assert complete_epochs(ckpt_dir) == list(range(num_epochs - keep + 1, num_epochs + 1))
  final = checkpointing.Checkpointer(ckpt_dir).restore_latest(ref_state)[1]
  for a, b in zip(leaves(final), ref[num_epochs]):
    np.testing.assert_array_equal(a, b)
  rows, ref_rows = read_metrics(run_dir), read_metrics(ref_dir)
  assert [r["epoch"] for r in rows] == list(range(1, num_epochs + 1))
  assert [r["train_loss"] for r in rows] == [r["train_loss"] for r in ref_rows]
  untimed = lambda r: {k: v for k, v in r.items() if k not in ("seconds", "examples_per_s")}
  assert untimed(rows[-1]) == untimed(ref_rows[-1])  # validation metrics too, to the last bit
  return kills, mid_write, redone


CRASH_RUN = dict(num_epochs=6, eval_every_epochs=6, checkpoint_every_epochs=1, keep_checkpoints=3)


def test_training_killed_at_random_moments_resumes_without_losing_finished_epochs(tmp_path):
  """SIGKILL a training subprocess 4 times (twice as a checkpoint is being written), restart it
  each time: every checkpoint ever visible is complete and equals the uninterrupted run's at that
  epoch, no checkpointed epoch is lost, and the final parameters and metrics are bit-identical."""
  ref_state, _ = train.train_and_evaluate(tiny_config(**dict(CRASH_RUN, keep_checkpoints=6)),
                                          tmp_path / "ref", datasets=synthetic())  # also fills the cache
  kills, mid_write, redone = kill_and_restart(
      tmp_path, imports="from tests.test_train import synthetic, tiny_config\nfrom vae_jax import train",
      run=f"train.train_and_evaluate(tiny_config(**{CRASH_RUN!r}), workdir, datasets=synthetic())",
      ref_state=ref_state, ref_dir=tmp_path / "ref", num_epochs=6, keep=3,
      plans=["while_writing", "random", "after_a_save", "while_writing", "finish"])
  print(f"\nkills survived: {kills} ({mid_write} while a checkpoint was being written); "
        f"checkpointed epochs lost: 0; finished-but-unsaved epochs redone per kill: {redone}")
  assert kills == 4 and mid_write >= 1 and max(redone) <= 1


def test_a_kill_while_an_old_checkpoint_is_deleted_leaves_only_complete_ones_visible(tmp_path, monkeypatch):
  ck = checkpointing.Checkpointer(tmp_path, max_to_keep=2)
  ck.save(1, small_state(seed=1))
  ck.save(2, small_state(seed=2))

  def killed_midway(path, *args, **kwargs):  # deletes one file of the old checkpoint, then "dies"
    next(f for f in Path(path).rglob("*") if f.is_file()).unlink()
    raise SystemExit("killed")

  monkeypatch.setattr(checkpointing.shutil, "rmtree", killed_midway)
  with pytest.raises(SystemExit):
    ck.save(3, small_state(seed=3))  # saving 3 prunes 1
  monkeypatch.undo()
  assert complete_epochs(tmp_path) == [2, 3]  # the half-deleted one is out of sight, in _deleted/
  ck = checkpointing.Checkpointer(tmp_path, max_to_keep=2)
  ck.clean_up_after_crash()
  assert not (tmp_path / "_deleted").exists() and ck.epochs() == [2, 3]
  for e in (2, 3):
    for a, b in zip(leaves(ck.restore(e, small_state())), leaves(small_state(seed=e))):
      np.testing.assert_array_equal(a, b)


def test_a_metrics_line_cut_short_by_a_kill_is_dropped_on_resume(tmp_path, caplog):
  path = tmp_path / "metrics.jsonl"
  path.write_text('{"epoch": 1, "train_loss": 5.0}\n{"epoch": 2, "train_loss": 4.0}\n{"epoch": 3, "tra')
  workdir_lib.truncate_metrics(path, 2)
  assert read_metrics(tmp_path) == [{"epoch": 1, "train_loss": 5.0}, {"epoch": 2, "train_loss": 4.0}]
  assert "partly written line" in caplog.text
  workdir_lib.truncate_metrics(path, 1)
  assert read_metrics(tmp_path) == [{"epoch": 1, "train_loss": 5.0}]


# -- bad checkpoints, workdirs and data --------------------------------------------------------------------

def small_state(seed=0, **overrides):
  cfg = tiny_config(**overrides)
  model = config_lib.make_model(cfg)
  tx = config_lib.make_optimizer(cfg.optimizer, config_lib.make_schedule(cfg.optimizer, 1, 1))
  return train.create_train_state(model, jax.random.key(seed), tx)


def truncate_files(path):
  for f in path.rglob("*"):
    if f.is_file():
      f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


def delete_array_data(path):
  for f in (path / "default").rglob("*"):
    if f.is_file() and "manifest" in f.name:
      f.unlink()


@pytest.mark.parametrize("damage", [truncate_files, delete_array_data])
def test_damaged_newest_checkpoint_falls_back_names_it_and_sets_it_aside(tmp_path, caplog, damage):
  ck = checkpointing.Checkpointer(tmp_path, max_to_keep=5)
  for epoch in (1, 2, 3):
    ck.save(epoch, small_state(seed=epoch))
  damage(tmp_path / "3")
  damage(tmp_path / "2")
  epoch, state = ck.restore_latest(small_state(), set_aside_unreadable=True)
  assert epoch == 1
  for a, b in zip(leaves(state), leaves(small_state(seed=1))):
    np.testing.assert_array_equal(a, b)
  assert f"checkpoint {tmp_path / '3'} cannot be restored" in caplog.text
  assert "restored epoch 1" in caplog.text and "skipping unreadable newer checkpoints [2, 3]" in caplog.text
  assert ck.epochs() == [1] and len(list((tmp_path / "_unreadable").iterdir())) == 2
  ck.save(2, small_state(seed=7))  # the trainer can write those epochs again
  assert ck.epochs() == [1, 2]
  for d in ("1", "2"):
    damage(tmp_path / d)
  with pytest.raises(checkpointing.CheckpointError, match=rf"no checkpoint in {tmp_path} could be restored"):
    ck.restore_latest(small_state())


def test_checkpoint_of_another_model_names_the_arrays(tmp_path):
  ck = checkpointing.Checkpointer(tmp_path)
  ck.save(1, small_state())
  with pytest.raises(checkpointing.CheckpointError,
                     match=r"another model's state: params\..*params\.enc_heads_0\.mean\.kernel has "
                           r"shape \(16, 4\) in the checkpoint, \(16, 6\) here"):
    ck.restore_latest(small_state(**{"model.latent_dims": (6,)}), set_aside_unreadable=True)
  assert ck.epochs() == [1]  # nothing is moved aside when no checkpoint fits


def test_resume_past_a_corrupt_checkpoint_ends_identical_to_an_uninterrupted_run(tmp_path,
                                                                                  caplog):
  data = synthetic()
  full, _ = train.train_and_evaluate(tiny_config(num_epochs=3), tmp_path / "full", datasets=data)
  train.train_and_evaluate(tiny_config(num_epochs=2), tmp_path / "run", datasets=data)
  truncate_files(tmp_path / "run" / "checkpoints" / "2")
  resumed, _ = train.train_and_evaluate(tiny_config(num_epochs=3), tmp_path / "run", datasets=data)
  assert "restored epoch 1" in caplog.text
  jax.tree.map(np.testing.assert_array_equal, params_of(resumed), params_of(full))
  assert [r["epoch"] for r in read_metrics(tmp_path / "run")] == [1, 2, 3]


def test_workdir_of_another_model_without_its_config_is_refused(tmp_path):
  train.train_and_evaluate(tiny_config(num_epochs=1), tmp_path, datasets=synthetic())
  (tmp_path / "config.json").unlink()
  with pytest.raises(checkpointing.CheckpointError, match="params.enc_heads_0.mean.kernel has shape"):
    train.train_and_evaluate(tiny_config(num_epochs=2, **{"model.latent_dims": (6,)}), tmp_path,
                             datasets=synthetic())


def read_only_dir(tmp_path):
  """A directory this process cannot write: chmod for a user, a read-only system folder for root."""
  if os.geteuid() != 0:
    path = tmp_path / "ro"
    path.mkdir()
    path.chmod(0o555)
    return path
  for path in (Path("/sys/kernel"), Path("/proc/self")):
    if path.is_dir() and not os.access(path, os.W_OK | os.X_OK) or not _can_write(path):
      return path
  pytest.skip("no read-only directory on this machine (running as root)")


def _can_write(path):
  try:
    (path / ".probe").write_text("")
    (path / ".probe").unlink()
    return True
  except OSError:
    return False


def test_missing_read_only_and_file_workdirs(tmp_path, monkeypatch):
  def no_data(*a, **k):
    raise AssertionError("data was loaded")

  monkeypatch.setattr(train, "load_datasets", no_data)
  ro = read_only_dir(tmp_path)
  for workdir, match in [(ro, f"workdir {ro} cannot be written"),
                         (ro / "run", f"workdir {ro / 'run'} cannot be created"),
                         (tmp_path / "a_file", f"workdir {tmp_path / 'a_file'} cannot be")]:
    if workdir.name == "a_file":
      workdir.write_text("")
    with pytest.raises(train.WorkdirError, match=match):
      train.train_and_evaluate(tiny_config(), workdir)
  with pytest.raises(FileNotFoundError, match=f"{tmp_path / 'nowhere'}.* training workdir"):
    train.load_config(tmp_path / "nowhere")  # what vae_jax.commands.evaluate reads first


def test_missing_tfds_data_dir_says_what_to_do(tmp_path, monkeypatch):
  cfg = tiny_config(**{"data.data_dir": str(tmp_path / "no_tfds"), "data.download": False})
  with pytest.raises(data_lib.DataError, match=rf"(?s){tmp_path / 'no_tfds'} \(from config.data.data_dir\) "
                                               r"does not exist.*TFDS_DATA_DIR.*download=True"):
    train.train_and_evaluate(cfg, tmp_path / "run")
  monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "empty"))
  with pytest.raises(data_lib.DataError, match=r"from \$TFDS_DATA_DIR"):
    train.train_and_evaluate(tiny_config(**{"data.download": False}), tmp_path / "run")
  assert not (tmp_path / "run" / "config.json").exists()


@pytest.mark.parametrize("images,mode,match", [
    (np.zeros((64, 28, 28)), "static", r"train images have shape \(64, 28, 28\); expected \[N, 28, 28, 1\]"),
    (np.zeros((64, 32, 32, 3)), "static", r"train images have shape \(64, 32, 32, 3\)"),
    (np.full((64, 28, 28, 1), 300, np.int32), "dynamic", r"train images have values in \[300.0, 300.0\]"),
    (np.full((64, 28, 28, 1), -1.0), "dynamic", r"train images have values in \[-1.0"),
    (np.full((64, 28, 28, 1), 0.5, np.float32), "dynamic", r"non-integer values.*multiply by 255"),
    (np.full((64, 28, 28, 1), np.inf), "dynamic", r"non-finite"),
    (np.full((64, 28, 28, 1), 255, np.uint8), "static", r"mode='static' needs binary images"),
    (np.zeros((0, 28, 28, 1), np.uint8), "static", r"train images are empty"),
])
def test_images_of_the_wrong_shape_or_range_are_named_before_training(tmp_path, images, mode, match):
  overrides = {} if mode == "static" else {"data.name": "mnist", "data.mode": mode}
  data = dict(synthetic(), train=data_lib.Split(images, None))
  with pytest.raises(data_lib.DataError, match=match):
    train.train_and_evaluate(tiny_config(**overrides), tmp_path, datasets=data)
  assert not (tmp_path / "checkpoints").exists()


# -- determinism ---------------------------------------------------------------------------------------------

CONFIGS = sorted(p.stem for p in Path(__file__).resolve().parents[1].glob("vae_jax/configs/*.py")
                 if p.stem != "__init__")


def small_form(name, seed):
  """The experiment config shrunk (one hidden layer of 8 per stochastic layer, K <= 2, 2 epochs,
  <= 4 mixture components, one stage of 4 conv channels):
  the same stochastic layers, loss, data mode and schedule kind."""
  cfg = importlib.import_module(f"vae_jax.configs.{name}").get_config()
  cfg.seed = seed
  cfg.model.latent_dims = tuple(4 // 2**i for i in range(len(cfg.model.latent_dims)))
  cfg.model.hidden_sizes = tuple((8,) for _ in cfg.model.hidden_sizes)
  cfg.loss.num_samples = min(cfg.loss.num_samples, 2)
  cfg.model.num_components = min(cfg.model.num_components, 4)  # mixture components, pseudo-inputs
  cfg.model.conv_features = (4,)  # one stride-2 stage (fewer convolutions to compile)
  if cfg.optimizer.schedule == "burda":  # two stages of one epoch: the rate drops once
    cfg.optimizer.burda_stages, cfg.optimizer.burda_epoch_scale, cfg.num_epochs = 2, 0.4, -1
  else:
    cfg.num_epochs = 2
  cfg.batch_size, cfg.eval_every_epochs, cfg.eval_num_samples = 16, 1, 2
  cfg.checkpoint_every_epochs, cfg.progress = 1, False
  cfg.eval.batch_size, cfg.eval.chunk_size = 32, 2
  config_lib.validate(cfg)
  return cfg


def small_data(cfg):
  """64 training and 32 validation images of the config's dataset, binary or grey as its mode needs
  (with labels for a class-conditional model)."""
  rng = np.random.default_rng(0)
  shape = data_lib.DATASETS[cfg.data.name].image_shape
  high = 2 if cfg.data.mode == "static" else 256
  images = rng.integers(0, high, (96,) + shape).astype(np.uint8)
  labels = rng.integers(0, cfg.model.num_classes, 96) if cfg.model.num_classes else None
  pick = lambda rows: None if labels is None else labels[rows]
  return {"train": data_lib.Split(images[:64], pick(slice(0, 64))),
          "validation": data_lib.Split(images[64:], pick(slice(64, None)))}


@pytest.mark.parametrize("name", CONFIGS)
def test_every_experiment_config_is_bit_identical_for_a_seed_and_differs_across_seeds(tmp_path, name):
  runs = {}
  for run, seed in (("a", 0), ("b", 0), ("c", 1)):
    cfg = small_form(name, seed)
    state, _ = train.train_and_evaluate(cfg, tmp_path / run, datasets=small_data(cfg))
    rows = [{k: v for k, v in r.items() if k not in ("seconds", "examples_per_s")}
            for r in read_metrics(tmp_path / run)]
    runs[run] = leaves(state), rows
  assert config_lib.num_epochs(small_form(name, 0)) == len(runs["a"][1]) == 2
  for x, y in zip(runs["a"][0], runs["b"][0]):
    np.testing.assert_array_equal(x, y)
  assert runs["a"][1] == runs["b"][1]  # every metric, train and validation, to the last bit
  assert not all(np.array_equal(x, y) for x, y in zip(runs["a"][0], runs["c"][0]))
  assert runs["a"][1][-1]["train_loss"] != runs["c"][1][-1]["train_loss"]
