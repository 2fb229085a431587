"""Workdirs written by vae_jax 0.1.0 (before the one loop and the subpackages) load and resume.

``tests/data/workdirs_v0_1`` holds two tiny runs of 2 epochs written by that
version (a VAE and a VQ-VAE on ``test_vqvae.synthetic(n=64)``; configs in
``tiny_vae`` / ``tiny_vqvae`` below). Today's code restores them, and resuming
them to epoch 3 ends bit for bit where a run of 3 epochs started today ends:
the layout moved, the numbers did not.
"""

import shutil
from pathlib import Path

import jax
import numpy as np
import pytest
import orbax.checkpoint as ocp

from tests import test_train as tt
from tests import test_vqvae as tv
from vae_jax import checkpointing
from vae_jax import train
from vae_jax import workdir as workdir_lib
from vae_jax.vq import train as vq_train
from vae_jax.vq import workdirs as vq_workdirs

OLD = Path(__file__).resolve().parent / "data" / "workdirs_v0_1"


def tiny_vae(num_epochs):
  return tt.tiny_config(num_epochs=num_epochs, batch_size=16, keep_checkpoints=1,
                        **{"model.hidden_sizes": ((4,),), "model.latent_dims": (2,)})


def tiny_vqvae(num_epochs):
  return tv.tiny_vq_config(num_epochs=num_epochs, batch_size=16, keep_checkpoints=1,
                           **{"eval.batch_size": 16, "model.hidden": 4, "model.residual_hidden": 2,
                              "model.num_residual_blocks": 0, "model.num_codes": 4, "model.code_dim": 2})


def latest(workdir):
  ckpt = checkpointing.Checkpointer(Path(workdir) / "checkpoints")
  try:
    epoch = max(ckpt.epochs())
    return epoch, jax.tree.map(np.asarray, ckpt._manager.restore(epoch, args=ocp.args.StandardRestore()))
  finally:
    ckpt.close()


def check_resumes_as_if_never_stopped(old, new):
  """The resumed old workdir ends where a new run ends. The old rows and checkpoint were written on
  another CPU, and XLA's CPU code differs with the CPU's vector units in the last bits of a reduction:
  equal to float32 rounding, not bit for bit (bit-for-bit resume on one machine: tests/test_loop.py)."""
  rows_old, rows_new = workdir_lib.read_metrics(old), workdir_lib.read_metrics(new)
  timing = ("seconds", "examples_per_s")
  strip = lambda rows: [{k: v for k, v in r.items() if k not in timing} for r in rows]
  rows_old, rows_new = strip(rows_old), strip(rows_new)
  assert [sorted(r) for r in rows_old] == [sorted(r) for r in rows_new]
  for a, b in zip(rows_old, rows_new):
    assert a == pytest.approx(b, rel=1e-6, abs=1e-7), (a, b)
  (e_old, s_old), (e_new, s_new) = latest(old), latest(new)
  assert e_old == e_new == 3
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), s_old, s_new)


def test_an_old_vae_workdir_loads_and_resumes_as_if_never_stopped(tmp_path):
  old = shutil.copytree(OLD / "vae", tmp_path / "old")
  config, model, params, epoch = train.restore_workdir(old)
  assert epoch == 2 and model.latent_dims == (2,)
  assert train.restore_workdir(old, "best")[3] in (1, 2)
  data = tv.synthetic(n=64)
  train.train_and_evaluate(tiny_vae(3), old, datasets=data)
  train.train_and_evaluate(tiny_vae(3), tmp_path / "new", datasets=data)
  check_resumes_as_if_never_stopped(old, tmp_path / "new")


def test_an_old_vqvae_workdir_loads_and_resumes_as_if_never_stopped(tmp_path):
  before = jax.config.jax_threefry_partitionable
  jax.config.update("jax_threefry_partitionable", False)  # as it was written (tests' fast RNG)
  try:
    old = shutil.copytree(OLD / "vqvae", tmp_path / "old")
    run = vq_workdirs.load_vqvae(old)
    assert run.epoch == 2 and run.model.num_codes == 4
    data = tv.synthetic(n=64)
    vq_train.train_and_evaluate(tiny_vqvae(3), old, datasets=data)
    vq_train.train_and_evaluate(tiny_vqvae(3), tmp_path / "new", datasets=data)
    check_resumes_as_if_never_stopped(old, tmp_path / "new")
  finally:
    jax.config.update("jax_threefry_partitionable", before)
