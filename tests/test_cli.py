"""The commands: misspelled overrides and named errors in one line, Ctrl-C ends a run cleanly."""

import ast
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import requires_binarized_mnist
from vae_jax import cli
from vae_jax import config as config_lib
from vae_jax.vq import config as vq_config

ROOT = Path(__file__).resolve().parents[1]


def command(*args, **kw):
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
  return subprocess.Popen([sys.executable, "-m", *args], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, **kw)


@pytest.mark.parametrize("override,schema,match", [
    ("learnig_rate", config_lib.SCHEMA, "did you mean config.optimizer.learning_rate"),  # top level
    ("optimizer.learnig_rate", config_lib.SCHEMA, "did you mean config.optimizer.learning_rate"),
    ("vq.restart_treshold", vq_config.VQVAE_SCHEMA, "did you mean config.vq.dead_threshold"),
    ("model", config_lib.SCHEMA, "a section of fields"),
])
def test_every_misspelled_override_gets_the_same_named_error(override, schema, match):
  with pytest.raises(config_lib.ConfigError, match=match):
    cli.check_overrides(["prog", f"--config.{override}=1", "--workdir", "x"], schema)
  cli.check_overrides(["prog", "--config.optimizer.learning_rate=0.1", "--config.seed=3"], schema)


def test_a_command_prints_a_named_error_in_one_line_and_exits_2(tmp_path):
  proc = command("vae_jax.commands.train", "--workdir", str(tmp_path / "w"), "--config.learnig_rate=0.1")
  out, err = proc.communicate(timeout=120)
  assert proc.returncode == 2, err
  assert err.strip().splitlines() == ["error: ConfigError: config.learnig_rate is not a known field; did "
                                      "you mean config.optimizer.learning_rate? (see "
                                      "vae_jax/configs/default.py)"]
  assert not (tmp_path / "w").exists()


@requires_binarized_mnist
def test_ctrl_c_ends_a_run_with_one_line_and_the_same_command_resumes(tmp_path):
  workdir = tmp_path / "w"
  args = ("vae_jax.commands.train", "--workdir", str(workdir), "--config.num_epochs=500",
          "--config.checkpoint_every_epochs=1", "--config.eval_every_epochs=500", "--config.progress=False",
          "--config.model.hidden_sizes=((8,),)", "--config.model.latent_dims=(2,)")
  proc = command(*args)
  deadline = time.time() + 240
  while not (workdir / "metrics.jsonl").exists() or not (workdir / "metrics.jsonl").read_text():
    assert proc.poll() is None and time.time() < deadline, proc.communicate()[1][-2000:]
    time.sleep(0.5)
  proc.send_signal(signal.SIGINT)
  out, err = proc.communicate(timeout=120)
  assert proc.returncode == 130, err[-2000:]
  assert "Traceback" not in err
  assert err.strip().splitlines()[-1] == (f"interrupted: the checkpoints written so far in {workdir} are "
                                          "kept; rerun the same command to resume")
  assert (workdir / "checkpoints").is_dir()

  # The rerun resumes from the last checkpoint (only the length differs, to end it soon).
  done = max(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
  rerun = [a if a != "--config.num_epochs=500" else f"--config.num_epochs={done + 1}" for a in args]
  proc = command(*rerun)
  out, err = proc.communicate(timeout=240)
  assert proc.returncode == 0, err[-2000:]
  assert f"from epoch {done} " in err, err[-2000:]
  assert ast.literal_eval(out.strip().splitlines()[-1])["epoch"] == done + 1


@requires_binarized_mnist
def test_a_run_logs_one_line_per_epoch_and_its_rerun_prints_the_final_metrics(tmp_path):
  workdir = tmp_path / "w"
  args = ("vae_jax.commands.train", "--workdir", str(workdir), "--config.num_epochs=2", "--config.progress=False",
          "--config.eval_every_epochs=2", "--config.eval_num_samples=2", "--config.model.hidden_sizes=((8,),)",
          "--config.model.latent_dims=(2,)")
  proc = command(*args)
  out, err = proc.communicate(timeout=240)
  assert proc.returncode == 0, err[-2000:]
  lines = [line.split("] ", 1)[1] for line in err.splitlines() if "] epoch " in line]
  assert len(lines) == 2, err[-2000:]
  assert re.fullmatch(r"epoch 1/2  train_loss [\d.]+  \d+\.\d s", lines[0]), lines[0]
  assert re.fullmatch(r"epoch 2/2  train_loss [\d.]+  val_elbo -[\d.]+  val_nll [\d.]+  \d+\.\d s", lines[1])
  final = ast.literal_eval(out.strip().splitlines()[-1])
  assert final["epoch"] == 2 and "val_nll" in final

  proc = command(*args)
  out, err = proc.communicate(timeout=240)
  assert proc.returncode == 0, err[-2000:]
  assert ast.literal_eval(out.strip().splitlines()[-1]) == final  # the finished run's metrics, not {}
  done = re.search(rf"run complete: {re.escape(str(workdir))} has all 2 epochs \(best val_nll ([\d.]+) at "
                   r"epoch (\d)\); nothing to train", err)
  assert done and float(done[1]) == pytest.approx(final["val_nll"], abs=1e-3) and done[2] == "2", err[-2000:]
  assert "] epoch " not in err


def test_evaluate_refuses_k_below_one_before_reading_anything(tmp_path):
  proc = command("vae_jax.commands.evaluate", "--workdir", str(tmp_path / "none"), "--num_importance_samples", "0")
  out, err = proc.communicate(timeout=120)
  assert proc.returncode != 0 and "--num_importance_samples=0 must be >= 1" in err, err[-2000:]
  assert "does not exist" not in err  # refused before the workdir is read
