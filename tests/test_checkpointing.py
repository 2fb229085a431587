import jax
import numpy as np
import pytest

from tests.test_train import tiny_config
from vae_jax import checkpointing
from vae_jax import config as config_lib
from vae_jax import train


def make_state(cfg, seed=0):
  model = config_lib.make_model(cfg)
  tx = config_lib.make_optimizer(cfg.optimizer, config_lib.make_schedule(cfg.optimizer, 1, 1))
  return train.create_train_state(model, jax.random.key(seed), tx)


def test_roundtrip_restores_params_optimizer_and_step(tmp_path):
  cfg = tiny_config()
  state = make_state(cfg, seed=1).replace(step=np.int32(7))
  ck = checkpointing.Checkpointer(tmp_path, max_to_keep=3)
  assert ck.restore_latest(make_state(cfg)) == (0, None)
  ck.save(3, state)
  epoch, restored = ck.restore_latest(make_state(cfg, seed=2))
  assert epoch == 3 and int(restored.step) == 7
  jax.tree.map(np.testing.assert_array_equal, jax.tree.leaves(state.params), jax.tree.leaves(restored.params))
  jax.tree.map(np.testing.assert_array_equal, jax.tree.leaves(state.opt_state), jax.tree.leaves(restored.opt_state))


def test_corrupt_newest_checkpoint_falls_back_to_an_older_one(tmp_path, caplog):
  cfg = tiny_config()
  ck = checkpointing.Checkpointer(tmp_path, max_to_keep=3)
  ck.save(1, make_state(cfg, seed=1))
  ck.save(2, make_state(cfg, seed=2))
  for f in (tmp_path / "2").rglob("*"):
    if f.is_file():
      f.write_bytes(b"garbage")
  epoch, restored = ck.restore_latest(make_state(cfg))
  assert epoch == 1
  jax.tree.map(np.testing.assert_array_equal, jax.tree.leaves(make_state(cfg, seed=1).params),
               jax.tree.leaves(restored.params))
  assert "cannot be restored" in caplog.text


def test_checkpoint_of_another_model_is_a_clear_error(tmp_path):
  ck = checkpointing.Checkpointer(tmp_path)
  ck.save(1, make_state(tiny_config()))
  other = tiny_config(**{"model.latent_dims": (6,)})
  with pytest.raises(checkpointing.CheckpointError, match="could be restored"):
    ck.restore_latest(make_state(other))
