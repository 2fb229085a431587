"""What produced a result: package versions, the source's git commit, the device.

Evaluation outputs carry ``provenance()`` so that a number in a JSON file names
the stack and the code that computed it.
"""

from __future__ import annotations

import functools
import importlib.metadata
import platform
import subprocess
from pathlib import Path

PACKAGES = ("vae_jax", "jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy",
            "tensorflow-datasets")
SOURCE = Path(__file__).resolve().parents[1]


def versions() -> dict[str, str | None]:
  """{package: installed version, or None}, plus the Python version."""
  out = {"python": platform.python_version()}
  for name in PACKAGES:
    try:
      out[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      out[name] = None
  return out


@functools.lru_cache(maxsize=1)
def git_commit() -> str | None:
  """The commit of the vae_jax source tree ("<sha>-dirty" with uncommitted changes to tracked
  files), or None outside a git checkout."""
  def git(*args):
    return subprocess.run(["git", "-C", str(SOURCE), *args], capture_output=True, text=True,
                          timeout=10, check=True).stdout.strip()
  try:
    sha = git("rev-parse", "HEAD")
    dirty = bool(git("status", "--porcelain", "--untracked-files=no", "--", "vae_jax"))
  except (OSError, subprocess.SubprocessError):
    return None
  return sha + ("-dirty" if dirty else "")


def provenance() -> dict:
  """{versions, git_commit, device}: what to store next to a result."""
  import jax
  return dict(versions=versions(), git_commit=git_commit(),
              device=str(jax.devices()[0].device_kind), backend=jax.default_backend())
