import os
from pathlib import Path

import jax
import pytest

SHARED_TFDS = Path(__file__).resolve().parents[1].parent / "shared" / "tensorflow_datasets"
if "TFDS_DATA_DIR" not in os.environ and SHARED_TFDS.exists():
  os.environ["TFDS_DATA_DIR"] = str(SHARED_TFDS)


def has_tfds(name: str) -> bool:
  root = os.environ.get("TFDS_DATA_DIR")
  return bool(root) and (Path(root) / name).exists()


requires_binarized_mnist = pytest.mark.skipif(
    not has_tfds("binarized_mnist"), reason="binarized_mnist not prepared (set TFDS_DATA_DIR)")
requires_mnist = pytest.mark.skipif(
    not has_tfds("mnist"), reason="mnist not prepared (set TFDS_DATA_DIR)")


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path_factory, monkeypatch):
  # Decoded-split cache shared across the session, never the user's.
  monkeypatch.setenv("VAE_JAX_CACHE", str(tmp_path_factory.getbasetemp() / "vae_jax_cache"))


@pytest.fixture(scope="module")
def fast_compiling_rng():
  """Compile the RNG the pre-0.5 way (``jax_threefry_partitionable=False``) in a module that asks for it
  (``pytestmark = pytest.mark.usefixtures("fast_compiling_rng")``).

  The partitionable threefry (jax's default) makes XLA:CPU compile every
  random draw several times slower (a tiny VQ-VAE's init: 10 s instead of 2 s
  of compile); nothing here depends on the particular random bits, only on
  reproducibility, which both modes give. Restored afterwards.
  """
  before = jax.config.jax_threefry_partitionable
  jax.config.update("jax_threefry_partitionable", False)
  yield
  jax.config.update("jax_threefry_partitionable", before)
