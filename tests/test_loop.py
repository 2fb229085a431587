"""The one training loop, through every trainer: the VAE, the VQ-VAE, the PixelCNN prior and M2.

Each trainer runs tiny on synthetic data and must pass the same checks: a
resumed run ends bit for bit where the uninterrupted one ends, a non-finite
loss stops the run naming the step and the checkpoint kept (or, in skip mode,
is skipped and counted). That one and two devices, and two and four processes,
train the same model: ``tests/test_multiprocess.py``.
"""

import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from vae_jax.configs.semisupervised import m2 as m2_config
from tests import test_config as tc
from tests.test_reliability import compile_cache  # noqa: F401  (autouse: a persistent XLA cache)
from tests import test_train
from tests import test_vqvae
from vae_jax import checkpointing
from vae_jax import data as data_lib
from vae_jax import loop
from vae_jax import train_state
from vae_jax import workdir as workdir_lib
from vae_jax.apps import ssl_train
from vae_jax.vq import train as vq_train
from vae_jax.vq import train_prior as vq_prior

TRAINERS = ("vae", "vqvae", "prior", "m2")
# The figures each trainer writes at every evaluation (the VQ-VAE has no samples without a prior).
FIGURES = {"vae": ["reconstructions.png", "samples.png"], "vqvae": ["reconstructions.png"],
           "prior": ["samples.png"], "m2": ["samples.png"]}
STEPS_PER_EPOCH = 4  # every trainer below: 64 training examples in batches of 16


def _labelled(n=64, seed=0):
  """Binary 28x28 images of 10 prototypes with their labels (train, validation and test)."""
  rng = np.random.default_rng(seed)
  protos = rng.uniform(0.05, 0.95, (10, 28, 28, 1))
  labels = np.arange(n) % 10
  images = (rng.uniform(size=(n, 28, 28, 1)) < protos[labels]).astype(np.uint8) * 255
  split = data_lib.Split(images, labels.astype(np.int32))
  return {"train": split, "validation": split, "test": split}


def tiny(kind: str, vq_workdir: Path | None = None, **overrides):
  """(config, run) of the trainer ``kind`` at its smallest; ``run(config, workdir)`` trains."""
  common = {"batch_size": 16, "num_epochs": 3, "eval_every_epochs": 1, "checkpoint_every_epochs": 1,
            "keep_checkpoints": 5, "progress": False, **overrides}
  data = test_vqvae.synthetic(n=64)
  if kind == "vae":
    cfg = test_train.tiny_config(**common)
    return cfg, lambda c, w: test_train.train.train_and_evaluate(c, w, datasets=data)
  if kind == "vqvae":
    cfg = test_vqvae.tiny_vq_config(**{"eval.batch_size": 16, **common})
    return cfg, lambda c, w: vq_train.train_and_evaluate(c, w, datasets=data)
  if kind == "prior":
    cfg = test_vqvae.tiny_prior_config(vq_workdir, **{"eval.batch_size": 16, **common})
    return cfg, lambda c, w: vq_prior.train_prior(c, w, datasets=data)
  cfg = tc.override(m2_config.get_config(), {
      "m2.hidden_sizes": (8,), "m2.latent_dim": 2, "m2.labelled_batch_size": 4, "num_labelled": 10,
      "eval.batch_size": 16, "optimizer.schedule": "constant", **common})
  splits = _labelled()
  return cfg, lambda c, w: ssl_train.run(c, w, splits=splits)


def run(kind, workdir, vq_workdir=None, **overrides):
  cfg, fn = tiny(kind, vq_workdir, **overrides)
  fn(cfg, workdir)
  return workdir_lib.read_metrics(workdir)


def latest_params(workdir):
  """The parameters of the newest checkpoint, read back raw (no template)."""
  ckpt = checkpointing.Checkpointer(Path(workdir) / "checkpoints")
  try:
    epoch = max(ckpt.epochs())
    tree = ckpt._manager.restore(epoch, args=ocp.args.StandardRestore())
  finally:
    ckpt.close()
  return epoch, jax.tree.map(np.asarray, tree["params"])


def without_timing(rows):
  return [{k: v for k, v in r.items() if k not in ("seconds", "examples_per_s")} for r in rows]


@pytest.fixture(scope="module")
def vq_workdir(tmp_path_factory):
  """A trained tiny VQ-VAE: the prior trainer's codes come from it."""
  workdir = tmp_path_factory.mktemp("vq")
  run("vqvae", workdir, num_epochs=1)
  return workdir


@pytest.fixture(scope="module", autouse=True)
def _fast_rng(fast_compiling_rng):
  yield


@pytest.mark.parametrize("kind", TRAINERS)
def test_a_resumed_run_ends_identical_to_an_uninterrupted_one(kind, tmp_path, vq_workdir):
  full = run(kind, tmp_path / "full", vq_workdir)
  run(kind, tmp_path / "resumed", vq_workdir, num_epochs=2)  # stopped after epoch 2 ...
  resumed = run(kind, tmp_path / "resumed", vq_workdir)       # ... and resumed to epoch 3
  assert [r["epoch"] for r in resumed] == [1, 2, 3]
  assert without_timing(resumed) == without_timing(full)
  (e_full, p_full), (e_res, p_res) = latest_params(tmp_path / "full"), latest_params(tmp_path / "resumed")
  assert e_full == e_res == 3
  jax.tree.map(np.testing.assert_array_equal, p_full, p_res)
  assert checkpointing.Checkpointer(tmp_path / "resumed" / workdir_lib.BEST_DIR).epochs()  # a best one kept
  assert sorted(p.name for p in (tmp_path / "full" / "figures").iterdir()) == FIGURES[kind]


