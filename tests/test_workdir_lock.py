"""The workdir lock: a second run on a workdir in use is refused naming the holder; a lock left by a
killed run is taken over, and that run resumes."""

import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests import test_loop
from tests.test_reliability import compile_cache  # noqa: F401  (autouse: a persistent XLA cache)
from vae_jax import checkpointing
from vae_jax import config as config_lib
from vae_jax import lock
from vae_jax import loop
from vae_jax import workdir as workdir_lib
from vae_jax.workdir import WorkdirError

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("fast_compiling_rng")

HOST = re.escape(socket.gethostname())
SINCE = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d[+-]\d\d:\d\d"


def python(code: str, *args, **kw) -> subprocess.Popen:
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
  return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *map(str, args)], cwd=ROOT, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def in_use(workdir, pid) -> str:
  return (rf"^workdir {re.escape(str(workdir))} is in use by pid {pid} on {HOST} since {SINCE}; "
          r"wait for it or use another --workdir$")


HOLD = """
    import sys, time
    from vae_jax import lock
    lock.acquire(sys.argv[1])
    print("held", flush=True)
    time.sleep(600)
"""


def test_a_held_workdir_is_refused_naming_the_holder_and_taken_over_once_it_is_killed(tmp_path, caplog):
  holder = python(HOLD, tmp_path)
  try:
    assert holder.stdout.readline() == "held\n", holder.stderr.read()[-2000:]
    with pytest.raises(WorkdirError, match=in_use(tmp_path, holder.pid)):
      lock.acquire(tmp_path)
    assert not lock.is_held(tmp_path)
  finally:
    holder.kill()  # SIGKILL: the kernel drops the flock, the file still names the dead process
    holder.communicate(timeout=60)
  assert lock.holder(tmp_path)["pid"] == holder.pid
  with caplog.at_level("WARNING", logger="vae_jax.lock"):
    assert lock.acquire(tmp_path)
  assert f"took over the lock of {tmp_path} left by pid {holder.pid} on {socket.gethostname()}" in caplog.text
  assert lock.holder(tmp_path)["pid"] == os.getpid()
  assert not lock.acquire(tmp_path)  # re-entrant in the process that holds it
  lock.release(tmp_path)
  assert lock.holder(tmp_path) is None and not lock.is_held(tmp_path)  # a clean release leaves no holder


def test_every_exit_path_releases_the_lock(tmp_path, monkeypatch):
  cfg, _ = test_loop.tiny("vae")

  @lock.scoped
  def trainer_that_fails_before_fit(config, workdir):
    loop.open_workdir(config, workdir, config_lib.SCHEMA)
    assert lock.is_held(workdir)
    raise RuntimeError("data failed to load")

  with pytest.raises(RuntimeError):
    trainer_that_fails_before_fit(cfg, tmp_path / "a")
  assert not lock.is_held(tmp_path / "a") and lock.holder(tmp_path / "a") is None

  # A refused resume (another config) releases the lock open_workdir took.
  workdir_lib.write_config(test_loop.tiny("vae", seed=1)[0], workdir_lib.prepare(tmp_path / "b"))
  with pytest.raises(config_lib.ConfigError):
    loop.open_workdir(cfg, tmp_path / "b", config_lib.SCHEMA)
  assert not lock.is_held(tmp_path / "b")

  # ``fit`` called on its own, outside any trainer, holds the lock while it runs and releases it.
  seen = []
  test_loop.scripted_fit(tmp_path / "c", monkeypatch, evaluate=lambda state: seen.append(
      lock.holder(tmp_path / "c")["pid"]) or {"nll": 1.0})
  assert seen == [os.getpid()] * 2 and not lock.is_held(tmp_path / "c")


TRAIN_FOREVER = """
    import sys, jax
    jax.config.update("jax_threefry_partitionable", False)
    from tests import test_loop as t
    t.run("vae", sys.argv[1], num_epochs=100000)
"""


def test_a_second_command_on_a_running_workdir_fails_in_one_line_and_a_killed_run_resumes(tmp_path, caplog):
  workdir = tmp_path / "w"
  first = python(TRAIN_FOREVER, workdir)
  try:
    deadline = time.time() + 120
    while not (workdir / workdir_lib.LATEST_DIR / "1").is_dir():  # epoch 1's checkpoint, complete
      assert first.poll() is None and time.time() < deadline, first.communicate()[1][-3000:]
      time.sleep(0.2)
    second = subprocess.run(
        [sys.executable, "-m", "vae_jax.commands.train", "--workdir", str(workdir), "--config.progress=False"],
        cwd=ROOT, env=dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT)), capture_output=True,
        text=True, timeout=120)
    assert second.returncode == 2, second.stderr[-3000:]
    [line] = second.stderr.strip().splitlines()
    assert re.match(in_use(workdir, first.pid).replace("^", "^error: WorkdirError: "), line), line
    assert first.poll() is None  # the running one goes on
  finally:
    first.send_signal(signal.SIGKILL)
    first.communicate(timeout=60)
  ckpt = checkpointing.Checkpointer(workdir / workdir_lib.LATEST_DIR)
  done = max(ckpt.epochs())
  ckpt.close()
  with caplog.at_level("INFO", logger="vae_jax"):
    rows = test_loop.run("vae", workdir, num_epochs=done + 1)
  assert f"took over the lock of {workdir} left by pid {first.pid}" in caplog.text
  assert re.search(rf"resuming {re.escape(str(workdir))} from epoch \d+", caplog.text)
  assert [r["epoch"] for r in rows] == list(range(1, done + 2))
  assert lock.holder(workdir) is None
