"""Data parallelism with ``jax.sharding``: one mesh axis, batch sharded, state replicated.

The trainer and the evaluator take a ``Mesh`` over the devices that share the
work. Arrays are placed once: the train state and the uint8 training images
are replicated on every device; inside the jitted step each batch is
constrained to be split along the mesh axis, so every device computes the
loss of its slice and the compiler inserts the all-reduce of the gradients.
One device is the same code path with a mesh of size 1.

Several processes (hosts): every process calls ``initialize_distributed``
(each training command does it from its ``--coordinator_address``,
``--num_processes`` and ``--process_id`` flags) before anything touches a
device; ``jax.devices()`` then lists every process's devices, the mesh spans
them all and the same program runs in each process. Each process holds the
whole (replicated) state and data; ``to_host`` gathers values split over
processes, ``broadcast_from_writer`` sends process 0's values to the others
(the resumed checkpoint), and ``wait_for_all`` is a barrier.

On a CPU, ``XLA_FLAGS=--xla_force_host_platform_device_count=N`` splits the
host into N devices, which is how the tests check that 1 and 4 devices agree.
"""

from __future__ import annotations

import os
import sys
import threading

import numpy as np

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"


class DistributedError(RuntimeError):
  """A multi-process run that cannot start: bad flags, processes that disagree, no coordinator."""


def initialize_distributed(coordinator_address: str, num_processes: int, process_id: int, *,
                           timeout_s: int = 300) -> None:
  """``jax.distributed.initialize`` for a multi-process run (no-op without a coordinator address).

  Process 0 runs the coordinator at ``coordinator_address`` (HOST:PORT, reachable
  from every process); every process calls this with the same address and
  ``num_processes`` and its own ``process_id``. CPU processes exchange gradients
  through gloo. If the processes have not all met within ``timeout_s`` seconds,
  each one prints a line naming the problem and exits with status 2 (the runtime
  would abort with a stack trace). Processes that disagree on ``num_processes``
  all raise DistributedError. A process that dies later takes the others down
  with it within ``timeout_s``: restart them all and the run resumes.
  """
  if not coordinator_address:
    return
  if num_processes < 1 or not 0 <= process_id < num_processes:
    raise DistributedError(f"--process_id={process_id} must be in [0, --num_processes={num_processes})")
  host, _, port = coordinator_address.rpartition(":")
  if not host or not port.isdigit():
    raise DistributedError(f"--coordinator_address={coordinator_address!r} must be HOST:PORT")
  if timeout_s < 1:
    raise DistributedError(f"timeout_s={timeout_s} must be >= 1")
  jax.config.update("jax_cpu_collectives_implementation", "gloo")  # cross-process CPU collectives
  who = f"process {process_id} of {num_processes}"
  watchdog = threading.Timer(timeout_s, _give_up, args=(
      f"{who}: the {num_processes} processes did not all reach the coordinator at "
      f"{coordinator_address} within {timeout_s} s. Start every process with the same "
      f"--coordinator_address and --num_processes (process 0 runs the coordinator), and check that "
      f"{host}:{port} is reachable from this host.",))
  watchdog.daemon = True
  watchdog.start()
  try:
    jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                               process_id=process_id, initialization_timeout=timeout_s + 60,
                               heartbeat_timeout_seconds=timeout_s, shutdown_timeout_seconds=timeout_s)
  finally:
    watchdog.cancel()
  from jax.experimental import multihost_utils
  claims = np.asarray(multihost_utils.process_allgather(np.array([num_processes, process_id], np.int32)))
  claims = claims.reshape(-1, 2)
  if (claims[:, 0] != jax.process_count()).any():
    said = ", ".join(f"process {i} --num_processes={n}" for n, i in claims)
    raise DistributedError(f"the processes disagree on the number of processes ({said}; "
                           f"{jax.process_count()} joined): give every process the same --num_processes")


def _give_up(message: str) -> None:
  """The watchdog of ``initialize_distributed``: prints a named line and exits with status 2.

  It runs on a timer thread while the main thread waits inside the runtime's
  initialization, which no Python exception can interrupt."""
  print(f"error: DistributedError: {message}", file=sys.stderr, flush=True)
  os._exit(2)


def make_mesh(num_devices: int = 0) -> Mesh:
  """A 1-D mesh over the first ``num_devices`` devices (0: all of them)."""
  devices = jax.devices()
  if num_devices < 0 or num_devices > len(devices):
    raise ValueError(f"num_devices={num_devices}: this process sees {len(devices)} device(s) "
                     f"({devices[0].platform}); use 0 for all of them")
  if jax.process_count() > 1 and num_devices not in (0, len(devices)):
    raise ValueError(f"num_devices={num_devices}: a run over {jax.process_count()} processes uses "
                     f"all their {len(devices)} devices; use 0")
  return Mesh(np.asarray(devices[:num_devices or len(devices)]), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over the mesh."""
  return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def check_batch_size(batch_size: int, mesh: Mesh, what: str = "batch_size") -> None:
  if batch_size % mesh.size:
    over = f", over {jax.process_count()} processes" if jax.process_count() > 1 else ""
    raise ValueError(f"{what}={batch_size} must be divisible by the number of devices "
                     f"({mesh.size}{over}) to split each batch evenly")


def _put(x, sharding: NamedSharding):
  if sharding.is_fully_addressable:
    return jax.device_put(x, sharding)
  host = np.asarray(x)  # every process holds the same values
  return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def replicate(tree, mesh: Mesh):
  """Every leaf of ``tree`` as an array replicated over ``mesh``."""
  sharding = replicated(mesh)
  return jax.tree.map(lambda x: _put(x, sharding), tree)


def shard_batch(x, mesh: Mesh):
  """A host or device batch placed with its leading axis split over ``mesh``."""
  return _put(x, batch_sharded(mesh))


def _leaf_to_host(x):
  if not isinstance(x, jax.Array) or x.is_fully_addressable or x.is_fully_replicated:
    return np.asarray(jax.device_get(x))
  from jax.experimental import multihost_utils  # other processes hold parts of x: gather them
  return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def broadcast_from_writer(tree):
  """Process 0's ``tree`` (host values) on every process; each passes a tree of the same shapes."""
  from jax.experimental import multihost_utils
  return jax.tree.map(np.asarray, multihost_utils.broadcast_one_to_all(tree))


def wait_for_all(name: str) -> None:
  """Returns once every process has reached ``wait_for_all(name)`` (nothing to wait for in one
  process): for example until process 0 has written what the others read next."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices(name)


def to_host(tree):
  """``jax.device_get`` that also works on arrays split over several processes: each process
  gets the whole value (a collective: every process must call it)."""
  return jax.tree.map(_leaf_to_host, tree)
