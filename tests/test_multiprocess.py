"""Several processes on one machine through ``jax.distributed`` (CPU, gloo collectives).

Each process is ``tests/multiprocess_worker.py`` (or the ``vae-jax`` command)
with one forced CPU device; the reference is one process with as many forced
devices. The global batch and the mesh are then the same, and so is every
reduction, so a run over N processes must equal the one-process run bit for bit:
metrics rows (timing aside) and the newest checkpoint's parameters.
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from tests.test_loop import FIGURES, TRAINERS, latest_params, without_timing
from tests.test_reliability import compile_cache  # noqa: F401  (autouse: a persistent XLA cache)
from vae_jax import summaries
from vae_jax import workdir as workdir_lib

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, JAX_PLATFORMS="cpu",
           PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def start(root: Path, kinds, *, num_processes: int, num_epochs: int = 2, timeout_s: int = 60,
          **spec) -> list[subprocess.Popen]:
  """``num_processes`` workers of one run in ``root`` (one forced device each), or with
  ``num_processes=-N`` the one-process reference over N forced devices."""
  port = free_port()
  specs = [dict(root=str(root), kinds=list(kinds), num_epochs=num_epochs, devices=1,
                num_processes=num_processes, process_id=i, port=port, timeout_s=timeout_s, **spec)
           for i in range(num_processes)]
  if num_processes < 0:
    specs = [dict(root=str(root), kinds=list(kinds), num_epochs=num_epochs, devices=-num_processes,
                  **spec)]
  root.mkdir(parents=True, exist_ok=True)
  return [subprocess.Popen([sys.executable, "-m", "tests.multiprocess_worker", json.dumps(spec)],
                           env=ENV, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
          for spec in specs]


def finish(procs, timeout=300) -> list[tuple[int, str, str]]:
  out = []
  for p in procs:
    try:
      stdout, stderr = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
      for q in procs:
        q.kill()
      raise
    out.append((p.returncode, stdout, stderr))
  return out


def assert_ok(results):
  for i, (rc, _, stderr) in enumerate(results):
    assert rc == 0, f"process {i}: rc {rc}\n{stderr[-3000:]}"


def assert_same_run(a: Path, b: Path, rtol: float = 0.0, atol: float = 0.0):
  """Two workdirs hold the same run: rows (timing aside) and newest parameters, bit for bit
  unless a tolerance is given."""
  rows_a, rows_b = (without_timing(workdir_lib.read_metrics(w)) for w in (a, b))
  if not rtol:
    assert rows_a == rows_b
  assert [r["epoch"] for r in rows_a] == [r["epoch"] for r in rows_b]
  for ra, rb in zip(rows_a, rows_b):
    assert ra.keys() == rb.keys()
    np.testing.assert_allclose([float(ra[k]) for k in ra], [float(rb[k]) for k in ra], rtol=rtol)
  (ea, pa), (eb, pb) = latest_params(a), latest_params(b)
  assert ea == eb
  for x, y in zip(jax.tree.leaves(pa), jax.tree.leaves(pb), strict=True):
    np.testing.assert_allclose(x, y, rtol=rtol, atol=atol)


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
  """The reference: every trainer in one process over 2 forced devices (ROOT/KIND), 2 epochs.
  Started at once; ``wait()`` -> ROOT once it has finished."""
  root = tmp_path_factory.mktemp("one_process")
  procs = start(root, TRAINERS, num_processes=-2)

  class Reference:
    def wait(self) -> Path:
      assert_ok(finish(procs))
      return root
  yield Reference()
  for p in procs:
    p.kill()


def writes_of_others(root: Path, num_processes: int) -> list[str]:
  return [w for i in range(1, num_processes)
          for w in json.loads((root.parent / f"writes_{i}.json").read_text())]


def test_two_processes_train_every_trainer_as_one_process_on_two_devices(one_process, tmp_path):
  results = finish(start(tmp_path, TRAINERS, num_processes=2))
  assert_ok(results)
  ref = one_process.wait()
  for kind in TRAINERS:
    assert_same_run(ref / kind, tmp_path / kind)  # the same global batch and reductions: bit for bit
    rows = workdir_lib.read_metrics(tmp_path / kind)
    assert [r["epoch"] for r in rows] == [1, 2]  # one writer: each row once
    for name in FIGURES[kind]:
      assert (tmp_path / kind / "figures" / name).is_file()
    assert list((tmp_path / kind / summaries.TENSORBOARD_DIR).glob("events.*"))
  assert writes_of_others(tmp_path, 2) == []  # process 1 wrote nothing, read what it needed


def test_every_trainer_trains_the_same_model_on_one_device_as_on_two(one_process, tmp_path):
  ref = one_process.wait()
  # The prior models the codes of the same VQ-VAE on both sides (the reference's).
  assert_ok(finish(start(tmp_path, TRAINERS, num_processes=-1, vqvae_workdir=str(ref / "vqvae"))))
  for kind in TRAINERS:  # the same model, to float32 reduction order: a sum over 2 devices or 1
    assert_same_run(ref / kind, tmp_path / kind, rtol=1e-4, atol=2e-5)


def test_four_processes_train_the_vae_as_one_process(one_process, tmp_path):
  assert_ok(finish(start(tmp_path, ["vae"], num_processes=4)))
  # An all-reduce over 4 processes adds the shards in another order than over 2 devices: float32
  # rounding.
  assert_same_run(one_process.wait() / "vae", tmp_path / "vae", rtol=1e-6, atol=1e-6)
  assert writes_of_others(tmp_path, 4) == []


def test_a_killed_process_stops_the_others_and_the_restarted_run_ends_as_if_never_stopped(
    one_process, tmp_path):
  procs = start(tmp_path, ["vae"], num_processes=2, timeout_s=10)
  metrics = tmp_path / "vae" / workdir_lib.METRICS
  deadline = time.monotonic() + 240
  while not (metrics.exists() and metrics.read_text().count("\n") >= 1):
    assert time.monotonic() < deadline and procs[0].poll() is None, finish(procs)
    time.sleep(0.05)
  procs[1].send_signal(signal.SIGKILL)  # after epoch 1 (checkpointed), during epoch 2
  t0 = time.monotonic()
  rc0 = procs[0].wait(timeout=120)  # the survivor does not hang: it stops within the timeout
  waited = time.monotonic() - t0
  assert rc0 != 0 and waited < 60, (rc0, waited)
  print(f"process 0 stopped {waited:.1f} s after process 1 was killed, status {rc0}")
  finish(procs)
  assert [r["epoch"] for r in workdir_lib.read_metrics(tmp_path / "vae")] == [1]
  assert_ok(finish(start(tmp_path, ["vae"], num_processes=2)))  # all restarted: the run resumes
  assert_same_run(one_process.wait() / "vae", tmp_path / "vae")


def command(workdir: Path, port: int, num_processes: int, process_id: int, *args) -> subprocess.Popen:
  return subprocess.Popen(
      [sys.executable, "-m", "vae_jax", "train", f"--workdir={workdir}",
       f"--coordinator_address=127.0.0.1:{port}", f"--num_processes={num_processes}",
       f"--process_id={process_id}", *args], env=ENV, cwd=ROOT, stdout=subprocess.PIPE,
      stderr=subprocess.PIPE, text=True)


def test_bad_starts_of_several_processes_end_in_named_errors_without_hanging(tmp_path):
  disagree, alone, indivisible = free_port(), free_port(), free_port()
  procs = {
      "disagree": [command(tmp_path / "a", disagree, 2, 0), command(tmp_path / "a", disagree, 3, 1)],
      "alone": [command(tmp_path / "b", alone, 2, 1, "--distributed_timeout=3")],
      "indivisible": [command(tmp_path / "c", indivisible, 2, i, "--config.batch_size=15")
                      for i in (0, 1)],
  }
  t0 = time.monotonic()
  results = {name: finish(p, timeout=120) for name, p in procs.items()}
  assert time.monotonic() - t0 < 100
  expected = {
      "disagree": r"error: DistributedError: the processes disagree on the number of processes "
                  r"\(process 0 --num_processes=2, process 1 --num_processes=3; 2 joined\)",
      "alone": r"error: DistributedError: process 1 of 2: the 2 processes did not all reach the "
               r"coordinator at 127.0.0.1:\d+ within 3 s",
      "indivisible": r"error: ConfigError: .*config.batch_size=15 must be divisible by the number of "
                     r"devices \(2, over 2 processes\)",
  }
  for name, outs in results.items():
    for rc, _, stderr in outs:
      assert rc == 2 and re.search(expected[name], stderr), (name, rc, stderr[-2000:])
  assert not (tmp_path / "c").exists()  # refused before the workdir or the data is touched