def poison_from(step_index: int):
  """A replacement for ``loop.guard`` whose steps report a NaN loss from ``step_index`` on."""
  real = train_state.guard

  def guard(step, **kw):
    def poisoned(state, batch, key):
      new, metrics = step(state, batch, key)
      return new, dict(metrics, loss=jnp.where(state.step >= step_index, jnp.nan, metrics["loss"]))
    return real(poisoned, **kw)
  return guard


@pytest.mark.parametrize("kind", TRAINERS)
def test_a_non_finite_loss_stops_naming_the_step_or_is_skipped(kind, tmp_path, vq_workdir, monkeypatch):
  monkeypatch.setattr(loop, "guard", poison_from(STEPS_PER_EPOCH + 1))  # epoch 2, batch 1
  with pytest.raises(loop.NonFiniteError, match=r"non-finite loss at step 5 \(epoch 2, batch 1\).*the "
                     r"newest good checkpoint \(epoch 1\) is kept"):
    run(kind, tmp_path / "stop", vq_workdir)
  assert checkpointing.Checkpointer(tmp_path / "stop" / "checkpoints").epochs() == [1]
  assert [r["epoch"] for r in workdir_lib.read_metrics(tmp_path / "stop")] == [1]
  # Skip mode: every update from step 5 on is skipped, so epoch 3 learns nothing and the run stops.
  with pytest.raises(loop.NonFiniteError, match="all 4 updates of epoch 3 were skipped"):
    run(kind, tmp_path / "skip", vq_workdir, skip_nonfinite_updates=True)
  rows = workdir_lib.read_metrics(tmp_path / "skip")
  assert [r["train_skipped_updates"] for r in rows] == [0, 3]
  assert all(np.isfinite(r["train_loss"]) for r in rows)


# -- the loop on scripted epochs: validation and metrics-file checks, whatever the trainer ----------

class Counting(__import__("flax").struct.PyTreeNode):
  step: jax.Array


def scripted_fit(workdir, monkeypatch, *, num_epochs=2, evaluate=lambda state: {"nll": 1.0}):
  """``loop.fit`` with an epoch that only counts steps (4 per epoch) and ``evaluate`` as given."""
  def scripted_epoch(step, batch_size, **kw):
    return lambda state, data, epoch, train_key, data_key: (
        state.replace(step=state.step + 4), {"loss": np.ones(4), "grad_norm": np.ones(4)})
  monkeypatch.setattr(loop, "make_epoch", scripted_epoch)
  cfg = test_train.tiny_config(num_epochs=num_epochs, checkpoint_every_epochs=1)
  trainer = loop.Trainer(state=Counting(step=jnp.int32(0)), step=None, data=np.zeros((64, 1)),
                         evaluate=evaluate, schedule=lambda step: 1e-3, keys=train_state.RunKeys.from_seed(0),
                         best_metric="nll")
  return loop.fit(cfg, workdir, trainer)


def test_a_non_finite_validation_stops_the_run_and_is_never_the_best(tmp_path, monkeypatch):
  nll = {4: 3.0, 8: float("nan")}  # by step: epoch 1 fine, epoch 2 diverged
  with pytest.raises(loop.NonFiniteError, match=r"non-finite validation val_nll after epoch 2.*newest good "
                                                r"checkpoint \(epoch 1\) is kept"):
    scripted_fit(tmp_path, monkeypatch, evaluate=lambda state: {"nll": nll[int(state.step)]})
  rows = workdir_lib.read_metrics(tmp_path)
  assert [r["epoch"] for r in rows] == [1, 2] and np.isnan(rows[1]["val_nll"])  # recorded as it was
  assert checkpointing.Checkpointer(tmp_path / "checkpoints").epochs() == [1]
  assert checkpointing.Checkpointer(tmp_path / workdir_lib.BEST_DIR).epochs() == [1]


def test_a_resumed_workdir_whose_metrics_lost_rows_says_so(tmp_path, monkeypatch, caplog):
  scripted_fit(tmp_path, monkeypatch, num_epochs=2)
  (tmp_path / "metrics.jsonl").unlink()
  with caplog.at_level("WARNING", logger="vae_jax.loop"):
    scripted_fit(tmp_path, monkeypatch, num_epochs=3)
  assert "has no rows for epochs 1-2 of the 2 the checkpoint holds" in caplog.text
  assert [r["epoch"] for r in workdir_lib.read_metrics(tmp_path)] == [3]


def test_the_best_checkpoint_message_is_true_when_none_was_written(tmp_path):
  with pytest.raises(FileNotFoundError, match="config.json does not exist: is .* a training workdir"):
    test_train.train.restore_workdir(tmp_path, "best")
  test_train.train.train_and_evaluate(test_train.tiny_config(num_epochs=1), tmp_path,
                                      datasets=test_train.synthetic(n=64))
  shutil.rmtree(tmp_path / workdir_lib.BEST_DIR)  # as when no validation was finite and better
  with pytest.raises(FileNotFoundError, match=r"none was; the newest checkpoint is in .*checkpoints "
                                              r"\(--checkpoint latest\)"):
    test_train.train.restore_workdir(tmp_path, "best")
  assert test_train.train.restore_workdir(tmp_path)[3] == 1
