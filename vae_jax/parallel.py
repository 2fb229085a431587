"""Data parallelism with ``jax.sharding``: one mesh axis, batch sharded, state replicated.

The trainer and the evaluator take a ``Mesh`` over the devices that share the
work. Arrays are placed once: the train state and the uint8 training images
are replicated on every device; inside the jitted step each batch is
constrained to be split along the mesh axis, so every device computes the
loss of its slice and the compiler inserts the all-reduce of the gradients.
One device is the same code path with a mesh of size 1.

Many hosts: call ``initialize_distributed`` (``vae_jax/commands/train.py`` does it
from flags) before anything touches a device; ``jax.devices()`` then lists
every host's devices and the same program runs on each host.

On a CPU, ``XLA_FLAGS=--xla_force_host_platform_device_count=N`` splits the
host into N devices, which is how the tests check that 1 and 4 devices agree.
"""

from __future__ import annotations

import numpy as np

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"


def initialize_distributed(coordinator_address: str, num_processes: int, process_id: int) -> None:
  """``jax.distributed.initialize`` for a multi-host run (no-op without a coordinator address)."""
  if not coordinator_address:
    return
  if num_processes < 1 or not 0 <= process_id < num_processes:
    raise ValueError(f"process_id={process_id} must be in [0, num_processes={num_processes})")
  jax.distributed.initialize(coordinator_address=coordinator_address,
                             num_processes=num_processes, process_id=process_id)


def make_mesh(num_devices: int = 0) -> Mesh:
  """A 1-D mesh over the first ``num_devices`` devices (0: all of them)."""
  devices = jax.devices()
  if num_devices < 0 or num_devices > len(devices):
    raise ValueError(f"num_devices={num_devices}: this process sees {len(devices)} device(s) "
                     f"({devices[0].platform}); use 0 for all of them")
  return Mesh(np.asarray(devices[:num_devices or len(devices)]), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over the mesh."""
  return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def check_batch_size(batch_size: int, mesh: Mesh, what: str = "batch_size") -> None:
  if batch_size % mesh.size:
    raise ValueError(f"{what}={batch_size} must be divisible by the number of devices "
                     f"({mesh.size}) to split each batch evenly")


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
